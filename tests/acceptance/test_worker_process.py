"""``zhongshu worker`` as a real process against a real hub served on a free port.

A handler module written per test appends one line per handler run to a file, so the tests
can tell how often each task really ran, across worker crashes and restarts.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from zhongshu import testing
from zhongshu.config import Settings

pytestmark = pytest.mark.slow

ADMIN = ("admin", "Admin-pass-1")

HANDLERS = """
import os, time
from zhongshu.worker import handler

RUNS = os.environ["ZS_TEST_RUNS_FILE"]

@handler("t.work")
async def work(ctx, payload):
    import asyncio
    with open(RUNS, "a") as f:
        f.write(ctx.task_id + "\\n")
    await asyncio.sleep(payload.get("seconds", 0))
    return {"n": payload.get("n")}
"""


async def _create_admin(settings: Settings) -> None:
    async with testing.running_hub(settings) as hub:
        await hub.identity.create_user(*ADMIN, role="admin")


@pytest.fixture
def served(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[testing.ServedHub]:
    settings = make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    asyncio.run(_create_admin(settings))
    with testing.served_hub(settings) as hub:
        yield hub


@pytest.fixture
def admin(served: testing.ServedHub) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as c:
        r = c.post("/api/v1/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        r.raise_for_status()
        c.headers["authorization"] = f"Bearer {r.json()['access_token']}"
        yield c


class WorkerProcess:
    """Starts ``python -m zhongshu worker`` for one node with one journal."""

    def __init__(self, served: testing.ServedHub, admin: httpx.Client, tmp_path: Path) -> None:
        r = admin.post("/api/v1/nodes", json={"name": "w", "capacity": 16})
        r.raise_for_status()
        creds = r.json()["credentials"]
        (tmp_path / "zs_accept_handlers.py").write_text(textwrap.dedent(HANDLERS))
        self.runs_file = tmp_path / "runs.txt"
        self.log_file = tmp_path / "worker.log"
        self.args = [
            sys.executable,
            "-m",
            "zhongshu",
            "worker",
            "--hub",
            served.url,
            "--handlers",
            "zs_accept_handlers",
            "--journal",
            str(tmp_path / "journal.db"),
            "--concurrency",
            "16",
            "--grace",
            "0.5",
        ]
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path]),
            "ZHONGSHU_WORKER_KEY": creds["access_key"],
            "ZHONGSHU_WORKER_SECRET": creds["secret_key"],
            "ZS_TEST_RUNS_FILE": str(self.runs_file),
        }
        self.secret = creds["secret_key"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_file, "ab")  # noqa: SIM115 (the child owns it)
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=log, stderr=log)

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(30)

    def runs(self) -> Counter[str]:
        if not self.runs_file.exists():
            return Counter()
        return Counter(self.runs_file.read_text().split())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def worker(
    served: testing.ServedHub, admin: httpx.Client, tmp_path: Path
) -> Iterator[WorkerProcess]:
    w = WorkerProcess(served, admin, tmp_path)
    yield w
    w.stop()


def submit(admin: httpx.Client, n: int, **payload: Any) -> list[str]:
    tasks = [{"kind": "t.work", "payload": {"n": i, **payload}} for i in range(n)]
    r = admin.post("/api/v1/tasks/batch", json={"tasks": tasks})
    assert r.status_code == 201, r.text
    return [t["id"] for t in r.json()["items"]]


def states(admin: httpx.Client) -> Counter[str]:
    r = admin.get("/api/v1/tasks", params={"limit": 1000})
    r.raise_for_status()
    return Counter(t["status"] for t in r.json()["items"])


def wait_for(check: Callable[[], bool], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_runs_every_task_once(worker: WorkerProcess, admin: httpx.Client) -> None:
    ids = submit(admin, 300)
    worker.start()
    wait_for(lambda: states(admin)["succeeded"] == 300)
    assert worker.runs() == Counter(dict.fromkeys(ids, 1))
    assert worker.signal(signal.SIGTERM) == 0
    assert "worker stopped: 300 succeeded" in worker.log_file.read_text()
    assert worker.secret not in worker.log_file.read_text()


def test_kill_9_loses_nothing(worker: WorkerProcess, admin: httpx.Client) -> None:
    ids = submit(admin, 200, seconds=0.02)
    worker.start()
    wait_for(lambda: len(worker.runs()) >= 40)
    worker.signal(signal.SIGKILL)
    worker.start()
    wait_for(lambda: states(admin)["succeeded"] == 200)
    runs = worker.runs()
    assert set(runs) == set(ids)
    # Only what was running (not yet journaled) at the kill may run a second time.
    assert sum(runs.values()) - len(ids) <= 16
    assert worker.signal(signal.SIGTERM) == 0


def test_sigterm_cancels_after_grace_and_the_task_runs_again(
    worker: WorkerProcess, admin: httpx.Client
) -> None:
    [slow] = submit(admin, 1, seconds=60)
    worker.start()
    wait_for(lambda: worker.runs()[slow] == 1)
    started = time.monotonic()
    assert worker.signal(signal.SIGTERM) == 0
    assert time.monotonic() - started < 10
    assert "1 cancelled at shutdown" in worker.log_file.read_text()
    assert states(admin)["succeeded"] == 0

    # The hub hands the held lease back when the node registers again; it runs again.
    worker.start()
    wait_for(lambda: worker.runs()[slow] == 2)
