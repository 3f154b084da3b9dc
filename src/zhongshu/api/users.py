"""User administration (admin only): create, list, show, update, role, password, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field

from zhongshu.api.deps import AdminDep, HubDep
from zhongshu.api.shapes import iso

router = APIRouter(prefix="/api/v1/users", tags=["users"])


def user_public(u: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": u["id"],
        "username": u["username"],
        "display_name": u["display_name"],
        "email": u["email"],
        "role": u["role"],
        "disabled": bool(u["disabled"]),
        "created_at": iso(u["created_at"]),
        "updated_at": iso(u["updated_at"]),
    }


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)
    role: str = Field("user", max_length=32, description="admin, user or viewer")
    display_name: str = Field("", max_length=128)
    email: str = Field("", max_length=255)


class UserUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(None, max_length=128)
    email: str | None = Field(None, max_length=255)
    disabled: bool | None = None


class RoleChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(max_length=32, description="admin, user or viewer")


class PasswordReset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(min_length=1, max_length=256)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_user(body: UserCreate, hub: HubDep, admin: AdminDep) -> dict[str, Any]:
    """Create a user."""
    row = await hub.identity.create_user(
        body.username,
        body.password,
        body.role,
        actor=admin,
        display_name=body.display_name,
        email=body.email,
    )
    return user_public(row)


@router.get("")
async def list_users(
    hub: HubDep,
    _: AdminDep,
    role: str | None = Query(None, max_length=32),
    disabled: bool | None = None,
    q: str | None = Query(None, max_length=64, description="part of the username"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """List users by username."""
    rows, total = await hub.identity.list_users(
        role=role, disabled=disabled, query=q, limit=limit, offset=offset
    )
    return {
        "items": [user_public(u) for u in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/{user_id}")
async def get_user(user_id: str, hub: HubDep, _: AdminDep) -> dict[str, Any]:
    """One user."""
    return user_public(await hub.identity.get_user(user_id))


@router.patch("/{user_id}")
async def update_user(
    user_id: str, body: UserUpdate, hub: HubDep, admin: AdminDep
) -> dict[str, Any]:
    """Change display name or e-mail, or disable/enable (disabling revokes their tokens)."""
    row = await hub.identity.update_user(user_id, body.model_dump(exclude_none=True), admin)
    return user_public(row)


@router.put("/{user_id}/role")
async def set_role(user_id: str, body: RoleChange, hub: HubDep, admin: AdminDep) -> dict[str, Any]:
    """Change a user's role (needs X-Confirm-Token)."""
    return user_public(await hub.identity.set_role(user_id, body.role, admin))


@router.post("/{user_id}/password")
async def reset_password(
    user_id: str, body: PasswordReset, hub: HubDep, admin: AdminDep
) -> dict[str, Any]:
    """Set a new password for a user; their tokens stop working (needs X-Confirm-Token)."""
    return user_public(await hub.identity.reset_password(user_id, body.password, admin))


@router.delete("/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_user(user_id: str, hub: HubDep, admin: AdminDep) -> None:
    """Delete a user with their API keys and sessions (needs X-Confirm-Token)."""
    await hub.identity.delete_user(user_id, admin)
