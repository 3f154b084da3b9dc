"""Proxies: CRUD (passwords sealed, never shown), and a node's default proxy."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field

from zhongshu.api.deps import AdminDep, HubDep, UserDep, WriterDep
from zhongshu.api.shapes import iso_times
from zhongshu.services.proxies import proxy_public

router = APIRouter(tags=["proxies"])
Protocol = Literal["http", "https", "socks5"]


class ProxyCreate(BaseModel):
    """A proxy as a URL (``socks5://user:pass@host:1080``) or as HisCRM fields
    (``server`` = ``host:port``, ``protocol``, ``username``, ``password``)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=128)
    url: str | None = Field(None, max_length=2048)
    server: str | None = Field(None, max_length=300)
    protocol: Protocol | None = None
    username: str | None = Field(None, max_length=255)
    password: str | None = Field(None, max_length=1024)


class ProxyUpdate(ProxyCreate):
    name: str | None = Field(None, max_length=128)  # type: ignore[assignment]


class NodeProxy(BaseModel):
    model_config = ConfigDict(extra="forbid")
    proxy_id: str | None = Field(max_length=32)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return iso_times(proxy_public(row))


def _address(body: ProxyCreate) -> dict[str, Any]:
    return body.model_dump(exclude={"name"}, exclude_none=True)


@router.post("/api/v1/proxies", status_code=status.HTTP_201_CREATED)
async def create_proxy(body: ProxyCreate, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Create a proxy (422 naming the problem when the address does not parse)."""
    return _public(await hub.proxies.create(p, body.name, _address(body)))


@router.get("/api/v1/proxies")
async def list_proxies(
    hub: HubDep,
    p: UserDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """List your proxies (all for an admin)."""
    rows, total = await hub.proxies.find(p, limit, offset)
    return {"success": True, "items": [_public(r) for r in rows], "total": total}


@router.get("/api/v1/proxies/{proxy_id}")
async def get_proxy(proxy_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """One proxy (the password only as "is set")."""
    return _public(await hub.proxies.get(proxy_id, p))


@router.patch("/api/v1/proxies/{proxy_id}")
async def update_proxy(
    proxy_id: str, body: ProxyUpdate, hub: HubDep, p: WriterDep
) -> dict[str, Any]:
    """Change a proxy; an empty password removes it."""
    changes = body.model_dump(exclude_unset=True)
    return _public(await hub.proxies.update(proxy_id, changes, p))


@router.delete("/api/v1/proxies/{proxy_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_proxy(proxy_id: str, hub: HubDep, p: WriterDep) -> None:
    """Delete a proxy; sources and nodes that used it connect directly."""
    await hub.proxies.delete(proxy_id, p)


@router.put("/api/v1/nodes/{node_id}/proxy")
async def set_node_proxy(
    node_id: str, body: NodeProxy, hub: HubDep, admin: AdminDep
) -> dict[str, Any]:
    """Set (or clear, with null) the proxy a node's sources use when they name none."""
    await hub.nodes.get(node_id)
    await hub.proxies.set_node_proxy(node_id, body.proxy_id, admin)
    return {"node_id": node_id, "proxy_id": body.proxy_id}
