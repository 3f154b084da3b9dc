"""Read the append-only event log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query

from zhongshu.api.deps import AdminDep, HubDep
from zhongshu.api.shapes import event_public

router = APIRouter(prefix="/api/v1/events", tags=["events"])


@router.get("")
async def list_events(
    hub: HubDep,
    _: AdminDep,
    type: str | None = Query(
        None, max_length=64, description="type prefix, e.g. task. or node.offline"
    ),
    subject_type: str | None = Query(None, max_length=32),
    subject_id: str | None = Query(None, max_length=128),
    actor: str | None = Query(None, max_length=128),
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int | None = Query(None, ge=0),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """Events, newest first, with filters."""
    rows, total = await hub.events.query(
        type_prefix=type,
        subject_type=subject_type,
        subject_id=subject_id,
        actor=actor,
        since=since.timestamp() if since else None,
        until=until.timestamp() if until else None,
        after_id=after_id,
        limit=limit,
        offset=offset,
    )
    return {"items": [event_public(e) for e in rows], "total": total}
