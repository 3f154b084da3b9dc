"""Schedules: cron or interval triggers that submit a task from a template."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from zhongshu.api.deps import HubDep, UserDep, WriterDep
from zhongshu.api.shapes import iso, task_public
from zhongshu.api.validation import SafeJson, SafeStr
from zhongshu.services.tasks import MAX_PRIORITY

router = APIRouter(prefix="/api/v1/schedules", tags=["schedules"])

KIND = r"^[A-Za-z0-9_.:\-]+$"


class ScheduleBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: SafeStr | None = Field(None, max_length=255)
    cron: SafeStr | None = Field(None, min_length=1, max_length=255)
    interval_s: float | None = Field(None, allow_inf_nan=False)
    timezone: SafeStr | None = Field(None, min_length=1, max_length=64)
    payload: SafeJson = None
    capability: SafeStr | None = Field(None, min_length=1, max_length=128)
    priority: int | None = Field(None, ge=-MAX_PRIORITY, le=MAX_PRIORITY)
    max_attempts: int | None = Field(None, ge=1, le=100)
    enabled: bool | None = None


class ScheduleCreate(ScheduleBase):
    kind: SafeStr = Field(min_length=1, max_length=128, pattern=KIND)

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleCreate:
        if (self.cron is None) == (self.interval_s is None):
            raise ValueError("give exactly one of cron and interval_s")
        return self


class ScheduleUpdate(ScheduleBase):
    kind: SafeStr | None = Field(None, min_length=1, max_length=128, pattern=KIND)

    @model_validator(mode="after")
    def _one_trigger(self) -> ScheduleUpdate:
        if self.cron is not None and self.interval_s is not None:
            raise ValueError("give either cron or interval_s, not both")
        return self


def schedule_public(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": s["id"],
        "owner_id": s["owner_id"],
        "name": s["name"],
        "cron": s["cron"],
        "interval_s": s["interval_s"],
        "timezone": s["timezone"],
        "template": {
            "kind": s["kind"],
            "payload": s["payload"],
            "capability": s["capability"],
            "priority": s["priority"],
            "max_attempts": s["max_attempts"],
        },
        "enabled": bool(s["enabled"]),
        "next_run_at": iso(s["next_run_at"]),
        "last_run_at": iso(s["last_run_at"]),
        "last_due_at": iso(s["last_due_at"]),
        "last_task_id": s["last_task_id"],
        "run_count": s["run_count"],
        "created_at": iso(s["created_at"]),
        "updated_at": iso(s["updated_at"]),
    }


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_schedule(body: ScheduleCreate, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Create a schedule (cron or interval) that submits a task from its template."""
    spec = body.model_dump(exclude_none=True)
    return schedule_public(await hub.schedules.create(spec, p))


@router.get("")
async def list_schedules(
    hub: HubDep,
    p: UserDep,
    enabled: bool | None = Query(None),
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """List schedules, newest first (yours; admins see all)."""
    rows, total = await hub.schedules.find(p, enabled=enabled, limit=limit, offset=offset)
    return {
        "items": [schedule_public(s) for s in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/{schedule_id}")
async def get_schedule(schedule_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """One schedule."""
    return schedule_public(await hub.schedules.get(schedule_id, p))


@router.patch("/{schedule_id}")
async def update_schedule(
    schedule_id: str, body: ScheduleUpdate, hub: HubDep, p: WriterDep
) -> dict[str, Any]:
    """Change a schedule; a new trigger or re-enabling recomputes the next run from now."""
    changes = body.model_dump(exclude_unset=True)
    return schedule_public(await hub.schedules.update(schedule_id, changes, p))


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_schedule(schedule_id: str, hub: HubDep, p: WriterDep) -> Response:
    """Delete a schedule (tasks it already submitted stay)."""
    await hub.schedules.delete(schedule_id, p)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{schedule_id}/run", status_code=status.HTTP_202_ACCEPTED)
async def run_schedule(schedule_id: str, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Run now: submit the template's task immediately."""
    schedule, task = await hub.schedules.run_now(schedule_id, p)
    return {"schedule": schedule_public(schedule), "task": task_public(task)}
