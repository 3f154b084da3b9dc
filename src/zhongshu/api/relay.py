"""The Conversation Bus relay (``/api/relay/*``), compatible with the seed's wire format.

Bodies are read as JSON whatever the ``Content-Type`` (the seed's own examples post with
``curl -d`` and no JSON header); every refusal on these routes answers the seed's
``{status: "error", message}`` (with ``detail`` too, like the rest of the API). Writes need
a relay key (``X-Relay-API-Key`` or ``?api_key=``, checked by the app-wide policy); reads
are public, as in the seed — see docs/relay.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zhongshu import errors
from zhongshu.api.deps import RELAY_HEADER, HubDep, RelayKeyDep, hub_of
from zhongshu.api.validation import SafeJson, SafeStr
from zhongshu.services import relay as relay_mod
from zhongshu.services.relay import RelayMessage

M = TypeVar("M", bound=BaseModel)
_DISABLED = (
    "the relay is disabled on this hub: set ZHONGSHU_RELAY_ENABLED=true and "
    "ZHONGSHU_RELAY_API_KEYS='[\"<long random key>\"]' (or relay_enabled / relay_api_keys "
    f"in config.yaml), then send the key in the {RELAY_HEADER} header"
)
_TASK_ID = r"^[A-Za-z0-9_.:\-]+$"


def _error(status_code: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"status": "error", "message": message, "detail": message}
    return JSONResponse(body, status_code, headers=headers)


class RelayRoute(APIRoute):
    """Answers every refusal in the seed's shape; writes are refused at once (401) while
    the relay is disabled, before any key is looked at."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        is_write = "POST" in (self.methods or ())

        async def route(request: Request) -> Response:
            if is_write and not hub_of(request).settings.relay_enabled:
                return _error(401, _DISABLED)
            try:
                return await handle(request)
            except errors.ZhongshuError as exc:
                headers = {}
                if isinstance(exc, errors.TooManyRequests):
                    headers["Retry-After"] = str(max(1, int(exc.retry_after_s + 0.999)))
                code = 400 if isinstance(exc, errors.InvalidInput) else exc.status_code
                return _error(code, exc.message, headers)
            except RequestValidationError as exc:
                return _error(400, _problems(exc.errors()))

        return route


router = APIRouter(prefix="/api/relay", tags=["relay"], route_class=RelayRoute)


class RelaySend(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    sender: SafeStr = Field(alias="from", min_length=1, max_length=128)
    to: SafeStr = Field(min_length=1, max_length=128)
    type: Literal["task", "message"] = "task"
    task_id: SafeStr | None = Field(None, min_length=1, max_length=64, pattern=_TASK_ID)
    cmd: SafeStr | None = Field(None, max_length=256)
    payload: SafeJson = None
    text: SafeStr | None = Field(None, max_length=100_000)


class RelayCallback(BaseModel):
    model_config = ConfigDict(extra="ignore")
    task_id: SafeStr = Field(min_length=1, max_length=64)
    child_id: SafeStr = Field("", max_length=128)
    status: Literal["done", "failed"]
    result: SafeJson = None
    error: SafeStr | None = Field(None, max_length=10_000)


class RelayAck(BaseModel):
    model_config = ConfigDict(extra="ignore")
    task_id: SafeStr = Field(min_length=1, max_length=64)
    ack_by: SafeStr = Field("", max_length=128)


def _problems(errs: Any) -> str:
    missing = [str(e["loc"][-1]) for e in errs if e.get("type") == "missing" and e.get("loc")]
    if missing:
        return "missing required field(s): " + ", ".join(missing)
    parts = []
    for e in errs:
        loc = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc or 'body'}: {e['msg']}")
    return "; ".join(parts)


async def _body(request: Request, model: type[M]) -> M:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.InvalidInput(f"the body must be a JSON object: {exc}") from None
    if not isinstance(data, dict):
        raise errors.InvalidInput("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise errors.InvalidInput(_problems(exc.errors())) from None


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


@router.post("/send", openapi_extra=_schema(RelaySend))
async def send(request: Request, hub: HubDep, p: RelayKeyDep) -> dict[str, Any]:
    """Send a task or message to a node capability; answers the task id."""
    body = await _body(request, RelaySend)
    msg = RelayMessage(
        sender=body.sender,
        to=body.to,
        type=body.type,
        task_id=body.task_id,
        cmd=body.cmd,
        payload=body.payload,
        text=body.text,
    )
    task, created = await hub.relay.send(msg, p)
    return {"status": "ok", "task_id": task["id"], "created": created}


@router.post("/callback", openapi_extra=_schema(RelayCallback))
async def callback(request: Request, hub: HubDep, p: RelayKeyDep) -> dict[str, Any]:
    """A child reports a task done or failed; applied once, repeats are acknowledged."""
    body = await _body(request, RelayCallback)
    task, applied = await hub.relay.callback(
        body.task_id, body.child_id, body.status == "done", body.result, p, error=body.error
    )
    return {
        "status": "ok",
        "task_id": task["id"],
        "task_status": relay_mod.seed_status(task["status"]),
        "applied": applied,
    }


@router.post("/ack", openapi_extra=_schema(RelayAck))
async def ack(request: Request, hub: HubDep, p: RelayKeyDep) -> dict[str, Any]:
    """Record that a task's outcome was seen."""
    body = await _body(request, RelayAck)
    task = await hub.relay.ack(body.task_id, body.ack_by, p)
    return {"status": "ok", "task_id": task["id"]}


@router.get("/logs")
async def logs(hub: HubDep, limit: int = Query(50, ge=1, le=1000)) -> dict[str, Any]:
    """The latest conversation-log entries, oldest first (public, as in the seed)."""
    return {"status": "ok", "logs": await hub.relay.logs(limit)}


# The parameter is not called task_id on purpose: it names relay tasks only.
@router.get("/task-status/{relay_task_id}")
async def task_status(relay_task_id: str, hub: HubDep) -> dict[str, Any]:
    """A relay task's status (public, as in the seed)."""
    task = await hub.relay.get(relay_task_id)
    return {
        "status": "ok",
        "task_id": task["id"],
        "task_status": relay_mod.seed_status(task["status"]),
        "hub_status": task["status"],
    }
