"""Push channels: CRUD and a test send. Secrets come back masked."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field

from zhongshu import errors
from zhongshu.api.deps import HubDep, UserDep, WriterDep
from zhongshu.api.shapes import iso_times
from zhongshu.api.validation import SafeStr
from zhongshu.services.channels import ChannelSpec, Outgoing, channel_public

router = APIRouter(prefix="/api/v1/channels", tags=["channels"])

Headers = dict[SafeStr, SafeStr]


def public(row: dict[str, Any]) -> dict[str, Any]:
    return iso_times(channel_public(row))


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: SafeStr = Field(min_length=1, max_length=128)
    kind: Literal["apprise", "http"] = "apprise"
    url: SafeStr = Field(min_length=1, max_length=4096, description="Apprise URL or HTTP URL")
    method: Literal["GET", "POST", "PUT", "PATCH"] = "POST"
    headers: Headers = Field(default_factory=dict, max_length=50)
    body_template: SafeStr | None = Field(None, max_length=16_384)
    content_type: SafeStr = Field("application/json", min_length=1, max_length=128)
    proxy: SafeStr | None = Field(None, max_length=1024, description="http:// or socks5://")
    max_length: int | None = Field(None, le=1_000_000)
    enabled: bool = True

    def spec(self) -> ChannelSpec:
        return ChannelSpec(**self.model_dump())


class ChannelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: SafeStr | None = Field(None, min_length=1, max_length=128)
    url: SafeStr | None = Field(None, min_length=1, max_length=4096)
    method: Literal["GET", "POST", "PUT", "PATCH"] | None = None
    headers: Headers | None = Field(None, max_length=50)
    body_template: SafeStr | None = Field(None, max_length=16_384)
    content_type: SafeStr | None = Field(None, min_length=1, max_length=128)
    proxy: SafeStr | None = Field(None, max_length=1024, description='"" removes the proxy')
    max_length: int | None = Field(None, le=1_000_000, description="0 removes the limit")
    enabled: bool | None = None


class ChannelTest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: SafeStr = Field("zhongshu test", max_length=256)
    content: SafeStr = Field("This is a test message from zhongshu.", max_length=4096)


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_channel(body: ChannelCreate, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Create a channel; a malformed Apprise URL is refused here (422)."""
    return public(await hub.channels.create(p, body.spec()))


@router.get("")
async def list_channels(
    hub: HubDep,
    p: UserDep,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """List channels (yours; admins see all)."""
    rows = await hub.channels.find(p, limit=limit, offset=offset)
    return {"items": [public(r) for r in rows], "limit": limit, "offset": offset}


@router.get("/{channel_id}")
async def get_channel(channel_id: int, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """One channel, secrets masked."""
    return public(await hub.channels.get(channel_id, p))


@router.patch("/{channel_id}")
async def update_channel(
    channel_id: int, body: ChannelUpdate, hub: HubDep, p: WriterDep
) -> dict[str, Any]:
    """Change a channel; fields left out keep their value."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("proxy") == "":
        changes["proxy"] = None
    if changes.get("max_length") == 0:
        changes["max_length"] = None
    if any(v is None for k, v in changes.items() if k not in ("proxy", "max_length")):
        raise errors.InvalidInput('only proxy and max_length may be cleared (with "" and 0)')
    return public(await hub.channels.update(channel_id, p, changes))


@router.delete("/{channel_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_channel(channel_id: int, hub: HubDep, p: WriterDep) -> None:
    """Delete a channel."""
    await hub.channels.delete(channel_id, p)


@router.post("/{channel_id}/test")
async def test_channel(
    channel_id: int, hub: HubDep, p: WriterDep, body: ChannelTest | None = None
) -> dict[str, Any]:
    """Send a test message now; says whether the channel took it and why not."""
    row = await hub.channels.get(channel_id, p)
    body = body or ChannelTest.model_validate({})
    try:
        report = await hub.channels.send(row, Outgoing(body.title, body.content))
    except errors.DeliveryFailed as exc:
        return {"ok": False, "error": exc.message, "retryable": exc.retryable}
    return {"ok": True, "error": None, "truncated": report.truncated}
