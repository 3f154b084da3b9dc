"""Node administration: create (credentials shown once), rotate, list, update, delete."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from zhongshu import errors
from zhongshu.api.deps import AdminDep, HubDep, UserDep
from zhongshu.api.shapes import node_public

router = APIRouter(prefix="/api/v1/nodes", tags=["nodes"])

Capability = str


class NodeCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    kind: Literal["worker", "hub"] = "worker"
    capabilities: list[Capability] = Field(default_factory=list, max_length=200)
    capacity: int = Field(8, ge=1, le=10_000)
    max_accounts: int = Field(10, ge=0, le=100_000)


class NodeUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, min_length=1, max_length=128)
    capabilities: list[Capability] | None = Field(None, max_length=200)
    capacity: int | None = Field(None, ge=1, le=10_000)
    max_accounts: int | None = Field(None, ge=0, le=100_000)
    disabled: bool | None = None


def _with_credentials(node: dict[str, Any], secret: str) -> dict[str, Any]:
    return {
        **node_public(node),
        "credentials": {
            "access_key": node["access_key"],
            "secret_key": secret,
            "authorization": f"AK-SK {node['access_key']}:{secret}",
            "note": "the secret is shown once; store it now",
        },
    }


async def _visible(hub: HubDep, node_id: str, p: UserDep) -> dict[str, Any]:
    node = await hub.nodes.get(node_id)
    if not p.may_see(node["owner_id"]):
        raise errors.NodeNotFound(f"node {node_id} not found")
    return node


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_node(body: NodeCreate, hub: HubDep, admin: AdminDep) -> dict[str, Any]:
    """Create a node and return its key pair (the secret is shown only now)."""
    node, secret = await hub.nodes.create(
        body.name,
        kind=body.kind,
        capabilities=body.capabilities,
        capacity=body.capacity,
        max_accounts=body.max_accounts,
        actor=admin,
    )
    return _with_credentials(node, secret)


@router.get("")
async def list_nodes(hub: HubDep, p: UserDep) -> dict[str, Any]:
    """List nodes with their status and last heartbeat."""
    rows = await hub.nodes.find(p.owner_filter)
    items = []
    for n in rows:
        session = hub.dispatcher.sessions.get(n["id"])
        items.append(node_public(n, len(session.held) if session else None))
    return {"items": items, "total": len(items)}


@router.get("/{node_id}")
async def get_node(node_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """One node, with live stats and the tasks it holds."""
    node = await _visible(hub, node_id, p)
    running = [
        {"id": t["id"], "kind": t["kind"], "status": t["status"]}
        for t in await hub.tasks.held_by_node(node_id)
    ]
    return {**node_public(node, len(running)), "tasks": running}


@router.patch("/{node_id}")
async def update_node(
    node_id: str, body: NodeUpdate, hub: HubDep, admin: AdminDep
) -> dict[str, Any]:
    """Change capacity or capabilities, or disable/enable a node."""
    node = await hub.nodes.update(node_id, body.model_dump(exclude_none=True), admin)
    return node_public(node)


@router.post("/{node_id}/credentials")
async def rotate_credentials(node_id: str, hub: HubDep, admin: AdminDep) -> dict[str, Any]:
    """Replace the node's key pair; the old one stops working at once."""
    node, secret = await hub.nodes.rotate_credentials(node_id, admin)
    return _with_credentials(node, secret)


@router.delete("/{node_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_node(node_id: str, hub: HubDep, admin: AdminDep) -> None:
    """Delete a node; its credentials stop working at once."""
    await hub.nodes.delete(node_id, admin)
