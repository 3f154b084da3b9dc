"""Who is using a database right now: every running hub, or one offline restore.

A restore replaces the whole database; a hub still running on it would keep writing into
what is being replaced (or into the file that was swapped out). So each hub holds a
*shared* lock on its database for as long as it runs, and ``zhongshu restore`` takes the
*exclusive* one, or refuses with the reason. Replicas share the lock with each other.

- PostgreSQL: a session-level advisory lock (per database, so parallel test databases
  don't see each other), held on one dedicated connection; it goes away with the
  process, however the process ends.
- SQLite: ``flock`` on a file beside the database file, released by the kernel when the
  process ends. An in-memory database has no other users and needs no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from zhongshu.db.backup_store import sqlite_file
from zhongshu.db.engine import Database

# Any stable 64-bit number: the key of "this database is in use by zhongshu".
_PG_KEY = 0x7A68_6F6E_6773_6875  # "zhongshu"


class HubLockBusy(Exception):
    """The lock is held the other way (a hub is running, or a restore is)."""


class HubLock:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: AsyncConnection | None = None
        self._shared = True
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self._fd is not None

    async def acquire(self, *, exclusive: bool = False) -> None:
        """Take the lock without waiting; ``HubLockBusy`` when it is held the other way."""
        if self.held:
            return
        self._shared = not exclusive
        if self.db.is_sqlite:
            self._lock_file(exclusive)
        else:
            await self._lock_pg(exclusive)

    async def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor lets go of the flock
            self._fd = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            fn = "pg_advisory_unlock_shared" if self._shared else "pg_advisory_unlock"
            # A connection that broke (PostgreSQL restarted) took the lock with it.
            with contextlib.suppress(Exception):
                await conn.execute(text(f"SELECT {fn}(:k)"), {"k": _PG_KEY})
                await conn.commit()
            with contextlib.suppress(Exception):
                await conn.close()

    def _lock_file(self, exclusive: bool) -> None:
        path = lock_path(self.db.url)
        if path is None:
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            os.close(fd)
            raise HubLockBusy(str(path)) from exc
        self._fd = fd

    async def _lock_pg(self, exclusive: bool) -> None:
        fn = "pg_try_advisory_lock" if exclusive else "pg_try_advisory_lock_shared"
        conn = await self.db.engine.connect()
        try:
            got = (await conn.execute(text(f"SELECT {fn}(:k)"), {"k": _PG_KEY})).scalar()
            # The lock belongs to the session, not the transaction: don't sit idle in one.
            await conn.commit()
        except BaseException:
            await conn.close()
            raise
        if not got:
            await conn.close()
            raise HubLockBusy("advisory lock")
        self._conn = conn


def lock_path(url: str) -> Path | None:
    """The lock file of a SQLite URL (None for an in-memory database)."""
    database = str(sqlite_file(url))
    if database in ("", ".", ":memory:") or database.startswith("file::memory:"):
        return None
    return Path(database + ".hub-lock")
