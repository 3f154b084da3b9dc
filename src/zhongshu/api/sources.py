"""Sources (accounts, feeds): CRUD, and starting a QR login."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field

from zhongshu.api.deps import HubDep, UserDep, WriterDep
from zhongshu.api.shapes import iso_times
from zhongshu.services.login_sessions import session_view
from zhongshu.services.sources import source_view

router = APIRouter(prefix="/api/v1/sources", tags=["sources"])

Credentials = dict[str, Any] | list[Any]
LoginStatus = Literal["not_logged_in", "logging_in", "logged_in", "login_failed", "expired"]
_TIMES = (
    "assigned_at",
    "cookies_valid_until",
    "last_login_at",
    "last_monitored_at",
    "created_at",
    "updated_at",
)


class SourceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    platform: str = Field(min_length=1, max_length=64)
    name: str = Field(min_length=1, max_length=255)
    account_id: str = Field("", max_length=255)
    monitor_interval_s: int = Field(20, gt=0, le=7 * 86400)
    status: Literal["active", "inactive"] = "active"
    proxy_id: str | None = Field(None, max_length=32)
    credentials: Credentials | None = None
    user_info: dict[str, Any] | None = None
    fingerprint: dict[str, Any] | None = None


class SourceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    platform: str | None = Field(None, min_length=1, max_length=64)
    name: str | None = Field(None, min_length=1, max_length=255)
    account_id: str | None = Field(None, max_length=255)
    monitor_interval_s: int | None = Field(None, gt=0, le=7 * 86400)
    status: Literal["active", "inactive"] | None = None
    login_status: LoginStatus | None = None
    proxy_id: str | None = Field(None, max_length=32)
    credentials: Credentials | None = None
    user_info: dict[str, Any] | None = None
    fingerprint: dict[str, Any] | None = None


class LoginStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    worker_id: str | None = Field(None, max_length=64)


def source_public(row: dict[str, Any]) -> dict[str, Any]:
    return iso_times(source_view(row), _TIMES)


def changes_of(sent: dict[str, Any]) -> dict[str, Any]:
    """Fields the caller sent: null clears proxy_id/credentials/user_info/fingerprint,
    and is ignored for the rest."""
    clearable = {"proxy_id", "credentials", "user_info", "fingerprint"}
    return {k: v for k, v in sent.items() if v is not None or k in clearable}


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_source(body: SourceCreate, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Create a source; it goes to a capable online node at once if one has room."""
    row = await hub.sources.create(p, body.model_dump())
    return source_public(row)


@router.get("")
async def list_sources(
    hub: HubDep,
    p: UserDep,
    platform: Annotated[str | None, Query(max_length=64)] = None,
    status_: Annotated[Literal["active", "inactive"] | None, Query(alias="status")] = None,
    login_status: LoginStatus | None = None,
    node_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """List your sources (all of them for an admin)."""
    rows, total = await hub.sources.find(
        p,
        platform=platform,
        status=status_,
        login_status=login_status,
        node_id=node_id,
        limit=limit,
        offset=offset,
    )
    return {"items": [source_public(r) for r in rows], "total": total}


@router.get("/{source_id}")
async def get_source(source_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """One source (credentials only as "are set")."""
    return source_public(await hub.sources.get(source_id, p))


@router.patch("/{source_id}")
async def update_source(
    source_id: str, body: SourceUpdate, hub: HubDep, p: WriterDep
) -> dict[str, Any]:
    """Change a source; null clears proxy_id, credentials, user_info or fingerprint."""
    return source_public(
        await hub.sources.update(source_id, changes_of(body.model_dump(exclude_unset=True)), p)
    )


@router.delete("/{source_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_source(source_id: str, hub: HubDep, p: WriterDep) -> None:
    """Delete a source; its node is told to drop it."""
    await hub.sources.delete(source_id, p)


@router.post("/{source_id}/login", status_code=status.HTTP_201_CREATED)
async def start_login(
    source_id: str, request: Request, hub: HubDep, p: WriterDep, body: LoginStart | None = None
) -> dict[str, Any]:
    """Start a QR login on a capable connected worker (409 with the reason if none)."""
    conns = getattr(request.app.state, "worker_connections", None)
    row = await hub.logins.start(
        source_id,
        p,
        worker_id=body.worker_id if body else None,
        reachable=conns.is_connected if conns is not None else None,
    )
    return session_view(row)
