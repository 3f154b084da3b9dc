"""Append-only event log."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from zhongshu.db.engine import Database
from zhongshu.db.schema import events
from zhongshu.services.events import Event


def append_sync(conn: Connection, evs: Sequence[Event]) -> None:
    """Write events inside the caller's (synchronous) transaction."""
    if evs:
        conn.execute(insert(events), [e.as_row() for e in evs])


async def append(conn: AsyncConnection, evs: Sequence[Event]) -> None:
    """Write events inside the caller's transaction."""
    if evs:
        await conn.execute(insert(events), [e.as_row() for e in evs])


class EventStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, evs: Sequence[Event]) -> None:
        async with self.db.write() as conn:
            await append(conn, evs)

    async def query(
        self,
        *,
        type_prefix: str | None = None,
        subject_type: str | None = None,
        subject_id: str | None = None,
        actor: str | None = None,
        since: float | None = None,
        until: float | None = None,
        after_id: int | None = None,
        limit: int = 100,
        offset: int = 0,
        newest_first: bool = True,
    ) -> tuple[list[dict[str, Any]], int]:
        where = []
        if type_prefix:
            where.append(events.c.type.startswith(type_prefix, autoescape=True))
        if subject_type:
            where.append(events.c.subject_type == subject_type)
        if subject_id:
            where.append(events.c.subject_id == subject_id)
        if actor:
            where.append(events.c.actor == actor)
        if since is not None:
            where.append(events.c.at >= since)
        if until is not None:
            where.append(events.c.at < until)
        if after_id is not None:
            where.append(events.c.id > after_id)
        order = events.c.id.desc() if newest_first else events.c.id.asc()
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(events).where(*where).order_by(order).limit(limit).offset(offset)
            )
            total = await conn.scalar(select(func.count()).select_from(events).where(*where))
        return [dict(r._mapping) for r in rows], int(total or 0)
