"""SQL for users."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, insert, select, update

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.schema import users
from zhongshu.services.events import Event

Row = dict[str, Any]


class UserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, row: Row, ev: Event) -> None:
        async with self.db.write() as conn:
            await conn.execute(insert(users).values(**row))
            await event_store.append(conn, [ev])

    async def get(self, user_id: str) -> Row | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(users).where(users.c.id == user_id))).first()
            return dict(row._mapping) if row else None

    async def by_username(self, username: str) -> Row | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(users).where(users.c.username == username))).first()
            return dict(row._mapping) if row else None

    async def count(self) -> int:
        async with self.db.read() as conn:
            return int(await conn.scalar(select(func.count()).select_from(users)) or 0)

    async def update(self, user_id: str, values: Row, ev: Event | None = None) -> Row | None:
        async with self.db.write() as conn:
            res = await conn.execute(
                update(users).where(users.c.id == user_id).values(**values).returning(*users.c)
            )
            row = res.first()
            if row is not None and ev is not None:
                await event_store.append(conn, [ev])
            return dict(row._mapping) if row else None
