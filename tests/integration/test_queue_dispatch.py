"""Queue semantics through the HTTP pull door: order, capabilities, capacity, delays,
long-polls and the event trail."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from helpers import Agent, create_agent, fast_passwords, get_task, submit, task_events, ts  # noqa: F401

from zhongshu.testing import wait_until

pytestmark = pytest.mark.timeout(60)


async def _batch(client: httpx.AsyncClient, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    r = await client.post("/api/v1/tasks/batch", json={"tasks": tasks})
    assert r.status_code == 201, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


# --- order --------------------------------------------------------------------------------


async def test_higher_priority_first_then_fifo(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    prios = [0, 5, 5, -1, 10, 0, 1000, -1000]
    items = await _batch(client, [{"kind": "echo", "priority": p} for p in prios])
    ids = [t["id"] for t in items]
    order = [
        ids[6],  # 1000
        ids[4],  # 10
        ids[1],  # 5, submitted first
        ids[2],
        ids[0],  # 0, submitted first
        ids[5],
        ids[3],  # -1
        ids[7],  # -1000
    ]
    got = []
    for _ in prios:
        (lease,) = await agent.lease()
        got.append(lease["id"])
    assert got == order


async def test_batch_lease_is_in_priority_order_and_late_urgent_tasks_overtake(
    client: httpx.AsyncClient,
) -> None:
    agent = await create_agent(client)
    items = await _batch(client, [{"kind": "echo", "priority": p} for p in [1, 3, 2, 3]])
    urgent = await submit(client, priority=4)
    leases = await agent.lease(max_tasks=5)
    assert [t["id"] for t in leases] == [urgent["id"]] + [items[i]["id"] for i in (1, 3, 2, 0)]


async def test_lease_carries_the_protocol_fields(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    t = await submit(client, payload={"q": 1}, priority=3, max_attempts=4, timeout_s=30)
    before = time.time()
    (lease,) = await agent.lease()
    assert {k: lease[k] for k in ("id", "kind", "payload", "capability", "priority")} == {
        "id": t["id"],
        "kind": "echo",
        "payload": {"q": 1},
        "capability": "echo",
        "priority": 3,
    }
    assert (lease["attempt"], lease["max_attempts"], lease["lease_token"]) == (1, 4, 1)
    assert lease["timeout_s"] == 30
    # timeout + the default 5 s grace
    assert before + 34 <= lease["lease_expires_at"] <= time.time() + 36
    got = await get_task(client, t["id"])
    assert (got["status"], got["node_id"], got["lease_token"]) == ("leased", agent.id, 1)


# --- capabilities -------------------------------------------------------------------------


async def test_node_gets_only_tasks_of_capabilities_it_advertised(
    client: httpx.AsyncClient,
) -> None:
    echo_node = await create_agent(client, register=["echo"])
    crawl_node = await create_agent(client, register=["crawl", "rss"])
    echo = await submit(client, kind="echo")
    crawl = await submit(client, kind="crawl")
    fetch = await submit(client, kind="fetch", capability="rss")
    other = await submit(client, kind="other")

    assert [t["id"] for t in await echo_node.lease(max_tasks=10)] == [echo["id"]]
    assert {t["id"] for t in await crawl_node.lease(max_tasks=10)} == {crawl["id"], fetch["id"]}
    assert (await get_task(client, other["id"]))["status"] == "pending"


async def test_explicit_capability_overrides_the_kind(client: httpx.AsyncClient) -> None:
    kind_only = await create_agent(client, register=["crawl"])
    nothing = await create_agent(client, register=[])
    t = await submit(client, kind="crawl", capability="http.fetch")
    assert await kind_only.lease() == []
    assert await nothing.lease(max_tasks=5) == []
    fetcher = await create_agent(client, register=["http.fetch"])
    assert [x["id"] for x in await fetcher.lease()] == [t["id"]]


async def test_admin_capability_list_narrows_what_the_node_advertises(
    client: httpx.AsyncClient,
) -> None:
    agent = await create_agent(client, capabilities=["echo"], register=["echo", "crawl"])
    assert agent.node["capabilities"] == ["echo"]
    crawl = await submit(client, kind="crawl")
    echo = await submit(client, kind="echo")
    assert [t["id"] for t in await agent.lease(max_tasks=5)] == [echo["id"]]
    # Re-registering changes what it advertises, within the admin's list.
    other = await create_agent(client, register=["echo"])
    assert await other.lease() == []
    await other.register(["crawl"])
    assert [t["id"] for t in await other.lease()] == [crawl["id"]]


# --- capacity -----------------------------------------------------------------------------


async def test_lease_never_exceeds_capacity(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client, capacity=2)
    await _batch(client, [{"kind": "echo"} for _ in range(5)])
    first = await agent.lease(max_tasks=5)
    assert len(first) == 2
    assert await agent.lease(max_tasks=5) == []
    assert (await agent.result(first[0]))["accepted"]
    assert len(await agent.lease(max_tasks=5)) == 1
    held = (await client.get("/api/v1/tasks", params={"node": agent.id, "status": "leased"})).json()
    assert held["total"] == 2


async def test_started_tasks_and_advertised_capacity_count(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client, capacity=1)
    small = await create_agent(client, capacity=8, advertised_capacity=1)
    await _batch(client, [{"kind": "echo"} for _ in range(4)])
    (lease,) = await agent.lease(max_tasks=2)
    assert await agent.start(lease)
    assert await agent.lease(max_tasks=2) == []
    assert len(await small.lease(max_tasks=3)) == 1


async def test_concurrent_leases_of_one_node_respect_capacity(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client, capacity=2)
    await _batch(client, [{"kind": "echo"} for _ in range(10)])
    results = await asyncio.gather(*[agent.lease(max_tasks=2) for _ in range(5)])
    assert sum(len(r) for r in results) <= 2
    held = (await client.get("/api/v1/tasks", params={"node": agent.id})).json()["total"]
    assert held <= 2


async def test_concurrent_leases_of_many_nodes_never_share_a_task(
    client: httpx.AsyncClient,
) -> None:
    agents = [await create_agent(client, capacity=10) for _ in range(4)]
    await _batch(client, [{"kind": "echo"} for _ in range(20)])
    results = await asyncio.gather(*[a.lease(max_tasks=10) for a in agents for _ in range(2)])
    ids = [t["id"] for r in results for t in r]
    assert len(ids) == len(set(ids)) == 20


# --- delays and long-polls ----------------------------------------------------------------


async def test_delayed_task_is_not_leased_before_its_time(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    t = await submit(client, delay_s=0.6)
    run_at = ts(t["run_at"])
    assert await agent.lease() == []
    leases = await wait_until(agent.lease, timeout_s=10)
    assert time.time() >= run_at
    assert leases[0]["id"] == t["id"]
    history = (await get_task(client, t["id"]))["attempts_history"]
    assert ts(history[0]["leased_at"]) >= run_at


async def test_task_due_in_the_future_does_not_block_ready_ones(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    await submit(client, priority=100, run_at="2099-01-01T00:00:00Z")
    now = await submit(client, priority=0)
    assert [t["id"] for t in await agent.lease(max_tasks=5)] == [now["id"]]


async def test_long_poll_returns_when_a_task_is_submitted_or_wait_s_ends(
    client: httpx.AsyncClient,
) -> None:
    agent = await create_agent(client)
    waiting = asyncio.create_task(agent.lease(wait_s=10))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    submitted_at = time.monotonic()
    t = await submit(client)
    leases = await asyncio.wait_for(waiting, timeout=5)
    assert [x["id"] for x in leases] == [t["id"]]
    assert time.monotonic() - submitted_at < 0.9  # woken, not the 1 s re-check
    started = time.monotonic()
    assert await agent.lease(wait_s=0.3) == []
    assert 0.25 <= time.monotonic() - started < 3


async def test_long_poll_gets_a_delayed_task_as_soon_as_it_is_due(
    client: httpx.AsyncClient,
) -> None:
    agent = await create_agent(client)
    for attempt in range(10):
        t = await submit(client, delay_s=0.05)
        (lease,) = await agent.lease(wait_s=3)
        late = time.time() - ts(t["run_at"])
        assert 0 <= late < 0.6, (attempt, late)  # the bug made it ~1 s; slack for a busy box
        await agent.result(lease)


async def test_lease_request_bounds_are_checked(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    for body in ({"max_tasks": 0}, {"max_tasks": 101}, {"wait_s": -1}, {"wait_s": 61}, {"x": 1}):
        r = await agent.post("/lease", body)
        assert r.status_code == 422, (body, r.text)
        assert next(iter(body)) in r.json()["detail"]


# --- start, result, events ----------------------------------------------------------------


async def test_start_and_result_need_the_holder_and_its_current_token(
    client: httpx.AsyncClient,
) -> None:
    agent = await create_agent(client)
    t = await submit(client)
    (lease,) = await agent.lease()
    assert not await agent.start({**lease, "lease_token": lease["lease_token"] + 1})
    assert (await get_task(client, t["id"]))["status"] == "leased"
    assert await agent.start(lease)
    got = await get_task(client, t["id"])
    assert got["status"] == "running" and got["started_at"] is not None
    assert not await agent.start(lease)  # already running
    other = await create_agent(client)
    assert not await other.start(lease)
    ack = await other.result(lease)
    assert ack["accepted"] is False and ack["reason"]
    assert (await get_task(client, t["id"]))["status"] == "running"


async def test_a_result_without_a_reported_start_still_has_a_start_time(
    client: httpx.AsyncClient,
) -> None:
    # Workers skip the start of a task that finished within one flush tick.
    agent = await create_agent(client)
    t = await submit(client)
    (lease,) = await agent.lease()
    assert (await agent.result(lease))["accepted"] is True
    got = await get_task(client, t["id"])
    assert got["status"] == "succeeded"
    (attempt,) = got["attempts_history"]
    assert attempt["started_at"] == attempt["leased_at"] == got["started_at"]
    assert ts(got["started_at"]) <= ts(got["finished_at"])


async def test_result_is_stored_once_and_a_repeat_is_refused(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    t = await submit(client)
    (lease,) = await agent.lease()
    await agent.start(lease)
    ack = await agent.result(lease, result={"answer": 42})
    assert ack == {"task_id": t["id"], "accepted": True}
    again = await agent.result(lease, result={"answer": 0})
    assert again["accepted"] is False and "succeeded" in again["reason"]
    got = await get_task(client, t["id"])
    assert got["status"] == "succeeded" and got["result"] == {"answer": 42}
    assert got["finished_at"] is not None
    assert got["attempts_history"][0]["outcome"] == "succeeded"
    unknown = await agent.result({"id": "nope", "lease_token": 1})
    assert unknown["accepted"] is False


async def test_events_record_the_life_of_a_task(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    t = await submit(client)
    (lease,) = await agent.lease()
    await agent.start(lease)
    await agent.result(lease)
    assert await task_events(client, t["id"]) == [
        "task.submitted",
        "task.leased",
        "task.running",
        "task.succeeded",
    ]
    r = await client.get("/api/v1/events", params={"type": "task.leased", "subject_id": t["id"]})
    (leased,) = r.json()["items"]
    assert leased["actor"] == f"node:{agent.id}"
    assert leased["data"]["lease_token"] == 1
