"""System alerts for admins: node offline, a spike of dead tasks, repeated task errors,
a nearly full disk. Each becomes a ``system.alert`` event (stored in the event log and
published), at most once per ``min_interval_s`` per alert key; admins route them to their
channels with a notification rule on ``system.alert``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import shutil
import time
from pathlib import Path

from zhongshu.db.event_store import EventStore
from zhongshu.services.events import Event, EventBus

log = logging.getLogger("zhongshu.alerts")


class AlertService:
    def __init__(
        self,
        bus: EventBus,
        events: EventStore,
        *,
        data_dir: Path,
        min_interval_s: float,
        window_s: float,
        dead_threshold: int,
        error_threshold: int,
        disk_free_ratio: float,
        check_interval_s: float,
    ) -> None:
        self.bus = bus
        self.events = events
        self.data_dir = data_dir
        self.min_interval_s = min_interval_s
        self.window_s = window_s
        self.dead_threshold = dead_threshold
        self.error_threshold = error_threshold
        self.disk_free_ratio = disk_free_ratio
        self.check_interval_s = check_interval_s
        self._last: dict[str, float] = {}
        self.suppressed: collections.Counter[str] = collections.Counter()
        self._dead: collections.deque[float] = collections.deque()
        self._failed: collections.deque[float] = collections.deque()
        self._pending: set[asyncio.Task[bool]] = set()
        bus.listen("node.offline", self._on_node_offline)
        bus.listen("task.dead", self._on_dead)
        bus.listen("task.failed", self._on_failed)

    def _count(self, times: collections.deque[float], now: float) -> int:
        times.append(now)
        while times and times[0] < now - self.window_s:
            times.popleft()
        return len(times)

    def _on_node_offline(self, ev: Event) -> None:
        name = ev.data.get("name") or ev.subject_id
        self._spawn(f"node_offline:{ev.subject_id}", "warning", f"node {name} is offline")

    def _on_dead(self, ev: Event) -> None:
        n = self._count(self._dead, ev.at)
        if n >= self.dead_threshold:
            self._spawn(
                "dead_tasks",
                "error",
                f"{n} tasks died in the last {int(self.window_s)} s (latest: {ev.subject_id}, "
                f"{ev.data.get('kind', '')}: {ev.data.get('error') or ''})",
            )

    def _on_failed(self, ev: Event) -> None:
        n = self._count(self._failed, ev.at)
        if n >= self.error_threshold:
            self._spawn(
                "repeated_errors",
                "warning",
                f"{n} task attempts failed in the last {int(self.window_s)} s "
                f"(latest: {ev.data.get('kind', '')}: {ev.data.get('error') or ''})",
            )

    def _spawn(self, key: str, level: str, message: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.alert(key, level, message))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def alert(self, key: str, level: str, message: str) -> bool:
        """Raise one alert unless the same key fired within ``min_interval_s``."""
        now = time.time()
        last = self._last.get(key)
        if last is not None and now - last < self.min_interval_s:
            self.suppressed[key] += 1
            return False
        self._last[key] = now
        data = {"key": key, "level": level, "message": message, "suppressed": self.suppressed[key]}
        self.suppressed[key] = 0
        ev = Event("system.alert", "system", key, "system", data, now)
        try:
            await self.events.append([ev])
        except Exception:  # an alert about a sick database must still reach live listeners
            log.exception("could not store alert %s", key)
        log.warning("alert %s: %s", key, message)
        self.bus.publish([ev])
        return True

    async def check_disk(self) -> bool:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        usage = await asyncio.to_thread(shutil.disk_usage, self.data_dir)
        free = usage.free / usage.total if usage.total else 1.0
        if free < self.disk_free_ratio:
            return await self.alert(
                "disk",
                "error",
                f"the disk holding {self.data_dir} is nearly full: {free:.1%} free",
            )
        return False

    async def run(self) -> None:
        # Ends by cancellation (hub stop).
        while True:
            try:
                await self.check_disk()
            except Exception:
                log.exception("disk check failed")
            await asyncio.sleep(self.check_interval_s)
