"""``zhongshu data export|import``: collected data as ``.jsonl.gz`` files.

These commands work on the database directly (like ``zhongshu init``), not over HTTP:
an export of millions of items is a bulk read that would only be slowed down and size-
limited (``max_body_bytes``) by a round trip through the hub, the files are meant for
backups and moves between hubs run by the operator on the hub's host, and importing into
a hub that is not running (a fresh one, before its first start) must work. The admin API
(``GET /api/v1/data/export``, ``POST /api/v1/data/import``) covers remote use.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from zhongshu import errors
from zhongshu.cli import ConfigOpt, console, settings_or_exit

data_app = typer.Typer(help="Export and import collected data (items).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``data`` to the main ``zhongshu`` app."""
    app.add_typer(data_app, name="data")


def progress() -> Progress:
    """The bar ``data`` and ``backup``/``restore`` show while rows move."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


async def _run_export(config: Path | None, account: str | None, file: Path) -> int:
    from zhongshu.hub import Hub

    hub = Hub.build(settings_or_exit(config))
    try:
        await hub.db.migrate()
        total = await hub.data_transfer.count(account)
        with progress() as bar:
            task = bar.add_task("exporting items", total=total)
            return await hub.data_transfer.export_file(
                file, account, lambda n: bar.advance(task, n)
            )
    finally:
        await hub.db.dispose()


async def _run_import(config: Path | None, file: Path) -> dict[str, int]:
    from zhongshu.hub import Hub

    hub = Hub.build(settings_or_exit(config))
    try:
        await hub.db.migrate()
        with progress() as bar:
            task = bar.add_task("importing items", total=None)
            return await hub.data_transfer.import_file(file, lambda n: bar.advance(task, n))
    finally:
        await hub.db.dispose()


@data_app.command("export")
def export(
    file: Annotated[Path, typer.Argument(help="Output file (.jsonl.gz).", show_default=False)],
    account: Annotated[
        str | None, typer.Option("--account", help="Only this source (account) id.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Write collected data (all, or one account's) to a gzip JSON-lines file."""
    try:
        n = asyncio.run(_run_export(config, account, file))
    except (errors.ZhongshuError, OSError) as exc:
        console.print(f"[red]error:[/red] {getattr(exc, 'message', exc)}")
        raise typer.Exit(1) from exc
    console.print(f"[green]exported {n} items[/green] to {file}")


@data_app.command("import")
def import_(
    file: Annotated[
        Path, typer.Argument(help="A file written by `data export`.", show_default=False)
    ],
    config: ConfigOpt = None,
) -> None:
    """Merge an export into the database (idempotent: importing twice changes nothing)."""
    if not file.is_file():
        console.print(f"[red]error:[/red] {file}: no such file")
        raise typer.Exit(2)
    try:
        totals = asyncio.run(_run_import(config, file))
    except (errors.ZhongshuError, OSError) as exc:
        console.print(f"[red]error:[/red] {getattr(exc, 'message', exc)}")
        raise typer.Exit(1) from exc
    console.print(
        f"[green]imported {totals['items']} items[/green] "
        f"({totals['inserted']} new, {totals['updated']} merged)"
    )
