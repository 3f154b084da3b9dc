"""Which hub replica each worker's Socket.IO connection lives on (Redis).

With several replicas, a decision taken on one (assign a source, start a QR login) must
reach a worker connected to another. Emits travel through python-socketio's Redis
manager; this module answers the question before the emit: is that node connected to
*some* replica? Each replica writes its nodes into one Redis hash (node id → replica id
and time), refreshes them every few seconds, and mirrors the whole hash locally, so the
check stays synchronous and cheap. An entry older than ``stale_after_s`` (its replica
died without cleaning up) counts as absent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

log = logging.getLogger("zhongshu.realtime.presence")

# Delete the entry only if it is still ours: the node may have reconnected elsewhere.
_RELEASE = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if v and string.sub(v, 1, string.len(ARGV[2]) + 1) == ARGV[2] .. '|' then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class RedisPresence:
    def __init__(
        self,
        redis: Any,
        prefix: str,
        replica_id: str,
        *,
        stale_after_s: float = 10.0,
        refresh_s: float | None = None,
    ) -> None:
        self.redis = redis  # the hub's client (redis.asyncio)
        self.key = f"{prefix}worker-presence"
        self.replica_id = replica_id
        # What another replica sees is up to two refreshes old (its write, our mirror):
        # refresh often enough that a live entry never looks stale, even on a busy loop.
        self.refresh_s = refresh_s if refresh_s is not None else min(2.0, stale_after_s / 4)
        self.stale_after_s = stale_after_s
        self.local: set[str] = set()
        self._mirror: dict[str, tuple[str, float]] = {}

    def elsewhere(self, node_id: str) -> bool:
        """True if the node is connected to another replica (as of the last refresh)."""
        entry = self._mirror.get(node_id)
        if entry is None:
            return False
        replica, at = entry
        return replica != self.replica_id and time.time() - at < self.stale_after_s

    async def joined(self, node_id: str) -> None:
        self.local.add(node_id)
        await self.redis.hset(self.key, node_id, f"{self.replica_id}|{time.time()}")

    async def left(self, node_id: str) -> None:
        self.local.discard(node_id)
        await self.redis.eval(_RELEASE, 1, self.key, node_id, self.replica_id)

    async def refresh(self) -> None:
        now = time.time()
        if self.local:
            await self.redis.hset(
                self.key, mapping={n: f"{self.replica_id}|{now}" for n in self.local}
            )
        mirror: dict[str, tuple[str, float]] = {}
        for node, value in (await self.redis.hgetall(self.key)).items():
            replica, _, at = value.decode().partition("|")
            with contextlib.suppress(ValueError):
                mirror[node.decode()] = (replica, float(at))
        self._mirror = mirror

    async def run(self) -> None:
        """Refresh until cancelled; Redis being away is logged, not fatal."""
        while True:
            try:
                await self.refresh()
            except Exception as exc:
                log.warning("worker presence refresh failed: %s", exc)
            await asyncio.sleep(self.refresh_s)

    async def close(self) -> None:
        """Let go of this replica's nodes (the hub closes the Redis client after)."""
        for node_id in list(self.local):
            with contextlib.suppress(Exception):
                await self.left(node_id)
