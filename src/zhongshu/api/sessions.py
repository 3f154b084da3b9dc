"""Sessions: refresh (rotating), logout, and step-up confirmation. Login is in ``auth.py``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from zhongshu.api.deps import HubDep, UserDep, client_ip
from zhongshu.services.identity import TokenPair
from zhongshu.services.policy import CONFIRM_HEADER

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])


class TokenPublic(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    refresh_token: str
    refresh_expires_in: int


def token_public(pair: TokenPair) -> TokenPublic:
    return TokenPublic(
        access_token=pair.access_token,
        expires_in=pair.expires_in,
        refresh_token=pair.refresh_token,
        refresh_expires_in=pair.refresh_expires_in,
    )


class RefreshRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    refresh_token: str = Field(min_length=1, max_length=512)


class LogoutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    everywhere: bool = False


class ConfirmRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(min_length=1, max_length=256)


class ConfirmPublic(BaseModel):
    confirm_token: str
    header: str = CONFIRM_HEADER
    expires_in: int


@router.post("/refresh")
async def refresh(body: RefreshRequest, hub: HubDep, request: Request) -> TokenPublic:
    """Exchange a refresh token for a new token pair; the old refresh token stops working."""
    return token_public(await hub.identity.refresh(body.refresh_token, client_ip(request)))


@router.post("/logout")
async def logout(
    hub: HubDep, p: UserDep, body: LogoutRequest | None = None
) -> dict[str, bool | int]:
    """End this session, or every session of yours with everywhere=true."""
    everywhere = bool(body and body.everywhere)
    ended = await hub.identity.logout(p, everywhere=everywhere)
    return {"logged_out": True, "everywhere": everywhere, "sessions_ended": ended}


@router.post("/confirm")
async def confirm(body: ConfirmRequest, hub: HubDep, p: UserDep, request: Request) -> ConfirmPublic:
    """Confirm your password again for a short-lived step-up token (X-Confirm-Token)."""
    token = await hub.identity.confirm(p, body.password, client_ip(request))
    return ConfirmPublic(confirm_token=token, expires_in=hub.identity.confirm_token_ttl_s)
