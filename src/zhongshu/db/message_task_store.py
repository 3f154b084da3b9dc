"""SQL for WeRSS message tasks: the rows, their webhook deliveries, and the read-only
queries on the sources and the collected ``items`` they watch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, select, true
from sqlalchemy.engine import Connection

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.rows import all_rows, first_row, matching, newest_page, page_rows
from zhongshu.db.schedule_store import DueClaims, _delete, _insert, _update
from zhongshu.db.schema import items, message_task_deliveries, message_tasks, sources
from zhongshu.services.events import Event

Row = dict[str, Any]
# The most articles one run collects (the oldest beyond it wait for the next run).
MAX_ARTICLES = 500


class MessageTaskStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.claims = DueClaims(db, message_tasks)

    async def insert(self, row: Row, ev: Event) -> Row:
        return await self.db.run_write(_insert, message_tasks, row, ev)

    async def get(self, message_task_id: str) -> Row | None:
        return await self.db.run_read(
            first_row, select(message_tasks).where(message_tasks.c.id == message_task_id)
        )

    async def find(
        self, *, owner_id: str | None, status: int | None, limit: int, offset: int
    ) -> tuple[list[Row], int]:
        where = matching(message_tasks, owner_id=owner_id, status=status)
        return await self.db.run_read(page_rows, *newest_page(message_tasks, where, limit, offset))

    async def update(self, message_task_id: str, values: Row, ev: Event) -> Row | None:
        return await self.db.run_write(_update, message_tasks, message_task_id, values, ev)

    async def delete(self, message_task_id: str, ev: Event) -> bool:
        return await self.db.run_write(_delete, message_tasks, message_task_id, ev)

    # --- what a run reads ---------------------------------------------------------------

    async def sources(self, source_ids: Sequence[str]) -> list[Row]:
        """The sources with these ids (those that exist), with their owners."""
        if not source_ids:
            return []
        stmt = select(
            sources.c.id,
            sources.c.owner_id,
            sources.c.name,
            sources.c.platform,
            sources.c.account_id,
        ).where(sources.c.id.in_(list(source_ids)))
        return await self.db.run_read(all_rows, stmt)

    async def new_articles(
        self, source_ids: Sequence[str], since: float, until: float
    ) -> list[Row]:
        """Contents of these sources first seen in ``(since, until]``, newest first."""
        if not source_ids:
            return []
        stmt = (
            select(items)
            .where(
                items.c.kind == "content",
                items.c.source_id.in_(list(source_ids)),
                items.c.first_seen_at > since,
                items.c.first_seen_at <= until,
            )
            .order_by(items.c.published_at.desc(), items.c.id.desc())
            .limit(MAX_ARTICLES)
        )
        return await self.db.run_read(all_rows, stmt)

    # --- deliveries ---------------------------------------------------------------------

    async def record_deliveries(self, rows: Sequence[Row], evs: Sequence[Event]) -> None:
        await self.db.run_write(_record_deliveries, rows, evs)

    async def delivered_parts(self, task_id: str) -> set[str]:
        """Parts of a run already accepted by the webhook (a retry skips them)."""
        stmt = select(message_task_deliveries.c.part).where(
            message_task_deliveries.c.task_id == task_id,
            message_task_deliveries.c.ok == true(),
        )
        return {r["part"] for r in await self.db.run_read(all_rows, stmt)}

    async def deliveries(self, message_task_id: str, limit: int = 20) -> list[Row]:
        stmt = (
            select(message_task_deliveries)
            .where(message_task_deliveries.c.message_task_id == message_task_id)
            .order_by(message_task_deliveries.c.id.desc())
            .limit(limit)
        )
        return await self.db.run_read(all_rows, stmt)


def _record_deliveries(conn: Connection, rows: Sequence[Row], evs: Sequence[Event]) -> None:
    if rows:
        conn.execute(insert(message_task_deliveries), list(rows))
    event_store.append_sync(conn, evs)
