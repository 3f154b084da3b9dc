"""Retention: collected items older than a per-kind maximum age are deleted by a
maintenance loop (``im_retention_days``, e.g. ``{"message": 90, "notification": 30}``;
kinds not listed are kept forever). Age is the item's own time (``published_at``).
Deletes go in small batches so a long backlog never holds the write lock for long."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from zhongshu import errors
from zhongshu.db.item_store import KINDS, ItemStore

log = logging.getLogger("zhongshu.retention")
DAY_S = 86400.0


class RetentionService:
    def __init__(
        self,
        store: ItemStore,
        max_age_days: Mapping[str, float],
        *,
        interval_s: float,
        batch: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        unknown = sorted(set(max_age_days) - set(KINDS))
        if unknown:
            raise errors.ConfigError(
                f"im_retention_days: unknown kind(s) {', '.join(unknown)}; use {', '.join(KINDS)}"
            )
        bad = [k for k, v in max_age_days.items() if v <= 0]
        if bad:
            raise errors.ConfigError(f"im_retention_days: the age of {bad[0]} must be > 0 days")
        self.store = store
        self.max_age_days = dict(max_age_days)
        self.interval_s = interval_s
        self.batch = batch
        self.clock = clock

    async def apply_once(self) -> dict[str, int]:
        """Delete everything past its age now; returns the count per kind."""
        now = self.clock()
        deleted: dict[str, int] = {}
        for kind, days in self.max_age_days.items():
            cutoff = now - days * DAY_S
            total = 0
            while True:
                n = await self.store.purge_older(kind, cutoff, self.batch)
                total += n
                if n < self.batch:
                    break
                await asyncio.sleep(0)  # let other writers in between batches
            if total:
                deleted[kind] = total
        if deleted:
            log.info("retention deleted %s", deleted)
        return deleted

    async def run(self) -> None:
        if not self.max_age_days:
            return
        # Ends by cancellation (Hub.stop).
        while True:
            try:
                await self.apply_once()
            except errors.StoreError:
                log.warning("retention pass failed; retrying next interval", exc_info=True)
            await asyncio.sleep(self.interval_s)
