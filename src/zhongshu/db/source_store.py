"""SQL for sources: CRUD, the assignment to nodes, monitor claims and login status.

Every method is one transaction (``Database.run_read``/``run_write``) that writes its
events in the same transaction as the change. The assignment is a conditional UPDATE
(``… WHERE assigned_node_id IS NULL``) under a lock on the node's row, so concurrent
joins and leaves — in one process or in several hub processes on one database — never
give a source to two nodes, nor a node more than its ``max_accounts``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from sqlalchemy import and_, delete, false, func, insert, not_, or_, select, update
from sqlalchemy.engine import Connection

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.rows import all_rows, first_row, page_rows
from zhongshu.db.schema import nodes, sources, tasks
from zhongshu.services.events import Event

Row = dict[str, Any]
AssignOutcome = Literal["assigned", "taken", "full", "node_unavailable"]
# Monitor tasks in these states are "open": a source never has two of them.
OPEN_TASK_STATES = ("pending", "leased", "running", "failed")


class SourceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # --- CRUD --------------------------------------------------------------------------

    async def insert(self, row: Row, ev: Event) -> Row:
        return await self.db.run_write(_insert, row, ev)

    async def get(self, source_id: str) -> Row | None:
        return await self.db.run_read(_one, sources.c.id == source_id)

    async def get_many(self, source_ids: Sequence[str]) -> list[Row]:
        if not source_ids:
            return []
        return await self.db.run_read(
            all_rows, select(sources).where(sources.c.id.in_(list(source_ids)))
        )

    async def find(
        self,
        *,
        owner_id: str | None = None,
        platform: str | None = None,
        status: str | None = None,
        login_status: str | None = None,
        node_id: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Row], int]:
        where = []
        if owner_id is not None:
            where.append(sources.c.owner_id == owner_id)
        if platform:
            where.append(sources.c.platform == platform)
        if status:
            where.append(sources.c.status == status)
        if login_status:
            where.append(sources.c.login_status == login_status)
        if node_id:
            where.append(sources.c.assigned_node_id == node_id)
        page = (
            select(sources)
            .where(*where)
            .order_by(sources.c.created_at, sources.c.id)
            .limit(limit)
            .offset(offset)
        )
        count = select(func.count()).select_from(sources).where(*where)
        return await self.db.run_read(page_rows, page, count)

    async def update(
        self, source_id: str, values: Row, evs: Sequence[Event], node_was: str | None = None
    ) -> Row | None:
        """Set ``values`` (with ``node_was``: only while the source is on that node);
        None when no row matched."""
        where = [sources.c.assigned_node_id == node_was] if node_was is not None else []
        return await self.db.run_write(_update, source_id, values, evs, where)

    async def delete(self, source_id: str, ev: Event) -> Row | None:
        return await self.db.run_write(_delete, source_id, ev)

    # --- assignment --------------------------------------------------------------------

    async def load_by_node(self) -> dict[str, int]:
        """How many sources each node serves now."""
        stmt = (
            select(sources.c.assigned_node_id, func.count())
            .where(sources.c.assigned_node_id.is_not(None))
            .group_by(sources.c.assigned_node_id)
        )
        rows = await self.db.run_read(lambda c: list(c.execute(stmt)))
        return {str(r[0]): int(r[1]) for r in rows}

    async def unassigned(self, source_ids: Sequence[str] | None = None) -> list[Row]:
        """Active sources no node serves (optionally only among ``source_ids``)."""
        stmt = select(sources).where(
            sources.c.status == "active", sources.c.assigned_node_id.is_(None)
        )
        if source_ids is not None:
            stmt = stmt.where(sources.c.id.in_(list(source_ids)))
        return await self.db.run_read(all_rows, stmt.order_by(sources.c.created_at, sources.c.id))

    async def assign(
        self,
        source_id: str,
        platform: str,
        node_id: str,
        now: float,
        make_event: Callable[[Row], Event],
    ) -> tuple[AssignOutcome, Row | None]:
        """Give the source to the node if it is still unassigned, active and on
        ``platform`` (the one the node was chosen for), and the node has room."""
        return await self.db.run_write(_assign, source_id, platform, node_id, now, make_event)

    async def revoke_stray(
        self, now: float, make_event: Callable[[Row, str], Event], source_ids: Sequence[str] = ()
    ) -> list[Row]:
        """Unassign sources whose node is not online and enabled (or is gone), and the
        inactive sources in ``source_ids``; returns them with the node they left."""
        return await self.db.run_write(_revoke_stray, now, make_event, list(source_ids))

    # --- monitoring --------------------------------------------------------------------

    async def monitor_due(self, now: float) -> list[Row]:
        """Logged-in active sources on an online node whose interval has passed and that
        have no open monitor task on that node (``open_task_id``: one on another node)."""
        return await self.db.run_read(_monitor_due, now)

    async def claim_monitor(
        self, source_id: str, old_task_id: str | None, new_task_id: str, now: float
    ) -> bool:
        """Point the source at a new monitor task, unless another hub process did first."""
        return await self.db.run_write(_claim_monitor, source_id, old_task_id, new_task_id, now)

    # --- login status ------------------------------------------------------------------

    async def expire_logins(
        self, now: float, make_event: Callable[[Row], Event], source_id: str | None = None
    ) -> list[Row]:
        """logged_in → expired for credentials past ``cookies_valid_until`` (or, with
        ``source_id``, for that source now). Only rows that change are returned, so each
        expiry raises one event however often it is checked."""
        return await self.db.run_write(_expire_logins, now, make_event, source_id)


def _insert(conn: Connection, row: Row, ev: Event) -> Row:
    conn.execute(insert(sources).values(**row))
    event_store.append_sync(conn, [ev])
    got = _one(conn, sources.c.id == row["id"])
    assert got is not None
    return got


def _one(conn: Connection, cond: Any) -> Row | None:
    return first_row(conn, select(sources).where(cond))


def _update(
    conn: Connection, source_id: str, values: Row, evs: Sequence[Event], where: list[Any]
) -> Row | None:
    row = first_row(
        conn,
        update(sources)
        .where(sources.c.id == source_id, *where)
        .values(**values)
        .returning(*sources.c),
    )
    if row is None:
        return None
    event_store.append_sync(conn, evs)
    return row


def _delete(conn: Connection, source_id: str, ev: Event) -> Row | None:
    row = first_row(
        conn,
        delete(sources).where(sources.c.id == source_id).returning(*sources.c),
    )
    if row is None:
        return None
    event_store.append_sync(conn, [ev])
    return row


def _assign(
    conn: Connection,
    source_id: str,
    platform: str,
    node_id: str,
    now: float,
    make_event: Callable[[Row], Event],
) -> tuple[AssignOutcome, Row | None]:
    # Lock the node's row (PostgreSQL; SQLite has one writer anyway): a concurrent
    # assignment to the same node waits, so the count below stays true until commit, and
    # a concurrent "mark offline" either happens before (we see it) or after (it revokes).
    max_accounts = conn.execute(
        select(nodes.c.max_accounts)
        .where(nodes.c.id == node_id, nodes.c.status == "online", nodes.c.disabled == false())
        .with_for_update()
    ).scalar()
    if max_accounts is None:
        return "node_unavailable", None
    load = conn.scalar(
        select(func.count()).select_from(sources).where(sources.c.assigned_node_id == node_id)
    )
    if int(load or 0) >= int(max_accounts):
        return "full", None
    row = first_row(
        conn,
        update(sources)
        .where(
            sources.c.id == source_id,
            sources.c.assigned_node_id.is_(None),
            sources.c.status == "active",
            # Read before the node was chosen: a platform changed since then needs
            # another node (the next round picks one).
            sources.c.platform == platform,
        )
        .values(assigned_node_id=node_id, assigned_at=now, updated_at=now)
        .returning(*sources.c),
    )
    if row is None:
        return "taken", None
    event_store.append_sync(conn, [make_event(row)])
    return "assigned", row


def _revoke_stray(
    conn: Connection, now: float, make_event: Callable[[Row, str], Event], source_ids: list[str]
) -> list[Row]:
    serving = select(nodes.c.id).where(nodes.c.status == "online", nodes.c.disabled == false())
    cond = and_(
        sources.c.assigned_node_id.is_not(None),
        not_(sources.c.assigned_node_id.in_(serving)),
    )
    if source_ids:
        cond = or_(
            cond,
            and_(
                sources.c.id.in_(source_ids),
                sources.c.assigned_node_id.is_not(None),
                sources.c.status != "active",
            ),
        )
    # Read the rows (with the node they leave), then clear each one conditionally: the
    # node it leaves is part of the WHERE, so a row reassigned meanwhile is left alone.
    stray = all_rows(conn, select(sources).where(cond))
    out = []
    for s in stray:
        res = conn.execute(
            update(sources)
            .where(sources.c.id == s["id"], sources.c.assigned_node_id == s["assigned_node_id"])
            .values(assigned_node_id=None, assigned_at=None, updated_at=now)
        )
        if res.rowcount:
            reason = "source inactive" if s["status"] != "active" else "node unavailable"
            event_store.append_sync(conn, [make_event(s, reason)])
            out.append({**s, "revoke_reason": reason})
    return out


def _monitor_due(conn: Connection, now: float) -> list[Row]:
    node_cap = "node:" + sources.c.assigned_node_id
    stmt = (
        select(
            sources,
            tasks.c.id.label("open_task_id"),
            tasks.c.capability.label("open_task_capability"),
        )
        .join(nodes, nodes.c.id == sources.c.assigned_node_id)
        .outerjoin(
            tasks,
            and_(tasks.c.id == sources.c.monitor_task_id, tasks.c.status.in_(OPEN_TASK_STATES)),
        )
        .where(
            sources.c.status == "active",
            sources.c.login_status == "logged_in",
            nodes.c.status == "online",
            nodes.c.disabled == false(),
            or_(
                sources.c.last_monitored_at.is_(None),
                sources.c.last_monitored_at + sources.c.monitor_interval_s <= now,
            ),
            # No open task, or one stuck on a node the source has left.
            or_(tasks.c.id.is_(None), tasks.c.capability != node_cap),
        )
        .order_by(sources.c.assigned_node_id, sources.c.id)
    )
    return all_rows(conn, stmt)


def _claim_monitor(
    conn: Connection, source_id: str, old_task_id: str | None, new_task_id: str, now: float
) -> bool:
    same = (
        sources.c.monitor_task_id.is_(None)
        if old_task_id is None
        else sources.c.monitor_task_id == old_task_id
    )
    res = conn.execute(
        update(sources)
        .where(
            sources.c.id == source_id,
            same,
            or_(
                sources.c.last_monitored_at.is_(None),
                sources.c.last_monitored_at + sources.c.monitor_interval_s <= now,
            ),
        )
        .values(monitor_task_id=new_task_id, last_monitored_at=now)
    )
    return bool(res.rowcount)


def _expire_logins(
    conn: Connection, now: float, make_event: Callable[[Row], Event], source_id: str | None
) -> list[Row]:
    cond = [sources.c.login_status == "logged_in"]
    if source_id is None:
        cond.append(sources.c.cookies_valid_until < now)
    else:
        cond.append(sources.c.id == source_id)
    rows = all_rows(
        conn,
        update(sources)
        .where(*cond)
        .values(login_status="expired", updated_at=now)
        .returning(*sources.c),
    )
    event_store.append_sync(conn, [make_event(r) for r in rows])
    return rows
