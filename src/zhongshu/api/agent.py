"""HTTP pull door of the worker protocol (docs/protocol.md)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from zhongshu.api.deps import HubDep, NodeDep
from zhongshu.api.validation import SafeJson, SafeStr

router = APIRouter(prefix="/api/v1/agent", tags=["agent"])


class Register(BaseModel):
    model_config = ConfigDict(extra="allow")
    workerId: str | None = Field(None, max_length=128)
    capabilities: list[SafeStr] = Field(default_factory=list, max_length=500)
    capacity: int | None = Field(None, ge=1, le=10_000)
    maxAccounts: int | None = Field(None, ge=0, le=100_000)
    host: str = Field("", max_length=255)
    pid: int | None = None
    port: int | None = None
    version: str = Field("", max_length=64)


class Held(BaseModel):
    task_id: SafeStr = Field(max_length=64)
    lease_token: int


class Stats(BaseModel):
    model_config = ConfigDict(extra="allow")
    cpu: float | None = None
    memory: float | None = None
    running: int | None = None
    completed: int | None = None


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="allow")
    workerId: str | None = Field(None, max_length=128)
    stats: Stats = Field(default_factory=Stats)
    timestamp: float | None = None
    running: list[Held] = Field(default_factory=list, max_length=10_000)


class LeaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_tasks: int = Field(1, ge=1, le=100)
    wait_s: float = Field(20.0, ge=0, le=60)


class StartRequest(BaseModel):
    lease_token: int


class StartedBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[Held] = Field(min_length=1, max_length=1000)


class ResultRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lease_token: int
    status: Literal["succeeded", "failed"]
    result: SafeJson = None
    error: SafeStr | None = Field(None, max_length=100_000)
    retryable: bool = True


class ResultItem(ResultRequest):
    task_id: SafeStr = Field(max_length=64)


class ResultBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    results: list[ResultItem] = Field(min_length=1, max_length=1000)


@router.post("/register")
async def register(body: Register, hub: HubDep, node: NodeDep) -> dict[str, Any]:
    """Announce this node: capabilities, capacity, version, host, pid."""
    return await hub.agent.register(node, body.model_dump())


@router.post("/heartbeat")
async def heartbeat(body: Heartbeat, hub: HubDep, node: NodeDep) -> dict[str, Any]:
    """Say the node is alive; the reply lists tasks to stop."""
    return await hub.agent.heartbeat(node, body.model_dump())


@router.post("/lease")
async def lease(body: LeaseRequest, hub: HubDep, node: NodeDep) -> dict[str, Any]:
    """Wait up to wait_s for up to max_tasks tasks."""
    return {"tasks": await hub.agent.lease(node, body.max_tasks, body.wait_s)}


@router.post("/tasks/{task_id}/start")
async def start(task_id: str, body: StartRequest, hub: HubDep, node: NodeDep) -> dict[str, Any]:
    """Mark a leased task as running."""
    ok = await hub.agent.started(node, [{"task_id": task_id, "lease_token": body.lease_token}])
    return {"task_id": task_id, "accepted": ok[0]}


@router.post("/tasks/{task_id}/result")
async def result(task_id: str, body: ResultRequest, hub: HubDep, node: NodeDep) -> dict[str, Any]:
    """Report how an attempt ended; accepted=false means drop it (stale lease)."""
    acks = await hub.agent.results(node, [{"task_id": task_id, **body.model_dump()}])
    return acks[0]


@router.post("/started")
async def started_batch(body: StartedBatch, hub: HubDep, node: NodeDep) -> dict[str, Any]:
    """Mark several leased tasks as running in one call."""
    ok = await hub.agent.started(node, [t.model_dump() for t in body.tasks])
    return {"accepted": ok}


class ReleaseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[Held] = Field(default_factory=list, max_length=1000)
    reason: SafeStr = Field("", max_length=500)
    draining: bool = False


@router.post("/release")
async def release(body: ReleaseRequest, hub: HubDep, node: NodeDep) -> dict[str, Any]:
    """Hand back leases this node will not finish; they are queued again at once."""
    items = [t.model_dump() for t in body.tasks]
    return {"released": await hub.agent.release(node, items, body.draining)}


@router.post("/results")
async def results_batch(body: ResultBatch, hub: HubDep, node: NodeDep) -> dict[str, Any]:
    """Report several finished attempts in one call (one transaction)."""
    return {"acks": await hub.agent.results(node, [r.model_dump() for r in body.results])}
