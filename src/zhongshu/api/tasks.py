"""Tasks: submit (one or a batch), list, show with attempts, cancel, retry."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from zhongshu.api.deps import HubDep, UserDep, WriterDep
from zhongshu.api.shapes import attempt_public, delivery_public, task_public
from zhongshu.api.validation import SafeJson, SafeStr
from zhongshu.services.tasks import MAX_PRIORITY, TaskSpec

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])

MAX_BATCH = 1000
TaskState = Literal["pending", "leased", "running", "succeeded", "failed", "dead", "cancelled"]


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: SafeStr = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")
    payload: SafeJson = Field(default_factory=dict)
    capability: SafeStr | None = Field(None, min_length=1, max_length=128)
    priority: int = Field(0, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    max_attempts: int | None = Field(None, ge=1, le=100)
    timeout_s: float | None = Field(None, gt=0, le=7 * 86400)
    run_at: datetime | None = None
    delay_s: float | None = Field(None, ge=0, le=365 * 86400)
    idempotency_key: SafeStr | None = Field(None, min_length=1, max_length=255)
    callback_url: HttpUrl | None = None

    @model_validator(mode="after")
    def _one_start_time(self) -> TaskCreate:
        if self.run_at is not None and self.delay_s is not None:
            raise ValueError("give either run_at or delay_s, not both")
        if self.run_at is not None and self.run_at.tzinfo is None:
            raise ValueError("run_at must carry a timezone, e.g. 2026-01-01T12:00:00Z")
        return self

    def spec(self) -> TaskSpec:
        return TaskSpec(
            kind=self.kind,
            payload=self.payload,
            capability=self.capability,
            priority=self.priority,
            max_attempts=self.max_attempts,
            timeout_s=self.timeout_s,
            run_at=self.run_at.timestamp() if self.run_at else None,
            delay_s=self.delay_s,
            idempotency_key=self.idempotency_key,
            callback_url=str(self.callback_url) if self.callback_url else None,
        )


class TaskBatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tasks: list[TaskCreate] = Field(min_length=1, max_length=MAX_BATCH)


@router.post("", status_code=status.HTTP_201_CREATED)
async def submit_task(
    body: TaskCreate, hub: HubDep, p: WriterDep, response: Response
) -> dict[str, Any]:
    """Submit a task; a repeated idempotency key returns the first task (200)."""
    task, created = await hub.tasks.submit(body.spec(), p)
    if not created:
        response.status_code = status.HTTP_200_OK
    return {**task_public(task), "created": created}


@router.post("/batch", status_code=status.HTTP_201_CREATED)
async def submit_batch(body: TaskBatchCreate, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Submit up to 1000 tasks in one transaction."""
    out = await hub.tasks.submit_many([t.spec() for t in body.tasks], p)
    return {
        "items": [{**task_public(t), "created": c} for t, c in out],
        "created": sum(1 for _, c in out if c),
    }


@router.get("")
async def list_tasks(
    hub: HubDep,
    p: UserDep,
    status_: TaskState | None = Query(None, alias="status"),
    kind: str | None = Query(None, max_length=128),
    capability: str | None = Query(None, max_length=128),
    node_id: str | None = Query(None, alias="node", max_length=64),
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """List tasks, newest first (yours; admins see all)."""
    rows, total = await hub.tasks.find(
        p,
        status=status_,
        kind=kind,
        capability=capability,
        node_id=node_id,
        limit=limit,
        offset=offset,
    )
    return {
        "items": [task_public(t) for t in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/{task_id}")
async def get_task(task_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """One task with its attempts and callback deliveries."""
    task = await hub.tasks.get(task_id, p)
    return {
        **task_public(task),
        "attempts_history": [attempt_public(a) for a in await hub.tasks.attempts(task_id)],
        "callback_deliveries": [delivery_public(d) for d in await hub.tasks.deliveries(task_id)],
    }


@router.post("/{task_id}/cancel")
async def cancel_task(task_id: str, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Cancel an unfinished task; a node running it is told to stop."""
    return task_public(await hub.tasks.cancel(task_id, p))


@router.post("/{task_id}/retry")
async def retry_task(task_id: str, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Run a failed or dead task again now."""
    return task_public(await hub.tasks.retry(task_id, p))
