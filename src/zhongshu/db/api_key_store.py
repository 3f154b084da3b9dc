"""SQL for user API keys."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.schema import api_keys, users
from zhongshu.services.events import Event

Row = dict[str, Any]


class ApiKeyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, row: Row, ev: Event) -> None:
        async with self.db.write() as conn:
            await conn.execute(insert(api_keys).values(**row))
            await event_store.append(conn, [ev])

    async def get(self, key_id: str) -> Row | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(api_keys).where(api_keys.c.id == key_id))).first()
            return dict(row._mapping) if row else None

    async def with_owner(self, access_key: str) -> tuple[Row | None, Row | None]:
        """The key for an access key and its owner, in one snapshot (one hop: this runs on
        every request authenticated with a user key)."""
        return await self.db.run_read(_with_owner, access_key)

    async def list(
        self, owner_id: str | None, limit: int = 100, offset: int = 0
    ) -> tuple[list[Row], int]:
        where = [api_keys.c.owner_id == owner_id] if owner_id is not None else []
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(api_keys)
                .where(*where)
                .order_by(api_keys.c.created_at, api_keys.c.id)
                .limit(limit)
                .offset(offset)
            )
            total = await conn.scalar(select(func.count()).select_from(api_keys).where(*where))
        return [dict(r._mapping) for r in rows], int(total or 0)

    async def update(self, key_id: str, values: Row, evs: Sequence[Event] = ()) -> Row | None:
        async with self.db.write() as conn:
            res = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id)
                .values(**values)
                .returning(*api_keys.c)
            )
            row = res.first()
            if row is not None:
                await event_store.append(conn, evs)
            return dict(row._mapping) if row else None

    async def touch(self, key_id: str, at: float) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=at)
            )

    async def delete(self, key_id: str, ev: Event) -> bool:
        async with self.db.write() as conn:
            res = await conn.execute(delete(api_keys).where(api_keys.c.id == key_id))
            if res.rowcount:
                await event_store.append(conn, [ev])
            return bool(res.rowcount)


def _with_owner(conn: Connection, access_key: str) -> tuple[Row | None, Row | None]:
    key = conn.execute(select(api_keys).where(api_keys.c.access_key == access_key)).first()
    if key is None:
        return None, None
    owner = conn.execute(select(users).where(users.c.id == key.owner_id)).first()
    return dict(key._mapping), dict(owner._mapping) if owner else None
