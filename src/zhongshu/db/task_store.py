"""SQL for the task queue. Every ``TaskStore`` method is one transaction; callers get dicts.

The transactions are plain synchronous SQLAlchemy functions (``_lease``, ``_settle`` …)
that ``Database.run_write``/``run_read`` execute in one go: in a thread on SQLite, through
``run_sync`` on PostgreSQL. The service decides what a finished attempt means (``Settle``:
retry, dead, succeeded); the store applies it atomically with the attempt history and the
event rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from zhongshu.db import event_store
from zhongshu.db.engine import Database
from zhongshu.db.rows import all_rows, first_row, page_rows
from zhongshu.db.schema import callback_deliveries, events, nodes, task_attempts, tasks
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
    "started_at",
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
        self.is_sqlite = db.is_sqlite

    async def insert_many(
        self, rows: Sequence[Row], evs: Sequence[Event]
    ) -> list[tuple[Row, bool]]:
        """Insert tasks; a row whose (owner, idempotency key) exists returns the existing task.

        Returns ``(task, created)`` pairs in input order.
        """
        return await self.db.run_write(self._insert_many, rows, evs)

    async def get(self, task_id: str) -> Row | None:
        return await self.db.run_read(_get, task_id)

    async def attempts(self, task_id: str) -> list[Row]:
        return await self.db.run_read(
            all_rows,
            select(task_attempts)
            .where(task_attempts.c.task_id == task_id)
            .order_by(task_attempts.c.attempt),
        )

    async def deliveries(self, task_id: str) -> list[Row]:
        return await self.db.run_read(
            all_rows,
            select(callback_deliveries)
            .where(callback_deliveries.c.task_id == task_id)
            .order_by(callback_deliveries.c.id),
        )

    async def find(
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
        page = select(tasks).where(*where).order_by(tasks.c.seq.desc()).limit(limit).offset(offset)
        count = select(func.count()).select_from(tasks).where(*where)
        return await self.db.run_read(page_rows, page, count)

    async def lease(
        self,
        node_id: str,
        capabilities: Sequence[str],
        limit: int,
        now: float,
        grace_s: float,
        capacity: int | None = None,
    ) -> tuple[list[Row], list[Event]]:
        """Atomically hand up to ``limit`` ready tasks to a node, highest priority first.

        With ``capacity``, the node's current holdings are counted in the same transaction,
        so concurrent lease calls for one node never exceed it.
        """
        if limit <= 0 or not capabilities:
            return [], []
        return await self.db.run_write(
            self._lease, node_id, list(capabilities), limit, now, grace_s, capacity
        )

    async def mark_started(
        self, node_id: str, held: Sequence[tuple[str, int]], now: float
    ) -> list[bool]:
        """leased → running for each (task id, lease token) still current."""
        return await self.db.run_write(self._mark_started, node_id, held, now)

    async def settle(
        self, node_id: str | None, outcomes: Sequence[Outcome], now: float, settle: Settle
    ) -> list[Ack]:
        """Apply finished attempts. An outcome whose lease is not current is refused."""
        return await self.db.run_write(self._settle, node_id, outcomes, now, settle)

    async def release(
        self, node_id: str, held: Sequence[tuple[str, int]], now: float
    ) -> list[Event]:
        """Put leases a node hands back into the queue at once; the attempt does not count."""
        return await self.db.run_write(self._release, node_id, held, now)

    async def transition(
        self, task_id: str, from_states: Sequence[str], values: Row, ev: Event
    ) -> Row | None:
        """Set ``values`` if the task is in one of ``from_states``; None when it is not."""
        return await self.db.run_write(_transition, task_id, from_states, values, ev)

    async def complete(
        self,
        task_id: str,
        from_states: Sequence[str],
        finish: Callable[[Row], tuple[Row, Event]],
        outcome: str,
    ) -> tuple[Row | None, Event | None]:
        """Finish a task outside the lease protocol, in one transaction.

        The row is read for update; when it is in one of ``from_states``, ``finish(row)``
        gives the column values and the event, its open attempt (if any) is closed with
        ``outcome``, and ``(task, event)`` is returned. Otherwise nothing changes and
        ``(task, None)`` comes back (``(None, None)`` for an unknown task).
        """
        return await self.db.run_write(self._complete, task_id, from_states, finish, outcome)

    async def kind_events(
        self,
        kinds: Sequence[str],
        *,
        after_id: int = 0,
        limit: int = 100,
        newest_first: bool = False,
    ) -> list[Row]:
        """Events about tasks of the given kinds, each with its task's ``kind``, ``payload``,
        ``status`` and ``result`` (the relay's conversation log)."""
        stmt = (
            select(
                events,
                tasks.c.kind.label("task_kind"),
                tasks.c.payload.label("task_payload"),
                tasks.c.status.label("task_status"),
                tasks.c.result.label("task_result"),
            )
            .join(tasks, tasks.c.id == events.c.subject_id)
            .where(
                events.c.subject_type == "task",
                tasks.c.kind.in_(list(kinds)),
                events.c.id > after_id,
            )
            .order_by(events.c.id.desc() if newest_first else events.c.id)
            .limit(limit)
        )
        return await self.db.run_read(all_rows, stmt)

    async def held_by(self, node_id: str) -> list[Row]:
        return await self.db.run_read(
            all_rows,
            select(tasks.c.id, tasks.c.lease_token, tasks.c.status).where(
                HELD, tasks.c.node_id == node_id
            ),
        )

    async def expired_leases(self, now: float, node_ids: Sequence[str] = ()) -> list[Row]:
        """Held tasks whose lease ran out, plus every task held by the given nodes."""
        cond = tasks.c.lease_expires_at < now
        if node_ids:
            cond = or_(cond, tasks.c.node_id.in_(list(node_ids)))
        return await self.db.run_read(
            all_rows,
            select(
                tasks.c.id, tasks.c.lease_token, tasks.c.node_id, tasks.c.lease_expires_at
            ).where(HELD, cond),
        )

    async def count_held(self, node_id: str) -> int:
        stmt = select(func.count()).select_from(tasks).where(HELD, tasks.c.node_id == node_id)
        return int(await self.db.run_read(_scalar, stmt) or 0)

    async def next_run_at(self, now: float) -> float | None:
        stmt = select(func.min(tasks.c.run_at)).where(READY, tasks.c.run_at > now)
        value = await self.db.run_read(_scalar, stmt)
        return float(value) if value is not None else None

    async def has_ready(self, now: float) -> bool:
        stmt = select(tasks.c.seq).where(READY, tasks.c.run_at <= now).limit(1)
        return await self.db.run_read(_scalar, stmt) is not None

    async def counts(self) -> list[Row]:
        return await self.db.run_read(
            all_rows,
            select(tasks.c.status, tasks.c.capability, func.count().label("n")).group_by(
                tasks.c.status, tasks.c.capability
            ),
        )

    # --- result callbacks -------------------------------------------------------------

    async def due_callbacks(self, now: float, limit: int) -> list[Row]:
        return await self.db.run_read(
            all_rows,
            select(tasks)
            .where(text("tasks.callback_status = 'pending'"), tasks.c.callback_next_at <= now)
            .order_by(tasks.c.callback_next_at)
            .limit(limit),
        )

    async def record_delivery(self, delivery: Row, values: Row, ev: Event | None) -> None:
        await self.db.run_write(_record_delivery, delivery, values, ev)

    # --- the transactions -------------------------------------------------------------

    def _insert_many(
        self, conn: Connection, rows: Sequence[Row], evs: Sequence[Event]
    ) -> list[tuple[Row, bool]]:
        keyed = [r for r in rows if r.get("idempotency_key")]
        existing = _by_keys(conn, keyed) if keyed else {}
        fresh = [r for r in rows if _key(r) not in existing]
        created_ids: set[str] = set()
        if fresh:
            insert_ = sqlite.insert if self.is_sqlite else postgresql.insert
            stmt = insert_(tasks).on_conflict_do_nothing().returning(tasks.c.id)
            created_ids = {r[0] for r in conn.execute(stmt, list(fresh))}
        lost_race = [r for r in fresh if r["id"] not in created_ids]
        if lost_race:
            existing.update(_by_keys(conn, lost_race))
        event_store.append_sync(conn, [e for e in evs if e.subject_id in created_ids])
        return [
            (
                ({**r, "lease_token": 0, "attempts": 0}, True)
                if r["id"] in created_ids
                else (existing[_key(r)], False)
            )
            for r in rows
        ]

    def _lease(
        self,
        conn: Connection,
        node_id: str,
        capabilities: list[str],
        limit: int,
        now: float,
        grace_s: float,
        capacity: int | None,
    ) -> tuple[list[Row], list[Event]]:
        if capacity is not None:
            if not self.is_sqlite:
                # Serialize lease calls of one node (SQLite's write lock already does).
                conn.execute(select(nodes.c.id).where(nodes.c.id == node_id).with_for_update())
            held = conn.scalar(
                select(func.count()).select_from(tasks).where(HELD, tasks.c.node_id == node_id)
            )
            limit = min(limit, capacity - int(held or 0))
            if limit <= 0:
                return [], []
        pick = (
            select(tasks.c.seq)
            .where(READY, tasks.c.run_at <= now, tasks.c.capability.in_(capabilities))
            .order_by(tasks.c.priority.desc(), tasks.c.seq)
            .limit(limit)
        )
        if not self.is_sqlite:
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
        leased = [dict(r._mapping) for r in conn.execute(stmt)]
        if not leased:
            return [], []
        conn.execute(
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
        event_store.append_sync(conn, evs)
        # RETURNING does not keep the subquery's order.
        leased.sort(key=lambda t: (-t["priority"], t["seq"]))
        return leased, evs

    def _lock_rows(
        self, conn: Connection, ids: Sequence[str], cols: Sequence[Any]
    ) -> dict[str, Row]:
        """Read the rows of ``ids`` for update (on SQLite the write lock serializes already)."""
        rows: dict[str, Row] = {}
        for i in range(0, len(ids), 500):
            stmt = select(*cols).where(tasks.c.id.in_(list(ids[i : i + 500])))
            if not self.is_sqlite:
                stmt = stmt.with_for_update()
            rows.update({r.id: dict(r._mapping) for r in conn.execute(stmt)})
        return rows

    def _current_leases(
        self,
        conn: Connection,
        node_id: str,
        held: Sequence[tuple[str, int]],
        states: Sequence[str],
    ) -> tuple[dict[str, Row], list[bool]]:
        """Lock the rows of ``held`` and say, for each, whether the node holds that lease
        now (same token, in one of ``states``)."""
        cols = (tasks.c.seq, tasks.c.id, tasks.c.status, tasks.c.node_id, tasks.c.lease_token)
        rows = self._lock_rows(conn, [t for t, _ in held], cols)
        current = [
            (r := rows.get(task_id)) is not None
            and r["status"] in states
            and r["node_id"] == node_id
            and r["lease_token"] == token
            for task_id, token in held
        ]
        return rows, current

    def _mark_started(
        self, conn: Connection, node_id: str, held: Sequence[tuple[str, int]], now: float
    ) -> list[bool]:
        # Set-based whatever the batch size: a statement per row costs a round trip each.
        rows, accepted = self._current_leases(conn, node_id, held, ("leased",))
        ok = [(t, tok) for (t, tok), a in zip(held, accepted, strict=True) if a]
        if ok:
            conn.execute(
                update(tasks)
                .where(tasks.c.seq.in_([rows[t]["seq"] for t, _ in ok]))
                .values(status="running", started_at=now, updated_at=now)
            )
            conn.execute(
                update(task_attempts)
                .where(
                    task_attempts.c.task_id == bindparam("b_task_id"),
                    task_attempts.c.lease_token == bindparam("b_token"),
                )
                .values(started_at=now),
                [{"b_task_id": t, "b_token": tok} for t, tok in ok],
            )
            event_store.append_sync(
                conn, [Event("task.running", "task", t, f"node:{node_id}", {}, now) for t, _ in ok]
            )
        return accepted

    def _release(
        self, conn: Connection, node_id: str, held: Sequence[tuple[str, int]], now: float
    ) -> list[Event]:
        rows, current = self._current_leases(conn, node_id, held, ("leased", "running"))
        ok = [(t, tok) for (t, tok), c in zip(held, current, strict=True) if c]
        if not ok:
            return []
        conn.execute(
            update(tasks)
            .where(tasks.c.seq.in_([rows[t]["seq"] for t, _ in ok]))
            .values(
                status="pending",
                node_id=None,
                run_at=now,
                attempts=tasks.c.attempts - 1,
                lease_expires_at=None,
                started_at=None,
                updated_at=now,
            )
        )
        conn.execute(
            update(task_attempts)
            .where(
                task_attempts.c.task_id == bindparam("b_task_id"),
                task_attempts.c.lease_token == bindparam("b_token"),
            )
            .values(finished_at=now, outcome="released"),
            [{"b_task_id": t, "b_token": tok} for t, tok in ok],
        )
        evs = [
            Event(
                "task.released",
                "task",
                t,
                f"node:{node_id}",
                {"node_id": node_id, "lease_token": tok},
                now,
            )
            for t, tok in ok
        ]
        event_store.append_sync(conn, evs)
        return evs

    def _complete(
        self,
        conn: Connection,
        task_id: str,
        from_states: Sequence[str],
        finish: Callable[[Row], tuple[Row, Event]],
        outcome: str,
    ) -> tuple[Row | None, Event | None]:
        row = self._lock_rows(conn, [task_id], list(tasks.c)).get(task_id)
        if row is None or row["status"] not in from_states:
            return row, None
        values, ev = finish(row)
        conn.execute(update(tasks).where(tasks.c.seq == row["seq"]).values(**values))
        conn.execute(
            update(task_attempts)
            .where(task_attempts.c.task_id == task_id, task_attempts.c.finished_at.is_(None))
            .values(
                finished_at=values.get("finished_at"), outcome=outcome, error=ev.data.get("error")
            )
        )
        event_store.append_sync(conn, [ev])
        return {**row, **values}, ev

    def _settle(
        self,
        conn: Connection,
        node_id: str | None,
        outcomes: Sequence[Outcome],
        now: float,
        settle: Settle,
    ) -> list[Ack]:
        rows = self._lock_rows(conn, [o.task_id for o in outcomes], list(tasks.c))
        acks: list[Ack] = []
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
            # Every settle writes the same columns, so one executemany covers the batch.
            task_updates.append({f"b_{c}": row[c] for c in _SETTLE_COLUMNS} | {"b_seq": row["seq"]})
            attempt_updates.append(
                {
                    "b_task_id": o.task_id,
                    "b_token": row["lease_token"],
                    "b_started_at": row["started_at"],
                    "b_finished_at": now,
                    "b_outcome": o.status,
                    "b_error": o.error,
                }
            )
            evs.append(ev)
            acks.append(Ack(o.task_id, True, None, row, ev))
        if task_updates:
            conn.execute(
                update(tasks)
                .where(tasks.c.seq == bindparam("b_seq"))
                .values({c: bindparam(f"b_{c}") for c in _SETTLE_COLUMNS}),
                task_updates,
            )
            conn.execute(
                update(task_attempts)
                .where(
                    task_attempts.c.task_id == bindparam("b_task_id"),
                    task_attempts.c.lease_token == bindparam("b_token"),
                )
                .values(
                    started_at=func.coalesce(task_attempts.c.started_at, bindparam("b_started_at")),
                    finished_at=bindparam("b_finished_at"),
                    outcome=bindparam("b_outcome"),
                    error=bindparam("b_error"),
                ),
                attempt_updates,
            )
            event_store.append_sync(conn, evs)
        return acks


def _get(conn: Connection, task_id: str) -> Row | None:
    return first_row(conn, select(tasks).where(tasks.c.id == task_id))


def _scalar(conn: Connection, stmt: Any) -> Any:
    return conn.scalar(stmt)


def _by_keys(conn: Connection, rows: Sequence[Row]) -> dict[tuple[str, str], Row]:
    conds = [
        and_(tasks.c.owner_id == r["owner_id"], tasks.c.idempotency_key == r["idempotency_key"])
        for r in rows
    ]
    found: dict[tuple[str, str], Row] = {}
    for i in range(0, len(conds), 200):
        for row in conn.execute(select(tasks).where(or_(*conds[i : i + 200]))):
            m = dict(row._mapping)
            found[_key(m)] = m
    return found


def _transition(
    conn: Connection, task_id: str, from_states: Sequence[str], values: Row, ev: Event
) -> Row | None:
    row = conn.execute(
        update(tasks)
        .where(tasks.c.id == task_id, tasks.c.status.in_(list(from_states)))
        .values(**values)
        .returning(*tasks.c)
    ).first()
    if row is None:
        return None
    if values.get("status") in ("cancelled", "pending"):
        # A cancelled or re-queued task's open attempt is over.
        conn.execute(
            update(task_attempts)
            .where(task_attempts.c.task_id == task_id, task_attempts.c.outcome == "running")
            .values(outcome="cancelled", finished_at=values.get("updated_at"))
        )
    event_store.append_sync(conn, [ev])
    return dict(row._mapping)


def _record_delivery(conn: Connection, delivery: Row, values: Row, ev: Event | None) -> None:
    conn.execute(insert(callback_deliveries), [delivery])
    conn.execute(update(tasks).where(tasks.c.id == delivery["task_id"]).values(**values))
    if ev is not None:
        event_store.append_sync(conn, [ev])


def _key(row: Row) -> tuple[str, str]:
    return (row.get("owner_id") or "", row.get("idempotency_key") or "")


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
