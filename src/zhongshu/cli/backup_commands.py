"""``zhongshu backup create|list`` and ``zhongshu restore FILE``.

These work on the database directly (like ``zhongshu data export``), not over HTTP:

- ``backup create`` is an operator's job on the hub's host, by cron or before an upgrade;
  it must work whether or not the hub is running (on SQLite ``VACUUM INTO`` from another
  process is just one more WAL reader; on PostgreSQL one snapshot transaction), needs no
  login or step-up confirmation (whoever can read the config and the data dir can read
  the database anyway), and the file lands in ``<data_dir>/backups`` where the admin API
  lists it too. ``POST /api/v1/backups`` covers remote use.
- ``restore`` must run with the hub stopped: a live hub must not have its database
  swapped underneath it, so there is no HTTP route for it at all.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer
from rich.table import Table

from zhongshu import errors
from zhongshu.cli import ConfigOpt, console, data_commands, settings_or_exit

if TYPE_CHECKING:
    from zhongshu.services.backup import BackupInfo, Format

backup_app = typer.Typer(
    help="Back up the whole database (restore with `zhongshu restore FILE`).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """Add ``backup`` and ``restore`` to the main ``zhongshu`` app."""
    app.add_typer(backup_app, name="backup")
    app.command("restore")(restore)


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _fail(exc: Exception, code: int = 1) -> typer.Exit:
    console.print(f"[red]error:[/red] {getattr(exc, 'message', exc)}", highlight=False)
    return typer.Exit(code)


async def _create(config: Path | None, fmt: str | None) -> BackupInfo:
    from zhongshu.hub import Hub

    hub = Hub.build(settings_or_exit(config))
    try:
        await hub.db.migrate()
        return await hub.backups.create(format=cast("Format | None", fmt))
    finally:
        await hub.audit.flush()
        await hub.db.dispose()


@backup_app.command("create")
def create(
    config: ConfigOpt = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="sqlite (a .db copy; SQLite only) or jsonl (a portable .jsonl.gz dump). "
            "Default: sqlite on SQLite, jsonl on PostgreSQL.",
        ),
    ] = None,
) -> None:
    """Write a consistent backup into <data_dir>/backups (the hub may keep running)."""
    if format not in (None, "sqlite", "jsonl"):
        console.print(f"[red]error:[/red] --format must be sqlite or jsonl, not {format!r}")
        raise typer.Exit(2)
    try:
        info = asyncio.run(_create(config, format))
    except errors.InvalidInput as exc:
        raise _fail(exc, 2) from exc
    except (errors.ZhongshuError, OSError) as exc:
        raise _fail(exc) from exc
    console.print(
        f"[green]backup written[/green]: {info.path} ({info.size_bytes} bytes, "
        f"{info.format}, from {info.dialect})",
        highlight=False,
    )


@backup_app.command("list")
def list_(config: ConfigOpt = None) -> None:
    """List the backups in <data_dir>/backups, newest first."""
    from zhongshu.services import backup

    backup_dir = settings_or_exit(config).data_dir / "backups"
    found = backup.list_backups(backup_dir)  # the directory only: no database connection
    if not found:
        console.print(f"no backups in {backup_dir}", highlight=False)
        return
    table = Table("name", "size (bytes)", "created", "format", "from")
    for b in found:
        table.add_row(b.name, str(b.size_bytes), _when(b.created_at), b.format, b.dialect)
    console.print(table)


async def _restore(config: Path | None, file: Path, force: bool) -> dict[str, Any]:
    from zhongshu.db.hub_lock import HubLock, HubLockBusy
    from zhongshu.hub import Hub

    hub = Hub.build(settings_or_exit(config))
    # No hub may run on the database while it is replaced (nor start during the restore).
    in_use = HubLock(hub.db)
    try:
        try:
            await in_use.acquire(exclusive=True)
        except HubLockBusy as exc:
            raise errors.RestoreRefused(
                "a hub is running on this database: stop every hub (and replica) using it "
                "first, since a restore replaces everything under it"
            ) from exc
        header = hub.backups.inspect(file)
        total = sum(int(n) for n in header["tables"].values())
        console.print(
            f"restoring {file.name}: taken {_when(float(header['created_at']))} from "
            f"{header['dialect']}, schema revision {header['revision']}, {total} rows",
            highlight=False,
        )
        with data_commands.progress() as bar:
            task = bar.add_task("restoring rows", total=total)
            return await hub.backups.restore(
                file, force=force, progress=lambda n: bar.advance(task, n)
            )
    finally:
        await hub.audit.flush()
        await in_use.release()
        await hub.db.dispose()


def restore(
    file: Annotated[
        Path,
        typer.Argument(help="A backup (.db or .jsonl.gz) to restore.", show_default=False),
    ],
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace a database that already has users."),
    ] = False,
    config: ConfigOpt = None,
) -> None:
    """Replace the configured database's contents with a backup. Stop the hub first."""
    if not file.is_file():
        console.print(f"[red]error:[/red] {file}: no such file")
        raise typer.Exit(2)
    try:
        result = asyncio.run(_restore(config, file, force))
    except (errors.RestoreRefused, errors.InvalidInput) as exc:
        raise _fail(exc, 2) from exc
    except (errors.ZhongshuError, OSError) as exc:
        raise _fail(exc) from exc
    how = "database file replaced" if result["method"] == "file" else "rows loaded"
    console.print(
        f"[green]restored[/green] {file.name}: {result['rows']} rows ({how}); "
        "the schema is at the newest revision. Start the hub with the same "
        "encryption_keys and secret_key as the source hub.",
        highlight=False,
    )
