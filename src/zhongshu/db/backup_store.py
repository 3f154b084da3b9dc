"""SQL for backups and restores: a consistent snapshot out, every row back in.

Two file formats:

- ``.db``: SQLite's ``VACUUM INTO`` — a consistent copy of the live WAL database, taken
  as one read transaction while the hub keeps running. SQLite only; restoring it into a
  SQLite database replaces the file.
- ``.jsonl.gz``: a logical dump that moves between SQLite and PostgreSQL. The first line
  is a header (``FORMAT``, ``VERSION``, the Alembic revision, ``created_at``, the source
  dialect and each table's row count), then one ``{"table": name, "row": {...}}`` line per
  row: every table of ``schema.metadata``, in dependency order, all read inside one
  REPEATABLE READ (snapshot) transaction.

Restoring rows (``load``) runs in one write transaction: empty every table (PostgreSQL
``TRUNCATE``; SQLite ``DELETE`` with the audit log's append-only triggers dropped and
recreated in the same transaction), insert in batches, reset PostgreSQL's sequences and
check each table's count against the header.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import IO, Any, Protocol

from sqlalchemy import JSON, Connection, create_engine, func, insert, inspect, select
from sqlalchemy import column as sa_column
from sqlalchemy import table as sa_table
from sqlalchemy.exc import OperationalError, StatementError
from sqlalchemy.sql.expression import TableClause

from zhongshu import errors
from zhongshu.db.engine import MIGRATIONS_DIR, Database
from zhongshu.db.schema import AUDIT_TRIGGERS_V1, DROP_AUDIT_TRIGGERS_V1, metadata, users

Row = dict[str, Any]
FORMAT = "zhongshu.backup"
VERSION = 1
BATCH = 1000
SQLITE_MAGIC = b"SQLite format 3\x00"
GZIP_MAGIC = b"\x1f\x8b"
Progress = Callable[[int], None]


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's) contents to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sqlite_file(url: str) -> Path:
    """The database file of a SQLite URL (its query string, if any, left out)."""
    return Path(url.split(":///", 1)[1].split("?", 1)[0])


def _revision(sync_conn: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(sync_conn).get_current_revision()


def check_revision(revision: object) -> str:
    """``revision`` if this code's migrations know it; InvalidBackup otherwise."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    head = script.get_current_head()
    if not isinstance(revision, str) or not revision:
        raise errors.InvalidBackup(
            "the backup names no schema revision: it is not a zhongshu backup"
        )
    try:
        known = script.get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise errors.InvalidBackup(
            f"the backup is at schema revision {revision!r}, which this zhongshu does not know "
            f"(its newest is {head!r}): restore it with the zhongshu that made it, or upgrade"
        )
    return revision


class BackupStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def dialect(self) -> str:
        return "sqlite" if self.db.is_sqlite else "postgresql"

    # --- backing up --------------------------------------------------------------------

    async def vacuum_into(self, target: Path) -> None:
        """A consistent copy of the SQLite database in ``target`` (which must not exist)."""
        assert self.db.is_sqlite, "VACUUM INTO is SQLite's"
        await asyncio.to_thread(_vacuum_into, sqlite_file(self.db.url), target)

    async def dump(self, out: IO[str], created_at: float) -> Row:
        """Write the header and every row to ``out`` from one snapshot; returns the header."""
        async with self.db.engine.connect() as conn:
            if not self.db.is_sqlite:
                conn = await conn.execution_options(
                    isolation_level="REPEATABLE READ", postgresql_readonly=True
                )
            # SQLite (WAL): a read transaction sees one snapshot from its first read on.
            async with conn.begin():
                header: Row = {
                    "format": FORMAT,
                    "version": VERSION,
                    "revision": await conn.run_sync(_revision),
                    "created_at": created_at,
                    "dialect": self.dialect,
                    "tables": {},
                }
                for t in metadata.sorted_tables:
                    n = await conn.scalar(select(func.count()).select_from(t))
                    header["tables"][t.name] = int(n or 0)
                await asyncio.to_thread(out.write, dumps(header) + "\n")
                for t in metadata.sorted_tables:
                    if not header["tables"][t.name]:
                        continue
                    result = await conn.stream(select(t).order_by(*t.primary_key.columns))
                    async for part in result.mappings().partitions(BATCH):
                        text = "".join(
                            dumps({"table": t.name, "row": dict(r)}) + "\n" for r in part
                        )
                        # Compressing and writing off the event loop: the hub keeps serving.
                        await asyncio.to_thread(out.write, text)
        return header

    # --- restoring ---------------------------------------------------------------------

    async def user_count(self) -> int:
        """Users in the database (0 when it has no schema yet)."""

        def count(conn: Connection) -> int:
            if not inspect(conn).has_table(users.name):
                return 0
            return int(conn.scalar(select(func.count()).select_from(users)) or 0)

        async with self.db.engine.connect() as conn:
            return await conn.run_sync(count)

    async def release(self) -> None:
        """Close pooled connections (before the database file is replaced)."""
        await self.db.engine.dispose()

    async def load(self, source: RowSource, progress: Progress) -> dict[str, int]:
        """Replace every row with the backup's, in one transaction; returns rows per table."""
        return await self.db.run_write(_load, source, progress)


def _vacuum_into(source: Path, target: Path) -> None:
    # Autocommit (isolation_level=None): VACUUM cannot run inside a transaction.
    with closing(sqlite3.connect(source, isolation_level=None, timeout=30)) as conn:
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("VACUUM INTO ?", (str(target),))


# --- reading backup files --------------------------------------------------------------


class RowSource(Protocol):
    """A backup being read: its header, then its rows in batches of one table."""

    header: Row

    def batches(self, size: int) -> Iterator[tuple[str, list[Row]]]: ...


class DumpReader:
    """A ``.jsonl.gz`` dump."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                header = json.loads(fh.readline())
        except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
            raise errors.InvalidBackup(f"{path.name}: unreadable dump header ({exc})") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise errors.InvalidBackup(f"{path.name}: not a {FORMAT} dump (header: format)")
        if not isinstance(header.get("version"), int) or header["version"] > VERSION:
            raise errors.InvalidBackup(
                f"{path.name}: dump format version {header.get('version')!r} is newer than "
                f"this zhongshu reads ({VERSION}): upgrade zhongshu"
            )
        if not isinstance(header.get("tables"), dict):
            raise errors.InvalidBackup(f"{path.name}: the header has no table counts")
        check_revision(header.get("revision"))
        self.header: Row = header

    def batches(self, size: int) -> Iterator[tuple[str, list[Row]]]:
        name, batch = "", list[Row]()
        try:
            with gzip.open(self.path, "rt", encoding="utf-8") as fh:
                fh.readline()  # the header
                for lineno, line in enumerate(fh, start=2):
                    if not line.strip():
                        continue
                    entry = json.loads(line)
                    if (
                        not isinstance(entry, dict)
                        or not isinstance(entry.get("table"), str)
                        or not isinstance(entry.get("row"), dict)
                    ):
                        raise errors.InvalidBackup(
                            f"{self.path.name} line {lineno}: expected "
                            '{"table": name, "row": {...}}'
                        )
                    if batch and (entry["table"] != name or len(batch) >= size):
                        yield name, batch
                        batch = []
                    name = entry["table"]
                    batch.append(entry["row"])
        except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
            raise errors.InvalidBackup(f"{self.path.name}: damaged dump ({exc})") from exc
        if batch:
            yield name, batch


class SqliteFileReader:
    """A ``.db`` backup read row by row (to restore it into PostgreSQL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        check_sqlite_file(path)
        self._engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
        try:
            with self._engine.connect() as conn:
                present = set(inspect(conn).get_table_names())
                self._columns = {
                    t.name: [c for c in t.columns if c.name in _column_names(conn, t.name)]
                    for t in metadata.sorted_tables
                    if t.name in present
                }
                self.header: Row = {
                    "format": FORMAT,
                    "version": VERSION,
                    "revision": check_revision(_revision(conn)),
                    "created_at": path.stat().st_mtime,
                    "dialect": "sqlite",
                    "tables": {name: _count(conn, name) for name in self._columns},
                }
        finally:
            self._engine.dispose()

    def batches(self, size: int) -> Iterator[tuple[str, list[Row]]]:
        try:
            with self._engine.connect() as conn:
                for t in metadata.sorted_tables:
                    cols = self._columns.get(t.name)
                    if not cols:
                        continue
                    result = conn.execute(select(*cols).order_by(*t.primary_key.columns))
                    while part := result.mappings().fetchmany(size):
                        yield t.name, [dict(r) for r in part]
        finally:
            self._engine.dispose()


def _count(conn: Connection, table: str) -> int:
    return int(conn.scalar(select(func.count()).select_from(sa_table(table))) or 0)


def _column_names(conn: Connection, table: str) -> set[str]:
    return {c["name"] for c in inspect(conn).get_columns(table)}


def check_sqlite_file(path: Path) -> None:
    """InvalidBackup unless ``PRAGMA integrity_check`` finds the SQLite file sound."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            problems = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchmany(5)]
    except sqlite3.DatabaseError as exc:
        raise errors.InvalidBackup(f"{path.name}: not a usable SQLite database ({exc})") from exc
    if problems != ["ok"]:
        raise errors.InvalidBackup(
            f"{path.name}: damaged SQLite database (integrity_check: {'; '.join(problems)})"
        )


def open_backup(path: Path) -> DumpReader | SqliteFileReader:
    """The reader for a backup file, by its content (not its name)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise errors.InvalidBackup(f"{path}: cannot read it ({exc.strerror})") from exc
    if magic == SQLITE_MAGIC:
        return SqliteFileReader(path)
    if magic.startswith(GZIP_MAGIC):
        return DumpReader(path)
    raise errors.InvalidBackup(
        f"{path.name}: neither a SQLite database nor a gzip JSON-lines dump: give a file "
        "written by `zhongshu backup create` or POST /api/v1/backups"
    )


def replace_sqlite_file(backup: Path, target: Path) -> None:
    """Make ``backup`` the database at ``target``, atomically: copy it next to the target,
    fsync, drop the old WAL and shared-memory files (a stale WAL would be replayed onto the
    new file), rename over the target and fsync the directory."""
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".restoring")
    shutil.copyfile(backup, tmp)
    os.chmod(tmp, 0o600)
    fsync_path(tmp)
    for suffix in ("-wal", "-shm", "-journal"):
        target.with_name(target.name + suffix).unlink(missing_ok=True)
    os.replace(tmp, target)
    fsync_path(target.parent)


# --- loading rows ----------------------------------------------------------------------


def _insert_table(name: str, keys: tuple[str, ...]) -> TableClause:
    """A lightweight table of ``keys`` for inserting backup rows into ``name``."""
    t = metadata.tables.get(name)
    if t is None:
        raise errors.InvalidBackup(f"the backup has a table {name!r} this zhongshu does not know")
    unknown = [k for k in keys if k not in t.columns]
    if unknown:
        raise errors.InvalidBackup(
            f"the backup's table {name!r} has columns this zhongshu does not know: {unknown}"
        )
    cols = []
    for k in keys:
        c = t.columns[k]
        # None in a nullable JSON column was SQL NULL: keep it that, not JSON 'null'.
        type_ = JSON(none_as_null=bool(c.nullable)) if isinstance(c.type, JSON) else c.type
        cols.append(sa_column(k, type_))
    return sa_table(name, *cols)


def _empty(conn: Connection) -> None:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # TRUNCATE, not DELETE: the audit log's triggers refuse DELETE (and should).
        names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
        conn.exec_driver_sql(f"TRUNCATE {names} RESTART IDENTITY CASCADE")
        return
    for sql in DROP_AUDIT_TRIGGERS_V1[dialect]:
        conn.exec_driver_sql(sql)
    for t in reversed(metadata.sorted_tables):
        conn.execute(t.delete())
    for sql in AUDIT_TRIGGERS_V1[dialect]:
        conn.exec_driver_sql(sql)


def _reset_sequences(conn: Connection) -> None:
    """Point each serial column's sequence past the restored ids (PostgreSQL)."""
    for t in metadata.sorted_tables:
        pk = list(t.primary_key.columns)
        if len(pk) != 1 or pk[0].autoincrement is not True:
            continue
        c = pk[0].name
        conn.exec_driver_sql(
            f"SELECT setval(pg_get_serial_sequence('\"{t.name}\"', '{c}'), "
            f'COALESCE((SELECT MAX("{c}") FROM "{t.name}"), 0) + 1, false)'
        )


def _load(conn: Connection, source: RowSource, progress: Progress) -> dict[str, int]:
    _empty(conn)
    loaded: dict[str, int] = {}
    tables: dict[tuple[str, tuple[str, ...]], TableClause] = {}
    for name, rows in source.batches(BATCH):
        keys = tuple(rows[0])
        try:
            if any(tuple(r) != keys for r in rows):
                # Rows of one table normally share their columns; insert odd ones singly.
                for r in rows:
                    conn.execute(insert(_insert_table(name, tuple(r))), [r])
            else:
                if (name, keys) not in tables:
                    tables[name, keys] = _insert_table(name, keys)
                conn.execute(insert(tables[name, keys]), rows)
        except StatementError as exc:
            if isinstance(exc, OperationalError):  # the database, not the backup
                raise
            raise errors.InvalidBackup(
                f"the backup's rows of table {name!r} do not fit the schema: "
                f"{getattr(exc, 'orig', exc)}"
            ) from exc
        loaded[name] = loaded.get(name, 0) + len(rows)
        progress(len(rows))
    if conn.dialect.name == "postgresql":
        _reset_sequences(conn)
    expected = {k: v for k, v in source.header["tables"].items() if v}
    if loaded != expected:
        raise errors.InvalidBackup(
            f"the backup is incomplete: its header counts {expected}, it holds {loaded}"
        )
    return loaded
