"""Real processes for acceptance tests: a hub (``python -m zhongshu serve``) and workers
(``python -m zhongshu worker``), started, signalled and always killed.

Nothing here is mocked: the hub runs on SQLite in a temp dir on a free 127.0.0.1 port, the
workers load ``fleet_handlers`` through ``--handlers``. Every wait is a bounded poll
(``wait_for``). ``running_fleet`` kills every process it started when it exits, whatever
happened.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

HERE = Path(__file__).resolve().parent
ZHONGSHU = [sys.executable, "-m", "zhongshu"]
ADMIN = ("admin", "Fleet-pass-1")
# A fixed Standard Webhooks secret, so a test can verify what the hub signs.
CALLBACK_SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
FINAL = ("succeeded", "dead", "cancelled")

# Fast timers: a silent node is offline after 2 s; retries and callbacks back off briefly.
HUB_ENV = {
    "ZHONGSHU_SECRET_KEY": "fleet-test-secret-key-0123456789abcdef0123",
    "ZHONGSHU_OFFLINE_AFTER_S": "2",
    "ZHONGSHU_HEARTBEAT_INTERVAL_S": "0.5",
    "ZHONGSHU_REAPER_INTERVAL_S": "0.2",
    "ZHONGSHU_RETRY_BASE_S": "0.05",
    "ZHONGSHU_RETRY_CAP_S": "0.5",
    "ZHONGSHU_CALLBACK_SECRET": CALLBACK_SECRET,
    "ZHONGSHU_CALLBACK_RETRY_BASE_S": "0.05",
    "ZHONGSHU_LOG_LEVEL": "INFO",
}

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``ZHONGSHU_*`` setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZHONGSHU_")}
    env.update(extra)
    return env


def wait_for(check: Callable[[], T], timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g}s waiting for {what}")
        time.sleep(interval_s)


def _tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class Proc:
    """One child process with its own log file."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    def _spawn(self, args: Sequence[str], env: dict[str, str]) -> None:
        assert not self.alive, f"{self.name} is already running"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                list(args), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.log_path.parent
            )
        self.paused = False

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def tail(self, lines: int = 40) -> str:
        return f"--- {self.name} ({self.log_path}) ---\n{_tail(self.log_path, lines)}"

    def kill(self) -> None:
        """kill -9 (also works on a stopped process) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self.paused = False

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)
        self.paused = False

    def terminate(self, timeout_s: float) -> int:
        """SIGTERM and wait (bounded) for the exit code."""
        assert self.proc is not None
        if self.paused:
            self.resume()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)


class HubProc(Proc):
    """``python -m zhongshu serve`` on SQLite in ``workdir/data``, on a fixed free port."""

    def __init__(self, workdir: Path, **env: str) -> None:
        super().__init__("hub", workdir / "hub.log")
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = workdir / "data"
        self.env = clean_env(
            ZHONGSHU_DATA_DIR=str(self.data_dir),
            ZHONGSHU_HOST="127.0.0.1",
            ZHONGSHU_PORT=str(self.port),
            **HUB_ENV,
            **env,
        )

    @property
    def db_path(self) -> Path:
        return self.data_dir / "zhongshu.db"

    def init(self) -> None:
        """``zhongshu init`` with the first admin."""
        done = subprocess.run(
            [*ZHONGSHU, "init", "--admin-user", ADMIN[0], "--admin-password", ADMIN[1]],
            env=self.env,
            capture_output=True,
            timeout=120,
            cwd=self.workdir,
        )
        assert done.returncode == 0, f"zhongshu init failed: {done.stdout!r} {done.stderr!r}"

    def start(self, timeout_s: float = 60.0) -> None:
        """Serve, and return once ``/readyz`` answers 200."""
        self._spawn([*ZHONGSHU, "serve"], self.env)

        def ready() -> bool:
            if not self.alive:
                raise AssertionError(f"the hub exited early\n{self.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
            return False

        wait_for(ready, timeout_s, "the hub to be ready", interval_s=0.1)

    def client(self) -> httpx.Client:
        """An HTTP client logged in as the admin."""
        c = httpx.Client(base_url=self.url, timeout=30, trust_env=False)
        r = c.post("/api/v1/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        assert r.status_code == 200, r.text
        c.headers["authorization"] = f"Bearer {r.json()['access_token']}"
        return c

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read the hub's SQLite database directly (the durable truth), read-only."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()


class WorkerProc(Proc):
    """``python -m zhongshu worker`` for one node key pair, with its own journal."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        hub_url: str,
        credentials: dict[str, str],
        *,
        node_id: str,
        capabilities: Sequence[str] = (),
        concurrency: int = 4,
        grace_s: float = 3.0,
        log_level: str = "DEBUG",
    ) -> None:
        super().__init__(name, workdir / f"{name}.log")
        self.node_id = node_id
        self.capabilities = list(capabilities)
        self.concurrency = concurrency
        self.runs_path = workdir / f"{name}.runs.jsonl"
        self.secret = credentials["secret_key"]
        self.args = [
            *ZHONGSHU,
            "worker",
            "--hub",
            hub_url,
            "--handlers",
            "fleet_handlers",
            "--journal",
            str(workdir / f"{name}.journal.db"),
            "--concurrency",
            str(concurrency),
            "--grace",
            str(grace_s),
            "--log-level",
            log_level,
            *[arg for cap in capabilities for arg in ("--capability", cap)],
        ]
        self.env = clean_env(
            PYTHONPATH=os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]),
            ZHONGSHU_WORKER_KEY=credentials["access_key"],
            ZHONGSHU_WORKER_SECRET=credentials["secret_key"],
            ZS_FLEET_RUNS=str(self.runs_path),
        )

    def start(self) -> None:
        self._spawn(self.args, self.env)

    def runs(self) -> list[dict[str, Any]]:
        """What ``fleet_handlers`` recorded in this worker (every process it was)."""
        if not self.runs_path.exists():
            return []
        return [json.loads(line) for line in self.runs_path.read_text().splitlines() if line]


@dataclass
class Fleet:
    """A hub, an admin client and named workers, each worker with its own node."""

    hub: HubProc
    admin: httpx.Client
    workers: dict[str, WorkerProc] = field(default_factory=dict)

    def add_worker(
        self,
        name: str,
        workdir: Path,
        *,
        capabilities: Sequence[str] = (),
        concurrency: int = 4,
        grace_s: float = 3.0,
    ) -> WorkerProc:
        r = self.admin.post("/api/v1/nodes", json={"name": name, "capacity": concurrency})
        assert r.status_code == 201, r.text
        node = r.json()
        w = WorkerProc(
            name,
            workdir,
            self.hub.url,
            node["credentials"],
            node_id=node["id"],
            capabilities=capabilities,
            concurrency=concurrency,
            grace_s=grace_s,
        )
        self.workers[name] = w
        return w

    def worker_of(self, node_id: str) -> WorkerProc:
        return next(w for w in self.workers.values() if w.node_id == node_id)

    def other_than(self, w: WorkerProc) -> WorkerProc:
        return next(o for o in self.workers.values() if o is not w)

    # --- nodes --------------------------------------------------------------------------

    def node(self, node_id: str) -> dict[str, Any]:
        r = self.admin.get(f"/api/v1/nodes/{node_id}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def wait_registered(self, workers: Sequence[WorkerProc] = (), timeout_s: float = 60) -> None:
        """Wait until each worker's current process has registered and is online."""
        for w in workers or list(self.workers.values()):

            def registered(w: WorkerProc = w) -> bool:
                if not w.alive:
                    raise AssertionError(f"worker {w.name} exited\n{w.tail()}")
                n = self.node(w.node_id)
                return n["status"] == "online" and n["pid"] == w.pid

            wait_for(registered, timeout_s, f"worker {w.name} to register", interval_s=0.1)

    def heal(self) -> None:
        """Resume paused workers, restart dead ones, and wait until all are registered."""
        for w in self.workers.values():
            if w.alive and w.paused:
                w.resume()
            if not w.alive:
                w.start()
        self.wait_registered()

    # --- tasks --------------------------------------------------------------------------

    def submit(self, tasks: Sequence[dict[str, Any]]) -> list[str]:
        ids: list[str] = []
        for i in range(0, len(tasks), 1000):
            r = self.admin.post("/api/v1/tasks/batch", json={"tasks": list(tasks[i : i + 1000])})
            assert r.status_code == 201, r.text
            ids.extend(t["id"] for t in r.json()["items"])
        return ids

    def task(self, task_id: str) -> dict[str, Any]:
        """One task with ``attempts_history`` and ``callback_deliveries``."""
        r = self.admin.get(f"/api/v1/tasks/{task_id}")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    def all_tasks(self) -> dict[str, dict[str, Any]]:
        """Every task on the hub by id (paged through the list API)."""
        out: dict[str, dict[str, Any]] = {}
        offset = 0
        while True:
            r = self.admin.get("/api/v1/tasks", params={"limit": 1000, "offset": offset})
            assert r.status_code == 200, r.text
            page = r.json()
            out.update((t["id"], t) for t in page["items"])
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                return out

    def wait_final(
        self, ids: Sequence[str], timeout_s: float, interval_s: float = 0.25
    ) -> dict[str, dict[str, Any]]:
        """Wait until every task in ``ids`` is succeeded, dead or cancelled; return them."""
        wanted = set(ids)
        last: dict[str, int] = {}

        def done() -> dict[str, dict[str, Any]] | None:
            tasks = self.all_tasks()
            mine = {i: tasks[i] for i in wanted if i in tasks}
            last.clear()
            for t in mine.values():
                last[t["status"]] = last.get(t["status"], 0) + 1
            if len(mine) == len(wanted) and all(t["status"] in FINAL for t in mine.values()):
                return mine
            return None

        try:
            return wait_for(done, timeout_s, f"{len(wanted)} tasks to finish", interval_s)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; states now: {last}\n{self.tails()}") from None

    def wait_status(
        self, task_id: str, statuses: Sequence[str], timeout_s: float
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            t = self.task(task_id)
            return t if t["status"] in statuses else None

        return wait_for(check, timeout_s, f"task {task_id} to be {'/'.join(statuses)}", 0.05)

    def events(self, **params: Any) -> list[dict[str, Any]]:
        r = self.admin.get("/api/v1/events", params={"limit": 1000, **params})
        assert r.status_code == 200, r.text
        return r.json()["items"]  # type: ignore[no-any-return]

    def tails(self) -> str:
        return "\n".join(p.tail(25) for p in [self.hub, *self.workers.values()])


def attempt_overlaps(rows: Sequence[tuple[str, float, float | None]]) -> dict[str, int]:
    """The most attempts each node held at one time, from (node_id, leased_at, finished_at).

    An attempt still open counts until the end; one that finished at the very moment another
    was leased does not overlap it (the slot was freed first).
    """
    points: dict[str, list[tuple[float, int]]] = {}
    for node, leased_at, finished_at in rows:
        points.setdefault(node, []).append((leased_at, 1))
        points.setdefault(node, []).append((finished_at if finished_at is not None else 1e18, -1))
    peaks: dict[str, int] = {}
    for node, pts in points.items():
        held = peak = 0
        for _, delta in sorted(pts):  # at equal times -1 sorts before +1
            held += delta
            peak = max(peak, held)
        peaks[node] = peak
    return peaks


@contextlib.contextmanager
def running_fleet(workdir: Path, workers: Sequence[dict[str, Any]]) -> Iterator[Fleet]:
    """Start a hub (after ``zhongshu init``) and the given workers; kill them all at exit.

    ``workers`` holds keyword arguments of ``Fleet.add_worker`` plus ``name``.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    hub = HubProc(workdir)
    fleet: Fleet | None = None
    try:
        hub.init()
        hub.start()
        fleet = Fleet(hub, hub.client())
        for spec in workers:
            fleet.add_worker(workdir=workdir, **spec).start()
        fleet.wait_registered()
        yield fleet
    finally:
        # Workers first, so none of them logs a reconnect storm against a dead hub.
        if fleet is not None:
            for w in fleet.workers.values():
                w.kill()
            fleet.admin.close()
        hub.kill()
