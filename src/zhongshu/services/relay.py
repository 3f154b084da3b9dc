"""The Conversation Bus relay: an adapter over the task queue, holding no state of its own.

A *send* is a task (kind ``relay.task`` or ``relay.message``) whose capability is the
``to`` of the message, so any node advertising that capability — a ``zhongshu worker``
with a ``relay.task`` handler, say — gets it like any other task. A child's *callback*
finishes the task once (``TaskService.complete_external``); an *ack* is an event. The
conversation log is the append-only ``events`` table, read back through the tasks it is
about. See docs/relay.md for the wire format and the state mapping.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from zhongshu import errors
from zhongshu.db.event_store import EventStore
from zhongshu.db.task_store import Row, TaskStore
from zhongshu.services.events import Event, EventBus
from zhongshu.services.identity import Principal
from zhongshu.services.tasks import TaskService, TaskSpec

KINDS = ("relay.task", "relay.message")
# Our task states → the seed's ``task_status``. Everything unfinished is "pending" (the
# seed knows pending → completed | failed); ``hub_status`` in replies keeps the detail.
SEED_STATUS = {
    "pending": "pending",
    "leased": "pending",
    "running": "pending",
    "failed": "pending",  # a failed attempt waiting for its retry
    "succeeded": "completed",
    "dead": "failed",
    "cancelled": "cancelled",
}
_ID_ATTEMPTS = 5


def new_task_id() -> str:
    """``t_<ms>_<12 hex>``: the seed's ``t_<ms>`` plus 48 random bits, so ids made in the
    same millisecond by any number of hub processes do not collide."""
    return f"t_{int(time.time() * 1000)}_{secrets.token_hex(6)}"


def seed_status(state: str) -> str:
    return SEED_STATUS.get(state, state)


@dataclass(frozen=True, slots=True)
class RelayMessage:
    """One ``POST /api/relay/send`` (already shape-checked by the API layer)."""

    sender: str
    to: str
    type: Literal["task", "message"] = "task"
    task_id: str | None = None
    cmd: str | None = None
    payload: Any = None
    text: str | None = None

    def task_payload(self) -> Row:
        return {
            "from": self.sender,
            "to": self.to,
            "type": self.type,
            "cmd": self.cmd,
            "payload": self.payload,
            "text": self.text,
        }


class RelayService:
    def __init__(self, tasks: TaskService, store: TaskStore, events: EventStore, bus: EventBus):
        self.tasks = tasks
        self.store = store
        self.events = events
        self.bus = bus

    async def send(self, msg: RelayMessage, sender: Principal) -> tuple[Row, bool]:
        """Queue the message as a task; returns ``(task, created)``.

        A given ``task_id`` is also the idempotency key: sending it again returns the task
        made the first time (``created`` False). Without one, an id is generated (and
        generated again in the unlikely case it was taken).
        """
        if msg.task_id is not None:
            existing = await self.store.get(msg.task_id)
            if existing is not None and existing["kind"] not in KINDS:
                raise errors.Conflict(f"task_id {msg.task_id!r} is taken by a non-relay task")
            return await self._submit(msg, msg.task_id, sender)
        for _ in range(_ID_ATTEMPTS):
            task, created = await self._submit(msg, new_task_id(), sender)
            if created:
                return task, True
        raise errors.Conflict("could not generate a free task id; send again")

    async def _submit(self, msg: RelayMessage, task_id: str, sender: Principal) -> tuple[Row, bool]:
        spec = TaskSpec(
            kind=f"relay.{msg.type}",
            payload=msg.task_payload(),
            capability=msg.to,
            idempotency_key=task_id,
            task_id=task_id,
        )
        try:
            return await self.tasks.submit(spec, sender)
        except KeyError as exc:
            # The id was taken in the meantime by a task with another idempotency key.
            raise errors.Conflict(f"task_id {task_id!r} is taken by another task") from exc

    async def get(self, task_id: str) -> Row:
        """A relay task (any other task id is unknown here)."""
        row = await self.store.get(task_id)
        if row is None or row["kind"] not in KINDS:
            raise errors.TaskNotFound(f"relay task {task_id} not found")
        return row

    async def callback(
        self,
        task_id: str,
        child_id: str,
        done: bool,
        result: Any,
        caller: Principal,
        error: str | None = None,
    ) -> tuple[Row, bool]:
        """A child reports the outcome; returns ``(task, applied)``. Applied at most once:
        a callback for a finished task changes nothing (it is logged as ignored)."""
        await self.get(task_id)
        data = {"via": "relay.callback", "child_id": child_id, "callback_status": _word(done)}
        task, ev = await self.tasks.complete_external(
            task_id, done, result, caller.actor, error=error, data=data
        )
        if ev is None:
            await self._record(
                "relay.callback_ignored",
                task_id,
                caller.actor,
                {"child_id": child_id, "callback_status": _word(done), "was": task["status"]},
            )
        return task, ev is not None

    async def ack(self, task_id: str, ack_by: str, caller: Principal) -> Row:
        """Record that someone (the user, the master) has seen the task's outcome."""
        task = await self.get(task_id)
        await self._record("relay.ack", task_id, caller.actor, {"ack_by": ack_by})
        return task

    async def _record(self, kind: str, task_id: str, actor: str, data: Row) -> None:
        ev = Event(kind, "task", task_id, actor, data, time.time())
        await self.events.append([ev])
        self.bus.publish([ev])

    async def logs(self, limit: int) -> list[Row]:
        """The latest ``limit`` log entries, oldest first."""
        rows = await self.store.kind_events(KINDS, limit=limit, newest_first=True)
        return [log_entry(r) for r in reversed(rows)]


async def iter_log(store: TaskStore, page: int = 1000) -> AsyncIterator[Row]:
    """Every log entry, oldest first (``zhongshu relay export-log``)."""
    after = 0
    while True:
        rows = await store.kind_events(KINDS, after_id=after, limit=page)
        for r in rows:
            yield log_entry(r)
        if len(rows) < page:
            return
        after = rows[-1]["id"]


def _word(done: bool) -> str:
    return "done" if done else "failed"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def log_entry(r: Row) -> Row:
    """One conversation-log entry from an event row joined with its task (docs/relay.md)."""
    data = r["data"] or {}
    entry: Row = {
        "id": r["id"],
        "ts": _iso(r["at"]),
        "event": r["type"].removeprefix("task."),
        "task_id": r["subject_id"],
        "actor": r["actor"],
    }
    kind = r["type"]
    if kind == "task.submitted":
        payload = r["task_payload"] or {}
        entry["event"] = "send"
        for key in ("from", "to", "type", "cmd", "payload", "text"):
            entry[key] = payload.get(key)
    elif kind in ("task.succeeded", "task.dead"):
        done = kind == "task.succeeded"
        entry["status"] = _word(done)
        if data.get("via") == "relay.callback":
            entry["event"] = "callback"
            entry["child_id"] = data.get("child_id")
        else:
            entry["event"] = "result"
            entry["node_id"] = data.get("node_id")
        # A finished task never changes again, so its result belongs to this entry.
        entry["result"] = r["task_result"] if r["task_status"] == kind[5:] else None
        if not done:
            entry["error"] = data.get("error")
    elif kind == "relay.callback_ignored":
        entry.update(event="callback_ignored", child_id=data.get("child_id"))
        entry.update(status=data.get("callback_status"), task_status=seed_status(data["was"]))
    elif kind == "relay.ack":
        entry.update(event="ack", ack_by=data.get("ack_by"))
    else:
        for key in ("node_id", "attempt", "error"):
            if data.get(key) is not None:
                entry[key] = data[key]
    return entry
