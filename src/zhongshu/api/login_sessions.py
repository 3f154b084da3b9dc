"""QR login sessions: list and read (start one with ``POST /api/v1/sources/{id}/login``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from zhongshu.api.deps import HubDep, UserDep
from zhongshu.services.login_sessions import session_view

router = APIRouter(prefix="/api/v1/login-sessions", tags=["sources"])
Status = Literal["pending", "scanning", "success", "failed", "expired"]


@router.get("")
async def list_login_sessions(
    hub: HubDep,
    p: UserDep,
    status: Status | None = None,
    source_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """Login sessions of your sources (all for an admin), newest first."""
    rows, total = await hub.logins.find(
        p, status=status, source_id=source_id, limit=limit, offset=offset
    )
    return {"success": True, "sessions": [session_view(r) for r in rows], "total": total}


@router.get("/{login_session_id}")
async def get_login_session(login_session_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """One login session, with its QR code while it is being scanned."""
    return session_view(await hub.logins.get(login_session_id, p))
