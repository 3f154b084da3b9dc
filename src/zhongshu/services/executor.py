"""The hub's embedded executor: work the hub does itself, run as ordinary queue tasks.

Fetching a page, calling an AI provider, delivering to a channel or a webhook: these run
inside the hub, but as tasks of the durable queue, so they get its retries with backoff,
its history and its crash safety for free. The executor joins the dispatcher as one more
node session with the reserved capability ``hub`` (no worker may advertise it), so a
task submitted with ``executor.submit`` is leased, started and settled exactly like one a
worker runs.

Each hub process is its own executor node, ``hub-<id>`` with the id kept in the data
dir: after a crash, the restarted process hands back what its previous run held, and a
hub that never comes back loses its leases to the reaper when they expire. Several hub
processes on one database share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from zhongshu.db.task_store import Outcome, Row
from zhongshu.services.dispatcher import Dispatcher, NodeSession
from zhongshu.services.identity import SYSTEM, Principal
from zhongshu.services.nodes import RESERVED_CAPABILITY
from zhongshu.services.tasks import TaskService, TaskSpec

log = logging.getLogger("zhongshu.executor")

CAPABILITY = RESERVED_CAPABILITY


class PermanentFailure(Exception):
    """Raised by a handler when retrying cannot help (bad input, a 4xx from the remote):
    the task ends ``dead`` at once instead of using up its attempts."""


@dataclass(frozen=True, slots=True)
class TaskContext:
    """What a handler gets: the task row (``id``, ``kind``, ``payload``, ``owner_id``,
    ``attempts`` …) merged with its lease (``attempt``, ``lease_token``, ``timeout_s``)."""

    task: Row

    @property
    def payload(self) -> Any:
        return self.task["payload"]

    @property
    def attempt(self) -> int:
        return int(self.task["attempt"])

    @property
    def max_attempts(self) -> int:
        return int(self.task["max_attempts"])

    @property
    def is_last_attempt(self) -> bool:
        return self.attempt >= self.max_attempts


Handler = Callable[[TaskContext], Awaitable[dict[str, Any] | None]]


@dataclass(slots=True)
class _Kind:
    handler: Handler
    slots: asyncio.Semaphore


class EmbeddedExecutor:
    def __init__(
        self, tasks: TaskService, dispatcher: Dispatcher, node_id: str, *, capacity: int = 32
    ) -> None:
        self.tasks = tasks
        self.dispatcher = dispatcher
        self.node_id = node_id
        self.capacity = capacity
        self._kinds: dict[str, _Kind] = {}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._session: NodeSession | None = None

    # --- registration and submission ---------------------------------------------------

    def register(self, kind: str, handler: Handler, *, concurrency: int = 4) -> None:
        """Run tasks of ``kind`` with ``handler``, at most ``concurrency`` at a time."""
        if kind in self._kinds:
            raise ValueError(f"a hub handler for {kind!r} is already registered")
        self._kinds[kind] = _Kind(handler, asyncio.Semaphore(max(1, concurrency)))

    @property
    def kinds(self) -> list[str]:
        return sorted(self._kinds)

    async def submit(
        self,
        kind: str,
        payload: Any,
        *,
        owner: Principal = SYSTEM,
        priority: int = 0,
        max_attempts: int | None = None,
        timeout_s: float | None = None,
        delay_s: float | None = None,
        run_at: float | None = None,
        idempotency_key: str | None = None,
    ) -> Row:
        """Queue a task for the hub itself; returns the task row (an existing one for a
        repeated idempotency key)."""
        spec = TaskSpec(
            kind=kind,
            payload=payload,
            capability=CAPABILITY,
            priority=priority,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            delay_s=delay_s,
            run_at=run_at,
            idempotency_key=idempotency_key,
        )
        row, _ = await self.tasks.submit(spec, owner)
        return row

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        # What a previous run of this process held died with it: back to the queue now
        # rather than after the leases expire.
        held = await self.tasks.held_by_node(self.node_id)
        if held:
            await self.tasks.release(self.node_id, [(t["id"], t["lease_token"]) for t in held])
            log.info("handed back %d hub tasks held by the previous run", len(held))
        self._session = NodeSession(
            node_id=self.node_id,
            capabilities=[CAPABILITY],
            capacity=self.capacity,
            send_tasks=self._accept,
            send_revoke=self._revoke,
        )
        self.dispatcher.attach(self._session)

    async def stop(self) -> None:
        """Stop taking work; hand back what has not finished (it runs again elsewhere or
        after the restart, which is what a task's retries are for)."""
        if self._session is not None:
            self.dispatcher.detach(self.node_id, self._session)
        running = list(self._running.values())
        for t in running:
            t.cancel()
        for t in running:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if self._session is not None and self._session.held:
            with contextlib.suppress(Exception):
                await self.tasks.release(self.node_id, list(self._session.held.items()))
        self._session = None

    # --- running -----------------------------------------------------------------------

    async def _accept(self, leases: list[Row]) -> None:
        for task in leases:
            task_id: str = task["id"]
            run = asyncio.create_task(self._run(task), name=f"hub-task-{task_id}")
            self._running[task_id] = run
            run.add_done_callback(self._forget)

    def _forget(self, run: asyncio.Task[None]) -> None:
        for task_id, t in list(self._running.items()):
            if t is run:
                del self._running[task_id]

    async def _revoke(self, task_ids: Sequence[str], reason: str) -> None:
        for task_id in task_ids:
            run = self._running.get(task_id)
            if run is not None:
                run.cancel()

    async def _run(self, task: Row) -> None:
        held = (task["id"], task["lease_token"])
        kind = self._kinds.get(task["kind"])
        if kind is None:
            await self._settle(task, "failed", error=f"no hub handler for {task['kind']!r}")
            return
        async with kind.slots:
            if not (await self.tasks.start(self.node_id, [held]))[0]:
                return  # the lease was taken back meanwhile
            try:
                # The lease is the wire shape; handlers also want the owner and the rest.
                full = {**(await self.tasks.get(task["id"])), **task}
                async with asyncio.timeout(float(task["timeout_s"])):
                    result = await kind.handler(TaskContext(full))
            except PermanentFailure as exc:
                await self._settle(task, "failed", error=str(exc) or "failed", retryable=False)
            except TimeoutError:
                await self._settle(task, "failed", error=f"timed out after {task['timeout_s']} s")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("hub task %s (%s) failed", task["id"], task["kind"], exc_info=True)
                await self._settle(task, "failed", error=_describe(exc))
            else:
                await self._settle(task, "succeeded", result=result or {})

    async def _settle(
        self,
        task: Row,
        status: str,
        *,
        result: Any = None,
        error: str | None = None,
        retryable: bool = True,
    ) -> None:
        outcome = Outcome(task["id"], task["lease_token"], status, result, error, retryable)
        try:
            await self.tasks.settle(self.node_id, [outcome])
        except Exception:
            # The lease expires and the reaper retries the task: nothing is lost.
            log.exception("could not record the outcome of hub task %s", task["id"])


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
