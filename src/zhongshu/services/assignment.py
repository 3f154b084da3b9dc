"""Which node serves which source.

A source goes to the least-loaded online node whose effective capabilities include its
platform, never above the node's ``max_accounts``. Nodes that go offline, are disabled
or deleted lose their sources, which go to another capable node; a node that comes
online picks up sources nobody serves. Every change is a conditional UPDATE in the
database (see ``db/source_store.py``), so concurrent joins and leaves, in one process or
several, never give one source to two nodes.

The service publishes ``source.assigned`` / ``source.revoked`` (``data.node_id``); the
realtime layer turns them into ``master:task:assign {accounts}`` and
``master:task:revoke {accountIds}`` for the node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from zhongshu.db.source_store import SourceStore
from zhongshu.services import nodes as node_rules
from zhongshu.services.events import Event, EventBus, wait_event
from zhongshu.services.nodes import NodeService
from zhongshu.services.sources import assigned_event, revoked_event

log = logging.getLogger("zhongshu.assignment")
Row = dict[str, Any]
# Events after which the assignment may be out of date.
_WAKE_ON = {
    "node.online",
    "node.offline",
    "node.disabled",
    "node.enabled",
    "node.deleted",
    "node.updated",
    "source.created",
    "source.updated",
}


class AssignmentService:
    def __init__(
        self, store: SourceStore, nodes: NodeService, bus: EventBus, *, tick_s: float
    ) -> None:
        self.store = store
        self.nodes = nodes
        self.bus = bus
        self.tick_s = tick_s
        self._wake = asyncio.Event()
        bus.listen("node.", self._on_event)
        bus.listen("source.", self._on_event)

    def _on_event(self, ev: Event) -> None:
        if ev.type in _WAKE_ON:
            self._wake.set()

    async def _serving_nodes(self) -> list[Row]:
        return [n for n in await self.nodes.find() if n["status"] == "online" and not n["disabled"]]

    async def assign_pending(self, source_ids: Sequence[str] | None = None) -> list[Row]:
        """Give unassigned active sources (all, or those in ``source_ids``) to capable
        nodes with room; returns the sources assigned."""
        pending = await self.store.unassigned(source_ids)
        if not pending:
            return []
        serving = await self._serving_nodes()
        load = await self.store.load_by_node()
        caps = {n["id"]: set(node_rules.effective_capabilities(n)) for n in serving}
        done: list[Row] = []
        for s in pending:
            candidates = sorted(
                (
                    n
                    for n in serving
                    if s["platform"] in caps[n["id"]]
                    and load.get(n["id"], 0) < int(n["max_accounts"])
                ),
                key=lambda n: (load.get(n["id"], 0), n["id"]),
            )
            for n in candidates:
                outcome, row = await self.store.assign(
                    s["id"], s["platform"], n["id"], time.time(), assigned_event
                )
                if outcome == "assigned" and row is not None:
                    load[n["id"]] = load.get(n["id"], 0) + 1
                    self.bus.publish([assigned_event(row, row["assigned_at"])])
                    done.append(row)
                    break
                if outcome == "taken":
                    break  # assigned, deactivated or re-platformed meanwhile
                if outcome == "full":
                    load[n["id"]] = int(n["max_accounts"])
                else:  # node_unavailable: it left meanwhile
                    serving = [m for m in serving if m["id"] != n["id"]]
        return done

    async def revoke_stray(self, source_ids: Sequence[str] = ()) -> list[Row]:
        """Take sources off nodes that are no longer online and enabled."""
        revoked = await self.store.revoke_stray(time.time(), revoked_event, source_ids)
        if revoked:
            self.bus.publish([revoked_event(r, r["revoke_reason"]) for r in revoked])
            log.info("revoked %d sources from unavailable nodes", len(revoked))
        return revoked

    async def reconcile(self) -> tuple[int, int]:
        """One round: revoke from unavailable nodes, then assign what nobody serves."""
        revoked = await self.revoke_stray()
        assigned = await self.assign_pending()
        return len(revoked), len(assigned)

    async def run(self) -> None:
        """Reconcile on every node/source change and every ``tick_s`` until cancelled."""
        while True:
            self._wake.clear()
            try:
                await self.reconcile()
            except Exception:
                log.exception("assignment round failed")
            # Ends by cancellation (the hub's stop).
            await wait_event(self._wake, self.tick_s)
