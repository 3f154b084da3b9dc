"""Read the audit log (admins): filtered pages, or everything as JSON Lines."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from zhongshu.api.deps import AdminDep, HubDep
from zhongshu.api.shapes import iso
from zhongshu.db.audit_store import AuditFilter

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


def audit_public(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": r["id"],
        "at": iso(r["at"]),
        "actor": r["actor"],
        "action": r["action"],
        "target_type": r["target_type"],
        "target_id": r["target_id"],
        "client_ip": r["client_ip"],
        "outcome": r["outcome"],
        "detail": r["detail"],
    }


def audit_filter(
    actor: str | None = Query(None, max_length=128, description="e.g. user:<id> or anonymous"),
    action: str | None = Query(None, max_length=64, description="prefix, e.g. auth. or user."),
    target_type: str | None = Query(None, max_length=32),
    target_id: str | None = Query(None, max_length=128),
    outcome: Literal["success", "failure", "denied"] | None = None,
    client_ip: str | None = Query(None, max_length=64),
    since: datetime | None = None,
    until: datetime | None = None,
) -> AuditFilter:
    return AuditFilter(
        actor=actor,
        action=action,
        target_type=target_type,
        target_id=target_id,
        outcome=outcome,
        client_ip=client_ip,
        since=since.timestamp() if since else None,
        until=until.timestamp() if until else None,
    )


FilterDep = Annotated[AuditFilter, Depends(audit_filter)]


@router.get("")
async def list_audit(
    hub: HubDep,
    _: AdminDep,
    f: FilterDep,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """Audit entries, newest first, with filters and paging."""
    rows, total = await hub.audit.query(f, limit, offset)
    return {
        "items": [audit_public(r) for r in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/export")
async def export_audit(hub: HubDep, _: AdminDep, f: FilterDep) -> StreamingResponse:
    """Every matching entry, oldest first, as JSON Lines (streamed)."""

    async def lines() -> AsyncIterator[bytes]:
        async for row in hub.audit.export(f):
            yield (json.dumps(audit_public(row), ensure_ascii=False) + "\n").encode()

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="zhongshu-audit.jsonl"'},
    )
