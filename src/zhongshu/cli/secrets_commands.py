"""``zhongshu secrets rotate-key``: re-encrypt every stored secret with the newest key.

Rotation: put a new Fernet key in front of ``encryption_keys`` (keep the old ones
behind it), run this command, then remove the old keys. Every column listed in
``db/sealed.py`` is covered; it runs against the database directly (the hub may keep
running: each value is readable with either key throughout).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from zhongshu import errors

if TYPE_CHECKING:
    from zhongshu.config import Settings

secrets_app = typer.Typer(help="Secrets stored at rest.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``secrets`` to the main ``zhongshu`` app."""
    app.add_typer(secrets_app, name="secrets")


async def rotate(settings: Settings) -> dict[str, int]:
    """Migrate the database, then re-encrypt every sealed column; counts per column."""
    from zhongshu.db import sealed
    from zhongshu.db.engine import Database
    from zhongshu.services.secrets import SecretBox

    box = SecretBox(settings.fernet_keys())
    db = Database(settings.effective_database_url, sqlite_synchronous=settings.sqlite_synchronous)
    try:
        await db.migrate()
        return await sealed.rotate_all(db, box.rotate)
    finally:
        await db.dispose()


@secrets_app.command("rotate-key")
def rotate_key(
    config: Annotated[
        Path | None,
        typer.Option("--config", "-C", help="YAML config file (default: ./config.yaml)"),
    ] = None,
) -> None:
    """Re-encrypt every stored secret with the first of encryption_keys."""
    from zhongshu.cli import console, settings_or_exit

    settings = settings_or_exit(config)
    try:
        counts = asyncio.run(rotate(settings))
    except errors.ZhongshuError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    for column, n in counts.items():
        console.print(f"{column}: {n} re-encrypted", highlight=False)
    console.print(f"[green]done: {sum(counts.values())} secrets use the newest key[/green]")
