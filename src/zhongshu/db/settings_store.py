"""SQL for runtime settings: values an admin changed while the hub runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Connection

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.rows import all_rows
from zhongshu.db.schema import runtime_settings
from zhongshu.services.events import Event

Row = dict[str, Any]


class SettingsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def all(self) -> list[Row]:
        return await self.db.run_read(
            all_rows, select(runtime_settings).order_by(runtime_settings.c.key)
        )

    async def put(self, values: dict[str, Any], actor: str, now: float, ev: Event) -> None:
        """Store ``values`` (key → value) and the event that says so, in one transaction."""

        def tx(conn: Connection) -> None:
            keys = list(values)
            conn.execute(delete(runtime_settings).where(runtime_settings.c.key.in_(keys)))
            conn.execute(
                insert(runtime_settings),
                [
                    {"key": k, "value": {"v": v}, "updated_at": now, "updated_by": actor}
                    for k, v in values.items()
                ],
            )
            event_store.append_sync(conn, [ev])

        await self.db.run_write(tx)

    async def reset(self, keys: list[str], ev: Event) -> None:
        def tx(conn: Connection) -> None:
            conn.execute(delete(runtime_settings).where(runtime_settings.c.key.in_(keys)))
            event_store.append_sync(conn, [ev])

        await self.db.run_write(tx)
