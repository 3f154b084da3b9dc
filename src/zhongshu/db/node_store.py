"""SQL for nodes. Each method is one transaction run in one hop (``run_read``/``run_write``):
node lookups sit on every authenticated agent request and heartbeat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import Connection

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.rows import all_rows, first_row
from zhongshu.db.schema import nodes
from zhongshu.services.events import Event

Row = dict[str, Any]


class NodeStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, row: Row, ev: Event) -> None:
        await self.db.run_write(_insert, row, ev)

    async def get(self, node_id: str) -> Row | None:
        return await self.db.run_read(_one, nodes.c.id == node_id)

    async def by_access_key(self, access_key: str) -> Row | None:
        return await self.db.run_read(_one, nodes.c.access_key == access_key)

    async def find(self, owner_id: str | None = None) -> list[Row]:
        where = [nodes.c.owner_id == owner_id] if owner_id is not None else []
        return await self.db.run_read(
            all_rows, select(nodes).where(*where).order_by(nodes.c.created_at)
        )

    async def update(self, node_id: str, values: Row, evs: Sequence[Event] = ()) -> Row | None:
        return await self.db.run_write(_update, node_id, values, evs)

    async def touch_many(self, beats: Sequence[Row]) -> list[str]:
        """Record many heartbeats in one transaction (``id``, ``at``, ``stats``); returns
        the ids among them that are not online (or gone) in the database."""
        if not beats:
            return []
        return await self.db.run_write(_touch_many, beats)

    async def mark_offline(self, cutoff: float, now: float) -> list[Row]:
        """Online nodes silent since before ``cutoff`` become offline; returns them."""
        return await self.db.run_write(_mark_offline, cutoff, now)

    async def delete(self, node_id: str, ev: Event) -> bool:
        return await self.db.run_write(_delete, node_id, ev)


def _insert(conn: Connection, row: Row, ev: Event) -> None:
    conn.execute(insert(nodes).values(**row))
    event_store.append_sync(conn, [ev])


def _one(conn: Connection, cond: Any) -> Row | None:
    return first_row(conn, select(nodes).where(cond))


def _update(conn: Connection, node_id: str, values: Row, evs: Sequence[Event]) -> Row | None:
    row = conn.execute(
        update(nodes).where(nodes.c.id == node_id).values(**values).returning(*nodes.c)
    ).first()
    if row is None:
        return None
    event_store.append_sync(conn, evs)
    return dict(row._mapping)


def _touch_many(conn: Connection, beats: Sequence[Row]) -> list[str]:
    conn.execute(
        update(nodes)
        .where(nodes.c.id == bindparam("b_id"), nodes.c.status == "online")
        .values(last_heartbeat_at=bindparam("b_at"), stats=bindparam("b_stats")),
        [{"b_id": b["id"], "b_at": b["at"], "b_stats": b["stats"]} for b in beats],
    )
    ids = [b["id"] for b in beats]
    online = {
        r[0]
        for r in conn.execute(
            select(nodes.c.id).where(nodes.c.id.in_(ids), nodes.c.status == "online")
        )
    }
    return [i for i in ids if i not in online]


def _mark_offline(conn: Connection, cutoff: float, now: float) -> list[Row]:
    gone = all_rows(
        conn,
        update(nodes)
        .where(nodes.c.status == "online", nodes.c.last_heartbeat_at < cutoff)
        .values(status="offline", updated_at=now)
        .returning(nodes.c.id, nodes.c.name, nodes.c.last_heartbeat_at),
    )
    event_store.append_sync(
        conn,
        [
            Event(
                "node.offline",
                "node",
                g["id"],
                "system",
                {"name": g["name"], "last_heartbeat_at": g["last_heartbeat_at"]},
                now,
            )
            for g in gone
        ],
    )
    return gone


def _delete(conn: Connection, node_id: str, ev: Event) -> bool:
    res = conn.execute(delete(nodes).where(nodes.c.id == node_id))
    if res.rowcount:
        event_store.append_sync(conn, [ev])
    return bool(res.rowcount)
