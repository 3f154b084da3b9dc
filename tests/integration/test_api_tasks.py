"""Contract of /api/v1/tasks: submit, idempotency, batches, list, get, cancel, retry."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from helpers import (  # noqa: F401
    Agent,
    create_agent,
    fast_passwords,
    get_task,
    submit,
    task_events,
    ts,
    user_headers,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def agent(client: httpx.AsyncClient) -> Agent:
    return await create_agent(client, register=("echo", "other"))


async def _finish(agent: Agent, status: str = "succeeded", **fields: Any) -> dict[str, Any]:
    (lease,) = await agent.lease()
    ack = await agent.result(lease, status, **fields)
    assert ack["accepted"], ack
    return lease


# --- submit -------------------------------------------------------------------------------


async def test_submit_returns_201_with_the_stored_task(client: httpx.AsyncClient) -> None:
    before = time.time()
    r = await client.post(
        "/api/v1/tasks",
        json={"kind": "echo", "payload": {"a": [1, 2]}, "priority": 7, "max_attempts": 5},
    )
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["created"] is True
    assert t["status"] == "pending"
    assert t["kind"] == "echo"
    assert t["capability"] == "echo"  # defaults to the kind
    assert t["payload"] == {"a": [1, 2]}
    assert (t["priority"], t["max_attempts"], t["attempts"], t["lease_token"]) == (7, 5, 0, 0)
    assert t["node_id"] is None and t["result"] is None and t["error"] is None
    assert before - 1 <= ts(t["run_at"]) <= time.time() + 1
    assert t["owner_id"]
    defaults = await submit(client, kind="crawl", capability="http.fetch")
    assert defaults["capability"] == "http.fetch"
    assert (defaults["max_attempts"], defaults["timeout_s"], defaults["payload"]) == (3, 300.0, {})


async def test_submit_with_delay_or_run_at_sets_when_it_may_run(
    client: httpx.AsyncClient,
) -> None:
    delayed = await submit(client, delay_s=60)
    assert ts(delayed["run_at"]) > time.time() + 55
    timed = await submit(client, run_at="2030-01-01T08:00:00+08:00")
    assert timed["run_at"] == "2030-01-01T00:00:00Z"


# --- idempotency --------------------------------------------------------------------------


async def test_repeated_idempotency_key_returns_the_first_task_with_200(
    client: httpx.AsyncClient,
) -> None:
    first = await submit(client, idempotency_key="order-1", payload={"n": 1})
    r = await client.post(
        "/api/v1/tasks", json={"kind": "echo", "idempotency_key": "order-1", "payload": {"n": 2}}
    )
    assert r.status_code == 200, r.text
    again = r.json()
    assert again["id"] == first["id"]
    assert again["created"] is False
    assert again["payload"] == {"n": 1}
    listed = (await client.get("/api/v1/tasks")).json()
    assert listed["total"] == 1
    assert await task_events(client, first["id"]) == ["task.submitted"]


async def test_concurrent_submits_with_one_key_create_one_task(
    client: httpx.AsyncClient,
) -> None:
    replies = await asyncio.gather(
        *[
            client.post("/api/v1/tasks", json={"kind": "echo", "idempotency_key": "k"})
            for _ in range(8)
        ]
    )
    assert sorted(r.status_code for r in replies) == [200] * 7 + [201]
    assert len({r.json()["id"] for r in replies}) == 1
    assert (await client.get("/api/v1/tasks")).json()["total"] == 1


async def test_idempotency_keys_are_scoped_to_their_owner(
    hub: Any, client: httpx.AsyncClient
) -> None:
    mine = await submit(client, idempotency_key="shared")
    other = await user_headers(hub, client)
    r = await client.post(
        "/api/v1/tasks", json={"kind": "echo", "idempotency_key": "shared"}, headers=other
    )
    assert r.status_code == 201, r.text
    assert r.json()["id"] != mine["id"]


async def test_idempotency_key_still_deduplicates_after_the_task_finished(
    client: httpx.AsyncClient, agent: Agent
) -> None:
    first = await submit(client, idempotency_key="once")
    await _finish(agent)
    r = await client.post("/api/v1/tasks", json={"kind": "echo", "idempotency_key": "once"})
    assert r.status_code == 200
    assert r.json()["id"] == first["id"]
    assert r.json()["status"] == "succeeded"
    assert await agent.lease() == []


# --- batches ------------------------------------------------------------------------------


async def test_batch_with_repeated_keys_creates_each_key_once(
    client: httpx.AsyncClient,
) -> None:
    earlier = await submit(client, idempotency_key="c")
    r = await client.post(
        "/api/v1/tasks/batch",
        json={
            "tasks": [
                {"kind": "echo", "idempotency_key": "a"},
                {"kind": "echo", "idempotency_key": "a"},
                {"kind": "echo", "idempotency_key": "b"},
                {"kind": "echo"},
                {"kind": "echo", "idempotency_key": "c"},
            ]
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    items = body["items"]
    assert [i["created"] for i in items] == [True, False, True, True, False]
    assert body["created"] == 3
    assert items[0]["id"] == items[1]["id"]
    assert items[4]["id"] == earlier["id"]
    assert len({i["id"] for i in items}) == 4
    assert (await client.get("/api/v1/tasks")).json()["total"] == 4


async def test_batch_of_1000_is_accepted_in_order(client: httpx.AsyncClient) -> None:
    tasks = [{"kind": "echo", "payload": {"i": i}} for i in range(1000)]
    r = await client.post("/api/v1/tasks/batch", json={"tasks": tasks})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["created"] == 1000
    assert [i["payload"]["i"] for i in body["items"]] == list(range(1000))
    assert (await client.get("/api/v1/tasks", params={"limit": 1})).json()["total"] == 1000


async def test_batch_of_1001_or_none_is_refused_naming_tasks(client: httpx.AsyncClient) -> None:
    for tasks in ([{"kind": "echo"}] * 1001, []):
        r = await client.post("/api/v1/tasks/batch", json={"tasks": tasks})
        assert r.status_code == 422, r.text
        assert "tasks" in r.json()["detail"]
    assert (await client.get("/api/v1/tasks")).json()["total"] == 0


async def test_batch_with_one_bad_task_stores_nothing(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/tasks/batch", json={"tasks": [{"kind": "echo"}, {"kind": "echo", "priority": "x"}]}
    )
    assert r.status_code == 422
    assert "tasks.1.priority" in r.json()["detail"]
    assert (await client.get("/api/v1/tasks")).json()["total"] == 0


# --- list ---------------------------------------------------------------------------------


async def test_list_filters_by_status_kind_capability_and_node(
    client: httpx.AsyncClient, agent: Agent
) -> None:
    done = await submit(client, kind="echo")
    await _finish(agent)
    await submit(client, kind="echo")
    crawl = await submit(client, kind="crawl", capability="other")

    async def ids(**params: Any) -> list[str]:
        r = await client.get("/api/v1/tasks", params=params)
        assert r.status_code == 200, r.text
        return [t["id"] for t in r.json()["items"]]

    assert await ids(status="succeeded") == [done["id"]]
    assert len(await ids(status="pending")) == 2
    assert await ids(kind="crawl") == [crawl["id"]]
    assert await ids(capability="other") == [crawl["id"]]
    assert await ids(node=agent.id) == [done["id"]]
    assert await ids(status="pending", kind="crawl") == [crawl["id"]]
    assert await ids(status="dead") == []


async def test_list_pages_newest_first_with_a_total(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/tasks/batch",
        json={"tasks": [{"kind": "echo", "payload": {"i": i}} for i in range(7)]},
    )
    assert r.status_code == 201
    seen: list[int] = []
    for offset in (0, 3, 6):
        page = (await client.get("/api/v1/tasks", params={"limit": 3, "offset": offset})).json()
        assert page["total"] == 7
        assert (page["limit"], page["offset"]) == (3, offset)
        seen += [t["payload"]["i"] for t in page["items"]]
    assert seen == [6, 5, 4, 3, 2, 1, 0]
    beyond = (await client.get("/api/v1/tasks", params={"offset": 50})).json()
    assert beyond["items"] == [] and beyond["total"] == 7


async def test_list_refuses_bad_query_parameters(client: httpx.AsyncClient) -> None:
    for params in (
        {"status": "bogus"},
        {"limit": 0},
        {"limit": 1001},
        {"offset": -1},
        {"limit": "x"},
    ):
        r = await client.get("/api/v1/tasks", params=params)
        assert r.status_code == 422, (params, r.text)
        assert next(iter(params)) in r.json()["detail"]


# --- get ----------------------------------------------------------------------------------


async def test_get_shows_attempts_history(client: httpx.AsyncClient, agent: Agent) -> None:
    t = await submit(client, max_attempts=3)
    (first,) = await agent.lease()
    await agent.start(first)
    await agent.result(first, "failed", error="boom")
    await _wait_ready(client, t["id"])
    (second,) = await agent.lease(wait_s=2)
    await agent.result(second, "succeeded", result={"ok": True})

    got = await get_task(client, t["id"])
    assert got["status"] == "succeeded"
    assert got["result"] == {"ok": True}
    assert got["attempts"] == 2
    hist = got["attempts_history"]
    assert [(a["attempt"], a["lease_token"], a["outcome"]) for a in hist] == [
        (1, 1, "failed"),
        (2, 2, "succeeded"),
    ]
    assert hist[0]["error"] == "boom"
    assert hist[0]["node_id"] == agent.id
    assert hist[0]["started_at"] is not None
    # The second attempt's start was never reported: its lease time stands in.
    assert hist[1]["started_at"] == hist[1]["leased_at"]
    for a in hist:
        assert ts(a["leased_at"]) <= ts(a["finished_at"])
    assert got["callback_deliveries"] == []


async def _wait_ready(client: httpx.AsyncClient, task_id: str) -> None:
    from zhongshu.testing import wait_until

    async def ready() -> bool:
        t = await get_task(client, task_id)
        return t["status"] == "failed" and ts(t["run_at"]) <= time.time()

    await wait_until(ready, timeout_s=10)


async def test_unknown_task_is_404(client: httpx.AsyncClient) -> None:
    for method, path in [("GET", ""), ("POST", "/cancel"), ("POST", "/retry")]:
        r = await client.request(method, f"/api/v1/tasks/no-such-task{path}")
        assert r.status_code == 404, (path, r.text)
        assert "not found" in r.json()["detail"]


# --- cancel -------------------------------------------------------------------------------


async def test_cancel_unfinished_task_ends_it_for_good(
    client: httpx.AsyncClient, agent: Agent
) -> None:
    failed = await submit(client, max_attempts=3)
    await _finish(agent, "failed", error="x")
    leased = await submit(client)
    (lease,) = await agent.lease()
    pending = await submit(client)
    for t in (pending, leased, failed):
        r = await client.post(f"/api/v1/tasks/{t['id']}/cancel")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "cancelled"
        assert r.json()["finished_at"] is not None
    # A late result of the leased one is refused; nothing is leased again, not even the
    # failed one whose retry time passes.
    assert (await agent.result(lease))["accepted"] is False
    assert await agent.lease(max_tasks=5, wait_s=0.3) == []
    got = await get_task(client, leased["id"])
    assert got["status"] == "cancelled" and got["result"] is None


async def test_cancel_finished_task_is_409(client: httpx.AsyncClient, agent: Agent) -> None:
    succeeded = await submit(client)
    await _finish(agent)
    dead = await submit(client, max_attempts=1)
    await _finish(agent, "failed", error="e")
    cancelled = await submit(client)
    await client.post(f"/api/v1/tasks/{cancelled['id']}/cancel")
    for t, final in [(succeeded, "succeeded"), (dead, "dead"), (cancelled, "cancelled")]:
        r = await client.post(f"/api/v1/tasks/{t['id']}/cancel")
        assert r.status_code == 409, (final, r.text)
        assert final in r.json()["detail"]
        assert (await get_task(client, t["id"]))["status"] == final


# --- retry --------------------------------------------------------------------------------


async def test_retry_makes_a_failed_or_dead_task_ready_now(
    client: httpx.AsyncClient, agent: Agent
) -> None:
    dead = await submit(client, max_attempts=1)
    await _finish(agent, "failed", error="e")
    failed = await submit(client, max_attempts=3, priority=-1)
    await _finish(agent, "failed", error="e")
    assert (await get_task(client, dead["id"]))["status"] == "dead"
    assert (await get_task(client, failed["id"]))["status"] == "failed"

    r = await client.post(f"/api/v1/tasks/{dead['id']}/retry")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "pending"
    assert r.json()["max_attempts"] == 2  # a dead task gets one more attempt
    r = await client.post(f"/api/v1/tasks/{failed['id']}/retry")
    assert r.status_code == 200 and r.json()["status"] == "pending"
    assert ts(r.json()["run_at"]) <= time.time()

    first, second = await agent.lease(max_tasks=2)
    assert (first["id"], first["attempt"], first["lease_token"]) == (dead["id"], 2, 2)
    assert second["id"] == failed["id"]
    assert (await agent.result(first))["accepted"]
    assert (await get_task(client, dead["id"]))["status"] == "succeeded"


async def test_retry_of_a_task_that_is_not_failed_or_dead_is_409(
    client: httpx.AsyncClient, agent: Agent
) -> None:
    succeeded = await submit(client)
    await _finish(agent)
    leased = await submit(client)
    await agent.lease()
    cancelled = await submit(client)
    await client.post(f"/api/v1/tasks/{cancelled['id']}/cancel")
    pending = await submit(client)
    for t, state in [
        (pending, "pending"),
        (leased, "leased"),
        (succeeded, "succeeded"),
        (cancelled, "cancelled"),
    ]:
        r = await client.post(f"/api/v1/tasks/{t['id']}/retry")
        assert r.status_code == 409, (state, r.text)
        assert (await get_task(client, t["id"]))["status"] == state
