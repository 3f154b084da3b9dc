"""Notification rules: which events reach which channels, with digests and quiet hours."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from zhongshu import errors
from zhongshu.api.deps import HubDep, UserDep, WriterDep
from zhongshu.api.shapes import iso_times
from zhongshu.api.validation import SafeStr
from zhongshu.services.routing import EVENTS, RuleSpec, rule_public

router = APIRouter(prefix="/api/v1/notification-rules", tags=["notification-rules"])

_EVENTS_HELP = "any of: " + ", ".join(EVENTS)


def _shape(row: dict[str, Any], pending: int) -> dict[str, Any]:
    return iso_times({**rule_public(row), "pending": pending})


async def public(hub: Any, row: dict[str, Any]) -> dict[str, Any]:
    pending = await hub.routing.pending([row["id"]])
    return _shape(row, pending[row["id"]])


class RuleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: SafeStr = Field(min_length=1, max_length=128)
    events: list[SafeStr] = Field(min_length=1, max_length=10, description=_EVENTS_HELP)
    channel_ids: list[int] = Field(min_length=1, max_length=50)
    item_kinds: list[SafeStr] = Field(default_factory=list, max_length=20)
    source_ids: list[SafeStr] = Field(default_factory=list, max_length=500)
    digest_window_s: int = Field(0, ge=0, le=7 * 86400)
    quiet_start: SafeStr | None = Field(None, max_length=5, description="HH:MM")
    quiet_end: SafeStr | None = Field(None, max_length=5, description="HH:MM")
    timezone: SafeStr = Field("UTC", min_length=1, max_length=64)
    enabled: bool = True


class RuleUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: SafeStr | None = Field(None, min_length=1, max_length=128)
    events: list[SafeStr] | None = Field(None, min_length=1, max_length=10)
    channel_ids: list[int] | None = Field(None, min_length=1, max_length=50)
    item_kinds: list[SafeStr] | None = Field(None, max_length=20)
    source_ids: list[SafeStr] | None = Field(None, max_length=500)
    digest_window_s: int | None = Field(None, ge=0, le=7 * 86400)
    quiet_start: SafeStr | None = Field(None, max_length=5, description='"" clears')
    quiet_end: SafeStr | None = Field(None, max_length=5, description='"" clears')
    timezone: SafeStr | None = Field(None, min_length=1, max_length=64)
    enabled: bool | None = None


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_rule(body: RuleCreate, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Create a notification rule."""
    return await public(hub, await hub.routing.create(p, RuleSpec(**body.model_dump())))


@router.get("")
async def list_rules(hub: HubDep, p: UserDep) -> dict[str, Any]:
    """List notification rules (yours; admins see all)."""
    rows = await hub.routing.find(p)
    pending = await hub.routing.pending([r["id"] for r in rows])  # one query, not one per rule
    return {"items": [_shape(r, pending[r["id"]]) for r in rows]}


@router.get("/{rule_id}")
async def get_rule(rule_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """One notification rule with how many events wait in its digest."""
    return await public(hub, await hub.routing.get(rule_id, p))


@router.patch("/{rule_id}")
async def update_rule(rule_id: str, body: RuleUpdate, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Change a notification rule; fields left out keep their value."""
    changes = body.model_dump(exclude_unset=True)
    for key in ("quiet_start", "quiet_end"):
        if changes.get(key) == "":
            changes[key] = None
    if any(v is None for k, v in changes.items() if k not in ("quiet_start", "quiet_end")):
        raise errors.InvalidInput('only quiet_start and quiet_end may be cleared (with "")')
    return await public(hub, await hub.routing.update(rule_id, p, changes))


@router.delete("/{rule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_rule(rule_id: str, hub: HubDep, p: WriterDep) -> None:
    """Delete a notification rule and the events waiting in its digest."""
    await hub.routing.delete(rule_id, p)
