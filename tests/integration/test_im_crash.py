"""ACK only after commit: a hub process that dies between the commit and the ACK leaves
the worker without an ACK; the worker re-sends to the restarted hub and nothing is
duplicated. The hub runs as a subprocess so it can really die (``os._exit``)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
from matrix_im import envelope, insert_source

from zhongshu import testing

pytestmark = pytest.mark.timeout(90)

HUB_SCRIPT = """
import json, os, sys
import uvicorn
from zhongshu.app import create_app
from zhongshu.config import Settings

values = json.loads(sys.argv[1])
app = create_app(Settings(**values))
if os.environ.get("IM_CRASH_AFTER_COMMIT") == "1":
    def crash(outcome):
        if outcome.created:  # the sync committed; die before anything answers the worker
            os._exit(137)
    app.hub.sync.after_commit = crash
uvicorn.run(app, host="127.0.0.1", port=values["port"], log_level="warning")
"""


async def _start(values: dict[str, Any], crash: bool) -> subprocess.Popen[bytes]:
    env = {"PATH": "/usr/bin:/bin", "IM_CRASH_AFTER_COMMIT": "1" if crash else "0"}
    proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; the hub runs on its own
        [sys.executable, "-c", HUB_SCRIPT, json.dumps(values)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{values['port']}/healthz"
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            try:
                if (await client.get(url)).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "hub died")
            await asyncio.sleep(0.05)
    proc.kill()
    raise RuntimeError("hub did not start")


async def _worker(
    port: int, node: dict[str, Any], secret: str, source: str
) -> socketio.AsyncClient:
    """Connect and register, then wait until the hub assigned ``source`` to this node."""
    sio = socketio.AsyncClient(reconnection=False)
    assigned: list[str] = []
    sio.on(
        "master:task:assign",
        lambda data: assigned.extend(a.get("id", "") for a in data.get("accounts") or []),
        namespace="/worker",
    )
    await sio.connect(
        f"http://127.0.0.1:{port}",
        namespaces=["/worker"],
        auth={"key": node["access_key"], "secret": secret},
        transports=["websocket"],
        wait_timeout=10,
    )
    await sio.call(
        "worker:register",
        {"capabilities": ["douyin"], "capacity": 1, "host": "t", "version": "t"},
        namespace="/worker",
        timeout=10,
    )
    await testing.wait_until(lambda: source in assigned, timeout_s=20)
    return sio


async def test_hub_killed_between_commit_and_ack_then_resend_duplicates_nothing(
    make_settings: Any, tmp_path: Path
) -> None:
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'crash.db'}"
    settings = make_settings(database_url=db_url)
    async with testing.running_hub(settings) as hub:
        node, secret = await hub.nodes.create("collector", capabilities=["douyin"])
        # Unassigned: the assignment loop gives it to the node once it is online.
        source = await insert_source(hub, "owner", None)
    values = {
        "database_url": db_url,
        "secret_key": settings.secret_key,
        "data_dir": str(tmp_path / "data"),
        "port": settings.port,
    }

    proc = await _start(values, crash=True)
    try:
        sio = await _worker(settings.port, node, secret, source)
        acked = None
        try:
            acked = await sio.call("message", envelope(source), namespace="/worker", timeout=10)
        except Exception:  # a timeout or a disconnect: no ack either way
            acked = None
        assert acked is None, acked
        assert proc.wait(timeout=10) == 137
        await sio.disconnect()
    finally:
        if proc.poll() is None:
            proc.kill()

    proc = await _start(values, crash=False)
    try:
        sio = await _worker(settings.port, node, secret, source)
        ack = await sio.call("message", envelope(source), namespace="/worker", timeout=10)
        assert ack["payload"]["success"] is True
        assert ack["payload"]["created"] == {}  # everything was committed before the crash
        await sio.disconnect()
    finally:
        proc.terminate()
        proc.wait(timeout=15)

    async with testing.running_hub(settings) as hub:
        counts, states = await hub.items.stats(None)
        assert {c["kind"]: int(c["n"]) for c in counts} == {
            "comment": 10,
            "content": 5,
            "conversation": 29,
            "message": 10,
        }
        assert states[0]["syncs"] == 2
        created, _ = await hub.events.query(type_prefix="item.created")
        assert len(created) == 4  # one per kind, from the first (committed) sync only
