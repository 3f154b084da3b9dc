"""The worker's local journal: results the hub has not acknowledged yet, and recent ones it has.

Why: a result exists only on this machine until the hub acks it. It is written here first
(one transaction per batch), sent, and removed only when the hub acks it, accepted or not.
After a crash or a reconnect every ``outbox`` row is sent again.

The journal is also how a task is never run twice. When the hub leases a task again (its ack
was lost, or the hub restarted) with a new ``lease_token``, the worker finds the result here,
in ``outbox`` or in the bounded ``done`` table of acknowledged results, and sends it again
with the new token instead of running the handler. A *retryable failure* is the exception:
the hub leases it again precisely to retry it, so it is dropped and the task runs again.

Plain ``sqlite3`` in WAL mode: every call is one short statement or transaction made from
the event loop thread, cheaper than a thread hop per call.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zhongshu.worker import errors

# lease_token and task_id have no declared type so SQLite keeps whatever the hub sent
# (int or str) and the result goes back byte-for-byte the same.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    task_id PRIMARY KEY,
    lease_token,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    retryable INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS done (
    seq INTEGER PRIMARY KEY,
    task_id UNIQUE NOT NULL,
    status TEXT NOT NULL,
    result TEXT,
    error TEXT,
    retryable INTEGER NOT NULL,
    acked_at REAL NOT NULL
);
"""
_COLUMNS = "task_id, lease_token, status, result, error, retryable"
_PRUNE_EVERY = 1000


@dataclass(slots=True)
class Result:
    """One task outcome, as journaled and as sent (``to_wire``) in ``worker:task:result``."""

    task_id: Any
    lease_token: Any
    status: str
    result: Any = None
    error: str | None = None
    retryable: bool = True
    # json.dumps(result), computed once: it proves the value is serialisable and is what
    # the journal stores.
    result_json: str | None = None

    @classmethod
    def succeeded(cls, task_id: Any, lease_token: Any, value: Any) -> Result:
        """A success; raises ``ResultNotSerializable`` when ``value`` is not JSON."""
        try:
            encoded = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise errors.ResultNotSerializable(
                f"handler result is not JSON-serialisable: {exc}"
            ) from exc
        return cls(task_id, lease_token, "succeeded", value, None, True, encoded)

    @classmethod
    def failed(cls, task_id: Any, lease_token: Any, error: str, *, retryable: bool) -> Result:
        return cls(task_id, lease_token, "failed", None, error, retryable)

    @property
    def final(self) -> bool:
        """True when running the task again must not happen (success or permanent failure)."""
        return self.status == "succeeded" or not self.retryable

    def with_token(self, lease_token: Any) -> Result:
        return Result(
            self.task_id,
            lease_token,
            self.status,
            self.result,
            self.error,
            self.retryable,
            self.result_json,
        )

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "task_id": self.task_id,
            "lease_token": self.lease_token,
            "status": self.status,
        }
        if self.status == "succeeded":
            wire["result"] = self.result
        else:
            wire["error"] = self.error
            wire["retryable"] = self.retryable
        return wire

    def _row(self) -> tuple[Any, ...]:
        encoded = self.result_json
        if encoded is None and self.result is not None:
            encoded = json.dumps(self.result, separators=(",", ":"))
        return (
            self.task_id,
            self.lease_token,
            self.status,
            encoded,
            self.error,
            int(self.retryable),
        )

    @classmethod
    def _from_row(cls, row: Sequence[Any]) -> Result:
        task_id, token, status, encoded, error, retryable = row
        value = json.loads(encoded) if encoded is not None else None
        return cls(task_id, token, status, value, error, bool(retryable), encoded)


class Journal:
    """The SQLite journal file of one worker (one file per node key).

    Parameters
    ----------
    path
        The database file; created with its parent directory if missing.
    done_keep
        How many acknowledged results to remember for re-sending on a re-lease.
    done_max_age_s
        Acknowledged results older than this are forgotten too.
    """

    def __init__(
        self, path: str | Path, *, done_keep: int = 10_000, done_max_age_s: float = 86_400.0
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done_keep = done_keep
        self.done_max_age_s = done_max_age_s
        self._acks_since_prune = 0
        # isolation_level=None: we open transactions ourselves, one per batch.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash (kill -9); only an OS crash or power
        # loss can drop the last commits, and then the hub re-runs those tasks.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        # Task ids with a journaled result. Almost every lease is a new task, so this set
        # lets ``knows`` answer without a query on the hot path.
        self._known: set[Any] = set()
        self._reload_known()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, results: Iterable[Result]) -> None:
        """Write results to the outbox in one transaction (replacing older tokens)."""
        now = time.time()
        rows = [(*r._row(), now) for r in results]
        if not rows:
            return
        with self._transaction():
            self._known.update(row[0] for row in rows)
            self._db.executemany(
                f"INSERT OR REPLACE INTO outbox ({_COLUMNS}, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    def pending(self) -> list[Result]:
        """Every result not acknowledged yet, oldest first (to send after a reconnect)."""
        cursor = self._db.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY created_at")
        return [Result._from_row(row) for row in cursor]

    def knows(self, task_id: Any) -> bool:
        """True when a result of this task is journaled (then ``lookup`` it)."""
        return task_id in self._known

    def pending_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    def lookup(self, task_ids: Sequence[Any]) -> dict[Any, Result]:
        """Journaled results of these tasks: the outbox first, then acknowledged ones."""
        found: dict[Any, Result] = {}
        for start in range(0, len(task_ids), 500):
            chunk = list(task_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                f"SELECT task_id, NULL, status, result, error, retryable FROM done "
                f"WHERE task_id IN ({marks})",
                chunk,
            ):
                found[row[0]] = Result._from_row(row)
            for row in self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE task_id IN ({marks})", chunk
            ):
                found[row[0]] = Result._from_row(row)
        return found

    def acknowledge(self, acks: Iterable[tuple[Any, Any]]) -> int:
        """Apply hub acks given as ``(task_id, lease_token_sent)``; return rows removed.

        The token must match: an ack for an old token must not remove a result that was
        re-journaled under a newer lease meanwhile. Final results move to ``done``.
        """
        keys = list(acks)
        if not keys:
            return 0
        now = time.time()
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO done (task_id, status, result, error, retryable, acked_at) "
                "SELECT task_id, status, result, error, retryable, ? FROM outbox "
                "WHERE task_id = ? AND lease_token IS ? "
                "AND (status = 'succeeded' OR retryable = 0)",
                [(now, task_id, token) for task_id, token in keys],
            )
            cursor = self._db.executemany(
                "DELETE FROM outbox WHERE task_id = ? AND lease_token IS ?", keys
            )
            removed = cursor.rowcount
        self._acks_since_prune += len(keys)
        if self._acks_since_prune >= _PRUNE_EVERY:
            self.prune()
        return removed

    def discard(self, task_ids: Iterable[Any]) -> None:
        """Forget results of tasks that will run again (retryable failures re-leased)."""
        ids = [(task_id,) for task_id in task_ids]
        if not ids:
            return
        with self._transaction():
            self._db.executemany("DELETE FROM outbox WHERE task_id = ?", ids)
            self._db.executemany("DELETE FROM done WHERE task_id = ?", ids)
        self._known.difference_update(task_id for (task_id,) in ids)

    def prune(self) -> None:
        """Bound the ``done`` table by count (``done_keep``) and age (``done_max_age_s``)."""
        self._acks_since_prune = 0
        with self._transaction():
            self._db.execute(
                "DELETE FROM done WHERE acked_at < ?", (time.time() - self.done_max_age_s,)
            )
            self._db.execute(
                "DELETE FROM done WHERE seq <= (SELECT max(seq) FROM done) - ?",
                (self.done_keep,),
            )
        self._reload_known()

    def _reload_known(self) -> None:
        self._known = {
            row[0]
            for row in self._db.execute("SELECT task_id FROM outbox UNION SELECT task_id FROM done")
        }

    def done_count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM done").fetchone()[0])

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    """BEGIN … COMMIT, or ROLLBACK on error (sqlite3's own context manager needs
    ``isolation_level`` set, which would open implicit transactions on every read)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")
