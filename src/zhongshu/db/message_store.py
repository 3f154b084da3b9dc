"""SQL for messages, their per-channel deliveries, and push tokens.

A delivery's outcome and the message's overall status change in one transaction, under
a lock of the message row, so concurrent deliveries of one message (several executor
slots, several hubs) cannot both miss being the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.rows import all_rows, first_row, newest_page, page_rows
from zhongshu.db.schema import message_deliveries, messages, push_tokens
from zhongshu.services.events import Event

Row = dict[str, Any]
FINAL_DELIVERY = ("sent", "failed")


def overall_status(deliveries: Sequence[Row]) -> str | None:
    """The message status once every delivery is final (``None`` while one is not)."""
    if any(d["status"] not in FINAL_DELIVERY for d in deliveries):
        return None
    sent = sum(1 for d in deliveries if d["status"] == "sent")
    if sent == len(deliveries):
        return "sent"
    return "failed" if sent == 0 else "partially_sent"


class MessageStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.is_sqlite = db.is_sqlite

    async def insert(
        self, message: Row, deliveries: Sequence[Row], evs: Sequence[Event] = ()
    ) -> tuple[Row, bool]:
        """Store a message and its deliveries; an existing id returns the stored message
        (``created`` False), which makes a repeated digest flush harmless."""

        def tx(conn: Connection) -> tuple[Row, bool]:
            existing = first_row(conn, select(messages).where(messages.c.id == message["id"]))
            if existing is not None:
                return existing, False
            conn.execute(insert(messages).values(**message))
            if deliveries:
                conn.execute(insert(message_deliveries), list(deliveries))
            event_store.append_sync(conn, evs)
            row = first_row(conn, select(messages).where(messages.c.id == message["id"]))
            assert row is not None
            return row, True

        return await self.db.run_write(tx)

    async def get(self, message_id: str) -> Row | None:
        return await self.db.run_read(
            first_row, select(messages).where(messages.c.id == message_id)
        )

    async def by_view_token(self, token: str) -> Row | None:
        return await self.db.run_read(
            first_row, select(messages).where(messages.c.view_token == token)
        )

    async def find(
        self, owner_id: str | None, *, status: str | None, limit: int, offset: int
    ) -> tuple[list[Row], int]:
        where = []
        if owner_id is not None:
            where.append(messages.c.owner_id == owner_id)
        if status:
            where.append(messages.c.status == status)
        return await self.db.run_read(page_rows, *newest_page(messages, where, limit, offset))

    async def deliveries(self, message_id: str) -> list[Row]:
        return (await self.deliveries_of([message_id]))[message_id]

    async def deliveries_of(self, message_ids: Sequence[str]) -> dict[str, list[Row]]:
        """The deliveries of several messages (a page of them) in one query, by message."""
        rows = await self.db.run_read(
            all_rows,
            select(message_deliveries)
            .where(message_deliveries.c.message_id.in_(list(message_ids)))
            .order_by(message_deliveries.c.id),
        )
        out: dict[str, list[Row]] = {i: [] for i in message_ids}
        for r in rows:
            out[r["message_id"]].append(r)
        return out

    async def delivery(self, message_id: str, channel_id: int) -> Row | None:
        return await self.db.run_read(
            first_row,
            select(message_deliveries).where(
                message_deliveries.c.message_id == message_id,
                message_deliveries.c.channel_id == channel_id,
            ),
        )

    async def update(
        self, message_id: str, values: Row, *, only_if: Sequence[tuple[str, Sequence[Any]]] = ()
    ) -> Row | None:
        """Set ``values``; with ``only_if`` [(column, allowed values)], only when each column
        holds one of its allowed values. Returns the row, or None when nothing changed."""

        def tx(conn: Connection) -> Row | None:
            stmt = update(messages).where(messages.c.id == message_id)
            for column, allowed in only_if:
                stmt = stmt.where(messages.c[column].in_(list(allowed)))
            if conn.execute(stmt.values(**values)).rowcount == 0:
                return None
            return first_row(conn, select(messages).where(messages.c.id == message_id))

        return await self.db.run_write(tx)

    async def update_deliveries(
        self, message_id: str, channel_ids: Sequence[int], values: Row
    ) -> None:
        def tx(conn: Connection) -> None:
            conn.execute(
                update(message_deliveries)
                .where(
                    message_deliveries.c.message_id == message_id,
                    message_deliveries.c.channel_id.in_(list(channel_ids)),
                )
                .values(**values)
            )

        await self.db.run_write(tx)

    async def record_delivery(
        self,
        message_id: str,
        channel_id: int,
        values: Row,
        now: float,
        final_event: Callable[[Row, str], Event],
    ) -> tuple[Row | None, Event | None]:
        """Update one delivery; when it was the last unfinished one, settle the message's
        status too, with ``final_event(message, status)`` written in the same transaction.
        Returns the message row and that event (or None)."""

        def tx(conn: Connection) -> tuple[Row | None, Event | None]:
            lock = select(messages).where(messages.c.id == message_id)
            if not self.is_sqlite:
                lock = lock.with_for_update()
            message = first_row(conn, lock)
            if message is None:
                return None, None
            conn.execute(
                update(message_deliveries)
                .where(
                    message_deliveries.c.message_id == message_id,
                    message_deliveries.c.channel_id == channel_id,
                )
                .values(**values)
            )
            rows = all_rows(
                conn,
                select(message_deliveries).where(message_deliveries.c.message_id == message_id),
            )
            final = overall_status(rows)
            if final is None or message["status"] == final:
                return message, None
            conn.execute(
                update(messages)
                .where(messages.c.id == message_id)
                .values(status=final, finished_at=now, updated_at=now)
            )
            message = {**message, "status": final, "finished_at": now}
            ev = final_event(message, final)
            event_store.append_sync(conn, [ev])
            return message, ev

        return await self.db.run_write(tx)

    # --- push tokens ---------------------------------------------------------------------

    async def token_of(self, user_id: str) -> Row | None:
        return await self.db.run_read(
            first_row, select(push_tokens).where(push_tokens.c.user_id == user_id)
        )

    async def token_by_hash(self, token_hash: str) -> Row | None:
        return await self.db.run_read(
            first_row, select(push_tokens).where(push_tokens.c.token_hash == token_hash)
        )

    async def ensure_token(self, values: Row) -> Row:
        """Insert the user's token unless one exists; returns the stored one."""

        def tx(conn: Connection) -> Row:
            where = push_tokens.c.user_id == values["user_id"]
            row = first_row(conn, select(push_tokens).where(where))
            if row is None:
                conn.execute(insert(push_tokens).values(**values))
                row = first_row(conn, select(push_tokens).where(where))
            assert row is not None
            return row

        return await self.db.run_write(tx)

    async def update_token(self, user_id: str, values: Row) -> Row | None:
        def tx(conn: Connection) -> Row | None:
            where = push_tokens.c.user_id == user_id
            conn.execute(update(push_tokens).where(where).values(**values))
            return first_row(conn, select(push_tokens).where(where))

        return await self.db.run_write(tx)
