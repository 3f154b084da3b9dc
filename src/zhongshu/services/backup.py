"""Backups of the whole database, and restoring one (offline).

``create`` writes a consistent online backup into ``<data_dir>/backups/`` while the hub
runs: on SQLite a ``.db`` file (``VACUUM INTO``), on PostgreSQL — or on request — a
portable ``.jsonl.gz`` dump read from one snapshot (the formats: ``db/backup_store.py``).
Files are named ``zhongshu-<UTC timestamp>.<ext>``; ``list`` shows them, and ``path_of``
and ``delete`` accept only names ``list`` shows, so a name can never reach outside the
directory.

``restore`` replaces the contents of this service's database with a backup. It is for the
CLI (``zhongshu restore``) with the hub stopped: a live hub must not have its database
swapped underneath it, so no HTTP route calls it.

A backup holds what the database holds: password hashes, hashed key secrets and the
credentials of sources, proxies and channels *sealed* with ``encryption_keys`` — never a
secret in the clear. Using those after a restore needs the same ``encryption_keys`` (and
``secret_key``, or tokens issued before stop working).

Every create, delete and restore publishes a ``backup.*`` / ``restore.*`` event, also
written to the events table; the audit log records them from the bus.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from zhongshu import errors
from zhongshu.db import backup_store
from zhongshu.db.backup_store import BackupStore
from zhongshu.db.event_store import EventStore
from zhongshu.services.events import Event, EventBus
from zhongshu.services.identity import SYSTEM, Principal

Format = Literal["sqlite", "jsonl"]
_STAMP = "%Y%m%dT%H%M%S.%fZ"
_NAME = re.compile(r"^zhongshu-(\d{8}T\d{6}\.\d{6}Z)\.(db|jsonl\.gz)$")
_EXT: dict[Format, str] = {"sqlite": "db", "jsonl": "jsonl.gz"}


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """One backup file."""

    name: str
    path: Path
    size_bytes: int
    created_at: float
    format: Format
    dialect: str  # of the database it was taken from


class BackupService:
    """Create, list, fetch, delete and restore backups of one database.

    Parameters
    ----------
    store:
        The backup SQL of the hub's database.
    events:
        Where backup events are recorded (they change no row, so no store writes them).
    bus:
        Publishes ``backup.*`` / ``restore.*`` (the audit log listens).
    backup_dir:
        ``<data_dir>/backups``; created (mode 0700) on the first backup.
    keep:
        After each new backup, only the newest ``keep`` are kept (None: all of them).
    """

    def __init__(
        self,
        store: BackupStore,
        events: EventStore,
        bus: EventBus,
        backup_dir: Path,
        *,
        keep: int | None = None,
    ):
        self.store = store
        self.events = events
        self.bus = bus
        self.backup_dir = backup_dir
        self.keep = keep

    async def create(self, actor: Principal = SYSTEM, format: Format | None = None) -> BackupInfo:
        """Write a consistent backup of the whole database now.

        Parameters
        ----------
        actor:
            Who asked (for the event and the audit log).
        format:
            ``sqlite`` (SQLite only) or ``jsonl``; by default ``sqlite`` on SQLite and
            ``jsonl`` on PostgreSQL.

        Returns
        -------
        The new backup.
        """
        dialect = self.store.dialect
        fmt: Format = format or ("sqlite" if dialect == "sqlite" else "jsonl")
        if fmt == "sqlite" and dialect != "sqlite":
            raise errors.InvalidInput(
                f"format: 'sqlite' backups need a SQLite database and this hub runs on "
                f"{dialect}: use 'jsonl'"
            )
        self.backup_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        now = time.time()
        path = self._free_path(now, fmt)
        # Written under a name ``list`` ignores, then renamed: no half-written backups.
        tmp = path.with_name(path.name + ".partial")
        tmp.unlink(missing_ok=True)
        try:
            if fmt == "sqlite":
                await self.store.vacuum_into(tmp)
                os.chmod(tmp, 0o600)
            else:
                await self._dump(tmp, now)
            backup_store.fsync_path(tmp)
            os.replace(tmp, path)
            backup_store.fsync_path(self.backup_dir)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        info = _info(path)
        await self._publish(
            Event(
                "backup.created",
                "backup",
                info.name,
                actor.actor,
                {"format": info.format, "dialect": info.dialect, "size_bytes": info.size_bytes},
            )
        )
        await self._rotate(actor)
        return info

    async def _rotate(self, actor: Principal) -> None:
        """Delete all but the newest ``keep`` backups (the one just made is the newest)."""
        if not self.keep:
            return
        for old in self.list()[self.keep :]:
            with contextlib.suppress(errors.BackupNotFound, FileNotFoundError):
                await self.delete(old.name, actor)

    def list(self) -> list[BackupInfo]:
        """Every backup in the directory, newest first."""
        return list_backups(self.backup_dir)

    def path_of(self, name: str) -> Path:
        """The file of the backup ``name`` — only a name ``list`` shows (no paths)."""
        if not _NAME.match(name):
            raise errors.BackupNotFound(f"no backup named {name[:80]!r}")
        path = self.backup_dir / name
        if not path.is_file():
            raise errors.BackupNotFound(f"no backup named {name!r}")
        return path

    async def delete(self, name: str, actor: Principal = SYSTEM) -> None:
        """Remove a backup file."""
        path = self.path_of(name)
        size = path.stat().st_size
        path.unlink()
        await self._publish(
            Event("backup.deleted", "backup", name, actor.actor, {"size_bytes": size})
        )

    def inspect(self, file: Path) -> dict[str, Any]:
        """The header of a backup file (format version, revision, source dialect, row
        counts); InvalidBackup when it cannot be restored by this code."""
        return backup_store.open_backup(file).header

    async def restore(
        self,
        file: Path,
        *,
        force: bool = False,
        progress: Callable[[int], None] | None = None,
        actor: Principal = SYSTEM,
    ) -> dict[str, Any]:
        """Replace the database's contents with the backup in ``file``. Offline only.

        Parameters
        ----------
        file:
            A ``.db`` or ``.jsonl.gz`` backup (recognised by content, not name).
        force:
            Replace a database that already has users (refused otherwise).
        progress:
            Called with the number of rows just loaded.
        actor:
            Who restored (for the event and the audit log).

        Returns
        -------
        ``{"method": "file" | "rows", "rows": n, "revision": …, "dialect": …}``.
        """
        source = backup_store.open_backup(file)
        header = source.header
        users = await self.store.user_count()
        if users and not force:
            raise errors.RestoreRefused(
                f"the target database already has {users} user(s): a restore replaces "
                "everything in it. Restore into an empty database, or pass --force"
            )
        rows = sum(int(n) for n in header["tables"].values())
        if isinstance(source, backup_store.SqliteFileReader) and self.store.db.is_sqlite:
            method = "file"
            await self.store.release()
            backup_store.replace_sqlite_file(file, backup_store.sqlite_file(self.store.db.url))
            await self.store.db.migrate()  # a backup from an older release: bring it to head
            if progress:
                progress(rows)
        else:
            method = "rows"
            await self.store.db.migrate()
            loaded = await self.store.load(source, progress or (lambda n: None))
            rows = sum(loaded.values())
        result = {
            "method": method,
            "rows": rows,
            "revision": header["revision"],
            "dialect": header["dialect"],
            "created_at": header["created_at"],
        }
        await self._publish(
            Event(
                "restore.completed",
                "backup",
                file.name,
                actor.actor,
                {**result, "forced": bool(force and users)},
            )
        )
        return result

    # --- helpers -----------------------------------------------------------------------

    def _free_path(self, now: float, fmt: Format) -> Path:
        while True:
            stamp = datetime.fromtimestamp(now, UTC).strftime(_STAMP)
            path = self.backup_dir / f"zhongshu-{stamp}.{_EXT[fmt]}"
            if not path.exists():
                return path
            now += 1e-6

    async def _dump(self, tmp: Path, now: float) -> None:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with (
            os.fdopen(fd, "wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) as gz,
            io.TextIOWrapper(gz, encoding="utf-8") as out,
        ):
            await self.store.dump(out, now)

    async def _publish(self, ev: Event) -> None:
        await self.events.append([ev])
        self.bus.publish([ev])


def list_backups(backup_dir: Path) -> list[BackupInfo]:
    """Every backup in ``backup_dir``, newest first (reads the directory only)."""
    if not backup_dir.is_dir():
        return []
    found = []
    for p in backup_dir.iterdir():
        if _NAME.match(p.name):
            try:
                found.append(_info(p))
            except FileNotFoundError:  # deleted while we looked
                continue
    return sorted(found, key=lambda b: b.name, reverse=True)


def _info(path: Path) -> BackupInfo:
    m = _NAME.match(path.name)
    assert m is not None
    created = datetime.strptime(m.group(1), _STAMP).replace(tzinfo=UTC).timestamp()
    fmt: Format = "sqlite" if m.group(2) == "db" else "jsonl"
    return BackupInfo(
        name=path.name,
        path=path,
        size_bytes=path.stat().st_size,
        created_at=created,
        format=fmt,
        dialect="sqlite" if fmt == "sqlite" else _dump_dialect(path),
    )


def _dump_dialect(path: Path) -> str:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            return str(json.loads(fh.readline()).get("dialect", "unknown"))
    except (OSError, EOFError, ValueError, AttributeError):
        return "unknown"
