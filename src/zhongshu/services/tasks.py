"""The task queue: submit, lease, start, settle, cancel, retry, reap.

States: ``pending → leased → running → succeeded``; a failed attempt goes to ``failed``
(waiting for its retry at ``run_at``) or, after ``max_attempts``, to ``dead``; ``cancelled``
from any unfinished state. A lease carries a fencing token (``lease_token``): a start or a
result is taken only with the current token, so a task re-leased after its node went quiet
can never record two successes.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zhongshu import errors
from zhongshu.db.task_store import ACTIVE_STATES, Ack, Outcome, Row, TaskStore
from zhongshu.services.events import Event, EventBus
from zhongshu.services.identity import SYSTEM, Principal

MAX_PRIORITY = 1000


@dataclass(slots=True)
class TaskSpec:
    """A task to submit (already shape-checked by the API layer)."""

    kind: str
    payload: Any = field(default_factory=dict)
    capability: str | None = None
    priority: int = 0
    max_attempts: int | None = None
    timeout_s: float | None = None
    run_at: float | None = None
    delay_s: float | None = None
    idempotency_key: str | None = None
    callback_url: str | None = None
    task_id: str | None = None


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    default_max_attempts: int = 3
    default_timeout_s: float = 300.0
    lease_grace_s: float = 5.0
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0


def retry_delay_s(
    attempt: int, base_s: float, cap_s: float, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, capped."""
    # The exponent is bounded so huge attempt numbers cannot overflow a float.
    ceiling = min(cap_s, base_s * (2.0 ** min(max(0, attempt - 1), 64)))
    return ceiling / 2 + rand() * ceiling / 2


class TaskService:
    def __init__(self, store: TaskStore, bus: EventBus, policy: QueuePolicy) -> None:
        self.store = store
        self.bus = bus
        self.policy = policy

    # --- submit ------------------------------------------------------------------------

    def _row(self, spec: TaskSpec, owner: Principal, now: float) -> Row:
        run_at = spec.run_at if spec.run_at is not None else now + (spec.delay_s or 0.0)
        return {
            "id": spec.task_id or uuid.uuid4().hex,
            "kind": spec.kind,
            "capability": spec.capability or spec.kind,
            "payload": spec.payload,
            "priority": spec.priority,
            "status": "pending",
            "max_attempts": spec.max_attempts or self.policy.default_max_attempts,
            "timeout_s": spec.timeout_s or self.policy.default_timeout_s,
            "run_at": run_at,
            "idempotency_key": spec.idempotency_key,
            "owner_id": owner.id,
            "callback_url": spec.callback_url,
            "callback_status": "none",
            "created_at": now,
            "updated_at": now,
        }

    async def submit_many(
        self, specs: Sequence[TaskSpec], owner: Principal
    ) -> list[tuple[Row, bool]]:
        """Store tasks durably; returns ``(task, created)`` — created is False for a repeat
        of an idempotency key, which returns the task first submitted with it."""
        now = time.time()
        rows = [self._row(s, owner, now) for s in specs]
        evs = [
            Event(
                "task.submitted",
                "task",
                r["id"],
                owner.actor,
                {"kind": r["kind"], "capability": r["capability"], "priority": r["priority"]},
                now,
            )
            for r in rows
        ]
        out = await self.store.insert_many(rows, evs)
        created = {r["id"] for r, c in out if c}
        self.bus.publish([e for e in evs if e.subject_id in created])
        return out

    async def submit(self, spec: TaskSpec, owner: Principal) -> tuple[Row, bool]:
        return (await self.submit_many([spec], owner))[0]

    # --- read --------------------------------------------------------------------------

    async def get(self, task_id: str, viewer: Principal | None = None) -> Row:
        row = await self.store.get(task_id)
        if row is None or (viewer is not None and not _may_see(viewer, row)):
            raise errors.TaskNotFound(f"task {task_id} not found")
        return row

    async def held_by_node(self, node_id: str) -> list[Row]:
        """Tasks a node holds now (leased or running), oldest first."""
        rows, _ = await self.store.find(node_id=node_id, limit=10_000)
        held = [t for t in rows if t["status"] in ("leased", "running")]
        return sorted(held, key=lambda t: t["seq"])

    async def attempts(self, task_id: str) -> list[Row]:
        return await self.store.attempts(task_id)

    async def deliveries(self, task_id: str) -> list[Row]:
        return await self.store.deliveries(task_id)

    async def find(self, viewer: Principal, **filters: Any) -> tuple[list[Row], int]:
        owner = viewer.owner_filter
        return await self.store.find(owner_id=owner, **filters)

    # --- the worker side ---------------------------------------------------------------

    async def lease(
        self,
        node_id: str,
        capabilities: Sequence[str],
        limit: int,
        capacity: int | None = None,
    ) -> list[Row]:
        """Lease up to ``limit`` tasks (and, with ``capacity``, no more than the node's
        free slots as counted in the database)."""
        now = time.time()
        leased, evs = await self.store.lease(
            node_id, capabilities, limit, now, self.policy.lease_grace_s, capacity
        )
        self.bus.publish(evs)
        return leased

    async def start(self, node_id: str, held: Sequence[tuple[str, int]]) -> list[bool]:
        now = time.time()
        accepted = await self.store.mark_started(node_id, held, now)
        self.bus.publish(
            [
                Event("task.running", "task", t, f"node:{node_id}", {}, now)
                for (t, _), ok in zip(held, accepted, strict=True)
                if ok
            ]
        )
        return accepted

    async def release(self, node_id: str, held: Sequence[tuple[str, int]]) -> list[str]:
        """A node hands back leases it will not finish (it is shutting down): they go back
        to the queue now, without using up an attempt. Returns the ids taken back."""
        evs = await self.store.release(node_id, held, time.time())
        self.bus.publish(evs)
        return [e.subject_id for e in evs]

    async def settle(self, node_id: str | None, outcomes: Sequence[Outcome]) -> list[Ack]:
        """Record finished attempts; each ack says whether it was taken."""
        now = time.time()
        acks = await self.store.settle(node_id, outcomes, now, self._settle)
        self.bus.publish([a.event for a in acks if a.event is not None])
        return acks

    def _settle(self, row: Row, o: Outcome, now: float) -> tuple[Row, Event]:
        # A lease the reaper took back is the hub's doing, not the node's.
        lost = o.status == "lost"
        actor = f"node:{row['node_id']}" if row.get("node_id") and not lost else "system"
        base: Row = {"updated_at": now, "lease_expires_at": None}
        if not lost and row.get("started_at") is None:
            # A worker reports no start for a task that finished within one flush tick;
            # the lease time is then the best start the hub knows.
            base["started_at"] = row.get("leased_at") or now
        if o.status == "succeeded":
            values = {
                **base,
                "status": "succeeded",
                "result": o.result,
                "error": None,
                "finished_at": now,
            }
        elif o.retryable and row["attempts"] < row["max_attempts"]:
            delay = retry_delay_s(
                row["attempts"], self.policy.retry_base_s, self.policy.retry_cap_s
            )
            values = {
                **base,
                "status": "failed",
                "error": o.error,
                "run_at": now + delay,
                "node_id": None,
            }
        else:
            values = {**base, "status": "dead", "error": o.error, "finished_at": now}
        if values["status"] in ("succeeded", "dead") and row.get("callback_url"):
            values.update(callback_status="pending", callback_next_at=now)
        data = {
            "kind": row["kind"],
            "attempt": row["attempts"],
            "error": o.error,
            "capability": row["capability"],
            "node_id": row.get("node_id"),
            "lease_token": row["lease_token"],
        }
        if values["status"] == "failed":
            data["retry_at"] = values["run_at"]
        return values, Event(f"task.{values['status']}", "task", row["id"], actor, data, now)

    # --- the user side -----------------------------------------------------------------

    async def cancel(self, task_id: str, actor: Principal) -> Row:
        row = await self.get(task_id, actor)
        now = time.time()
        ev = Event(
            "task.cancelled",
            "task",
            task_id,
            actor.actor,
            {"was": row["status"], "node_id": row["node_id"]},
            now,
        )
        values = {
            "status": "cancelled",
            "finished_at": now,
            "updated_at": now,
            "lease_expires_at": None,
        }
        if row.get("callback_url"):
            values.update(callback_status="pending", callback_next_at=now)
        done = await self.store.transition(
            task_id, ("pending", "leased", "running", "failed"), values, ev
        )
        if done is None:
            raise errors.Conflict(f"task {task_id} is {row['status']} and cannot be cancelled")
        self.bus.publish([ev])
        return done

    async def retry(self, task_id: str, actor: Principal) -> Row:
        """Run a failed or dead task again now; a dead task gets one more attempt."""
        row = await self.get(task_id, actor)
        now = time.time()
        ev = Event("task.retried", "task", task_id, actor.actor, {"was": row["status"]}, now)
        values = {
            "status": "pending",
            "run_at": now,
            "node_id": None,
            "finished_at": None,
            "updated_at": now,
            "max_attempts": max(row["max_attempts"], row["attempts"] + 1),
            "callback_status": "none",
        }
        done = await self.store.transition(task_id, ("failed", "dead"), values, ev)
        if done is None:
            raise errors.Conflict(
                f"task {task_id} is {row['status']}: only failed or dead tasks can be retried"
            )
        self.bus.publish([ev])
        return done

    async def complete_external(
        self,
        task_id: str,
        succeeded: bool,
        result: Any,
        actor: str,
        *,
        error: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> tuple[Row, Event | None]:
        """Finish an unfinished task on someone else's word (a relay child's callback),
        whatever state it is in: pending, leased, running or waiting for a retry.

        Parameters
        ----------
        succeeded:
            ``True`` → ``succeeded`` with ``result``; ``False`` → ``dead`` (no retry).
        actor:
            Who finished it, recorded on the event (e.g. ``relay:relay``).
        data:
            Extra fields for the event (e.g. the child's id).

        Returns
        -------
        ``(task, event)``; ``event`` is ``None`` when the task was already finished and
        nothing changed, so a repeated completion is never applied twice.
        """

        def finish(row: Row) -> tuple[Row, Event]:
            now = time.time()
            status = "succeeded" if succeeded else "dead"
            values: Row = {
                "status": status,
                "result": result,
                "error": None if succeeded else (error or "reported failed"),
                "finished_at": now,
                "updated_at": now,
                "lease_expires_at": None,
            }
            if row.get("callback_url"):
                values.update(callback_status="pending", callback_next_at=now)
            ev_data = {
                "attempt": row["attempts"],
                "error": values["error"],
                "capability": row["capability"],
                "node_id": row.get("node_id"),
                "was": row["status"],
                **(data or {}),
            }
            return values, Event(f"task.{status}", "task", task_id, actor, ev_data, now)

        row, ev = await self.store.complete(task_id, ACTIVE_STATES, finish, "external")
        if row is None:
            raise errors.TaskNotFound(f"task {task_id} not found")
        if ev is not None:
            self.bus.publish([ev])
        return row, ev

    # --- housekeeping ------------------------------------------------------------------

    async def reap(self, offline_node_ids: Sequence[str] = ()) -> list[Ack]:
        """Take back leases that expired and every lease of nodes that went offline."""
        now = time.time()
        lost = await self.store.expired_leases(now, offline_node_ids)
        if not lost:
            return []
        outcomes = [
            Outcome(
                t["id"],
                t["lease_token"],
                "lost",
                error=(
                    "node went offline"
                    if t["node_id"] in offline_node_ids
                    else "lease expired (timeout or silent node)"
                ),
            )
            for t in lost
        ]
        acks = await self.store.settle(None, outcomes, now, self._settle)
        self.bus.publish([a.event for a in acks if a.event is not None])
        return [a for a in acks if a.accepted]

    async def has_ready(self) -> bool:
        """Whether any task is ready to be leased now (one cheap query)."""
        return await self.store.has_ready(time.time())

    async def next_run_at(self, after: float | None = None) -> float | None:
        """The earliest ``run_at`` of a waiting task later than ``after`` (default: now)."""
        return await self.store.next_run_at(time.time() if after is None else after)


def _may_see(viewer: Principal, row: Row) -> bool:
    return viewer.is_admin or viewer is SYSTEM or row.get("owner_id") == viewer.id
