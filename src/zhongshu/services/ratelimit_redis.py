"""Sharing authentication lockouts between replicas through Redis.

Failures are counted per subject in Redis (``INCR`` with the policy's window as expiry);
a replica whose failure brings the shared count over the limit stores the lock's end
(wall-clock time) under ``…auth-lock:<subject>``; every replica pulls those locks each
``pull_s`` into its in-memory limiter. Redis trouble degrades to per-replica limits, never
to an error for the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from zhongshu.services.ratelimit import FailureLimiter

log = logging.getLogger("zhongshu.ratelimit")


class RedisFailureSync:
    def __init__(
        self, limiter: FailureLimiter, redis: Any, prefix: str, *, pull_s: float = 1.0
    ) -> None:
        self.limiter = limiter
        self.redis = redis  # the hub's client (redis.asyncio)
        self.count_key = f"{prefix}auth-fail:"
        self.lock_key = f"{prefix}auth-lock:"
        self.pull_s = pull_s
        self._pending: set[asyncio.Task[None]] = set()
        limiter.on_fail = self._on_fail
        limiter.on_succeed = self._on_succeed

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a sync caller in a test): local limits only
            coro.close()
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _on_fail(self, subject: str) -> None:
        self._spawn(self._count(subject))

    def _on_succeed(self, subject: str) -> None:
        self._spawn(self._clear(subject))

    async def _count(self, subject: str) -> None:
        try:
            key = self.count_key + subject
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, max(1, int(self.limiter.window_of(subject))), nx=True)
                failures, _ = await pipe.execute()
            lock_s = self.limiter.lock_for(subject, int(failures))
            if lock_s > 0:
                until = time.time() + lock_s
                await self.redis.set(self.lock_key + subject, repr(until), ex=int(lock_s) + 1)
                self._apply(subject, until)
        except Exception as exc:
            log.warning("shared lockout count failed: %s", exc)

    async def _clear(self, subject: str) -> None:
        # The count only: a lock another replica set stays until it expires, so a success
        # slipping in on a replica that had not pulled it yet cannot lift it everywhere.
        with contextlib.suppress(Exception):
            await self.redis.delete(self.count_key + subject)

    def _apply(self, subject: str, until_wall: float) -> None:
        # Redis holds wall-clock times; the limiter counts on its own (monotonic) clock.
        self.limiter.lock_until(subject, self.limiter.clock() + (until_wall - time.time()))

    async def pull(self) -> None:
        keys = [k async for k in self.redis.scan_iter(f"{self.lock_key}*", count=500)]
        if not keys:
            return
        for key, value in zip(keys, await self.redis.mget(keys), strict=True):
            if value is not None:
                with contextlib.suppress(ValueError):
                    self._apply(key.decode()[len(self.lock_key) :], float(value))

    async def run(self) -> None:
        while True:
            try:
                await self.pull()
            except Exception as exc:
                log.warning("shared lockout pull failed: %s", exc)
            await asyncio.sleep(self.pull_s)

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
