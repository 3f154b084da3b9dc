"""The one event bus.

Everything that happens is an ``Event``. Stores write events into the append-only
``events`` table in the same transaction as the change they describe (so the log never
disagrees with the state); services then ``publish`` them here, after the commit, for live
listeners: realtime clients, metrics, the dispatcher's wake-up, notification routing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("zhongshu.events")

Listener = Callable[["Event"], None]


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened. ``type`` is ``<subject>.<verb>``, e.g. ``task.succeeded``."""

    type: str
    subject_type: str
    subject_id: str
    actor: str = "system"
    data: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def as_row(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "type": self.type,
            "actor": self.actor,
            "subject_type": self.subject_type,
            "subject_id": self.subject_id,
            "data": self.data,
        }


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` up to ``timeout_s``; True if it was set.

    Not ``asyncio.wait_for``: on Python 3.11 it can return normally when the event fires
    just as a cancel arrives, and a ``while True`` loop around it then swallows the cancel.
    """
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
        return True
    except TimeoutError:
        return False


class EventBus:
    """In-process fan-out. Listeners are synchronous and must be quick; slow consumers
    use ``subscribe`` and get their own bounded queue (oldest events dropped when full)."""

    def __init__(self) -> None:
        self._listeners: list[tuple[str, Listener]] = []
        self._queues: list[tuple[str, asyncio.Queue[Event]]] = []

    def listen(self, prefix: str, fn: Listener) -> Callable[[], None]:
        entry = (prefix, fn)
        self._listeners.append(entry)
        return lambda: self._listeners.remove(entry)

    @contextlib.asynccontextmanager
    async def subscribe(
        self, prefix: str = "", maxsize: int = 10_000
    ) -> AsyncIterator[asyncio.Queue[Event]]:
        queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        entry = (prefix, queue)
        self._queues.append(entry)
        try:
            yield queue
        finally:
            self._queues.remove(entry)

    def publish(self, events: Iterable[Event]) -> None:
        for ev in events:
            for prefix, fn in list(self._listeners):
                if ev.type.startswith(prefix):
                    try:
                        fn(ev)
                    except Exception:  # a broken listener must not break the publisher
                        log.exception("event listener failed on %s", ev.type)
            for prefix, queue in list(self._queues):
                if ev.type.startswith(prefix):
                    if queue.full():
                        queue.get_nowait()
                    queue.put_nowait(ev)
