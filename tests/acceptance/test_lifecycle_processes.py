"""Worker lifecycle with real processes: a served hub starts, stops, restarts and
supervises ``zhongshu worker`` children of its configured profiles (kill -9 included), and
stops them all when it shuts down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
from procs import wait_for

from support import ADMIN, create_admin
from zhongshu import testing
from zhongshu.config import Settings


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        worker_profiles=[
            {"name": "lc", "capabilities": ["lc.cap"], "concurrency": 2, "env": {"LC": "1"}},
            {"name": "broken", "handlers": ["zz_no_such_handlers_module"]},
        ],
        lifecycle_restart_base_s=0.2,
        lifecycle_restart_cap_s=0.5,
        lifecycle_max_restarts=2,
        lifecycle_stop_grace_s=5,
    )
    asyncio.run(create_admin(settings))
    return settings


def _client(url: str) -> httpx.Client:
    c = httpx.Client(base_url=url, timeout=30, trust_env=False)
    r = c.post("/api/v1/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
    assert r.status_code == 200, r.text
    c.headers["authorization"] = f"Bearer {r.json()['access_token']}"
    return c


def test_start_stop_restart_and_crash_restart(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = _settings(make_settings, tmp_path)
    with testing.served_hub(settings) as served, contextlib.closing(_client(served.url)) as c:
        base = "/api/v1/workers/lc/lifecycle"

        def status() -> dict[str, Any]:
            r = c.get(base)
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        def online(node_id: str, pid: int) -> bool:
            node = c.get(f"/api/v1/nodes/{node_id}").json()
            return node["status"] == "online" and node["pid"] == pid

        assert status()["status"] == "stopped" and status()["pid"] is None
        assert c.get("/api/v1/workers/nope/lifecycle").status_code == 404
        assert c.post("/api/v1/workers/nope/lifecycle/start").status_code == 404

        r = c.post(f"{base}/start")
        assert r.status_code == 200, r.text
        first = r.json()
        assert first["status"] == "running" and first["pid"]
        node_id, pid1 = first["node_id"], first["pid"]
        wait_for(lambda: online(node_id, pid1), 60, "the worker to register")
        # The secret travels in the environment, never on the command line.
        proc = psutil.Process(pid1)
        env = proc.environ()
        assert env["ZHONGSHU_WORKER_KEY"].startswith("CN") and env["LC"] == "1"
        assert env["ZHONGSHU_WORKER_SECRET"] not in " ".join(proc.cmdline())
        assert "--key" not in proc.cmdline() and "--secret" not in proc.cmdline()
        db = sqlite3.connect(str(tmp_path / "hub.db"))
        (sealed,) = db.execute("SELECT secret FROM worker_processes WHERE profile='lc'").fetchone()
        db.close()
        assert sealed.startswith("fernet:") and env["ZHONGSHU_WORKER_SECRET"] not in sealed
        # A second start leaves the running one alone.
        assert c.post(f"{base}/start").json()["pid"] == pid1
        assert status()["uptime_s"] > 0

        # kill -9: the supervisor restarts it (same node, new pid, one restart).
        os.kill(pid1, signal.SIGKILL)
        s = wait_for(
            lambda: (
                (st := status())["status"] == "running" and st["pid"] not in (None, pid1) and st
            ),
            30,
            "the crashed worker to be restarted",
        )
        assert s["restarts"] == 1 and s["node_id"] == node_id and s["last_exit_code"] == -9
        pid2 = s["pid"]
        wait_for(lambda: online(node_id, pid2), 60, "the restarted worker to register")
        assert not _alive(pid1)

        r = c.post(f"{base}/restart")
        assert r.status_code == 200, r.text
        pid3 = r.json()["pid"]
        assert pid3 not in (pid1, pid2) and r.json()["restarts"] == 0
        assert not _alive(pid2)
        wait_for(lambda: online(node_id, pid3), 60, "the worker to register after a restart")

        r = c.post(f"{base}/stop")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "stopped" and r.json()["pid"] is None
        assert not _alive(pid3)

        # Started again: the same node (credentials kept sealed in the database).
        r = c.post(f"{base}/start")
        assert r.json()["node_id"] == node_id
        pid4 = r.json()["pid"]
        types = [e["type"] for e in c.get("/api/v1/events", params={"limit": 500}).json()["items"]]
        for t in (
            "worker.lifecycle.running",
            "worker.lifecycle.crashed",
            "worker.lifecycle.stopped",
        ):
            assert t in types
    # The hub's shutdown stopped the worker it was running.
    wait_for(lambda: not _alive(pid4), 10, "the worker to stop with the hub")


def test_a_worker_that_keeps_crashing_fails_after_the_limit(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = _settings(make_settings, tmp_path)
    with testing.served_hub(settings) as served, contextlib.closing(_client(served.url)) as c:
        base = "/api/v1/workers/broken/lifecycle"
        r = c.post(f"{base}/start")
        assert r.status_code == 200, r.text
        s = wait_for(
            lambda: (st := c.get(base).json())["status"] == "failed" and st,
            60,
            "the broken worker to be given up",
        )
        assert s["restarts"] == 2 and s["pid"] is None and s["last_exit_code"] == 2
        log = Path(s["log_path"]).read_text()
        assert "zz_no_such_handlers_module" in log
        # A failed profile can be started again by hand.
        r = c.post(f"{base}/stop")
        assert r.json()["status"] == "stopped"


def test_children_of_a_hub_killed_with_kill_9_are_stopped_by_the_next_hub(
    tmp_path: Path,
) -> None:
    """A hub killed with -9 cannot stop its workers; they must not run on unsupervised
    while the next hub says "stopped": it stops them (its ``stop`` does too)."""
    import json

    from procs import HubProc

    profiles = [{"name": "lc", "capabilities": ["lc.cap"]}, {"name": "lc2"}]
    hub = HubProc(tmp_path, ZHONGSHU_WORKER_PROFILES=json.dumps(profiles))
    hub.init()
    hub.start()
    with contextlib.closing(hub.client()) as c:
        pids = {}
        for name in ("lc", "lc2"):
            r = c.post(f"/api/v1/workers/{name}/lifecycle/start")
            assert r.status_code == 200, r.text
            pids[name] = r.json()["pid"]
    hub.kill()  # SIGKILL: the children live on, reparented
    assert all(_alive(pid) for pid in pids.values())

    # The next hub's stop reaps a leftover child of a profile it never started ...
    hub.start()
    with contextlib.closing(hub.client()) as c:
        r = c.post("/api/v1/workers/lc/lifecycle/stop")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "stopped" and r.json()["pid"] is None
        wait_for(lambda: not _alive(pids["lc"]), 15, "the orphaned worker to stop")
        # ... and its start reaps the other leftover (found at hub start) before its own.
        wait_for(lambda: not _alive(pids["lc2"]), 15, "the hub to stop the other orphan")
        r = c.post("/api/v1/workers/lc2/lifecycle/start")
        assert r.status_code == 200, r.text
        fresh = r.json()["pid"]
        assert fresh != pids["lc2"] and _alive(fresh)
    hub.terminate(30)
    wait_for(lambda: not _alive(fresh), 10, "the worker to stop with the hub")
