"""The audit log: who did what to which object, from where, and how it ended.

Two ways in. Authentication outcomes and refusals are recorded directly (``record``).
Changes to users, keys, nodes and settings arrive as events on the bus (the services that
make them publish ``user.*``, ``api_key.*``, ``node.*``, ``settings.*``) and are written
by a listener, so no service needs to know about auditing. The client IP of the request
that caused an event travels in a context variable set by the HTTP edge.

Secrets never reach the table: ``redact`` masks values under secret-looking keys and
anything shaped like a key secret or a JWT.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from zhongshu.db.audit_store import AuditFilter, AuditStore
from zhongshu.services.events import Event, EventBus

log = logging.getLogger("zhongshu.audit")

client_ip: contextvars.ContextVar[str] = contextvars.ContextVar("zhongshu_client_ip", default="")

AUDITED_PREFIXES = ("user.", "api_key.", "node.", "settings.", "backup.", "restore.")
# Liveness, not changes: a fleet of 10,000 nodes would flood the log.
NOT_AUDITED = frozenset({"node.online", "node.offline", "node.heartbeat"})
_SECRET_KEYS = re.compile(r"pass|secret|token|authorization|api_?key|cookie|credential", re.I)
_SECRET_VALUES = re.compile(
    r"(?:CS|SK)[A-Za-z0-9]{32}|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|zsr_[A-Za-z0-9_-]+"
)
REDACTED = "***"


def redact(value: Any) -> Any:
    """A copy of ``value`` with secrets masked (by key name and by shape)."""
    if isinstance(value, dict):
        return {
            str(k): (REDACTED if _SECRET_KEYS.search(str(k)) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUES.sub(REDACTED, value)[:2000]
    return value


class AuditService:
    def __init__(self, store: AuditStore, bus: EventBus) -> None:
        self.store = store
        self.bus = bus
        self._pending: set[asyncio.Task[None]] = set()
        self._unlisten = bus.listen("", self._on_event)

    async def record(
        self,
        action: str,
        *,
        actor: str,
        target_type: str = "",
        target_id: str = "",
        outcome: str = "success",
        detail: dict[str, Any] | None = None,
        ip: str | None = None,
        at: float | None = None,
    ) -> None:
        """Append one row. A failure to write is logged, never raised to the caller."""
        row = {
            "at": at or time.time(),
            "actor": actor[:128],
            "action": action[:64],
            "target_type": target_type[:32],
            "target_id": target_id[:128],
            "client_ip": (client_ip.get() if ip is None else ip)[:64],
            "outcome": outcome,
            "detail": redact(detail or {}),
        }
        try:
            await self.store.append([row])
        except Exception:
            log.exception("could not write audit row for %s", action)

    def record_later(self, action: str, **kwargs: Any) -> None:
        """``record`` without waiting (from sync code); ``flush`` waits for it."""
        kwargs.setdefault("ip", client_ip.get())
        task = asyncio.get_running_loop().create_task(self.record(action, **kwargs))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _on_event(self, ev: Event) -> None:
        if not ev.type.startswith(AUDITED_PREFIXES) or ev.type in NOT_AUDITED:
            return
        try:
            self.record_later(
                ev.type,
                actor=ev.actor,
                target_type=ev.subject_type,
                target_id=ev.subject_id,
                detail=ev.data,
                at=ev.at,
            )
        except RuntimeError:  # no running loop (a sync caller): nothing to schedule on
            log.warning("audit event %s dropped: no event loop", ev.type)

    async def flush(self) -> None:
        """Wait until every row scheduled so far is written."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def query(
        self, f: AuditFilter, limit: int = 100, offset: int = 0
    ) -> tuple[list[dict[str, Any]], int]:
        await self.flush()
        return await self.store.query(f, limit, offset)

    async def export(self, f: AuditFilter) -> AsyncIterator[dict[str, Any]]:
        await self.flush()
        async for row in self.store.scan(f):
            yield row

    def close(self) -> None:
        self._unlisten()
