"""SQL for notification records (HisCRM ``notifications``). Records raised by a sync are
inserted by ``ItemStore.apply_sync`` in the sync's own transaction; this store reads them
and records what happens to them afterwards (sent, read)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.rows import first_row, page_rows
from zhongshu.db.schema import notifications
from zhongshu.services.events import Event

Row = dict[str, Any]


class NotificationStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, row: Row, evs: Sequence[Event]) -> None:
        await self.db.run_write(_insert, row, evs)

    async def get(self, notification_id: str) -> Row | None:
        return await self.db.run_read(_get, notification_id)

    async def find(
        self,
        *,
        owner_id: str | None,
        type: str | None = None,
        source_id: str | None = None,
        is_read: bool | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Row], int]:
        where = []
        if owner_id is not None:
            where.append(notifications.c.owner_id == owner_id)
        if type:
            where.append(notifications.c.type == type)
        if source_id:
            where.append(notifications.c.source_id == source_id)
        if is_read is not None:
            where.append(notifications.c.is_read == is_read)
        page = (
            select(notifications)
            .where(*where)
            .order_by(notifications.c.created_at.desc(), notifications.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        count = select(func.count()).select_from(notifications).where(*where)
        return await self.db.run_read(page_rows, page, count)

    async def mark_read(self, notification_id: str, now: float) -> Row | None:
        return await self.db.run_write(_mark_read, notification_id, now)

    async def mark_sent(self, ids: Sequence[str], now: float) -> None:
        if ids:
            await self.db.run_write(_mark_sent, list(ids), now)


def _insert(conn: Connection, row: Row, evs: Sequence[Event]) -> None:
    conn.execute(insert(notifications).values(**row))
    event_store.append_sync(conn, evs)


def _get(conn: Connection, notification_id: str) -> Row | None:
    return first_row(conn, select(notifications).where(notifications.c.id == notification_id))


def _mark_read(conn: Connection, notification_id: str, now: float) -> Row | None:
    conn.execute(
        update(notifications)
        .where(notifications.c.id == notification_id, notifications.c.is_read.is_(False))
        .values(is_read=True, read_at=now)
    )
    return _get(conn, notification_id)


def _mark_sent(conn: Connection, ids: list[str], now: float) -> None:
    conn.execute(
        update(notifications)
        .where(notifications.c.id.in_(ids), notifications.c.is_sent.is_(False))
        .values(is_sent=True, sent_at=now)
    )
