"""SQL for the task queue. Every method is one transaction; the caller gets plain dicts.

The service decides what a finished attempt means (``Settle``: retry, dead, succeeded);
the store applies it atomically together with the attempt history and the event rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.schema import callback_deliveries, task_attempts, tasks
from zhongshu.services.events import Event

Row = dict[str, Any]

# Literal (not bound) so SQLite and PostgreSQL can match the partial indexes.
READY = text("tasks.status IN ('pending', 'failed')")
HELD = text("tasks.status IN ('leased', 'running')")
ACTIVE_STATES = ("pending", "leased", "running", "failed")
FINAL_STATES = ("succeeded", "dead", "cancelled")
# The columns a settled attempt may change (see TaskService._settle).
_SETTLE_COLUMNS = (
    "status",
    "result",
    "error",
    "run_at",
    "node_id",
    "finished_at",
    "lease_expires_at",
    "updated_at",
    "callback_status",
    "callback_next_at",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended, as reported by a worker or decided by the reaper."""

    task_id: str
    lease_token: int | None
    status: str  # succeeded | failed | lost
    result: Any = None
    error: str | None = None
    retryable: bool = True


# (task row, outcome, now) -> column values to set, and the event to record.
Settle = Callable[[Row, Outcome, float], tuple[Row, Event]]


@dataclass(frozen=True, slots=True)
class Ack:
    task_id: str
    accepted: bool
    reason: str | None = None
    task: Row | None = None
    event: Event | None = None


class TaskStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def _insert(self) -> Any:
        return (sqlite.insert if self.db.is_sqlite else postgresql.insert)(tasks)

    async def insert_many(
        self, rows: Sequence[Row], evs: Sequence[Event]
    ) -> list[tuple[Row, bool]]:
        """Insert tasks; a row whose (owner, idempotency key) exists returns the existing task.

        Returns ``(task, created)`` pairs in input order.
        """
        async with self.db.write() as conn:
            keyed = [r for r in rows if r.get("idempotency_key")]
            existing: dict[tuple[str, str], Row] = {}
            if keyed:
                existing = await self._by_keys(conn, keyed)
            fresh = [r for r in rows if _key(r) not in existing]
            created_ids: set[str] = set()
            if fresh:
                stmt = self._insert().on_conflict_do_nothing().returning(tasks.c.id)
                result = await conn.execute(stmt, list(fresh))
                created_ids = {r[0] for r in result}
            lost_race = [r for r in fresh if r["id"] not in created_ids]
            if lost_race:
                existing.update(await self._by_keys(conn, lost_race))
            kept = [e for e in evs if e.subject_id in created_ids]
            await event_store.append(conn, kept)
        out: list[tuple[Row, bool]] = []
        for r in rows:
            if r["id"] in created_ids:
                out.append(({**r, "lease_token": 0, "attempts": 0}, True))
            else:
                out.append((existing[_key(r)], False))
        return out

    async def _by_keys(
        self, conn: AsyncConnection, rows: Sequence[Row]
    ) -> dict[tuple[str, str], Row]:
        conds = [
            and_(tasks.c.owner_id == r["owner_id"], tasks.c.idempotency_key == r["idempotency_key"])
            for r in rows
        ]
        found: dict[tuple[str, str], Row] = {}
        for i in range(0, len(conds), 200):
            res = await conn.execute(select(tasks).where(or_(*conds[i : i + 200])))
            for row in res:
                m = dict(row._mapping)
                found[_key(m)] = m
        return found

    async def get(self, task_id: str) -> Row | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(tasks).where(tasks.c.id == task_id))).first()
            return dict(row._mapping) if row else None

    async def attempts(self, task_id: str) -> list[Row]:
        async with self.db.read() as conn:
            res = await conn.execute(
                select(task_attempts)
                .where(task_attempts.c.task_id == task_id)
                .order_by(task_attempts.c.attempt)
            )
            return [dict(r._mapping) for r in res]

    async def deliveries(self, task_id: str) -> list[Row]:
        async with self.db.read() as conn:
            res = await conn.execute(
                select(callback_deliveries)
                .where(callback_deliveries.c.task_id == task_id)
                .order_by(callback_deliveries.c.id)
            )
            return [dict(r._mapping) for r in res]

    async def list(
        self,
        *,
        owner_id: str | None = None,
        status: str | None = None,
        kind: str | None = None,
        capability: str | None = None,
        node_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Row], int]:
        where = []
        if owner_id is not None:
            where.append(tasks.c.owner_id == owner_id)
        if status:
            where.append(tasks.c.status == status)
        if kind:
            where.append(tasks.c.kind == kind)
        if capability:
            where.append(tasks.c.capability == capability)
        if node_id:
            where.append(tasks.c.node_id == node_id)
        async with self.db.read() as conn:
            res = await conn.execute(
                select(tasks).where(*where).order_by(tasks.c.seq.desc()).limit(limit).offset(offset)
            )
            total = await conn.scalar(select(func.count()).select_from(tasks).where(*where))
        return [dict(r._mapping) for r in res], int(total or 0)

    async def lease(
        self, node_id: str, capabilities: Sequence[str], limit: int, now: float, grace_s: float
    ) -> tuple[list[Row], list[Event]]:
        """Atomically hand up to ``limit`` ready tasks to a node, highest priority first."""
        if limit <= 0 or not capabilities:
            return [], []
        pick = (
            select(tasks.c.seq)
            .where(READY, tasks.c.run_at <= now, tasks.c.capability.in_(list(capabilities)))
            .order_by(tasks.c.priority.desc(), tasks.c.seq)
            .limit(limit)
        )
        if not self.db.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        stmt = (
            update(tasks)
            .where(tasks.c.seq.in_(pick.scalar_subquery()))
            .values(
                status="leased",
                node_id=node_id,
                lease_token=tasks.c.lease_token + 1,
                attempts=tasks.c.attempts + 1,
                lease_expires_at=now + tasks.c.timeout_s + grace_s,
                leased_at=now,
                started_at=None,
                updated_at=now,
            )
            .returning(*tasks.c)
        )
        async with self.db.write() as conn:
            leased = [dict(r._mapping) for r in await conn.execute(stmt)]
            if not leased:
                return [], []
            await conn.execute(
                insert(task_attempts),
                [
                    {
                        "task_id": t["id"],
                        "attempt": t["attempts"],
                        "lease_token": t["lease_token"],
                        "node_id": node_id,
                        "leased_at": now,
                    }
                    for t in leased
                ],
            )
            evs = [
                Event(
                    "task.leased",
                    "task",
                    t["id"],
                    f"node:{node_id}",
                    {
                        "attempt": t["attempts"],
                        "lease_token": t["lease_token"],
                        "capability": t["capability"],
                        "wait_s": round(now - t["run_at"], 6),
                    },
                    now,
                )
                for t in leased
            ]
            await event_store.append(conn, evs)
        leased.sort(key=lambda t: (-t["priority"], t["seq"]))
        return leased, evs

    async def _lock_rows(
        self, conn: AsyncConnection, ids: Sequence[str], cols: Sequence[Any]
    ) -> dict[str, Row]:
        """Read the rows of ``ids`` for update (SQLite: the write lock already serializes)."""
        rows: dict[str, Row] = {}
        for i in range(0, len(ids), 500):
            stmt = select(*cols).where(tasks.c.id.in_(list(ids[i : i + 500])))
            if not self.db.is_sqlite:
                stmt = stmt.with_for_update()
            rows.update({r.id: dict(r._mapping) for r in await conn.execute(stmt)})
        return rows

    async def mark_started(
        self, node_id: str, held: Sequence[tuple[str, int]], now: float
    ) -> list[bool]:
        """leased → running for each (task id, lease token) still current.

        Set-based (a read, two updates, one insert) whatever the batch size: a per-row
        statement costs a driver round trip each, which dominated the hot path.
        """
        cols = (tasks.c.seq, tasks.c.id, tasks.c.status, tasks.c.node_id, tasks.c.lease_token)
        async with self.db.write() as conn:
            rows = await self._lock_rows(conn, [t for t, _ in held], cols)
            accepted = [
                (r := rows.get(task_id)) is not None
                and r["status"] == "leased"
                and r["node_id"] == node_id
                and r["lease_token"] == token
                for task_id, token in held
            ]
            ok = [(t, tok) for (t, tok), a in zip(held, accepted, strict=True) if a]
            if ok:
                await conn.execute(
                    update(tasks)
                    .where(tasks.c.seq.in_([rows[t]["seq"] for t, _ in ok]))
                    .values(status="running", started_at=now, updated_at=now)
                )
                await conn.execute(
                    update(task_attempts)
                    .where(
                        task_attempts.c.task_id == _bind("b_task_id"),
                        task_attempts.c.lease_token == _bind("b_token"),
                    )
                    .values(started_at=now),
                    [{"b_task_id": t, "b_token": tok} for t, tok in ok],
                )
                await event_store.append(
                    conn,
                    [Event("task.running", "task", t, f"node:{node_id}", {}, now) for t, _ in ok],
                )
        return accepted

    async def settle(
        self, node_id: str | None, outcomes: Sequence[Outcome], now: float, settle: Settle
    ) -> list[Ack]:
        """Apply finished attempts. An outcome whose lease is not current is refused."""
        acks: list[Ack] = []
        async with self.db.write() as conn:
            rows = await self._lock_rows(conn, [o.task_id for o in outcomes], list(tasks.c))
            evs: list[Event] = []
            task_updates: list[Row] = []
            attempt_updates: list[Row] = []
            for o in outcomes:
                row = rows.get(o.task_id)
                reason = _refusal(row, o, node_id)
                if reason:
                    acks.append(Ack(o.task_id, False, reason, row))
                    continue
                assert row is not None
                values, ev = settle(row, o, now)
                row.update(values)
                # Every settle writes the same columns so one executemany covers the batch.
                task_updates.append(
                    {f"b_{c}": row[c] for c in _SETTLE_COLUMNS} | {"b_seq": row["seq"]}
                )
                evs.append(ev)
                attempt_updates.append(
                    {
                        "b_task_id": o.task_id,
                        "b_token": row["lease_token"],
                        "b_finished_at": now,
                        "b_outcome": o.status,
                        "b_error": o.error,
                    }
                )
                acks.append(Ack(o.task_id, True, None, row, ev))
            if task_updates:
                await conn.execute(
                    update(tasks)
                    .where(tasks.c.seq == _bind("b_seq"))
                    .values({c: _bind(f"b_{c}") for c in _SETTLE_COLUMNS}),
                    task_updates,
                )
                await conn.execute(
                    update(task_attempts)
                    .where(
                        task_attempts.c.task_id == _bind("b_task_id"),
                        task_attempts.c.lease_token == _bind("b_token"),
                    )
                    .values(
                        finished_at=_bind("b_finished_at"),
                        outcome=_bind("b_outcome"),
                        error=_bind("b_error"),
                    ),
                    attempt_updates,
                )
            await event_store.append(conn, evs)
        return acks

    async def held_by(self, node_id: str) -> list[Row]:
        async with self.db.read() as conn:
            res = await conn.execute(
                select(tasks.c.id, tasks.c.lease_token, tasks.c.status).where(
                    HELD, tasks.c.node_id == node_id
                )
            )
            return [dict(r._mapping) for r in res]

    async def expired_leases(self, now: float, node_ids: Sequence[str] = ()) -> list[Row]:
        """Held tasks whose lease ran out, plus every task held by the given nodes."""
        cond = tasks.c.lease_expires_at < now
        if node_ids:
            cond = or_(cond, tasks.c.node_id.in_(list(node_ids)))
        async with self.db.read() as conn:
            res = await conn.execute(
                select(
                    tasks.c.id, tasks.c.lease_token, tasks.c.node_id, tasks.c.lease_expires_at
                ).where(HELD, cond)
            )
            return [dict(r._mapping) for r in res]

    async def count_held(self, node_id: str) -> int:
        async with self.db.read() as conn:
            n = await conn.scalar(
                select(func.count()).select_from(tasks).where(HELD, tasks.c.node_id == node_id)
            )
        return int(n or 0)

    async def next_run_at(self, now: float) -> float | None:
        async with self.db.read() as conn:
            value = await conn.scalar(
                select(func.min(tasks.c.run_at)).where(READY, tasks.c.run_at > now)
            )
        return float(value) if value is not None else None

    async def has_ready(self, now: float) -> bool:
        async with self.db.read() as conn:
            row = (
                await conn.execute(select(tasks.c.seq).where(READY, tasks.c.run_at <= now).limit(1))
            ).first()
        return row is not None

    async def transition(
        self, task_id: str, from_states: Sequence[str], values: Row, ev: Event
    ) -> Row | None:
        """Set ``values`` if the task is in one of ``from_states``; None when it is not."""
        async with self.db.write() as conn:
            res = await conn.execute(
                update(tasks)
                .where(tasks.c.id == task_id, tasks.c.status.in_(list(from_states)))
                .values(**values)
                .returning(*tasks.c)
            )
            row = res.first()
            if row is None:
                return None
            if "lease_token" in values or values.get("status") == "cancelled":
                await conn.execute(
                    update(task_attempts)
                    .where(task_attempts.c.task_id == task_id, task_attempts.c.outcome == "running")
                    .values(outcome="cancelled", finished_at=values.get("updated_at"))
                )
            await event_store.append(conn, [ev])
            return dict(row._mapping)

    async def counts(self) -> list[Row]:
        async with self.db.read() as conn:
            res = await conn.execute(
                select(tasks.c.status, tasks.c.capability, func.count().label("n")).group_by(
                    tasks.c.status, tasks.c.capability
                )
            )
            return [dict(r._mapping) for r in res]

    # --- result callbacks -------------------------------------------------------------

    async def due_callbacks(self, now: float, limit: int) -> list[Row]:
        async with self.db.read() as conn:
            res = await conn.execute(
                select(tasks)
                .where(text("tasks.callback_status = 'pending'"), tasks.c.callback_next_at <= now)
                .order_by(tasks.c.callback_next_at)
                .limit(limit)
            )
            return [dict(r._mapping) for r in res]

    async def record_delivery(self, delivery: Row, values: Row, ev: Event | None) -> None:
        async with self.db.write() as conn:
            await conn.execute(insert(callback_deliveries), [delivery])
            await conn.execute(
                update(tasks).where(tasks.c.id == delivery["task_id"]).values(**values)
            )
            if ev is not None:
                await event_store.append(conn, [ev])


def _key(row: Row) -> tuple[str, str]:
    return (row.get("owner_id") or "", row.get("idempotency_key") or "")


def _bind(name: str) -> Any:
    return bindparam(name)


def _refusal(row: Row | None, o: Outcome, node_id: str | None) -> str | None:
    if row is None:
        return "unknown task"
    if row["status"] not in ("leased", "running"):
        return f"task is {row['status']}"
    if o.lease_token is not None and row["lease_token"] != o.lease_token:
        return "stale lease"
    if node_id is not None and row["node_id"] != node_id:
        return "lease held by another node"
    return None
