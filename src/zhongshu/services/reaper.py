"""Finds silent nodes and expired leases, and puts their tasks back in the queue.

Every hub process runs one; the updates are conditional, so two reapers on one database
do the work once between them.
"""

from __future__ import annotations

import asyncio
import logging
import time

from zhongshu.services.nodes import NodeService
from zhongshu.services.tasks import TaskService

log = logging.getLogger("zhongshu.reaper")


class Reaper:
    def __init__(
        self, nodes: NodeService, tasks: TaskService, *, interval_s: float, offline_after_s: float
    ) -> None:
        self.nodes = nodes
        self.tasks = tasks
        self.interval_s = interval_s
        self.offline_after_s = offline_after_s
        self.started_at = time.monotonic()

    async def reap_once(self) -> int:
        await self.nodes.flush_heartbeats()
        gone = []
        # Silence from before this process started is the hub's own downtime, not the
        # nodes': give them one offline period to reconnect before taking their leases.
        if time.monotonic() - self.started_at >= self.offline_after_s:
            gone = await self.nodes.mark_silent_offline(self.offline_after_s)
        for g in gone:
            log.warning("node %s (%s) is offline: no heartbeat", g["id"], g["name"])
        taken = await self.tasks.reap([g["id"] for g in gone])
        if taken:
            log.info("took back %d leases", len(taken))
        return len(taken)

    async def run(self) -> None:
        """Reap until cancelled (the app's lifespan cancels it on shutdown)."""
        self.started_at = time.monotonic()
        while True:
            try:
                await self.reap_once()
            except Exception:
                log.exception("reaper round failed")
            await asyncio.sleep(self.interval_s)
