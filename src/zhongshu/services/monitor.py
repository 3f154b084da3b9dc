"""The monitoring scheduler (HisCRM's 30 s TaskScheduler) on top of the core queue.

Every ``tick_s``, logged-in active sources on an online node whose ``monitor_interval_s``
has passed get one ``<platform>.monitor`` task with the node's own capability
(``node:<id>``), so exactly that node runs it. A source never has two open monitor tasks:
the source row points at its last task and a new one is claimed with a conditional
UPDATE on that pointer (two hub processes cannot both claim it).

Stored tasks carry no secrets: the account without credentials, and the proxy as a URL
without its password (the worker got both with ``master:task:assign {accounts}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import defaultdict
from typing import Any

from zhongshu import errors
from zhongshu.db.source_store import SourceStore
from zhongshu.services import nodes as node_rules
from zhongshu.services.identity import SYSTEM, Principal
from zhongshu.services.proxies import ProxyService
from zhongshu.services.sources import account_view
from zhongshu.services.tasks import TaskService, TaskSpec

log = logging.getLogger("zhongshu.monitor")
Row = dict[str, Any]


class MonitorScheduler:
    def __init__(
        self,
        store: SourceStore,
        tasks: TaskService,
        proxies: ProxyService,
        *,
        tick_s: float,
        task_timeout_s: float = 300.0,
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.proxies = proxies
        self.tick_s = tick_s
        self.task_timeout_s = task_timeout_s

    async def tick(self) -> list[Row]:
        """Create the monitor tasks that are due now; returns them."""
        now = time.time()
        due = await self.store.monitor_due(now)
        # Tasks are stored: they carry the address without the password, so none is
        # decrypted here (the worker has it from master:task:assign). One query for all.
        proxies = await self.proxies.effective_many(
            [(s, s["assigned_node_id"]) for s in due], with_password=False
        )
        by_owner: dict[str, list[TaskSpec]] = defaultdict(list)
        for s, proxy in zip(due, proxies, strict=True):
            if s["open_task_id"]:
                # Its open task waits for a node the source has left: drop it.
                with contextlib.suppress(errors.ZhongshuError):
                    await self.tasks.cancel(s["open_task_id"], SYSTEM)
            new_id = uuid.uuid4().hex
            if not await self.store.claim_monitor(s["id"], s["monitor_task_id"], new_id, now):
                continue
            node_id = s["assigned_node_id"]
            payload = {
                "account_id": s["id"],
                "platform": s["platform"],
                "node_id": node_id,
                "account": account_view(s),
                "proxy": proxy["public_url"] if proxy else None,
                "proxy_id": proxy["id"] if proxy else None,
            }
            by_owner[s["owner_id"]].append(
                TaskSpec(
                    kind=f"{s['platform']}.monitor",
                    capability=node_rules.node_capability(node_id),
                    payload=payload,
                    max_attempts=1,  # the next tick is the retry
                    timeout_s=self.task_timeout_s,
                    idempotency_key=f"monitor:{s['id']}:{new_id}",
                    task_id=new_id,
                )
            )
        created: list[Row] = []
        for owner_id, specs in by_owner.items():
            owner = Principal("user", owner_id, "user", name="monitor", via="system")
            created.extend(row for row, _ in await self.tasks.submit_many(specs, owner))
        if created:
            log.debug("created %d monitor tasks", len(created))
        return created

    async def run(self) -> None:
        """Tick until cancelled (the hub's stop)."""
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("monitor round failed")
            await asyncio.sleep(self.tick_s)
