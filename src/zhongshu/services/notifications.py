"""Notification records (HisCRM ``notifications``): what a person should be told about.

Syncs create ``comment`` and ``direct_message`` records in their own transaction (see
``services/sync.py``); other areas create ``system`` and ``account_status`` records here.
Each record raises ``notification.created``, which ``realtime/client.py`` relays as
``notification:new`` on ``/admin`` and ``/client`` and then marks sent.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from zhongshu import errors
from zhongshu.db.notification_store import NotificationStore
from zhongshu.services.events import Event, EventBus
from zhongshu.services.identity import Principal

Row = dict[str, Any]
TYPES = ("comment", "direct_message", "system", "account_status")
PRIORITIES = ("low", "normal", "high", "urgent")


class NotificationService:
    def __init__(
        self, store: NotificationStore, bus: EventBus, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock

    async def create(
        self,
        type: str,
        title: str,
        content: str = "",
        *,
        owner_id: str | None = None,
        source_id: str | None = None,
        related_id: str | None = None,
        data: dict[str, Any] | None = None,
        priority: str = "normal",
    ) -> Row:
        """Record a notification and announce it (``notification.created``)."""
        if type not in TYPES:
            raise errors.InvalidInput(f"type: must be one of {', '.join(TYPES)}")
        if priority not in PRIORITIES:
            raise errors.InvalidInput(f"priority: must be one of {', '.join(PRIORITIES)}")
        note_id = uuid.uuid4().hex
        now = self.clock()
        row: Row = {
            "id": note_id,
            "type": type,
            "owner_id": owner_id,
            "source_id": source_id,
            "related_id": related_id,
            "title": title[:255],
            "content": content,
            "data": data or {},
            "priority": priority,
            "is_sent": False,
            "is_read": False,
            "created_at": now,
        }
        ev = Event(
            "notification.created",
            "notification",
            note_id,
            data={k: v for k, v in row.items() if k not in ("is_sent", "is_read")},
            at=now,
        )
        await self.store.insert(row, [ev])
        self.bus.publish([ev])
        return row

    async def find(
        self,
        p: Principal,
        *,
        type: str | None = None,
        is_read: bool | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Row], int]:
        """The caller's notifications, newest first (admins: everyone's)."""
        if type is not None and type not in TYPES:
            raise errors.InvalidInput(f"type: must be one of {', '.join(TYPES)}")
        return await self.store.find(
            owner_id=p.owner_filter,
            type=type,
            is_read=is_read,
            limit=limit,
            offset=offset,
        )

    async def mark_read(self, p: Principal, notification_id: str) -> Row:
        row = await self.store.get(notification_id)
        if row is None or not p.may_see(row["owner_id"]):
            raise errors.NotificationNotFound(f"notification {notification_id[:64]} not found")
        updated = await self.store.mark_read(notification_id, self.clock())
        assert updated is not None
        return updated

    async def mark_sent(self, ids: Sequence[str]) -> None:
        await self.store.mark_sent(ids, self.clock())
