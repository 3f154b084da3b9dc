"""Process plumbing shared by the benchmarks: a hub and workers as real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

SUPPORT_DIR = Path(__file__).resolve().parent
ZHONGSHU = [sys.executable, "-m", "zhongshu"]
ADMIN = ("admin", "Bench-pass-1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def machine() -> str:
    import platform

    import psutil

    return (
        f"{platform.processor() or platform.machine()}, {psutil.cpu_count()} cores, "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}"
    )


class HubProcess:
    def __init__(self, workdir: Path, env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "ZHONGSHU_DATA_DIR": str(workdir / "data"),
            "ZHONGSHU_PORT": str(self.port),
            "ZHONGSHU_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def init(self) -> None:
        subprocess.run(
            [*ZHONGSHU, "init", "--admin-user", ADMIN[0], "--admin-password", ADMIN[1]],
            env=self.env,
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        log = open(self.workdir / "hub.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([*ZHONGSHU, "serve"], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"hub did not start; see {self.workdir / 'hub.log'}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def client(self) -> httpx.Client:
        c = httpx.Client(base_url=self.url, timeout=60)
        r = c.post("/api/v1/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        r.raise_for_status()
        c.headers["authorization"] = f"Bearer {r.json()['access_token']}"
        return c


def create_node(client: httpx.Client, name: str, capacity: int) -> dict[str, Any]:
    r = client.post("/api/v1/nodes", json={"name": name, "capacity": capacity})
    r.raise_for_status()
    return r.json()["credentials"]  # type: ignore[no-any-return]


def start_worker(
    hub: HubProcess, creds: dict[str, Any], workdir: Path, concurrency: int, name: str
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(SUPPORT_DIR)}
    log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [
            *ZHONGSHU,
            "worker",
            "--hub",
            hub.url,
            "--key",
            creds["access_key"],
            "--secret",
            creds["secret_key"],
            "--handlers",
            "bench_handlers",
            "--concurrency",
            str(concurrency),
            "--journal",
            str(workdir / f"{name}.journal.db"),
            "--log-level",
            "WARNING",
        ],
        env=env,
        stdout=log,
        stderr=log,
    )


def wait_nodes_online(client: httpx.Client, n: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        nodes = client.get("/api/v1/nodes").json()["items"]
        if sum(1 for x in nodes if x["status"] == "online") >= n:
            return
        time.sleep(0.1)
    raise RuntimeError("workers did not come online")


def percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2)
