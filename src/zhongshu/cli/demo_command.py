"""``zhongshu demo``: a hub, a worker and the fake ``demo`` platform in one process.

Everything a new user wants to see in three minutes, offline: a node registers, a source
is assigned to it, a QR login runs (open the printed URL to "scan" it, or pass
``--auto-scan``), and comments and direct messages arrive through the same sync path and
IM API real platforms use. The demo drives the hub over its public HTTP API, as a user
would, so what it prints is what the API answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console

from zhongshu import testing

console = Console(stderr=True)
ADMIN_USER = "demo"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    data_dir: Annotated[
        Path | None, typer.Option(help="where the demo keeps its data [default: a temp dir]")
    ] = None,
    port: Annotated[int, typer.Option(help="hub port")] = 8001,
    platform_port: Annotated[int, typer.Option(help="demo platform port")] = 8765,
    auto_scan: Annotated[
        bool, typer.Option("--auto-scan", help="scan the QR code automatically")
    ] = False,
    exit_after: Annotated[
        float | None, typer.Option(help="stop after this many seconds [default: Ctrl-C]")
    ] = None,
    activity_every_s: Annotated[
        float, typer.Option(help="how often the demo platform makes new activity")
    ] = 5.0,
) -> None:
    """Try everything offline: a hub, a worker and a fake platform with QR login."""
    root = data_dir or Path(tempfile.mkdtemp(prefix="zhongshu-demo-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(
            _run(
                root,
                port=port,
                platform_port=platform_port,
                auto_scan=auto_scan,
                exit_after=exit_after,
                activity_every_s=activity_every_s,
            )
        )
    except KeyboardInterrupt:
        console.print("demo stopped")


async def _run(
    root: Path,
    *,
    port: int,
    platform_port: int,
    auto_scan: bool,
    exit_after: float | None,
    activity_every_s: float,
) -> None:
    import uvicorn

    from zhongshu.app import create_app
    from zhongshu.config import load_settings
    from zhongshu.demo.platform import DemoPlatform, create_platform_app
    from zhongshu.worker.registry import BUILTIN_MODULE, HandlerRegistry
    from zhongshu.worker.runtime import Worker

    settings = load_settings(
        data_dir=root,
        port=port,
        database_url=f"sqlite+aiosqlite:///{root / 'zhongshu.db'}",
        monitor_tick_s=2.0,
        assignment_tick_s=2.0,
        heartbeat_interval_s=2.0,
        offline_after_s=10.0,
    )
    platform_url = f"http://127.0.0.1:{platform_port}"
    os.environ["ZHONGSHU_DEMO_PLATFORM_URL"] = platform_url
    platform = DemoPlatform(platform_url, activity_every_s=activity_every_s)
    hub_app = create_app(settings)
    servers = [
        uvicorn.Server(uvicorn.Config(hub_app, host="127.0.0.1", port=port, log_level="warning")),
        uvicorn.Server(
            uvicorn.Config(
                create_platform_app(platform),
                host="127.0.0.1",
                port=platform_port,
                log_level="warning",
            )
        ),
    ]
    serving = [asyncio.create_task(s.serve()) for s in servers]
    worker: Worker | None = None
    worker_task: asyncio.Task[None] | None = None
    try:
        await testing.wait_until(lambda: all(s.started for s in servers), timeout_s=30)
        hub_url = f"http://127.0.0.1:{port}"
        password = secrets.token_urlsafe(12)
        await hub_app.hub.identity.create_user(ADMIN_USER, password, "admin")
        console.print(f"[bold]hub[/bold]       {hub_url}  (API docs {hub_url}/docs)")
        console.print(f"[bold]login[/bold]     {ADMIN_USER} / {password}")
        console.print(f"[bold]platform[/bold]  {platform_url}  (the fake 'demo' platform)")
        console.print(f"[bold]data[/bold]      {root}")
        async with httpx.AsyncClient(base_url=hub_url, timeout=30, trust_env=False) as api:
            token = await _login(api, password)
            api.headers["authorization"] = f"Bearer {token}"
            node = await _post(api, "/api/v1/nodes", {"name": "demo-worker"})
            registry = HandlerRegistry()
            registry.load_module(BUILTIN_MODULE)
            registry.load_module("zhongshu.worker.handlers.demo")
            worker = Worker(
                hub_url,
                node["credentials"]["access_key"],
                node["credentials"]["secret_key"],
                journal_path=root / "worker-journal.db",
                registry=registry,
                capabilities=["demo"],
                concurrency=4,
            )
            worker_task = asyncio.create_task(worker.run())
            console.print(f"[bold]worker[/bold]    node {node['id']} (capability demo)")
            source = await _post(
                api,
                "/api/v1/sources",
                {"platform": "demo", "name": "Demo shop", "monitor_interval_s": 5},
            )
            await _wait_assigned(api, source["id"])
            console.print(f"[bold]source[/bold]    {source['id']} 'Demo shop' assigned")
            await _qr_login(api, platform, source["id"], auto_scan)
            await _watch(api, exit_after)
    finally:
        if worker is not None:
            worker.request_stop()
            worker.request_stop()
        if worker_task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(worker_task, 10)
        for s in servers:
            s.should_exit = True
        await asyncio.gather(*serving, return_exceptions=True)


async def _login(api: httpx.AsyncClient, password: str) -> str:
    r = await api.post("/api/v1/auth/login", json={"username": ADMIN_USER, "password": password})
    r.raise_for_status()
    return str(r.json()["access_token"])


async def _post(api: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = await api.post(path, json=body)
    if r.status_code >= 400:
        raise RuntimeError(f"POST {path}: {r.status_code} {r.text}")
    return r.json()  # type: ignore[no-any-return]


async def _get(api: httpx.AsyncClient, path: str, **params: Any) -> Any:
    r = await api.get(path, params=params)
    r.raise_for_status()
    return r.json()


async def _wait_assigned(api: httpx.AsyncClient, source_id: str) -> None:
    async def assigned() -> bool:
        source = await _get(api, f"/api/v1/sources/{source_id}")
        return bool(source.get("assigned_node_id"))

    await testing.wait_until(assigned, timeout_s=60, interval_s=0.5)


async def _qr_login(api: httpx.AsyncClient, platform: Any, source_id: str, auto_scan: bool) -> None:
    session = await _post(api, f"/api/v1/sources/{source_id}/login", {})
    session_id = session.get("session_id") or session.get("id")

    async def qr_shown() -> Any:
        return next(iter(platform.qrs.values()), None)

    qr = await testing.wait_until(qr_shown, timeout_s=60, interval_s=0.2)
    scan_url = f"{platform.base_url}/login/qr/{qr.qr_id}/scan"
    console.print(f"[bold]QR login[/bold]  session {session_id}: the worker produced a QR code")
    if auto_scan:
        console.print("          scanning it automatically (--auto-scan)")
        platform.scan(qr.qr_id)
    else:
        console.print(f"          open [link]{scan_url}[/link] to scan it (as a phone would)")

    async def logged_in() -> bool:
        source = await _get(api, f"/api/v1/sources/{source_id}")
        if source["login_status"] in ("login_failed", "expired"):
            raise RuntimeError(f"login ended {source['login_status']}")
        return bool(source["login_status"] == "logged_in")

    await testing.wait_until(logged_in, timeout_s=300, interval_s=0.5)
    console.print("[green]logged in[/green] — monitoring starts; conversations arrive below")


async def _watch(api: httpx.AsyncClient, exit_after: float | None) -> dict[str, int]:
    """Print the inbox counts (``/api/im/stats``) whenever they change."""
    started = time.monotonic()
    last: dict[str, int] = {}
    while exit_after is None or time.monotonic() - started < exit_after:
        stats = await _get(api, "/api/im/stats")
        items = dict((stats.get("data") or stats).get("items") or {})
        if items != last:
            line = "  ".join(f"{kind} {n}" for kind, n in sorted(items.items()) if n)
            console.print(f"[bold]inbox[/bold]     {line or 'empty'}")
            last = items
        await asyncio.sleep(1.0)
    return last
