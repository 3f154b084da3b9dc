"""SQL for schedules, and the due-claim that schedules and message tasks share.

Both tables carry the same trigger columns (``next_run_at``, ``last_run_at``,
``last_due_at``, ``last_task_id``, ``run_count``). A due time is fired by the hub whose
conditional ``UPDATE … WHERE id = :id AND next_run_at = :due`` changes the row: on
PostgreSQL two hubs racing for one row serialize on its row lock, the second re-checks the
condition after the first commits and updates nothing. Each function is one transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, delete, func, insert, select, true, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.rows import all_rows, first_row, matching, newest_page, page_rows
from zhongshu.db.schema import message_tasks, schedules
from zhongshu.services.events import Event

Row = dict[str, Any]


def enabled_condition(table: Table) -> ColumnElement[bool]:
    """What "switched on" means for each table that shares the due-claim."""
    if table is message_tasks:
        return message_tasks.c.status == 1
    return schedules.c.enabled == true()


class DueClaims:
    """The shared due-claim SQL over one trigger table (schedules or message tasks)."""

    def __init__(self, db: Database, table: Table) -> None:
        self.db = db
        self.table = table

    async def due(self, now: float, limit: int) -> list[Row]:
        """Switched-on rows whose ``next_run_at`` has come, oldest due first."""
        t = self.table
        stmt = (
            select(t)
            .where(enabled_condition(t), t.c.next_run_at.is_not(None), t.c.next_run_at <= now)
            .order_by(t.c.next_run_at)
            .limit(limit)
        )
        return await self.db.run_read(all_rows, stmt)

    async def next_due(self) -> float | None:
        t = self.table
        stmt = select(func.min(t.c.next_run_at)).where(enabled_condition(t))
        return await self.db.run_read(_scalar, stmt)

    async def claim(self, row_id: str, due: float, values: Row, evs: Sequence[Event]) -> bool:
        """Move ``next_run_at`` on from ``due`` (and set ``values``) if it is still ``due``.

        Returns True for the one caller whose update changed the row: that caller fired.
        """
        return await self.db.run_write(_claim, self.table, row_id, due, values, evs)

    async def record_run(
        self,
        row_id: str,
        values: Row,
        evs: Sequence[Event],
        expect: Row | None = None,
        *,
        count: bool = True,
    ) -> bool:
        """A manual run: set ``values`` (last run, task) without touching ``next_run_at``;
        with ``expect``, only if those columns still hold those values."""
        return await self.db.run_write(_record_run, self.table, row_id, values, evs, expect, count)


class ScheduleStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.claims = DueClaims(db, schedules)

    async def insert(self, row: Row, ev: Event) -> Row:
        return await self.db.run_write(_insert, schedules, row, ev)

    async def get(self, schedule_id: str) -> Row | None:
        return await self.db.run_read(
            first_row, select(schedules).where(schedules.c.id == schedule_id)
        )

    async def find(
        self, *, owner_id: str | None, enabled: bool | None, limit: int, offset: int
    ) -> tuple[list[Row], int]:
        where = matching(schedules, owner_id=owner_id, enabled=enabled)
        return await self.db.run_read(page_rows, *newest_page(schedules, where, limit, offset))

    async def update(self, schedule_id: str, values: Row, ev: Event) -> Row | None:
        return await self.db.run_write(_update, schedules, schedule_id, values, ev)

    async def delete(self, schedule_id: str, ev: Event) -> bool:
        return await self.db.run_write(_delete, schedules, schedule_id, ev)


# --- transactions (also used by message_task_store) ------------------------------------


def _scalar(conn: Connection, stmt: Any) -> Any:
    return conn.execute(stmt).scalar()


def _insert(conn: Connection, table: Table, row: Row, ev: Event) -> Row:
    conn.execute(insert(table).values(**row))
    event_store.append_sync(conn, [ev])
    return dict(row)


def _update(conn: Connection, table: Table, row_id: str, values: Row, ev: Event) -> Row | None:
    pk = table.c.id
    row = first_row(
        conn,
        update(table).where(pk == row_id).values(**values).returning(*table.c),
    )
    if row is None:
        return None
    event_store.append_sync(conn, [ev])
    return row


def _delete(conn: Connection, table: Table, row_id: str, ev: Event) -> bool:
    done = conn.execute(delete(table).where(table.c.id == row_id)).rowcount == 1
    if done:
        event_store.append_sync(conn, [ev])
    return done


def _claim(
    conn: Connection, table: Table, row_id: str, due: float, values: Row, evs: Sequence[Event]
) -> bool:
    stmt = (
        update(table)
        .where(table.c.id == row_id, table.c.next_run_at == due)
        .values(run_count=table.c.run_count + 1, **values)
    )
    if conn.execute(stmt).rowcount != 1:
        return False
    event_store.append_sync(conn, evs)
    return True


def _record_run(
    conn: Connection,
    table: Table,
    row_id: str,
    values: Row,
    evs: Sequence[Event],
    expect: Row | None,
    count: bool,
) -> bool:
    where: list[ColumnElement[bool]] = [table.c.id == row_id]
    for name, value in (expect or {}).items():
        col = table.c[name]
        where.append(col.is_(None) if value is None else col == value)
    if count:
        values = {**values, "run_count": table.c.run_count + 1}
    stmt = update(table).where(*where).values(**values)
    if conn.execute(stmt).rowcount != 1:
        return False
    event_store.append_sync(conn, evs)
    return True
