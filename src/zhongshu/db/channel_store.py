"""SQL for push channels and AI providers: plain per-owner CRUD, one transaction each."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Connection

from zhongshu.db.engine import Database
from zhongshu.db.rows import all_rows, first_row
from zhongshu.db.schema import ai_providers, channels

Row = dict[str, Any]


class ChannelStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- channels ----------------------------------------------------------------------

    async def insert_channel(self, values: Row) -> Row:
        def tx(conn: Connection) -> Row:
            key = conn.execute(insert(channels).values(**values)).inserted_primary_key
            assert key is not None
            new_id = key[0]
            row = first_row(conn, select(channels).where(channels.c.id == new_id))
            assert row is not None
            return row

        return await self.db.run_write(tx)

    async def channel(self, channel_id: int) -> Row | None:
        return await self.db.run_read(
            first_row, select(channels).where(channels.c.id == channel_id)
        )

    async def channels(
        self, owner_id: str | None, *, limit: int = 100, offset: int = 0
    ) -> list[Row]:
        stmt = select(channels).order_by(channels.c.id).limit(limit).offset(offset)
        if owner_id is not None:
            stmt = stmt.where(channels.c.owner_id == owner_id)
        return await self.db.run_read(all_rows, stmt)

    async def channels_by_ids(self, ids: Sequence[int]) -> list[Row]:
        if not ids:
            return []
        return await self.db.run_read(
            all_rows, select(channels).where(channels.c.id.in_(list(ids))).order_by(channels.c.id)
        )

    async def update_channel(self, channel_id: int, values: Row) -> Row | None:
        def tx(conn: Connection) -> Row | None:
            conn.execute(update(channels).where(channels.c.id == channel_id).values(**values))
            return first_row(conn, select(channels).where(channels.c.id == channel_id))

        return await self.db.run_write(tx)

    async def delete_channel(self, channel_id: int) -> bool:
        def tx(conn: Connection) -> bool:
            return conn.execute(delete(channels).where(channels.c.id == channel_id)).rowcount > 0

        return await self.db.run_write(tx)

    # --- AI providers ------------------------------------------------------------------

    async def insert_provider(self, values: Row) -> Row:
        def tx(conn: Connection) -> Row:
            if values.get("is_default"):
                _clear_default(conn, values["owner_id"])
            conn.execute(insert(ai_providers).values(**values))
            row = first_row(conn, select(ai_providers).where(ai_providers.c.id == values["id"]))
            assert row is not None
            return row

        return await self.db.run_write(tx)

    async def provider(self, provider_id: str) -> Row | None:
        return await self.db.run_read(
            first_row, select(ai_providers).where(ai_providers.c.id == provider_id)
        )

    async def providers(self, owner_id: str | None) -> list[Row]:
        stmt = select(ai_providers).order_by(ai_providers.c.created_at)
        if owner_id is not None:
            stmt = stmt.where(ai_providers.c.owner_id == owner_id)
        return await self.db.run_read(all_rows, stmt)

    async def default_provider(self, owner_id: str) -> Row | None:
        """The owner's default provider, else their oldest one."""
        stmt = (
            select(ai_providers)
            .where(ai_providers.c.owner_id == owner_id)
            .order_by(ai_providers.c.is_default.desc(), ai_providers.c.created_at)
            .limit(1)
        )
        return await self.db.run_read(first_row, stmt)

    async def update_provider(self, provider_id: str, owner_id: str, values: Row) -> Row | None:
        def tx(conn: Connection) -> Row | None:
            if values.get("is_default"):
                _clear_default(conn, owner_id)
            conn.execute(
                update(ai_providers).where(ai_providers.c.id == provider_id).values(**values)
            )
            return first_row(conn, select(ai_providers).where(ai_providers.c.id == provider_id))

        return await self.db.run_write(tx)

    async def delete_provider(self, provider_id: str) -> bool:
        def tx(conn: Connection) -> bool:
            stmt = delete(ai_providers).where(ai_providers.c.id == provider_id)
            return conn.execute(stmt).rowcount > 0

        return await self.db.run_write(tx)


def _clear_default(conn: Connection, owner_id: str) -> None:
    conn.execute(
        update(ai_providers).where(ai_providers.c.owner_id == owner_id).values(is_default=False)
    )
