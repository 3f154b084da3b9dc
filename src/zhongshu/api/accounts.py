"""The HisCRM master's HTTP surface over sources and nodes: ``/api/v1/accounts`` and
``/api/v1/workers`` with the seed's field names and ``{success, …}`` replies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from pydantic import ConfigDict

from zhongshu import errors
from zhongshu.api.deps import HubDep, UserDep, WriterDep
from zhongshu.api.sources import LoginStatus, SourceCreate, SourceUpdate, changes_of
from zhongshu.services import nodes as node_rules
from zhongshu.services.sources import account_view

router = APIRouter(tags=["hiscrm"])


# The seed's names for the two source fields it calls otherwise; the rest are the same.
_SEED_NAMES = {"name": "account_name", "monitor_interval_s": "monitor_interval"}


def _seed_name(field: str) -> str:
    return _SEED_NAMES.get(field, field)


class AccountCreate(SourceCreate):
    """``SourceCreate`` under the seed's field names: one set of rules for both APIs, and
    the body dumps with the service's names."""

    model_config = ConfigDict(extra="forbid", alias_generator=_seed_name)


class AccountUpdate(SourceUpdate):
    """``SourceUpdate`` under the seed's field names (see ``AccountCreate``)."""

    model_config = ConfigDict(extra="forbid", alias_generator=_seed_name)


@router.get("/api/v1/accounts")
async def list_accounts(
    hub: HubDep,
    p: UserDep,
    platform: Annotated[str | None, Query(max_length=64)] = None,
    status_: Annotated[Literal["active", "inactive"] | None, Query(alias="status")] = None,
    login_status: LoginStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    """All your accounts (HisCRM shape)."""
    rows, total = await hub.sources.find(
        p, platform=platform, status=status_, login_status=login_status, limit=limit, offset=offset
    )
    return {"success": True, "accounts": [account_view(r) for r in rows], "total": total}


@router.post("/api/v1/accounts", status_code=status.HTTP_201_CREATED)
async def create_account(body: AccountCreate, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Create an account (HisCRM shape)."""
    row = await hub.sources.create(p, body.model_dump())
    return {"success": True, "account": account_view(row)}


@router.get("/api/v1/accounts/{source_id}")
async def get_account(source_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """One account (HisCRM shape)."""
    return {"success": True, "account": account_view(await hub.sources.get(source_id, p))}


@router.put("/api/v1/accounts/{source_id}")
async def update_account(
    source_id: str, body: AccountUpdate, hub: HubDep, p: WriterDep
) -> dict[str, Any]:
    """Update an account (fields not sent stay as they are)."""
    row = await hub.sources.update(source_id, changes_of(body.model_dump(exclude_unset=True)), p)
    return {"success": True, "account": account_view(row)}


@router.delete("/api/v1/accounts/{source_id}")
async def delete_account(source_id: str, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Delete an account."""
    await hub.sources.delete(source_id, p)
    return {"success": True}


def worker_view(n: dict[str, Any], assigned: int) -> dict[str, Any]:
    """A node as a HisCRM worker (epoch seconds)."""
    own = node_rules.node_capability(n["id"])
    return {
        "id": n["id"],
        "name": n["name"],
        "host": n["host"],
        "port": None,
        "status": node_rules.public_status(n),
        "capabilities": [c for c in node_rules.effective_capabilities(n) if c != own],
        "max_accounts": n["max_accounts"],
        "assigned_accounts": assigned,
        "last_heartbeat": None if n["last_heartbeat_at"] is None else int(n["last_heartbeat_at"]),
        "started_at": None if n["registered_at"] is None else int(n["registered_at"]),
        "version": n["version"],
        "metadata": {
            "kind": n["kind"],
            "capacity": node_rules.effective_capacity(n),
            "pid": n["pid"],
            "stats": n["stats"],
        },
        "created_at": int(n["created_at"]),
    }


@router.get("/api/v1/workers")
async def list_workers(hub: HubDep, p: UserDep) -> dict[str, Any]:
    """Workers (nodes) with their assigned account counts (HisCRM shape)."""
    load = await hub.sources.load_by_node()
    rows = await hub.nodes.find(p.owner_filter)
    return {"success": True, "workers": [worker_view(n, load.get(n["id"], 0)) for n in rows]}


@router.get("/api/v1/workers/{node_id}")
async def get_worker(node_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """One worker, with the accounts it serves that you may see."""
    node = await hub.nodes.get(node_id)
    if not p.may_see(node["owner_id"]):
        raise errors.NodeNotFound(f"node {node_id} not found")
    rows = await hub.sources.on_node(node_id)
    total = len(rows)
    visible = [r for r in rows if p.may_see(r["owner_id"])]
    return {
        "success": True,
        "worker": {
            **worker_view(node, total),
            "accounts": [account_view(r) for r in visible],
        },
    }
