"""SQL for QR login sessions: pending → scanning → success | failed | expired.

Every transition is a conditional UPDATE on the session's status, so a late or repeated
report from a worker (or two hub processes expiring the same session) changes it once.
The source's login status changes in the same transaction as the session.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.rows import all_rows, first_row, newest_page, page_rows
from zhongshu.db.schema import login_sessions, sources
from zhongshu.services.events import Event

Row = dict[str, Any]
OPEN_STATES = ("pending", "scanning")


class LoginSessionStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def start(self, row: Row, ev: Event, superseded: Callable[[Row], Event]) -> list[Row]:
        """Insert a session and mark its source ``logging_in``; earlier open sessions of
        the source expire (one login at a time). Returns the superseded sessions."""
        return await self.db.run_write(_start, row, ev, superseded)

    async def get(self, session_id: str) -> Row | None:
        return await self.db.run_read(_one, session_id)

    async def find(
        self,
        *,
        owner_id: str | None = None,
        source_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Row], int]:
        where = []
        if owner_id is not None:
            where.append(login_sessions.c.owner_id == owner_id)
        if source_id:
            where.append(login_sessions.c.source_id == source_id)
        if status:
            where.append(login_sessions.c.status == status)
        return await self.db.run_read(page_rows, *newest_page(login_sessions, where, limit, offset))

    async def transition(
        self,
        session_id: str,
        from_states: Sequence[str],
        values: Row,
        source_values: Row | None,
        source_from: Sequence[str] | None,
        ev: Event,
    ) -> Row | None:
        """Move a session out of ``from_states`` (and, optionally, its source's login
        status out of ``source_from``); None when the session was not in those states."""
        return await self.db.run_write(
            _transition, session_id, list(from_states), values, source_values, source_from, ev
        )

    async def expire_due(self, now: float, make_event: Callable[[Row], Event]) -> list[Row]:
        """Open sessions past ``expires_at`` become ``expired``; returns them."""
        return await self.db.run_write(_expire_due, now, make_event)


def _one(conn: Connection, session_id: str) -> Row | None:
    return first_row(conn, select(login_sessions).where(login_sessions.c.id == session_id))


def _start(conn: Connection, row: Row, ev: Event, superseded: Callable[[Row], Event]) -> list[Row]:
    old = all_rows(
        conn,
        update(login_sessions)
        .where(
            login_sessions.c.source_id == row["source_id"],
            login_sessions.c.status.in_(OPEN_STATES),
        )
        .values(
            status="expired",
            error_message="superseded by a newer login",
            updated_at=row["created_at"],
        )
        .returning(*login_sessions.c),
    )
    conn.execute(insert(login_sessions).values(**row))
    conn.execute(
        update(sources)
        .where(sources.c.id == row["source_id"])
        .values(login_status="logging_in", updated_at=row["created_at"])
    )
    event_store.append_sync(conn, [*(superseded(o) for o in old), ev])
    return old


def _transition(
    conn: Connection,
    session_id: str,
    from_states: list[str],
    values: Row,
    source_values: Row | None,
    source_from: Sequence[str] | None,
    ev: Event,
) -> Row | None:
    row = first_row(
        conn,
        update(login_sessions)
        .where(login_sessions.c.id == session_id, login_sessions.c.status.in_(from_states))
        .values(**values)
        .returning(*login_sessions.c),
    )
    if row is None:
        return None
    if source_values:
        cond = [sources.c.id == row["source_id"]]
        if source_from is not None:
            cond.append(sources.c.login_status.in_(list(source_from)))
        conn.execute(update(sources).where(*cond).values(**source_values))
    event_store.append_sync(conn, [ev])
    return row


def _expire_due(conn: Connection, now: float, make_event: Callable[[Row], Event]) -> list[Row]:
    rows = all_rows(
        conn,
        update(login_sessions)
        .where(login_sessions.c.status.in_(OPEN_STATES), login_sessions.c.expires_at < now)
        .values(
            status="expired",
            error_message="the QR code was not scanned in time",
            updated_at=now,
        )
        .returning(*login_sessions.c),
    )
    for r in rows:
        # The source waits for no login any more (unless a newer session is open).
        newer = conn.scalar(
            select(func.count())
            .select_from(login_sessions)
            .where(
                login_sessions.c.source_id == r["source_id"],
                login_sessions.c.status.in_(OPEN_STATES),
            )
        )
        if not newer:
            conn.execute(
                update(sources)
                .where(sources.c.id == r["source_id"], sources.c.login_status == "logging_in")
                .values(login_status="not_logged_in", updated_at=now)
            )
    event_store.append_sync(conn, [make_event(r) for r in rows])
    return rows
