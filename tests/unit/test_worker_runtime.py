"""The worker process against a tiny in-process Socket.IO hub speaking protocol v1.

The hub here is a test double of the *hub*, not of the worker: the worker runs for real,
with its real transport, journal and handlers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp import web

from zhongshu.worker import HandlerRegistry, PermanentFailure, TaskContext
from zhongshu.worker.handlers import builtin
from zhongshu.worker.runtime import Worker

KEY = "CN" + "k" * 32
SECRET = "CS" + "s" * 32
NS = "/worker"


class TinyHub:
    """Just enough of the hub's ``/worker`` namespace to drive one worker."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncServer(async_mode="aiohttp")
        self.app = web.Application()
        self.sio.attach(self.app)
        self.registrations: list[dict[str, Any]] = []
        self.heartbeats: list[dict[str, Any]] = []
        self.started: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.result_calls = 0
        self.ack_results = True
        self.heartbeat_revoke: list[str] = []
        self.released: list[dict[str, Any]] = []
        self.sid: str | None = None
        self.url = ""
        self._runner: web.AppRunner | None = None
        for event, fn in {
            "connect": self._connect,
            "worker:register": self._register,
            "worker:heartbeat": self._heartbeat,
            "worker:task:started": self._started,
            "worker:task:result": self._result,
            "worker:task:release": self._release,
        }.items():
            self.sio.on(event, fn, namespace=NS)

    async def start(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()

    async def _connect(self, sid: str, environ: dict[str, Any], auth: Any) -> None:
        if not isinstance(auth, dict) or auth != {"key": KEY, "secret": SECRET}:
            raise socketio.exceptions.ConnectionRefusedError("invalid node credentials")

    async def _register(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        self.sid = sid
        self.registrations.append(data)
        return {
            "node_id": "node-1",
            "heartbeat_interval_s": 0.05,
            "offline_after_s": 1,
            "capabilities": data["capabilities"],
            "capacity": data["capacity"],
        }

    async def _heartbeat(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        self.heartbeats.append(data)
        revoke, self.heartbeat_revoke = self.heartbeat_revoke, []
        return {"ok": True, "revoke": revoke}

    async def _started(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        self.started.extend(data["tasks"])
        return {"ok": True}

    async def _release(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        self.released.extend(data["tasks"])
        return {"ok": True, "released": [t["task_id"] for t in data["tasks"]]}

    async def _result(self, sid: str, data: dict[str, Any]) -> dict[str, Any] | None:
        self.result_calls += 1
        self.results.extend(data["results"])
        if not self.ack_results:
            return None  # an empty ack: as if the hub died before committing
        return {"acks": [{"task_id": r["task_id"], "accepted": True} for r in data["results"]]}

    async def assign(self, *leases: dict[str, Any]) -> None:
        await self.sio.emit(
            "master:task:assign", {"tasks": list(leases)}, to=self.sid, namespace=NS
        )

    async def revoke(self, *task_ids: str) -> None:
        await self.sio.emit(
            "master:task:revoke", {"task_ids": list(task_ids), "reason": "test"}, namespace=NS
        )

    def results_for(self, task_id: str) -> list[dict[str, Any]]:
        return [r for r in self.results if r["task_id"] == task_id]


def lease(task_id: str, kind: str = "echo", token: int = 1, **extra: Any) -> dict[str, Any]:
    return {
        "id": task_id,
        "kind": kind,
        "payload": extra.pop("payload", {"task": task_id}),
        "capability": kind,
        "priority": 0,
        "attempt": 1,
        "max_attempts": 3,
        "lease_token": token,
        "timeout_s": extra.pop("timeout_s", 30),
        "lease_expires_at": time.time() + 30,
        **extra,
    }


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


class Counter:
    """Handlers that count their runs, to prove a task never runs twice."""

    def __init__(self) -> None:
        self.runs: dict[str, int] = {}
        self.release = asyncio.Event()
        self.registry = HandlerRegistry()
        self.registry.load_module(builtin)
        self.registry.register("count", self.count)
        self.registry.register("block", self.block)
        self.registry.register("flaky", self.flaky)
        self.registry.register("sync", self.sync)

    async def count(self, ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        self.runs[ctx.task_id] = self.runs.get(ctx.task_id, 0) + 1
        return {"runs": self.runs[ctx.task_id]}

    async def block(self, ctx: TaskContext, payload: dict[str, Any]) -> str:
        self.runs[ctx.task_id] = self.runs.get(ctx.task_id, 0) + 1
        await self.release.wait()
        return "released"

    async def flaky(self, ctx: TaskContext, payload: dict[str, Any]) -> None:
        self.runs[ctx.task_id] = self.runs.get(ctx.task_id, 0) + 1
        raise ConnectionError("flaky")

    def sync(self, ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        if payload.get("bad"):
            raise PermanentFailure("bad payload")
        return {"sum": sum(payload["numbers"])}


class Workers:
    """Starts workers (registered and ready) and always stops them at teardown."""

    def __init__(self, hub: TinyHub, counter: Counter, tmp_path: Path) -> None:
        self.hub = hub
        self.counter = counter
        self.tmp_path = tmp_path
        self.running: dict[Worker, asyncio.Task[None]] = {}

    async def start(self, **options: Any) -> Worker:
        registrations = len(self.hub.registrations)
        options.setdefault("journal_path", self.tmp_path / "journal.db")
        options.setdefault("registry", self.counter.registry)
        options.setdefault("grace_s", 1.0)
        options.setdefault("reconnect_max_s", 0.2)
        wait_registered = options.pop("wait_registered", True)
        worker = Worker(self.hub.url, KEY, options.pop("secret", SECRET), **options)
        task = asyncio.create_task(worker.run())
        self.running[worker] = task
        if wait_registered:
            await eventually(lambda: len(self.hub.registrations) > registrations or task.done())
        return worker

    async def stop(self, worker: Worker) -> None:
        worker.request_stop()
        await asyncio.wait_for(self.running.pop(worker), 10)

    async def stop_all(self) -> None:
        for worker in list(self.running):
            await self.stop(worker)


@pytest.fixture
async def hub() -> AsyncIterator[TinyHub]:
    server = TinyHub()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def counter() -> Counter:
    return Counter()


@pytest.fixture
async def workers(hub: TinyHub, counter: Counter, tmp_path: Path) -> AsyncIterator[Workers]:
    pool = Workers(hub, counter, tmp_path)
    yield pool
    await pool.stop_all()


async def test_registers_with_capabilities_and_capacity(hub: TinyHub, workers: Workers) -> None:
    await workers.start(capabilities=["douyin"], concurrency=3)
    body = hub.registrations[0]
    assert body["capacity"] == 3
    assert {"douyin", "echo", "count", "http.fetch"} <= set(body["capabilities"])
    assert body["pid"] and body["host"] and body["version"]


async def test_runs_tasks_and_batches_results(hub: TinyHub, workers: Workers) -> None:
    await workers.start(concurrency=64, report_fast_starts=True)
    await hub.assign(*[lease(f"t{i}") for i in range(50)])
    await eventually(lambda: len(hub.results) == 50)
    assert {r["task_id"] for r in hub.results} == {f"t{i}" for i in range(50)}
    assert hub.results[0] == {
        "task_id": hub.results[0]["task_id"],
        "lease_token": 1,
        "status": "succeeded",
        "result": {"task": hub.results[0]["task_id"]},
    }
    assert hub.result_calls < 50  # batched
    await eventually(lambda: len(hub.started) == 50)


async def test_sync_handler_and_failures(hub: TinyHub, workers: Workers) -> None:
    await workers.start()
    await hub.assign(
        lease("s1", "sync", payload={"numbers": [1, 2, 3]}),
        lease("s2", "sync", payload={"bad": True}),
        lease("f1", "fail", payload={"message": "boom"}),
        lease("u1", "no.such.kind"),
        lease("z1", "sleep", payload={"seconds": 5}, timeout_s=0.1),
    )
    await eventually(lambda: len(hub.results) == 5)
    by_id = {r["task_id"]: r for r in hub.results}
    assert by_id["s1"]["result"] == {"sum": 6}
    assert by_id["s2"] == {
        "task_id": "s2",
        "lease_token": 1,
        "status": "failed",
        "error": "bad payload",
        "retryable": False,
    }
    assert by_id["f1"]["error"] == "RuntimeError: boom" and by_id["f1"]["retryable"] is True
    assert by_id["u1"]["retryable"] is False and "no handler for kind" in by_id["u1"]["error"]
    assert by_id["z1"]["error"] == "timeout after 0.1s" and by_id["z1"]["retryable"] is True


async def test_relesed_task_resends_journaled_result_instead_of_running(
    hub: TinyHub, workers: Workers, counter: Counter
) -> None:
    worker = await workers.start()
    hub.ack_results = False
    await hub.assign(lease("t1", "count", token=1))
    await eventually(lambda: len(hub.results) == 1)
    assert worker.journal is not None and worker.journal.pending_count() == 1

    hub.ack_results = True
    await hub.assign(lease("t1", "count", token=2))  # the hub lost the result; new lease
    await eventually(lambda: len(hub.results) == 2)
    assert hub.results[1]["lease_token"] == 2
    assert hub.results[1]["result"] == {"runs": 1}
    assert counter.runs == {"t1": 1}
    await eventually(lambda: worker.journal is not None and worker.journal.pending_count() == 0)

    # Acknowledged, then leased yet again: still answered from the journal.
    await hub.assign(lease("t1", "count", token=3))
    await eventually(lambda: len(hub.results) == 3)
    assert hub.results[2]["lease_token"] == 3 and counter.runs == {"t1": 1}


async def test_retryable_failure_runs_again_when_released(
    hub: TinyHub, workers: Workers, counter: Counter
) -> None:
    await workers.start()
    hub.ack_results = False
    await hub.assign(lease("t1", "flaky", token=1))
    await eventually(lambda: len(hub.results) == 1)
    await hub.assign(lease("t1", "flaky", token=2))
    await eventually(lambda: len(hub.results) == 2)
    assert counter.runs == {"t1": 2}


async def test_unacked_results_are_resent_after_restart(
    hub: TinyHub, workers: Workers, counter: Counter
) -> None:
    first = await workers.start()
    hub.ack_results = False
    await hub.assign(lease("t1", "count"), lease("t2", "count"))
    await eventually(lambda: len(hub.results) == 2)
    await workers.stop(first)

    hub.ack_results = True
    hub.results.clear()
    second = await workers.start()
    await eventually(lambda: {r["task_id"] for r in hub.results} == {"t1", "t2"})
    await eventually(lambda: second.journal is not None and second.journal.pending_count() == 0)
    await hub.assign(lease("t2", "count", token=9))
    await eventually(lambda: len(hub.results) == 3)
    assert counter.runs == {"t1": 1, "t2": 1}


async def test_results_survive_a_hub_outage(
    hub: TinyHub, workers: Workers, counter: Counter
) -> None:
    worker = await workers.start()
    await hub.assign(lease("t1", "block"))
    await eventually(lambda: counter.runs == {"t1": 1})
    port = int(hub.url.rsplit(":", 1)[1])
    await hub.stop()
    counter.release.set()
    await eventually(lambda: worker.journal is not None and worker.journal.pending_count() == 1)

    revived = TinyHub()
    await revived.start(port)
    try:
        await eventually(lambda: len(revived.results) == 1)
        assert revived.registrations, "the worker registers again after reconnecting"
        assert revived.results[0]["result"] == "released"
        await eventually(lambda: worker.journal is not None and worker.journal.pending_count() == 0)
    finally:
        worker.request_stop()
        await asyncio.sleep(0.05)
        await revived.stop()


async def test_revoke_cancels_and_drops_the_result(
    hub: TinyHub, workers: Workers, counter: Counter
) -> None:
    worker = await workers.start()
    await hub.assign(lease("t1", "block"), lease("t2", "block"))
    await eventually(lambda: worker.running_count == 2 and len(counter.runs) == 2)
    await hub.revoke("t1")
    await eventually(lambda: worker.running_count == 1)
    hub.heartbeat_revoke = ["t2"]
    await eventually(lambda: worker.running_count == 0)
    counter.release.set()
    await asyncio.sleep(0.05)
    assert hub.results == []
    assert worker.stats.revoked == 2


async def test_heartbeat_reports_running_leases(
    hub: TinyHub, workers: Workers, counter: Counter
) -> None:
    await workers.start()
    await hub.assign(lease("t1", "block", token=4))
    await eventually(lambda: any(hb["running"] for hb in hub.heartbeats))
    beat = next(hb for hb in hub.heartbeats if hb["running"])
    assert beat["running"] == [{"task_id": "t1", "lease_token": 4}]
    assert {"cpu", "memory", "running", "completed"} <= set(beat["stats"])
    counter.release.set()


async def test_shutdown_waits_for_grace_then_cancels(
    hub: TinyHub, workers: Workers, counter: Counter
) -> None:
    worker = await workers.start(grace_s=0.2)
    await hub.assign(lease("t1", "block"), lease("t2", "sleep", payload={"seconds": 0.05}))
    await eventually(lambda: worker.running_count == 2)
    worker.request_stop()
    await eventually(lambda: worker.running_count == 0)
    await hub.assign(lease("t3", "echo"))  # refused while stopping
    await eventually(lambda: worker.stats.cancelled == 1)
    await asyncio.sleep(0.05)
    assert [r["task_id"] for r in hub.results] == ["t2"]


async def test_wrong_secret_keeps_retrying_without_registering(
    hub: TinyHub, workers: Workers, caplog: pytest.LogCaptureFixture
) -> None:
    worker = await workers.start(secret="CS" + "x" * 32, wait_registered=False)
    await asyncio.sleep(0.3)
    assert hub.registrations == [] and worker.node_id == ""
    refused = [r for r in caplog.records if "invalid node credentials" in r.getMessage()]
    assert len(refused) == 1  # logged once, not on every retry
    assert "x" * 32 not in caplog.text  # the secret is never logged


class TinyAgentHub:
    """Just enough of the HTTP pull door (``/api/v1/agent/*``) to drive one worker."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.registrations: list[dict[str, Any]] = []
        self.lease_requests: list[dict[str, Any]] = []
        self.started: list[tuple[str, int]] = []
        self.results: list[dict[str, Any]] = []
        self.url = ""
        self.app = web.Application()
        self.app.router.add_post("/api/v1/agent/register", self._register)
        self.app.router.add_post("/api/v1/agent/heartbeat", self._heartbeat)
        self.app.router.add_post("/api/v1/agent/lease", self._lease)
        self.app.router.add_post("/api/v1/agent/started", self._started)
        self.app.router.add_post("/api/v1/agent/results", self._results)
        self._runner = web.AppRunner(self.app, shutdown_timeout=0.1)

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self._runner.cleanup()

    @staticmethod
    def _authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"AK-SK {KEY}:{SECRET}"

    async def _register(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"detail": "invalid node credentials"}, status=401)
        self.registrations.append(await request.json())
        return web.json_response({"node_id": "node-h", "heartbeat_interval_s": 0.05})

    async def _heartbeat(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "revoke": []})

    async def _lease(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.lease_requests.append(body)
        tasks = []
        try:
            tasks.append(await asyncio.wait_for(self.queue.get(), body["wait_s"]))
        except TimeoutError:
            return web.json_response({"tasks": []})
        while len(tasks) < body["max_tasks"] and not self.queue.empty():
            tasks.append(self.queue.get_nowait())
        return web.json_response({"tasks": tasks})

    async def _started(self, request: web.Request) -> web.Response:
        items = (await request.json())["tasks"]
        self.started.extend((i["task_id"], i["lease_token"]) for i in items)
        return web.json_response({"accepted": [True] * len(items)})

    async def _results(self, request: web.Request) -> web.Response:
        items = (await request.json())["results"]
        self.results.extend(items)
        return web.json_response(
            {"acks": [{"task_id": i["task_id"], "accepted": True} for i in items]}
        )


@pytest.fixture
async def agent_hub() -> AsyncIterator[TinyAgentHub]:
    server = TinyAgentHub()
    await server.start()
    yield server
    await server.stop()


async def run_http_worker(
    agent_hub: TinyAgentHub, counter: Counter, tmp_path: Path, **options: Any
) -> tuple[Worker, asyncio.Task[None]]:
    worker = Worker(
        agent_hub.url,
        KEY,
        options.pop("secret", SECRET),
        journal_path=tmp_path / "http.db",
        registry=counter.registry,
        transport="http",
        http_wait_s=0.2,
        reconnect_max_s=0.2,
        grace_s=1.0,
        **options,
    )
    return worker, asyncio.create_task(worker.run())


async def test_http_pull_runs_tasks(
    agent_hub: TinyAgentHub, counter: Counter, tmp_path: Path
) -> None:
    worker, task = await run_http_worker(
        agent_hub, counter, tmp_path, concurrency=4, report_fast_starts=True
    )
    try:
        for i in range(10):
            agent_hub.queue.put_nowait(lease(f"h{i}", "count", token=2))
        await eventually(lambda: len(agent_hub.results) == 10)
        assert {r["task_id"] for r in agent_hub.results} == {f"h{i}" for i in range(10)}
        assert all(r["lease_token"] == 2 and r["status"] == "succeeded" for r in agent_hub.results)
        assert agent_hub.registrations[0]["capacity"] == 4
        assert all(1 <= req["max_tasks"] <= 4 for req in agent_hub.lease_requests)
        await eventually(lambda: worker.journal is not None and worker.journal.pending_count() == 0)
        assert len(agent_hub.started) == 10
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 10)


async def test_http_pull_wrong_secret_never_leases(
    agent_hub: TinyAgentHub, counter: Counter, tmp_path: Path
) -> None:
    worker, task = await run_http_worker(agent_hub, counter, tmp_path, secret="CS" + "x" * 32)
    try:
        await asyncio.sleep(0.3)
        assert agent_hub.registrations == [] and agent_hub.lease_requests == []
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 10)


async def test_second_stop_request_skips_the_grace_period(
    hub: TinyHub, workers: Workers, counter: Counter
) -> None:
    worker = await workers.start(grace_s=30.0)
    await hub.assign(lease("t1", "block"))
    await eventually(lambda: worker.running_count == 1)
    task = workers.running.pop(worker)
    worker.request_stop()
    await asyncio.sleep(0.05)
    assert not task.done()  # still inside the grace period
    worker.request_stop()
    await asyncio.wait_for(task, 5)
    assert worker.stats.cancelled == 1 and hub.results == []
    # The unfinished task was handed back, so the hub can lease it elsewhere at once.
    assert hub.released == [{"task_id": "t1", "lease_token": 1}]
