"""The worker protocol's meaning, shared by both doors (Socket.IO push and HTTP pull).

See docs/protocol.md. Transport code parses and authenticates, then calls these.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from zhongshu import validation
from zhongshu.db.task_store import Outcome
from zhongshu.services import nodes as node_rules
from zhongshu.services.dispatcher import Dispatcher, as_lease
from zhongshu.services.nodes import NodeService
from zhongshu.services.tasks import TaskService

Row = dict[str, Any]


class AgentService:
    def __init__(
        self,
        nodes: NodeService,
        tasks: TaskService,
        dispatcher: Dispatcher,
        *,
        heartbeat_interval_s: float,
        offline_after_s: float,
    ) -> None:
        self.nodes = nodes
        self.tasks = tasks
        self.dispatcher = dispatcher
        self.heartbeat_interval_s = heartbeat_interval_s
        self.offline_after_s = offline_after_s

    async def register(self, node: Row, info: Row) -> Row:
        row = await self.nodes.register(node, info)
        return {
            "node_id": row["id"],
            "name": row["name"],
            "heartbeat_interval_s": self.heartbeat_interval_s,
            "offline_after_s": self.offline_after_s,
            "capabilities": node_rules.effective_capabilities(row),
            "capacity": node_rules.effective_capacity(row),
        }

    async def held_leases(self, node_id: str) -> list[Row]:
        """Full leases this node holds (re-sent after a reconnect so nothing waits)."""
        return [as_lease(t) for t in await self.tasks.held_by_node(node_id)]

    async def heartbeat(self, node: Row, body: Row) -> Row:
        await self.nodes.heartbeat(node, body.get("stats") or {})
        reported = [r for r in body.get("running") or [] if isinstance(r, dict)]
        revoke: list[str] = []
        if reported:
            held = await self.tasks.store.held_by(node["id"])
            revoke = self.dispatcher.revoke_stale(node["id"], reported, held)
        return {"ok": True, "revoke": revoke}

    async def lease(self, node: Row, max_tasks: int, wait_s: float) -> list[Row]:
        """HTTP pull: lease up to ``max_tasks`` within the node's free capacity, waiting
        up to ``wait_s`` for work to arrive."""
        current = await self.nodes.get(node["id"])
        caps = node_rules.effective_capabilities(current)
        capacity = node_rules.effective_capacity(current)
        deadline = time.monotonic() + wait_s
        while True:
            asked_at = time.time()
            leased = await self.tasks.lease(node["id"], caps, max_tasks, capacity)
            if leased:
                return [as_lease(t) for t in leased]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            # Wake for new work, or when a delayed or backed-off task comes due. "After
            # asked_at", not "after now": a task that came due during the lease query would
            # otherwise be missed until the next full wait.
            wait_s = min(remaining, 1.0)
            nxt = await self.tasks.next_run_at(after=asked_at)
            if nxt is not None:
                wait_s = min(wait_s, max(0.0, nxt - time.time()) + 0.001)
            await self.dispatcher.wait_for_work(wait_s)

    async def started(self, node: Row, items: Sequence[Row]) -> list[bool]:
        held = [(str(i["task_id"]), int(i["lease_token"])) for i in items]
        return await self.tasks.start(node["id"], held)

    async def release(self, node: Row, items: Sequence[Row], draining: bool = False) -> list[str]:
        """Take back leases the node will not finish; ``draining``: send it nothing more
        (it is shutting down; a re-registration ends that)."""
        if draining:
            self.dispatcher.drain(node["id"])
        held = [(str(i["task_id"]), int(i["lease_token"])) for i in items]
        return await self.tasks.release(node["id"], held) if held else []

    async def results(self, node: Row, items: Sequence[Row]) -> list[Row]:
        outcomes = [_outcome(i) for i in items]
        acks = await self.tasks.settle(node["id"], outcomes)
        return [
            {
                "task_id": a.task_id,
                "accepted": a.accepted,
                **({"reason": a.reason} if a.reason else {}),
            }
            for a in acks
        ]


def _outcome(item: Row) -> Outcome:
    """One reported result; a result the database could not store fails the task for good
    (rather than failing the whole batch again on every re-send)."""
    status = "succeeded" if item["status"] == "succeeded" else "failed"
    error = item.get("error")
    retryable = bool(item.get("retryable", True))
    result = item.get("result")
    try:
        validation.plain_json(result)
        if error is not None:
            error = validation.no_nul(str(error))[:10_000]
    except ValueError as exc:
        status, result, retryable = "failed", None, False
        error = f"the handler's result cannot be stored: {exc}"
    return Outcome(
        task_id=str(item["task_id"]),
        lease_token=int(item["lease_token"]),
        status=status,
        result=result,
        error=error,
        retryable=retryable,
    )
