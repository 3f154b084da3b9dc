"""SQL for supervised local worker processes (one row per configured profile)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.rows import first_row
from zhongshu.db.schema import worker_processes
from zhongshu.services.events import Event

Row = dict[str, Any]


class LifecycleStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, profile: str) -> Row | None:
        return await self.db.run_read(
            first_row, select(worker_processes).where(worker_processes.c.profile == profile)
        )

    async def insert(self, row: Row) -> None:
        await self.db.run_write(_insert, row)

    async def update(self, profile: str, values: Row, evs: Sequence[Event] = ()) -> None:
        await self.db.run_write(_update, profile, values, evs)


def _insert(conn: Connection, row: Row) -> None:
    conn.execute(insert(worker_processes).values(**row))


def _update(conn: Connection, profile: str, values: Row, evs: Sequence[Event]) -> None:
    conn.execute(
        update(worker_processes).where(worker_processes.c.profile == profile).values(**values)
    )
    event_store.append_sync(conn, evs)
