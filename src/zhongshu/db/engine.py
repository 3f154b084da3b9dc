"""The ``Database``: one async engine, a write path and a read path, and migrations.

SQLite allows one writer at a time. Rather than letting concurrent coroutines collide on
``database is locked``, writes in one process go through an asyncio lock and start with
``BEGIN IMMEDIATE``; ``busy_timeout`` covers other processes (the CLI, a second hub).
PostgreSQL needs none of this: its writes run concurrently and the queue relies on
``FOR UPDATE SKIP LOCKED`` instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from zhongshu import errors

log = logging.getLogger("zhongshu.db")

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
T = TypeVar("T")


class Database:
    """Owns the engine. Services receive it (through their stores) and never build one."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL", echo: bool = False):
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            if ":memory:" in url or url.endswith("sqlite+aiosqlite://"):
                raise errors.ConfigError(
                    "in-memory SQLite is not durable; give database_url a file path"
                )
            Path(url.split(":///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
            kwargs["pool_size"] = 4
            kwargs["max_overflow"] = 4
        else:
            kwargs["pool_size"] = 10
            kwargs["max_overflow"] = 10
            kwargs["pool_pre_ping"] = True
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._sync_engine: Engine | None = None
        if self.is_sqlite:
            self._install_sqlite_hooks(self.engine.sync_engine, sqlite_synchronous)
            # Hot paths run whole transactions in one thread hop on a plain sqlite3 engine
            # (see run_write): aiosqlite costs a hop per statement, which profiling showed
            # to dominate the queue's hot path.
            self._sync_engine = create_engine(
                "sqlite:///" + url.split(":///", 1)[1],
                pool_size=4,
                max_overflow=4,
                connect_args={"check_same_thread": False},
            )
            self._install_sqlite_hooks(self._sync_engine, sqlite_synchronous)
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="zhongshu-db-write")
            self._readers = ThreadPoolExecutor(4, thread_name_prefix="zhongshu-db-read")

    @staticmethod
    def _install_sqlite_hooks(engine: Engine, synchronous: str) -> None:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let us issue BEGIN ourselves (pysqlite's implicit BEGIN is deferred).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode survives a crash of the process (kill -9); FULL also
            # survives a power cut, at a cost of one fsync per commit.
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            mode = conn.info.get("begin_mode", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block ends, rolled back on error."""
        lock = self._write_lock or contextlib.nullcontext()
        async with lock:  # type: ignore[attr-defined]
            try:
                async with self.engine.connect() as conn:
                    if self.is_sqlite:
                        (await conn.get_raw_connection())  # ensure connected
                        conn.sync_connection.info["begin_mode"] = "IMMEDIATE"  # type: ignore[union-attr]
                    try:
                        async with conn.begin():
                            yield conn
                    finally:
                        if self.is_sqlite:
                            conn.sync_connection.info.pop("begin_mode", None)  # type: ignore[union-attr]
            except OperationalError as exc:
                raise errors.StoreError(f"database unavailable: {exc.orig}") from exc

    @contextlib.asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only snapshot (no lock: WAL readers never block the writer)."""
        try:
            async with self.engine.connect() as conn, conn.begin():
                yield conn
        except OperationalError as exc:
            raise errors.StoreError(f"database unavailable: {exc.orig}") from exc

    async def run_write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` — plain synchronous SQLAlchemy — in one write transaction.

        SQLite: in the single writer thread, under the process's write lock. PostgreSQL: on
        the async engine through ``run_sync`` (asyncpg needs no thread). One function, both
        databases.
        """
        if self._sync_engine is None:
            try:
                async with self.engine.begin() as conn:
                    return await conn.run_sync(fn, *args)
            except OperationalError as exc:
                raise errors.StoreError(f"database unavailable: {exc.orig}") from exc
        assert self._write_lock is not None
        async with self._write_lock:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._writer, self._sync_tx, "IMMEDIATE", fn, args)

    async def run_read(self, fn: Callable[..., T], *args: Any) -> T:
        """Like ``run_write`` for reads: no lock, a pool of reader threads on SQLite."""
        if self._sync_engine is None:
            try:
                async with self.engine.connect() as conn:
                    return await conn.run_sync(fn, *args)
            except OperationalError as exc:
                raise errors.StoreError(f"database unavailable: {exc.orig}") from exc
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._sync_tx, "DEFERRED", fn, args)

    def _sync_tx(self, mode: str, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        assert self._sync_engine is not None
        try:
            with self._sync_engine.connect() as conn:
                conn.info["begin_mode"] = mode
                try:
                    with conn.begin():
                        return fn(conn, *args)
                finally:
                    conn.info.pop("begin_mode", None)
        except OperationalError as exc:
            raise errors.StoreError(f"database unavailable: {exc.orig}") from exc

    async def ping(self) -> bool:
        try:
            await self.run_read(lambda conn: conn.exec_driver_sql("SELECT 1").scalar())
            return True
        except Exception:  # a health check answers "not ready", whatever the cause
            log.warning("database ping failed", exc_info=True)
            return False

    async def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (idempotent; a database already
        at the head revision costs one query)."""
        from alembic import command

        cfg = _alembic_config()
        async with self.engine.begin() as conn:

            def _upgrade(sync_conn: Any) -> None:
                if _current_revision(sync_conn) == _head_revision():
                    return
                cfg.attributes["connection"] = sync_conn
                command.upgrade(cfg, "head")

            await conn.run_sync(_upgrade)

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self._sync_engine is not None:
            self._writer.shutdown(wait=True)
            self._readers.shutdown(wait=True)
            self._sync_engine.dispose()


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


@functools.cache
def _head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def _current_revision(sync_conn: Any) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(sync_conn).get_current_revision()


def null_pool_engine(url: str) -> AsyncEngine:
    """A poolless engine for one-off admin work (creating/dropping test databases)."""
    return create_async_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
