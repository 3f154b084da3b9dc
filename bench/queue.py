"""Queue benchmark: end-to-end no-op tasks, zhongshu vs Celery + Redis, same machine, same run.

    python bench/queue.py                      # 20,000 tasks, 2 workers, SQLite
    python bench/queue.py --tasks 5000 --skip-celery
    python bench/queue.py --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench

zhongshu: a real hub process (``zhongshu serve``) and two real ``zhongshu worker``
processes over Socket.IO; every state change (submitted, leased, running, succeeded) is
committed to the database before it is acknowledged. Throughput is measured from the first
submit to the moment the last result is stored. Latency is submit → handler start on an
idle hub, measured with the handler's own clock (same machine).
Celery: two ``celery worker`` processes on Redis (broker and result backend), acks late.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# This file's name shadows the stdlib ``queue`` that Celery needs: take bench/ off the path
# and put the support modules at its end instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.append(str(_HERE / "support"))

import common  # noqa: E402


def run_zhongshu(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    env = {"ZHONGSHU_DATABASE_URL": args.database_url} if args.database_url else {}
    hub = common.HubProcess(workdir, env)
    hub.init()
    hub.start()
    workers: list[subprocess.Popen[bytes]] = []
    try:
        client = hub.client()
        for i in range(args.workers):
            creds = common.create_node(client, f"bench-{i}", args.concurrency)
            workers.append(common.start_worker(hub, creds, workdir, args.concurrency, f"w{i}"))
        common.wait_nodes_online(client, args.workers)

        latencies = measure_latency(client, args.latency_samples)
        throughput = measure_throughput(client, args.tasks)
        return {"latency": latencies, **throughput}
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            try:
                w.wait(20)
            except subprocess.TimeoutExpired:
                w.kill()
        hub.stop()


def measure_latency(client: Any, samples: int) -> dict[str, float]:
    """Submit one task at a time on an idle hub; latency = handler start - submit start.

    Also splits it, from the hub's own timestamps: the HTTP submit round trip, created →
    leased (dispatch), and leased → handler start (commit, push, worker)."""
    sent: list[tuple[str, float, float]] = []
    for _ in range(samples):
        t0 = time.time()
        r = client.post("/api/v1/tasks", json={"kind": "bench.stamp"})
        r.raise_for_status()
        sent.append((r.json()["id"], t0, time.time()))
        time.sleep(0.02)
    total, submit, dispatch, deliver = [], [], [], []
    for task_id, t0, t1 in sent:
        deadline = time.monotonic() + 30
        while True:
            t = client.get(f"/api/v1/tasks/{task_id}").json()
            if t["status"] == "succeeded":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"latency task {task_id} did not finish: {t['status']}")
            time.sleep(0.01)
        started = t["result"]["started"]
        leased = _epoch(t["attempts_history"][0]["leased_at"])
        total.append((started - t0) * 1000)
        submit.append((t1 - t0) * 1000)
        dispatch.append((leased - _epoch(t["created_at"])) * 1000)
        deliver.append((started - leased) * 1000)
    p = common.percentile
    return {
        "p50_ms": round(p(total, 50), 2),
        "p99_ms": round(p(total, 99), 2),
        "max_ms": round(max(total), 2),
        "samples": len(total),
        "submit_http_p50_ms": round(p(submit, 50), 2),
        "created_to_leased_p50_ms": round(p(dispatch, 50), 2),
        "leased_to_handler_p50_ms": round(p(deliver, 50), 2),
    }


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def count_succeeded(client: Any) -> int:
    r = client.get(
        "/api/v1/tasks", params={"status": "succeeded", "kind": "bench.noop", "limit": 1}
    )
    return int(r.json()["total"])


def measure_throughput(client: Any, n: int) -> dict[str, Any]:
    batch = 1000
    start = time.perf_counter()
    submitted = 0
    while submitted < n:
        size = min(batch, n - submitted)
        r = client.post("/api/v1/tasks/batch", json={"tasks": [{"kind": "bench.noop"}] * size})
        r.raise_for_status()
        submitted += size
    submit_s = time.perf_counter() - start
    deadline = time.monotonic() + 600
    while (done := count_succeeded(client)) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {done}/{n} tasks finished in 600 s")
        time.sleep(0.05)
    elapsed = time.perf_counter() - start
    return {
        "tasks": n,
        "submit_s": round(submit_s, 2),
        "elapsed_s": round(elapsed, 2),
        "tasks_per_s": round(n / elapsed, 1),
    }


def run_celery(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import celery_app
    from celery.result import ResultSet

    celery_app.app.control.purge()
    env = {**os.environ, "PYTHONPATH": str(_HERE / "support")}
    procs = []
    for i in range(args.workers):
        log = open(workdir / f"celery{i}.log", "ab")  # noqa: SIM115
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "celery_app",
                    "worker",
                    "--pool",
                    args.celery_pool,
                    "--concurrency",
                    str(args.celery_concurrency),
                    "--hostname",
                    f"bench{i}@%h",
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                env=env,
                stdout=log,
                stderr=log,
            )
        )
    try:
        deadline = time.monotonic() + 60
        while len(celery_app.app.control.ping(timeout=0.5) or []) < args.workers:
            if time.monotonic() > deadline:
                raise RuntimeError("celery workers did not start")
        # warm-up
        ResultSet([celery_app.noop.delay() for _ in range(100)]).join_native(timeout=60)
        start = time.perf_counter()
        res = ResultSet([celery_app.noop.delay() for _ in range(args.tasks)])
        submit_s = time.perf_counter() - start
        res.join_native(timeout=600)
        elapsed = time.perf_counter() - start
        return {
            "tasks": args.tasks,
            "submit_s": round(submit_s, 2),
            "elapsed_s": round(elapsed, 2),
            "tasks_per_s": round(args.tasks / elapsed, 1),
            "pool": f"{args.celery_pool} x{args.celery_concurrency}",
        }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64, help="per zhongshu worker")
    parser.add_argument("--latency-samples", type=int, default=200)
    parser.add_argument("--database-url", default=None, help="default: SQLite in a temp dir")
    parser.add_argument("--skip-celery", action="store_true")
    parser.add_argument("--celery-pool", default="prefork")
    parser.add_argument("--celery-concurrency", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="zhongshu-bench-"))
    print(f"machine: {common.machine()}\nworkdir: {workdir}")
    try:
        zs = run_zhongshu(args, workdir)
        print("zhongshu:", common.dump(zs))
        if not args.skip_celery:
            cel = run_celery(args, workdir)
            print("celery:", common.dump(cel))
            print(f"ratio zhongshu/celery: {zs['tasks_per_s'] / cel['tasks_per_s']:.2f}x")
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
