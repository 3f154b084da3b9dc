"""SQL for proxies and the proxy each node uses by default."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.rows import first_row, page_rows
from zhongshu.db.schema import node_proxies, proxies, sources
from zhongshu.services.events import Event

Row = dict[str, Any]


class ProxyStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, row: Row, ev: Event) -> None:
        await self.db.run_write(_insert, row, ev)

    async def get(self, proxy_id: str) -> Row | None:
        return await self.db.run_read(_one, proxy_id)

    async def find(
        self, owner_id: str | None, limit: int = 100, offset: int = 0
    ) -> tuple[list[Row], int]:
        where = [proxies.c.owner_id == owner_id] if owner_id is not None else []
        page = (
            select(proxies)
            .where(*where)
            .order_by(proxies.c.created_at, proxies.c.id)
            .limit(limit)
            .offset(offset)
        )
        count = select(func.count()).select_from(proxies).where(*where)
        return await self.db.run_read(page_rows, page, count)

    async def update(self, proxy_id: str, values: Row, ev: Event) -> Row | None:
        return await self.db.run_write(_update, proxy_id, values, ev)

    async def delete(self, proxy_id: str, ev: Event, now: float) -> bool:
        """Delete a proxy; sources and nodes that used it go direct."""
        return await self.db.run_write(_delete, proxy_id, ev, now)

    async def in_use(self, wanted: Sequence[tuple[str | None, str | None]]) -> list[Row | None]:
        """For each ``(source's proxy_id, node_id)``: the proxy that source uses, its own
        else the node's default (None: direct), all read in one query, so a round over
        many sources (the monitor tick, a node's accounts) costs one query, not two each."""
        return await self.db.run_read(_in_use, list(wanted))

    async def node_proxy_id(self, node_id: str) -> str | None:
        stmt = select(node_proxies.c.proxy_id).where(node_proxies.c.node_id == node_id)
        return await self.db.run_read(lambda c: c.scalar(stmt))

    async def set_node_proxy(
        self, node_id: str, proxy_id: str | None, now: float, ev: Event
    ) -> None:
        await self.db.run_write(_set_node_proxy, node_id, proxy_id, now, ev)


def _insert(conn: Connection, row: Row, ev: Event) -> None:
    conn.execute(insert(proxies).values(**row))
    event_store.append_sync(conn, [ev])


def _one(conn: Connection, proxy_id: str) -> Row | None:
    return first_row(conn, select(proxies).where(proxies.c.id == proxy_id))


def _in_use(conn: Connection, wanted: list[tuple[str | None, str | None]]) -> list[Row | None]:
    own = {proxy_id for proxy_id, _ in wanted if proxy_id is not None}
    nodes = {node_id for proxy_id, node_id in wanted if proxy_id is None and node_id is not None}
    if not own and not nodes:
        return [None] * len(wanted)
    # A proxy comes once per listed node it is the default of, or once on its own.
    default_for = node_proxies.c.node_id.label("default_for")
    stmt = (
        select(proxies, default_for)
        .select_from(
            proxies.outerjoin(
                node_proxies,
                and_(node_proxies.c.proxy_id == proxies.c.id, node_proxies.c.node_id.in_(nodes)),
            )
        )
        .where(or_(proxies.c.id.in_(own), node_proxies.c.node_id.is_not(None)))
    )
    by_id: dict[str, Row] = {}
    node_default: dict[str, str] = {}
    for r in conn.execute(stmt):
        row = dict(r._mapping)
        node_id = row.pop("default_for")
        by_id[row["id"]] = row
        if node_id is not None:
            node_default[node_id] = row["id"]
    out: list[Row | None] = []
    for proxy_id, node_id in wanted:
        if proxy_id is None and node_id is not None:
            proxy_id = node_default.get(node_id)
        out.append(None if proxy_id is None else by_id.get(proxy_id))
    return out


def _update(conn: Connection, proxy_id: str, values: Row, ev: Event) -> Row | None:
    row = first_row(
        conn,
        update(proxies).where(proxies.c.id == proxy_id).values(**values).returning(*proxies.c),
    )
    if row is None:
        return None
    event_store.append_sync(conn, [ev])
    return row


def _delete(conn: Connection, proxy_id: str, ev: Event, now: float) -> bool:
    res = conn.execute(delete(proxies).where(proxies.c.id == proxy_id))
    if not res.rowcount:
        return False
    conn.execute(
        update(sources).where(sources.c.proxy_id == proxy_id).values(proxy_id=None, updated_at=now)
    )
    conn.execute(delete(node_proxies).where(node_proxies.c.proxy_id == proxy_id))
    event_store.append_sync(conn, [ev])
    return True


def _set_node_proxy(
    conn: Connection, node_id: str, proxy_id: str | None, now: float, ev: Event
) -> None:
    conn.execute(delete(node_proxies).where(node_proxies.c.node_id == node_id))
    if proxy_id is not None:
        conn.execute(
            insert(node_proxies).values(node_id=node_id, proxy_id=proxy_id, updated_at=now)
        )
    event_store.append_sync(conn, [ev])
