"""User API keys: create (secret shown once), list, show, modify, disable/enable, delete."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from zhongshu.api.deps import HubDep, UserDep, require_step_up
from zhongshu.api.shapes import iso

router = APIRouter(prefix="/api/v1/api-keys", tags=["api-keys"])


def key_public(k: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": k["id"],
        "name": k["name"],
        "owner_id": k["owner_id"],
        "access_key": k["access_key"],
        "scopes": list(k["scopes"]),
        "disabled": bool(k["disabled"]),
        "expires_at": iso(k["expires_at"]),
        "last_used_at": iso(k["last_used_at"]),
        "created_at": iso(k["created_at"]),
        "updated_at": iso(k["updated_at"]),
    }


def _timestamp(value: datetime | None) -> float | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("expires_at must carry a timezone, e.g. 2027-01-01T00:00:00Z")
    return value.timestamp()


class ApiKeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    scopes: list[str] = Field(default_factory=lambda: ["read"], max_length=3)
    expires_at: datetime | None = None
    expires_in_s: int | None = Field(None, gt=0, le=10 * 365 * 86400)

    @model_validator(mode="after")
    def _one_expiry(self) -> ApiKeyCreate:
        if self.expires_at is not None and self.expires_in_s is not None:
            raise ValueError("give either expires_at or expires_in_s, not both")
        _timestamp(self.expires_at)
        return self


class ApiKeyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=128)
    scopes: list[str] | None = Field(None, max_length=3)
    expires_at: datetime | None = None
    disabled: bool | None = None

    @model_validator(mode="after")
    def _tz(self) -> ApiKeyUpdate:
        _timestamp(self.expires_at)
        return self


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_key(body: ApiKeyCreate, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """Create an API key for yourself; the secret is shown only in this reply."""
    expires = _timestamp(body.expires_at)
    if body.expires_in_s is not None:
        expires = time.time() + body.expires_in_s
    key, secret = await hub.api_keys.create(p, body.name, body.scopes, expires)
    return {
        **key_public(key),
        "secret_key": secret,
        "authorization": f"AK-SK {key['access_key']}:{secret}",
        "note": "the secret is shown once; store it now",
    }


@router.get("")
async def list_keys(
    hub: HubDep,
    p: UserDep,
    owner_id: str | None = Query(None, max_length=32, description="admins: one user's keys"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """Your API keys (admins: everyone's, or one owner's)."""
    rows, total = await hub.api_keys.list(p, owner_id, limit, offset)
    return {
        "items": [key_public(k) for k in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/{key_id}")
async def get_key(key_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """One API key (never its secret)."""
    return key_public(await hub.api_keys.get(key_id, p))


async def _owner_role(hub: HubDep, key: dict[str, Any]) -> str:
    return str((await hub.identity.get_user(key["owner_id"]))["role"])


@router.patch("/{key_id}")
async def update_key(key_id: str, body: ApiKeyUpdate, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """Rename, change scopes or expiry, or disable/enable a key."""
    key = await hub.api_keys.get(key_id, p)
    changes = body.model_dump(exclude_unset=True)
    if "expires_at" in changes:
        changes["expires_at"] = _timestamp(body.expires_at)
    row = await hub.api_keys.update(key_id, changes, p, await _owner_role(hub, key))
    return key_public(row)


@router.post("/{key_id}/disable")
async def disable_key(key_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """Disable a key: it is refused until enabled again."""
    key = await hub.api_keys.get(key_id, p)
    row = await hub.api_keys.update(key_id, {"disabled": True}, p, await _owner_role(hub, key))
    return key_public(row)


@router.post("/{key_id}/enable")
async def enable_key(key_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """Enable a disabled key."""
    key = await hub.api_keys.get(key_id, p)
    row = await hub.api_keys.update(key_id, {"disabled": False}, p, await _owner_role(hub, key))
    return key_public(row)


@router.delete("/{key_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_key(key_id: str, hub: HubDep, p: UserDep, request: Request) -> None:
    """Delete a key; deleting someone else's needs X-Confirm-Token."""
    key = await hub.api_keys.get(key_id, p)
    if key["owner_id"] != p.id:
        await require_step_up(request, hub, p)
    await hub.api_keys.delete(key, p)
