"""WeRSS message tasks: on a cron, render what is new in some feeds and POST it to a webhook.

Field names follow WeRSS (``name, message_type, message_template, web_hook_url, mps_id,
cron_exp, status, headers, cookies``); ``status`` is 1 = enabled, 0 = disabled.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from zhongshu.api.deps import HubDep, UserDep, WriterDep
from zhongshu.api.shapes import iso, task_public
from zhongshu.api.validation import SafeStr
from zhongshu.hub import Hub

router = APIRouter(prefix="/api/v1/message-tasks", tags=["message tasks"])

StrMap = dict[SafeStr, SafeStr]
MpsId = list[SafeStr | dict[str, Any]] | SafeStr


class MessageTaskBase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    message_type: int | None = Field(None, description="0 = message, 1 = webhook")
    mps_id: MpsId | None = Field(None, description="ids of the sources (feeds) to watch")
    timezone: SafeStr | None = Field(None, min_length=1, max_length=64)
    status: int | None = Field(None, description="1 = enabled, 0 = disabled")
    headers: StrMap | None = None
    cookies: StrMap | SafeStr | None = None


class MessageTaskCreate(MessageTaskBase):
    name: SafeStr = Field(min_length=1, max_length=255)
    message_template: SafeStr = Field(min_length=1)
    web_hook_url: SafeStr = Field(min_length=1, max_length=2048)
    cron_exp: SafeStr = Field(min_length=1, max_length=255)


class MessageTaskUpdate(MessageTaskBase):
    name: SafeStr | None = Field(None, min_length=1, max_length=255)
    message_template: SafeStr | None = Field(None, min_length=1)
    web_hook_url: SafeStr | None = Field(None, min_length=1, max_length=2048)
    cron_exp: SafeStr | None = Field(None, min_length=1, max_length=255)


def message_task_public(hub: Hub, m: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": m["id"],
        "owner_id": m["owner_id"],
        "name": m["name"],
        "message_type": m["message_type"],
        "message_template": m["message_template"],
        "web_hook_url": m["web_hook_url"],
        "mps_id": m["mps_id"],
        "cron_exp": m["cron_exp"],
        "timezone": m["timezone"],
        "status": m["status"],
        "headers": hub.message_tasks.masked(m["headers"]),
        "cookies": hub.message_tasks.masked(m["cookies"]),
        "next_run_at": iso(m["next_run_at"]),
        "last_run_at": iso(m["last_run_at"]),
        "last_due_at": iso(m["last_due_at"]),
        "last_task_id": m["last_task_id"],
        "run_count": m["run_count"],
        "created_at": iso(m["created_at"]),
        "updated_at": iso(m["updated_at"]),
    }


def delivery_public(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "task_id": d["task_id"],
        "attempt": d["attempt"],
        "feed_id": d["part"],
        "articles": d["articles"],
        "at": iso(d["at"]),
        "status_code": d["status_code"],
        "ok": bool(d["ok"]),
        "error": d["error"],
        "duration_ms": round(d["duration_ms"], 1),
    }


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_message_task(body: MessageTaskCreate, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Create a message task."""
    row = await hub.message_tasks.create(body.model_dump(exclude_none=True), p)
    return message_task_public(hub, row)


@router.get("")
async def list_message_tasks(
    hub: HubDep,
    p: UserDep,
    status_: int | None = Query(None, alias="status", ge=0, le=1),
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """List message tasks, newest first (yours; admins see all)."""
    rows, total = await hub.message_tasks.find(p, status=status_, limit=limit, offset=offset)
    return {
        "items": [message_task_public(hub, m) for m in rows],
        "total": total,
        "limit": limit,
        "offset": offset,
    }


@router.get("/{message_task_id}")
async def get_message_task(message_task_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """One message task with its latest webhook deliveries."""
    row = await hub.message_tasks.get(message_task_id, p)
    deliveries = await hub.message_tasks.deliveries(message_task_id)
    return {
        **message_task_public(hub, row),
        "deliveries": [delivery_public(d) for d in deliveries],
    }


async def _update(
    message_task_id: str, body: MessageTaskUpdate, hub: Hub, p: Any
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True)
    return message_task_public(hub, await hub.message_tasks.update(message_task_id, changes, p))


@router.put("/{message_task_id}")
async def put_message_task(
    message_task_id: str, body: MessageTaskUpdate, hub: HubDep, p: WriterDep
) -> dict[str, Any]:
    """Change a message task (WeRSS style: the fields given)."""
    return await _update(message_task_id, body, hub, p)


@router.patch("/{message_task_id}")
async def patch_message_task(
    message_task_id: str, body: MessageTaskUpdate, hub: HubDep, p: WriterDep
) -> dict[str, Any]:
    """Change the given fields of a message task."""
    return await _update(message_task_id, body, hub, p)


@router.delete("/{message_task_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_message_task(message_task_id: str, hub: HubDep, p: WriterDep) -> Response:
    """Delete a message task."""
    await hub.message_tasks.delete(message_task_id, p)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{message_task_id}/run", status_code=status.HTTP_202_ACCEPTED)
async def run_message_task(message_task_id: str, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Run now: collect what is new since the last run and deliver it."""
    row, task = await hub.message_tasks.run_now(message_task_id, p)
    return {"message_task": message_task_public(hub, row), "task": task_public(task)}
