"""Self-service: your profile, password and preferences."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, JsonValue

from zhongshu.api.deps import HubDep, UserDep, client_ip
from zhongshu.api.sessions import TokenPublic, token_public
from zhongshu.api.users import user_public

router = APIRouter(prefix="/api/v1/me", tags=["me"])


class MeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(None, max_length=128)
    email: str | None = Field(None, max_length=255)
    preferences: dict[str, JsonValue] | None = None


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    old_password: str = Field(min_length=1, max_length=256)
    new_password: str = Field(min_length=1, max_length=256)


async def _me(hub: HubDep, p: UserDep) -> dict[str, Any]:
    user = await hub.identity.get_user(p.id)
    return {
        **user_public(user),
        "preferences": await hub.identity.preferences(p.id),
        "auth": {"via": p.via, "scopes": sorted(p.scopes) if p.via == "key" else None},
    }


@router.get("")
async def get_me(hub: HubDep, p: UserDep) -> dict[str, Any]:
    """Your profile and preferences."""
    return await _me(hub, p)


@router.patch("")
async def update_me(body: MeUpdate, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """Change your display name, e-mail or preferences."""
    await hub.identity.update_profile(
        p, body.model_dump(exclude_none=True, exclude={"preferences"})
    )
    if body.preferences is not None:
        await hub.identity.set_preferences(p, body.preferences)
    return await _me(hub, p)


@router.post("/password")
async def change_password(
    body: PasswordChange, hub: HubDep, p: UserDep, request: Request
) -> TokenPublic:
    """Change your password (old one required); every other token stops working and a new
    token pair is returned."""
    pair = await hub.identity.change_password(
        p, body.old_password, body.new_password, client_ip(request)
    )
    return token_public(pair)
