"""SQL for notification rules and the digest entries waiting for their window to close."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from zhongshu.db.engine import Database
from zhongshu.db.rows import all_rows, first_row
from zhongshu.db.schema import digest_entries, notification_rules

Row = dict[str, Any]


class RoutingStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- rules -------------------------------------------------------------------------

    async def insert_rule(self, values: Row) -> Row:
        def tx(conn: Connection) -> Row:
            conn.execute(insert(notification_rules).values(**values))
            row = first_row(
                conn, select(notification_rules).where(notification_rules.c.id == values["id"])
            )
            assert row is not None
            return row

        return await self.db.run_write(tx)

    async def rule(self, rule_id: str) -> Row | None:
        return await self.db.run_read(
            first_row, select(notification_rules).where(notification_rules.c.id == rule_id)
        )

    async def rules(self, owner_id: str | None, *, enabled_only: bool = False) -> list[Row]:
        stmt = select(notification_rules).order_by(notification_rules.c.created_at)
        if owner_id is not None:
            stmt = stmt.where(notification_rules.c.owner_id == owner_id)
        if enabled_only:
            stmt = stmt.where(notification_rules.c.enabled.is_(True))
        return await self.db.run_read(all_rows, stmt)

    async def update_rule(self, rule_id: str, values: Row) -> Row | None:
        def tx(conn: Connection) -> Row | None:
            where = notification_rules.c.id == rule_id
            conn.execute(update(notification_rules).where(where).values(**values))
            return first_row(conn, select(notification_rules).where(where))

        return await self.db.run_write(tx)

    async def delete_rule(self, rule_id: str) -> bool:
        def tx(conn: Connection) -> bool:
            conn.execute(delete(digest_entries).where(digest_entries.c.rule_id == rule_id))
            stmt = delete(notification_rules).where(notification_rules.c.id == rule_id)
            return conn.execute(stmt).rowcount > 0

        return await self.db.run_write(tx)

    # --- digest entries ----------------------------------------------------------------

    async def add_entry(self, entry: Row, window_s: float) -> Row:
        """Queue an entry for its rule. It joins the batch already waiting (same due time)
        if that batch is not due yet, or opens a new batch due ``window_s`` from now: the
        first event of a burst starts the window, the rest ride along. A due batch takes
        no newcomers, so what a flush sends is fixed once it is due."""

        def tx(conn: Connection) -> Row:
            due = conn.execute(
                select(func.min(digest_entries.c.due_at)).where(
                    digest_entries.c.rule_id == entry["rule_id"],
                    digest_entries.c.batch_id.is_(None),
                    digest_entries.c.due_at > entry["created_at"],
                )
            ).scalar()
            values = {**entry, "due_at": due if due is not None else entry["created_at"] + window_s}
            key = conn.execute(insert(digest_entries).values(**values)).inserted_primary_key
            assert key is not None
            new_id = key[0]
            return {**values, "id": new_id}

        return await self.db.run_write(tx)

    async def due_rules(self, now: float, reclaim_before: float) -> list[str]:
        """Rules with a batch to send: due and unclaimed, or claimed by a hub that did not
        finish it by ``reclaim_before``."""
        c = digest_entries.c
        stmt = (
            select(c.rule_id)
            .where(
                or_(
                    and_(c.batch_id.is_(None), c.due_at <= now),
                    and_(c.batch_id.is_not(None), c.claimed_at < reclaim_before),
                )
            )
            .group_by(c.rule_id)
        )
        return await self.db.run_read(lambda conn: [r[0] for r in conn.execute(stmt)])

    async def entries(self, rule_id: str) -> list[Row]:
        return await self.db.run_read(
            all_rows,
            select(digest_entries)
            .where(digest_entries.c.rule_id == rule_id)
            .order_by(digest_entries.c.id),
        )

    async def claim(
        self, rule_id: str, batch_id: str, now: float, reclaim_before: float
    ) -> list[Row]:
        """Take the rule's due batch for sending, atomically: a batch a dead hub left
        (claimed before ``reclaim_before``) first, else every due unclaimed entry. Two
        hubs never get the same entries. Returns the batch's entries (empty: nothing)."""
        c = digest_entries.c

        def tx(conn: Connection) -> list[Row]:
            stale = conn.execute(
                select(c.batch_id)
                .where(c.rule_id == rule_id, c.batch_id.is_not(None), c.claimed_at < reclaim_before)
                .limit(1)
            ).scalar()
            if stale is not None:
                # Same batch id: the message it makes has the same id, so a batch whose
                # message was already made is not sent twice.
                taken = conn.execute(
                    update(digest_entries)
                    .where(c.batch_id == stale, c.claimed_at < reclaim_before)
                    .values(claimed_at=now)
                ).rowcount
                batch = stale if taken else None
            else:
                taken = conn.execute(
                    update(digest_entries)
                    .where(c.rule_id == rule_id, c.batch_id.is_(None), c.due_at <= now)
                    .values(batch_id=batch_id, claimed_at=now)
                ).rowcount
                batch = batch_id if taken else None
            if batch is None:
                return []
            return all_rows(conn, select(digest_entries).where(c.batch_id == batch).order_by(c.id))

        return await self.db.run_write(tx)

    async def postpone(self, rule_id: str, due_at: float) -> None:
        def tx(conn: Connection) -> None:
            conn.execute(
                update(digest_entries)
                .where(digest_entries.c.rule_id == rule_id, digest_entries.c.batch_id.is_(None))
                .values(due_at=due_at)
            )

        await self.db.run_write(tx)

    async def remove_batch(self, batch_id: str) -> None:
        def tx(conn: Connection) -> None:
            conn.execute(delete(digest_entries).where(digest_entries.c.batch_id == batch_id))

        await self.db.run_write(tx)

    async def pending_count(self, rule_id: str | None = None) -> int:
        stmt = select(func.count()).select_from(digest_entries)
        if rule_id is not None:
            stmt = stmt.where(digest_entries.c.rule_id == rule_id)
        return await self.db.run_read(lambda conn: int(conn.execute(stmt).scalar_one()))

    async def pending_counts(self, rule_ids: list[str]) -> dict[str, int]:
        """Entries waiting per rule, in one query (rules without any are left out)."""
        if not rule_ids:
            return {}
        stmt = (
            select(digest_entries.c.rule_id, func.count())
            .where(digest_entries.c.rule_id.in_(rule_ids))
            .group_by(digest_entries.c.rule_id)
        )
        return await self.db.run_read(lambda conn: {r[0]: int(r[1]) for r in conn.execute(stmt)})
