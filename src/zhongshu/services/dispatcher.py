"""Push dispatch: hand ready tasks to connected nodes as soon as they are ready.

Each hub process keeps a ``NodeSession`` per node connected to it (Socket.IO). Claiming
happens in the database (``TaskService.lease``), so several hub processes can dispatch from
one PostgreSQL database without handing a task out twice; memory only remembers what this
process sent where, to respect capacity and to route revokes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from zhongshu.services.events import Event, EventBus, wait_event
from zhongshu.services.tasks import TaskService

log = logging.getLogger("zhongshu.dispatcher")

Row = dict[str, Any]
SendTasks = Callable[[list[Row]], Awaitable[None]]
SendRevoke = Callable[[list[str], str], Awaitable[None]]


def as_lease(task: Row) -> Row:
    """The wire shape of a leased task (docs/protocol.md, "Lease")."""
    return {
        "id": task["id"],
        "kind": task["kind"],
        "payload": task["payload"],
        "capability": task["capability"],
        "priority": task["priority"],
        "attempt": task["attempts"],
        "max_attempts": task["max_attempts"],
        "lease_token": task["lease_token"],
        "timeout_s": task["timeout_s"],
        "lease_expires_at": task["lease_expires_at"],
    }


@dataclass(eq=False)
class NodeSession:
    node_id: str
    capabilities: list[str]
    capacity: int
    send_tasks: SendTasks
    send_revoke: SendRevoke
    # task id -> lease token of what this process sent the node (and it has not settled).
    held: dict[str, int] = field(default_factory=dict)
    online: bool = True
    # The node is shutting down: it finishes what it holds and gets nothing new.
    draining: bool = False

    @property
    def free(self) -> int:
        return self.capacity - len(self.held) if self.online and not self.draining else 0

    @property
    def load(self) -> float:
        return len(self.held) / max(1, self.capacity)


class Dispatcher:
    def __init__(self, tasks: TaskService, bus: EventBus, *, batch: int = 64, poll_s: float = 1.0):
        self.tasks = tasks
        self.batch = batch
        self.poll_s = poll_s
        self.sessions: dict[str, NodeSession] = {}
        self._wake = asyncio.Event()
        self._round_started = 0.0
        self._work = asyncio.Event()  # replaced on each wake; HTTP long-polls wait on it
        # Capabilities of tasks submitted since the last round: nodes that can run them are
        # asked first, so a new task does not wait behind lease queries of idle nodes that
        # cannot take it (the hub's own executor is always idle and always attached).
        self._hot: set[str] = set()
        bus.listen("task.", self._on_task_event)
        bus.listen("node.", self._on_node_event)

    # --- sessions ----------------------------------------------------------------------

    def attach(self, session: NodeSession) -> None:
        old = self.sessions.get(session.node_id)
        if old is not None:
            session.held = {**old.held, **session.held}
        self.sessions[session.node_id] = session
        self.wake()

    def detach(self, node_id: str, session: NodeSession | None = None) -> None:
        current = self.sessions.get(node_id)
        if current is not None and (session is None or current is session):
            del self.sessions[node_id]

    def drain(self, node_id: str) -> None:
        session = self.sessions.get(node_id)
        if session is not None:
            session.draining = True

    # --- wake-ups ----------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()
        work, self._work = self._work, asyncio.Event()
        work.set()

    async def wait_for_work(self, timeout_s: float) -> None:
        await wait_event(self._work, timeout_s)

    def _on_task_event(self, ev: Event) -> None:
        kind = ev.type
        if kind in ("task.submitted", "task.retried"):
            capability = ev.data.get("capability")
            if capability:
                self._hot.add(capability)
            self.wake()
            return
        if kind in (
            "task.succeeded",
            "task.failed",
            "task.dead",
            "task.cancelled",
            "task.released",
        ):
            node_id = ev.data.get("node_id") or (
                ev.actor[5:] if ev.actor.startswith("node:") else None
            )
            session = self.sessions.get(node_id) if node_id else None
            token = ev.data.get("lease_token")
            held_token = session.held.get(ev.subject_id) if session is not None else None
            # A settle of an older lease must not free the slot of a newer one.
            if session is not None and held_token is not None and token in (None, held_token):
                del session.held[ev.subject_id]
                if not ev.actor.startswith("node:"):
                    # Someone else ended it (the reaper, a cancel, a relay callback): tell
                    # the node to stop; its result would be refused anyway.
                    asyncio.get_running_loop().create_task(
                        self._revoke(session, [ev.subject_id], ev.data.get("error") or kind)
                    )
            self.wake()

    def _on_node_event(self, ev: Event) -> None:
        session = self.sessions.get(ev.subject_id)
        if session is None:
            return
        if ev.type == "node.offline":
            session.online = False
        elif ev.type == "node.online":
            session.online = True
            self.wake()
        elif ev.type in ("node.disabled", "node.deleted"):
            session.online = False

    async def _revoke(self, session: NodeSession, task_ids: list[str], reason: str) -> None:
        try:
            await session.send_revoke(task_ids, reason)
        except Exception:  # the node may be gone; its lease is already taken back
            log.debug("revoke to %s failed", session.node_id, exc_info=True)

    # --- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Dispatch until cancelled (the app's lifespan cancels it on shutdown)."""
        while True:
            timeout = await self._idle_timeout()
            await wait_event(self._wake, timeout)
            self._wake.clear()
            try:
                await self.dispatch_once()
            except Exception:
                log.exception("dispatch round failed; retrying")
                await asyncio.sleep(0.5)

    async def _idle_timeout(self) -> float:
        if not self.sessions:
            return self.poll_s
        # Tasks that came due after the last round's lease query are due now; tasks due
        # before it that no node took are not (that would spin).
        nxt = await self.tasks.next_run_at(after=self._round_started)
        if nxt is None:
            return self.poll_s
        return max(0.0, min(self.poll_s, nxt - time.time()))

    async def dispatch_once(self) -> int:
        """Fill every connected node's free slots — nodes that can run what was just submitted
        first, then least loaded first. Returns tasks sent."""
        self._round_started = time.time()
        sent = 0
        # One cheap query first: a fleet of idle nodes must not cost a lease query each.
        progress = bool(self.sessions) and await self.tasks.has_ready()
        # Taken after the query: a task it found has (almost always) announced itself.
        hot, self._hot = self._hot, set()
        while progress:
            progress = False
            # Capability sets that found nothing this round: a node that can do no more
            # than one of them would find nothing either.
            empty: list[frozenset[str]] = []
            for session in sorted(
                self.sessions.values(),
                key=lambda s: (hot.isdisjoint(s.capabilities), s.load),
            ):
                free = session.free
                caps = frozenset(session.capabilities)
                if free <= 0 or any(caps <= e for e in empty):
                    continue
                leased = await self.tasks.lease(
                    session.node_id, session.capabilities, min(free, self.batch)
                )
                if not leased:
                    empty.append(caps)
                    continue
                session.held.update((t["id"], t["lease_token"]) for t in leased)
                progress = True
                sent += len(leased)
                try:
                    await session.send_tasks([as_lease(t) for t in leased])
                except Exception:
                    # Its leases come back when the node re-registers or goes offline.
                    log.warning("sending %d tasks to %s failed", len(leased), session.node_id)
        if not sent:
            # Let HTTP long-polls re-check too: a delayed task may have come due.
            work, self._work = self._work, asyncio.Event()
            work.set()
        return sent

    def revoke_stale(self, node_id: str, reported: Sequence[Row], held: Sequence[Row]) -> list[str]:
        """Which of the tasks a node says it runs are no longer leased to it."""
        current = {(h["id"], h["lease_token"]) for h in held}
        return [
            str(r.get("task_id"))
            for r in reported
            if (r.get("task_id"), r.get("lease_token")) not in current
        ]
