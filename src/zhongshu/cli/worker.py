"""``zhongshu worker``: run a worker node process.

The CLI's Typer app registers this function with ``app.command("worker")(worker)``.
Settings are read here, at the entry point, and handed to ``Worker`` as plain values.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from zhongshu.worker import errors
from zhongshu.worker.registry import HandlerRegistry

if TYPE_CHECKING:
    from zhongshu.worker.runtime import Worker

DEFAULT_HUB = "http://127.0.0.1:8001"


class TransportName(StrEnum):
    socketio = "socketio"
    http = "http"


def worker(
    hub: str = typer.Option(
        DEFAULT_HUB, "--hub", envvar="ZHONGSHU_WORKER_HUB", help="Base URL of the hub."
    ),
    key: str | None = typer.Option(
        None, "--key", envvar="ZHONGSHU_WORKER_KEY", help="Node access key (CN…)."
    ),
    secret: str | None = typer.Option(
        None,
        "--secret",
        envvar="ZHONGSHU_WORKER_SECRET",
        help="Node secret (CS…); prefer the environment variable over the command line.",
        show_default=False,
    ),
    capability: list[str] = typer.Option(
        [], "--capability", "-c", help="Extra capability to advertise (repeatable)."
    ),
    concurrency: int = typer.Option(
        8, "--concurrency", "-n", min=1, max=10_000, help="Tasks run at once."
    ),
    handlers: list[str] = typer.Option(
        [], "--handlers", help="Python module with @handler functions to load (repeatable)."
    ),
    journal: Path | None = typer.Option(
        None,
        "--journal",
        help="SQLite journal file [default: $ZHONGSHU_DATA_DIR/worker-<key>.db or "
        "./.zhongshu-worker-<key>.db].",
    ),
    transport: TransportName = typer.Option(
        TransportName.socketio, "--transport", help="socketio (push) or http (long-poll)."
    ),
    grace: float = typer.Option(
        30.0, "--grace", min=0.0, help="Seconds running tasks get to finish at shutdown."
    ),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING, ERROR."),
    report_fast_starts: bool = typer.Option(
        False,
        "--report-fast-starts/--skip-fast-starts",
        help="Send worker:task:started also for tasks that finish within one loop tick "
        "(skipping saves the hub one write per short task).",
    ),
) -> None:
    """Run a worker: take tasks from the hub, run their handlers, report the results."""
    if not key or not secret:
        typer.echo(
            "error: the node key and secret are required: pass --key/--secret or set "
            "ZHONGSHU_WORKER_KEY and ZHONGSHU_WORKER_SECRET (create a node on the hub to get them)",
            err=True,
        )
        raise typer.Exit(code=2)
    if log_level.upper() not in logging.getLevelNamesMapping():
        typer.echo(f"error: --log-level {log_level!r} is not a logging level", err=True)
        raise typer.Exit(code=2)
    _setup_logging(log_level)
    try:
        registry = HandlerRegistry.from_config(handlers)
    except errors.HandlerLoadError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None

    from zhongshu.worker.runtime import Worker

    node = Worker(
        hub,
        key,
        secret,
        journal_path=journal or default_journal_path(key),
        registry=registry,
        capabilities=capability,
        concurrency=concurrency,
        transport=transport.value,
        grace_s=grace,
        report_fast_starts=report_fast_starts,
    )
    _run(_serve(node))


async def _serve(node: Worker) -> None:
    node.install_signal_handlers()
    await node.run()


def default_journal_path(key: str) -> Path:
    """One journal per node key, so two workers on one machine never share one."""
    safe_key = re.sub(r"[^A-Za-z0-9_-]", "_", key)
    data_dir = os.environ.get("ZHONGSHU_DATA_DIR")
    if data_dir:
        return Path(data_dir) / f"worker-{safe_key}.db"
    return Path(f".zhongshu-worker-{safe_key}.db")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Engine.IO/Socket.IO chatter (and httpx request lines) only when debugging.
    for name in ("engineio", "socketio", "httpx"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))


def _run(main: Any) -> None:
    """Run on uvloop when it is installed (it comes with uvicorn[standard]), like the hub."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)
