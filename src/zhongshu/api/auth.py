"""Password login → JWT."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from zhongshu.api.deps import HubDep, UserDep

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class LoginRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class TokenPublic(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


@router.post("/login")
async def login(body: LoginRequest, hub: HubDep) -> TokenPublic:
    """Exchange a username and password for a bearer token."""
    user = await hub.identity.authenticate(body.username, body.password)
    return TokenPublic(
        access_token=hub.identity.issue_access_token(user),
        expires_in=hub.settings.access_token_ttl_s,
    )


@router.get("/whoami")
async def whoami(p: UserDep) -> dict[str, str]:
    """Who the token belongs to."""
    return {"id": p.id, "username": p.name, "role": p.role}
