"""The ``zhongshu`` command (Typer + Rich)."""

from __future__ import annotations

import asyncio
import getpass
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from zhongshu import __version__, errors

if TYPE_CHECKING:
    from zhongshu.config import Settings

app = typer.Typer(
    name="zhongshu",
    help="中枢 — a self-hosted hub for fleets of worker nodes.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-C", help="YAML config file (default: ./config.yaml if present)"),
]


def settings_or_exit(config: Path | None, **overrides: Any) -> Settings:
    """Load settings; on a problem print one clear line and exit with code 2."""
    # Imported here: client commands never need settings, and pydantic-settings is slow to load.
    from zhongshu.config import load_settings

    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except errors.ConfigError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if level.upper() != "DEBUG":
        # Alembic narrates every plugin and migration step at INFO on each start.
        logging.getLogger("alembic").setLevel(logging.WARNING)


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


@app.command("check-config")
def check_config(config: ConfigOpt = None) -> None:
    """Validate the configuration and print the effective values (secrets hidden)."""
    settings = settings_or_exit(config)
    shown = settings.model_dump(mode="json")
    for key in ("secret_key", "callback_secret", "relay_api_keys"):
        if shown.get(key):
            shown[key] = "***"
    for key, value in shown.items():
        console.print(f"[bold]{key}[/bold] = {value}", highlight=False)
    console.print("[green]configuration is valid[/green]")


async def _init(settings: Settings, username: str | None, password: str | None) -> str:
    from zhongshu.hub import Hub

    hub = Hub.build(settings)
    try:
        await hub.db.migrate()
        if username is None:
            return "database ready"
        assert password is not None
        await hub.identity.create_user(username, password, "admin")
        return f"database ready; admin {username!r} created"
    finally:
        await hub.db.dispose()


@app.command()
def init(
    config: ConfigOpt = None,
    admin_user: Annotated[str | None, typer.Option(help="username of the first admin")] = None,
    admin_password: Annotated[
        str | None,
        typer.Option(
            help="password (prompted when omitted on a terminal)",
            envvar="ZHONGSHU_ADMIN_PASSWORD",
        ),
    ] = None,
) -> None:
    """Create or upgrade the database and, optionally, the first admin."""
    settings = settings_or_exit(config)
    if admin_user and not admin_password:
        if not sys.stdin.isatty():
            console.print("[red]error:[/red] --admin-password is required when not on a terminal")
            raise typer.Exit(2)
        admin_password = getpass.getpass(f"password for {admin_user}: ")
    if admin_password and not admin_user:
        console.print("[red]error:[/red] --admin-password needs --admin-user")
        raise typer.Exit(2)
    try:
        msg = asyncio.run(_init(settings, admin_user, admin_password))
    except errors.ZhongshuError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    console.print(f"[green]{msg}[/green] ({settings.effective_database_url.split('://')[0]})")


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="port")] = None,
) -> None:
    """Run the hub (migrates the database first)."""
    import uvicorn

    from zhongshu.app import create_app

    settings = settings_or_exit(config, host=host, port=port)
    setup_logging(settings.log_level)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    console.print(
        f"zhongshu {__version__} on http://{settings.host}:{settings.port} "
        f"(docs at /docs, database {settings.effective_database_url.split('://')[0]})"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
        lifespan="on",
    )


def _register_subcommands() -> None:
    from zhongshu.cli import (
        backup_commands,
        bench_command,
        client_commands,
        data_commands,
        demo_command,
        identity_commands,
        relay_commands,
        secrets_commands,
    )

    for module in (
        client_commands,
        identity_commands,
        relay_commands,
        demo_command,
        data_commands,
        secrets_commands,
        backup_commands,
        bench_command,
    ):
        module.register(app)
    try:
        from zhongshu.cli import worker as worker_cli
    except ImportError:  # pragma: no cover - only while the worker package is being built
        return
    app.command("worker")(worker_cli.worker)


def main() -> None:
    _register_subcommands()
    app()
