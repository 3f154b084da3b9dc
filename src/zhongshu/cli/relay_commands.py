"""``zhongshu relay …``: the Conversation Bus relay, straight from the database.

``export-log`` reads the hub's database (``database_url`` or the SQLite file in
``data_dir``) like ``zhongshu init`` does, so it works with the hub stopped.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import IO, Annotated

import typer

from zhongshu import errors

relay_app = typer.Typer(help="The Conversation Bus relay.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``relay`` to the main ``zhongshu`` app."""
    app.add_typer(relay_app, name="relay")


async def _export(url: str, synchronous: str, out: IO[str]) -> int:
    from zhongshu.db.engine import Database
    from zhongshu.db.task_store import TaskStore
    from zhongshu.services import relay

    db = Database(url, sqlite_synchronous=synchronous)
    n = 0
    try:
        async for entry in relay.iter_log(TaskStore(db)):
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
            n += 1
    except errors.StoreError as exc:
        raise errors.StoreError(
            f"{exc.message} (is the database initialised with zhongshu init?)"
        ) from exc
    except Exception as exc:  # a missing table, a refused connection: one clear line
        if isinstance(exc, errors.ZhongshuError):
            raise
        raise errors.StoreError(
            f"cannot read the relay log ({type(exc).__name__}); is the database initialised "
            "(zhongshu init) and reachable?"
        ) from exc
    finally:
        await db.dispose()
    return n


@relay_app.command("export-log")
def export_log(
    file: Annotated[Path, typer.Argument(help="JSON Lines file to write ('-' for stdout).")],
    config: Annotated[
        Path | None,
        typer.Option("--config", "-C", help="YAML config file (default: ./config.yaml if present)"),
    ] = None,
) -> None:
    """Write the conversation log (every relay event, oldest first) as JSON Lines."""
    from zhongshu.cli import console, settings_or_exit

    settings = settings_or_exit(config)
    url = settings.effective_database_url
    if url.startswith("sqlite"):
        path = Path(url.split(":///", 1)[1])
        if not path.exists():
            console.print(
                f"[red]error:[/red] no database at {path}: set database_url or data_dir "
                "(ZHONGSHU_DATABASE_URL / ZHONGSHU_DATA_DIR) to the hub's"
            )
            raise typer.Exit(1)
    try:
        if str(file) == "-":
            n = asyncio.run(_export(url, settings.sqlite_synchronous, sys.stdout))
        else:
            # Written beside the target and renamed, so a reader never sees half a file.
            tmp = file.with_name(file.name + ".part")
            try:
                with open(tmp, "w", encoding="utf-8") as fh:
                    n = asyncio.run(_export(url, settings.sqlite_synchronous, fh))
                tmp.replace(file)
            finally:
                tmp.unlink(missing_ok=True)
    except errors.ZhongshuError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot write {file}: {exc.strerror}")
        raise typer.Exit(1) from exc
    console.print(f"[green]{n} log entries written[/green] to {file}")
