"""Fleet benchmark: many simulated nodes heartbeating over Socket.IO to one hub process.

    python bench/fleet.py --nodes 2000 --interval 10 --duration 60

Creates the nodes through the API, connects each as a real python-socketio client on the
``/worker`` namespace (registers, then heartbeats every ``--interval`` seconds with jitter),
and reports the hub's CPU use, its resident memory, heartbeat ack latency, and how many
nodes the hub sees online. The simulator runs in this process, so on a 2-core machine it
competes with the hub for CPU: the numbers are a lower bound for the hub.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
# bench/queue.py shadows the stdlib ``queue``: take bench/ off the path, support/ at the end.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.append(str(_HERE / "support"))

import common  # noqa: E402
import httpx  # noqa: E402
import psutil  # noqa: E402
import socketio  # noqa: E402


async def create_nodes(hub: common.HubProcess, n: int) -> list[dict[str, Any]]:
    client = hub.client()
    try:
        return [common.create_node(client, f"sim-{i}", 4) for i in range(n)]
    finally:
        client.close()


async def run_node(
    url: str,
    creds: dict[str, Any],
    interval_s: float,
    until: float,
    latencies: list[float],
    errors: list[str],
) -> None:
    sio = socketio.AsyncClient(reconnection=False)
    try:
        await sio.connect(
            url,
            namespaces=["/worker"],
            transports=["websocket"],
            auth={"key": creds["access_key"], "secret": creds["secret_key"]},
        )
        await sio.call(
            "worker:register", {"capabilities": ["sim"], "capacity": 4}, namespace="/worker"
        )
        await asyncio.sleep(random.uniform(0, interval_s))
        while time.monotonic() < until:
            t0 = time.perf_counter()
            ack = await sio.call(
                "worker:heartbeat",
                {"stats": {"cpu": 1.0, "memory": 10.0, "running": 0, "completed": 0}},
                namespace="/worker",
                timeout=30,
            )
            latencies.append(time.perf_counter() - t0)
            if not (isinstance(ack, dict) and ack.get("ok")):
                errors.append(str(ack))
            await asyncio.sleep(interval_s)
    except Exception as exc:  # a benchmark reports failures, it does not stop on them
        errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        await sio.disconnect()


async def main_async(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    hub = common.HubProcess(workdir, {"ZHONGSHU_HEARTBEAT_INTERVAL_S": str(args.interval)})
    hub.init()
    hub.start()
    try:
        print(f"creating {args.nodes} nodes …", flush=True)
        nodes = await create_nodes(hub, args.nodes)
        proc = psutil.Process(hub.proc.pid)  # type: ignore[union-attr]
        latencies: list[float] = []
        errors: list[str] = []
        until = time.monotonic() + args.duration
        print(f"connecting {args.nodes} simulated nodes …", flush=True)
        tasks = []
        for creds in nodes:
            tasks.append(
                asyncio.create_task(
                    run_node(hub.url, creds, args.interval, until, latencies, errors)
                )
            )
            await asyncio.sleep(args.ramp / args.nodes)
        proc.cpu_percent()
        cpu_start = time.monotonic()
        await asyncio.sleep(max(0.0, until - time.monotonic() - args.interval))
        cpu = proc.cpu_percent()
        cpu_window = time.monotonic() - cpu_start
        async with httpx.AsyncClient(base_url=hub.url) as c:
            login = await c.post(
                "/api/v1/auth/login",
                json={"username": common.ADMIN[0], "password": common.ADMIN[1]},
            )
            c.headers["authorization"] = f"Bearer {login.json()['access_token']}"
            listed = (await c.get("/api/v1/nodes")).json()["items"]
        online = sum(1 for n in listed if n["status"] == "online")
        rss_mib = proc.memory_info().rss / 2**20
        await asyncio.gather(*tasks)
        return {
            "nodes": args.nodes,
            "interval_s": args.interval,
            "heartbeats": len(latencies),
            "heartbeats_per_s": round(len(latencies) / args.duration, 1),
            "ack_p50_ms": round(common.percentile([x * 1000 for x in latencies], 50), 2)
            if latencies
            else None,
            "ack_p99_ms": round(common.percentile([x * 1000 for x in latencies], 99), 2)
            if latencies
            else None,
            "online_seen_by_hub": online,
            "hub_cpu_percent": round(cpu, 1),
            "cpu_window_s": round(cpu_window, 1),
            "hub_rss_mib": round(rss_mib, 1),
            "errors": len(errors),
            "first_errors": errors[:3],
        }
    finally:
        hub.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--ramp", type=float, default=20.0, help="seconds to connect them all")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="zhongshu-fleet-"))
    print(f"machine: {common.machine()}")
    try:
        print(common.dump(asyncio.run(main_async(args, workdir))))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
