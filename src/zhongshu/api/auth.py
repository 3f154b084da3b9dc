"""Password login → access JWT + refresh token (refresh, logout, confirm: ``sessions.py``)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from zhongshu.api.deps import HubDep, UserDep, client_ip
from zhongshu.api.sessions import TokenPublic, token_public

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


@router.post("/login")
async def login(body: LoginRequest, hub: HubDep, request: Request) -> TokenPublic:
    """Exchange a username and password for a bearer token and a refresh token."""
    return token_public(await hub.identity.login(body.username, body.password, client_ip(request)))


@router.get("/whoami")
async def whoami(p: UserDep) -> dict[str, str]:
    """Who the token belongs to."""
    return {"id": p.id, "username": p.name, "role": p.role}
