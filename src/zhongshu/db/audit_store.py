"""SQL for the append-only audit log (the database refuses UPDATE and DELETE on it)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, insert, select

from zhongshu.db.engine import Database
from zhongshu.db.schema import audit_log

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class AuditFilter:
    actor: str | None = None
    action: str | None = None  # a prefix: "auth." or "user.deleted"
    target_type: str | None = None
    target_id: str | None = None
    outcome: str | None = None
    client_ip: str | None = None
    since: float | None = None
    until: float | None = None

    def where(self) -> list[ColumnElement[bool]]:
        c = audit_log.c
        out: list[ColumnElement[bool]] = []
        if self.actor:
            out.append(c.actor == self.actor)
        if self.action:
            out.append(c.action.startswith(self.action, autoescape=True))
        if self.target_type:
            out.append(c.target_type == self.target_type)
        if self.target_id:
            out.append(c.target_id == self.target_id)
        if self.outcome:
            out.append(c.outcome == self.outcome)
        if self.client_ip:
            out.append(c.client_ip == self.client_ip)
        if self.since is not None:
            out.append(c.at >= self.since)
        if self.until is not None:
            out.append(c.at < self.until)
        return out


class AuditStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def append(self, rows: Sequence[Row]) -> None:
        if rows:
            async with self.db.write() as conn:
                await conn.execute(insert(audit_log), list(rows))

    async def query(self, f: AuditFilter, limit: int, offset: int) -> tuple[list[Row], int]:
        where = f.where()
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(audit_log)
                .where(*where)
                .order_by(audit_log.c.id.desc())
                .limit(limit)
                .offset(offset)
            )
            total = await conn.scalar(select(func.count()).select_from(audit_log).where(*where))
        return [dict(r._mapping) for r in rows], int(total or 0)

    async def scan(self, f: AuditFilter, batch: int = 1000) -> AsyncIterator[Row]:
        """Every matching row, oldest first, read in keyset pages of ``batch``."""
        where = f.where()
        after = 0
        while True:
            async with self.db.read() as conn:
                rows = [
                    dict(r._mapping)
                    for r in await conn.execute(
                        select(audit_log)
                        .where(*where, audit_log.c.id > after)
                        .order_by(audit_log.c.id)
                        .limit(batch)
                    )
                ]
            for r in rows:
                yield r
            if len(rows) < batch:
                return
            after = rows[-1]["id"]
