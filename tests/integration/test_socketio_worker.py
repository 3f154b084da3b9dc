"""The Socket.IO ``/worker`` door, with a real python-socketio client against a hub served
by uvicorn on a loopback port."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import helpers
import httpx
import pytest
import socketio
from helpers import fast_passwords, ts  # noqa: F401

from zhongshu import testing
from zhongshu.config import Settings
from zhongshu.testing import wait_until

pytestmark = pytest.mark.timeout(60)

NS = "/worker"
Json = dict[str, Any]


@pytest.fixture
def served_settings(db_url: str, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        database_url=db_url,
        task_lease_grace_s=0,
        reaper_interval_s=0.05,
        retry_base_s=0.01,
        retry_cap_s=0.02,
    )


# The served hub (with ADMIN) and its admin client, on the settings above.
served = helpers.served
api = helpers.api


@dataclass
class SioWorker:
    """A worker connected to ``/worker`` that records what the hub sends it."""

    url: str
    key: str
    secret: str
    sio: socketio.AsyncClient = field(
        default_factory=lambda: socketio.AsyncClient(reconnection=False)
    )
    assigned: list[Json] = field(default_factory=list)
    revoked: list[Json] = field(default_factory=list)
    registered: list[Json] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sio.on("master:task:assign", self._on_assign, namespace=NS)
        self.sio.on("master:task:revoke", self._on_revoke, namespace=NS)
        self.sio.on("worker:registered", self.registered.append, namespace=NS)

    def _on_assign(self, data: Json) -> None:
        now = time.time()
        self.assigned.extend({**t, "received_at": now} for t in data["tasks"])

    def _on_revoke(self, data: Json) -> None:
        self.revoked.append(data)

    async def connect(self) -> None:
        await self.sio.connect(
            self.url,
            namespaces=[NS],
            auth={"key": self.key, "secret": self.secret},
            transports=["websocket"],
            wait_timeout=10,
        )

    async def call(self, event: str, data: Json) -> Json:
        return await self.sio.call(event, data, namespace=NS, timeout=10)  # type: ignore[no-any-return]

    async def register(self, capabilities: list[str] | None = None, capacity: int = 4) -> Json:
        return await self.call(
            "worker:register",
            {
                "capabilities": capabilities or ["echo"],
                "capacity": capacity,
                "host": "test",
                "pid": 1,
                "version": "t",
            },
        )

    async def result(self, lease: Json, status: str = "succeeded", **fields: Any) -> Json:
        item = {"task_id": lease["id"], "lease_token": lease["lease_token"], "status": status}
        reply = await self.call("worker:task:result", {"results": [{**item, **fields}]})
        assert reply["ok"], reply
        (ack,) = reply["acks"]
        return ack  # type: ignore[no-any-return]

    def revoked_ids(self) -> list[str]:
        return [i for r in self.revoked for i in r["task_ids"]]


@pytest.fixture
async def node(api: httpx.AsyncClient) -> Json:
    r = await api.post("/api/v1/nodes", json={"name": "sio-node", "capacity": 4})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


@pytest.fixture
async def make_worker(
    served: testing.ServedHub, node: Json
) -> AsyncIterator[Callable[..., SioWorker]]:
    made: list[SioWorker] = []

    def make(key: str | None = None, secret: str | None = None) -> SioWorker:
        creds = node["credentials"]
        w = SioWorker(served.url, key or creds["access_key"], secret or creds["secret_key"])
        made.append(w)
        return w

    yield make
    for w in made:
        if w.sio.connected:
            await w.sio.disconnect()


@pytest.fixture
async def worker(make_worker: Callable[..., SioWorker]) -> SioWorker:
    w = make_worker()
    await w.connect()
    return w


async def _submit(api: httpx.AsyncClient, **fields: Any) -> Json:
    fields.setdefault("kind", "echo")
    r = await api.post("/api/v1/tasks", json=fields)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def _task(api: httpx.AsyncClient, task_id: str) -> Json:
    r = await api.get(f"/api/v1/tasks/{task_id}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _assigned(w: SioWorker, n: int = 1, timeout_s: float = 5) -> list[Json]:
    await wait_until(lambda: len(w.assigned) >= n, timeout_s=timeout_s)
    return w.assigned[:n]


# --- connecting ---------------------------------------------------------------------------


async def test_bad_credentials_and_disabled_nodes_are_refused(
    api: httpx.AsyncClient, make_worker: Callable[..., SioWorker], node: Json
) -> None:
    key = node["credentials"]["access_key"]
    for bad_key, bad_secret in [
        (key, "CS" + "0" * 32),
        ("CN" + "0" * 32, node["credentials"]["secret_key"]),
        (key, "not-a-secret"),
    ]:
        w = make_worker(bad_key, bad_secret)
        with pytest.raises(socketio.exceptions.ConnectionError):
            await w.connect()
        assert not w.sio.connected
    r = await api.patch(f"/api/v1/nodes/{node['id']}", json={"disabled": True})
    assert r.status_code == 200
    with pytest.raises(socketio.exceptions.ConnectionError):
        await make_worker().connect()


async def test_register_and_heartbeat_are_acked(
    api: httpx.AsyncClient, worker: SioWorker, node: Json
) -> None:
    reply = await worker.call("worker:register", {"capabilities": [" spaced "]})
    assert reply["ok"] is False
    assert 400 <= reply["status"] < 500

    ack = await worker.register(["echo", "crawl"], capacity=3)
    assert ack["node_id"] == node["id"]
    assert ack["heartbeat_interval_s"] == 0.5
    assert ack["offline_after_s"] == 2.0
    assert sorted(ack["capabilities"]) == ["crawl", "echo", f"node:{node['id']}"]
    assert ack["capacity"] == 3
    await wait_until(lambda: worker.registered, timeout_s=10)
    assert worker.registered[0]["node_id"] == node["id"]
    shown = (await api.get(f"/api/v1/nodes/{node['id']}")).json()
    assert shown["status"] == "online"

    reply = await worker.call("worker:heartbeat", {"stats": {"cpu": 1.0}, "running": []})
    assert reply == {"ok": True, "revoke": []}


# --- push dispatch ------------------------------------------------------------------------


async def test_task_of_an_advertised_capability_is_pushed_soon_after_submit(
    api: httpx.AsyncClient, worker: SioWorker
) -> None:
    await worker.register(["echo"])
    other = await _submit(api, kind="crawl")
    submitted_at = time.monotonic()
    t = await _submit(api, payload={"n": 1}, priority=2)
    (lease,) = await _assigned(worker, timeout_s=5)
    assert time.monotonic() - submitted_at < 1.0
    assert lease["id"] == t["id"]
    assert lease["payload"] == {"n": 1}
    assert (lease["kind"], lease["capability"], lease["priority"]) == ("echo", "echo", 2)
    assert (lease["attempt"], lease["lease_token"]) == (1, 1)
    assert lease["lease_expires_at"] > time.time()
    assert (await _task(api, t["id"]))["status"] == "leased"
    assert (await _task(api, other["id"]))["status"] == "pending"
    assert len(worker.assigned) == 1


async def test_push_respects_capacity(api: httpx.AsyncClient, worker: SioWorker) -> None:
    await worker.register(capacity=2)
    r = await api.post("/api/v1/tasks/batch", json={"tasks": [{"kind": "echo"}] * 5})
    assert r.status_code == 201
    first = await _assigned(worker, 2)
    listed = await api.get("/api/v1/tasks", params={"status": "leased"})
    assert listed.json()["total"] == 2
    assert (await worker.result(first[0]))["accepted"]
    await _assigned(worker, 3)
    assert len(worker.assigned) == 3
    listed = await api.get("/api/v1/tasks", params={"status": "leased"})
    assert listed.json()["total"] == 2


async def test_result_is_acked_once_after_it_is_stored(
    api: httpx.AsyncClient, worker: SioWorker
) -> None:
    await worker.register()
    t = await _submit(api)
    (lease,) = await _assigned(worker)
    started = await worker.call(
        "worker:task:started", {"tasks": [{"task_id": t["id"], "lease_token": 1}]}
    )
    assert started == {"ok": True, "accepted": [True]}
    stale = await worker.result({**lease, "lease_token": 99})
    assert stale["accepted"] is False and stale["reason"]
    ack = await worker.result(lease, result={"v": 7})
    assert ack == {"task_id": t["id"], "accepted": True}
    got = await _task(api, t["id"])
    assert (got["status"], got["result"]) == ("succeeded", {"v": 7})
    again = await worker.result(lease, result={"v": 8})
    assert again["accepted"] is False
    assert (await _task(api, t["id"]))["result"] == {"v": 7}

    r = await api.get("/api/v1/events", params={"type": "task.", "subject_id": t["id"]})
    types = [e["type"] for e in reversed(r.json()["items"])]
    assert types == ["task.submitted", "task.leased", "task.running", "task.succeeded"]
    (attempt,) = got["attempts_history"]
    assert ts(attempt["leased_at"]) <= ts(attempt["started_at"]) <= ts(attempt["finished_at"])


async def test_failed_result_is_retried_and_pushed_again(
    api: httpx.AsyncClient, worker: SioWorker
) -> None:
    await worker.register()
    t = await _submit(api, max_attempts=2)
    (lease,) = await _assigned(worker)
    assert (await worker.result(lease, "failed", error="flaky"))["accepted"]
    _, again = await _assigned(worker, 2)
    assert (again["id"], again["attempt"], again["lease_token"]) == (t["id"], 2, 2)


# --- revokes and reconnects ---------------------------------------------------------------


async def test_cancel_of_a_running_task_sends_a_revoke(
    api: httpx.AsyncClient, worker: SioWorker
) -> None:
    await worker.register()
    t = await _submit(api)
    (lease,) = await _assigned(worker)
    held = {"task_id": t["id"], "lease_token": lease["lease_token"]}
    await worker.call("worker:task:started", {"tasks": [held]})
    assert (await api.post(f"/api/v1/tasks/{t['id']}/cancel")).status_code == 200
    await wait_until(lambda: worker.revoked, timeout_s=10)
    assert worker.revoked_ids() == [t["id"]]
    assert worker.revoked[0]["reason"]
    reply = await worker.call("worker:heartbeat", {"stats": {}, "running": [held]})
    assert reply["revoke"] == [t["id"]]
    assert (await worker.result(lease))["accepted"] is False


async def test_task_over_its_timeout_is_revoked(api: httpx.AsyncClient, worker: SioWorker) -> None:
    await worker.register()
    t = await _submit(api, timeout_s=0.3)
    (lease,) = await _assigned(worker)
    await wait_until(lambda: worker.revoked, timeout_s=10)
    assert worker.revoked_ids() == [t["id"]]
    assert (await worker.result(lease))["accepted"] is False


async def test_reconnect_resends_held_leases(
    api: httpx.AsyncClient, make_worker: Callable[..., SioWorker]
) -> None:
    first = make_worker()
    await first.connect()
    await first.register()
    t = await _submit(api)
    (lease,) = await _assigned(first)
    await first.sio.disconnect()

    second = make_worker()
    await second.connect()
    await second.register()
    (again,) = await _assigned(second)
    assert again["id"] == t["id"]
    assert again["lease_token"] == lease["lease_token"]
    assert (await _task(api, t["id"]))["attempts"] == 1
    assert (await second.result(again))["accepted"] is True


async def test_delayed_tasks_are_pushed_once_they_come_due(
    api: httpx.AsyncClient, worker: SioWorker
) -> None:
    await worker.register(capacity=4)
    r = await api.post(
        "/api/v1/tasks/batch",
        json={"tasks": [{"kind": "echo", "delay_s": 0.15 * i} for i in range(1, 5)]},
    )
    run_at = {t["id"]: ts(t["run_at"]) for t in r.json()["items"]}
    await _assigned(worker, 4)
    late = [t["received_at"] - run_at[t["id"]] for t in worker.assigned]
    # Never early; how soon after is test_retried_task_is_pushed_again_as_soon_as_it_is_due.
    assert all(0 <= v < 1.5 for v in late), late


async def test_retried_task_is_pushed_again_as_soon_as_it_is_due(
    api: httpx.AsyncClient, worker: SioWorker
) -> None:
    # Backoff here is 5-20 ms, about as long as one dispatch round: a retry often comes due
    # in the middle of a round. Each re-push must still come at once, not a poll later.
    await worker.register()
    await _submit(api, max_attempts=50)
    for n in range(1, 41):
        (lease,) = (await _assigned(worker, n))[-1:]
        await worker.call("worker:heartbeat", {"stats": {}, "running": []})
        failed_at = time.time()
        assert (await worker.result(lease, "failed", error="again"))["accepted"]
        await _assigned(worker, n + 1)
        assert worker.assigned[n]["received_at"] - failed_at < 0.5, n
