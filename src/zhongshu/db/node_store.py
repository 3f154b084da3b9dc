"""SQL for nodes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.schema import nodes
from zhongshu.services.events import Event

Row = dict[str, Any]


class NodeStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def insert(self, row: Row, ev: Event) -> None:
        async with self.db.write() as conn:
            await conn.execute(insert(nodes).values(**row))
            await event_store.append(conn, [ev])

    async def get(self, node_id: str) -> Row | None:
        async with self.db.read() as conn:
            return await _one(conn, nodes.c.id == node_id)

    async def by_access_key(self, access_key: str) -> Row | None:
        async with self.db.read() as conn:
            return await _one(conn, nodes.c.access_key == access_key)

    async def find(self, owner_id: str | None = None) -> list[Row]:
        where = [nodes.c.owner_id == owner_id] if owner_id is not None else []
        async with self.db.read() as conn:
            res = await conn.execute(select(nodes).where(*where).order_by(nodes.c.created_at))
            return [dict(r._mapping) for r in res]

    async def update(self, node_id: str, values: Row, evs: Sequence[Event] = ()) -> Row | None:
        async with self.db.write() as conn:
            res = await conn.execute(
                update(nodes).where(nodes.c.id == node_id).values(**values).returning(*nodes.c)
            )
            row = res.first()
            if row is not None:
                await event_store.append(conn, evs)
            return dict(row._mapping) if row else None

    async def touch_many(self, beats: Sequence[Row]) -> None:
        """Record many heartbeats in one transaction (``id``, ``at``, ``stats``)."""
        if not beats:
            return
        async with self.db.write() as conn:
            await conn.execute(
                update(nodes)
                .where(nodes.c.id == bindparam("b_id"))
                .values(last_heartbeat_at=bindparam("b_at"), stats=bindparam("b_stats")),
                [{"b_id": b["id"], "b_at": b["at"], "b_stats": b["stats"]} for b in beats],
            )

    async def mark_offline(self, cutoff: float, now: float) -> list[Row]:
        """Online nodes silent since before ``cutoff`` become offline; returns them."""
        async with self.db.write() as conn:
            res = await conn.execute(
                update(nodes)
                .where(nodes.c.status == "online", nodes.c.last_heartbeat_at < cutoff)
                .values(status="offline", updated_at=now)
                .returning(nodes.c.id, nodes.c.name, nodes.c.last_heartbeat_at)
            )
            gone = [dict(r._mapping) for r in res]
            await event_store.append(
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

    async def delete(self, node_id: str, ev: Event) -> bool:
        async with self.db.write() as conn:
            res = await conn.execute(delete(nodes).where(nodes.c.id == node_id))
            if res.rowcount:
                await event_store.append(conn, [ev])
            return bool(res.rowcount)


async def _one(conn: AsyncConnection, cond: Any) -> Row | None:
    row = (await conn.execute(select(nodes).where(cond))).first()
    return dict(row._mapping) if row else None
