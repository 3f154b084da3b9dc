"""What the queue does when work goes wrong: failed attempts and backoff, dead tasks,
silent nodes, timeouts, stale results, disabled nodes, revokes."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from helpers import (  # noqa: F401
    ADMIN,
    Agent,
    create_agent,
    fast_passwords,
    get_task,
    hub_client,
    submit,
    task_events,
    ts,
)

from zhongshu.config import Settings
from zhongshu.testing import wait_until

pytestmark = pytest.mark.timeout(60)

BASE_S, CAP_S = 0.1, 0.25


@pytest.fixture
async def backoff_client(
    db_url: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url=db_url, retry_base_s=BASE_S, retry_cap_s=CAP_S)
    async with hub_client(settings) as (_, client):
        yield client


async def _status(client: httpx.AsyncClient, task_id: str) -> str:
    return str((await get_task(client, task_id))["status"])


# --- failures, backoff, dead --------------------------------------------------------------


async def test_failed_attempts_back_off_growing_up_to_the_cap_then_die(
    backoff_client: httpx.AsyncClient,
) -> None:
    client = backoff_client
    agent = await create_agent(client)
    t = await submit(client, max_attempts=4)
    delays: list[float] = []
    for attempt in range(1, 5):
        (lease,) = await wait_until(agent.lease, timeout_s=10)
        assert (lease["attempt"], lease["lease_token"]) == (attempt, attempt)
        ack = await agent.result(lease, "failed", error=f"boom {attempt}")
        assert ack["accepted"], ack
        got = await get_task(client, t["id"])
        finished = ts(got["attempts_history"][-1]["finished_at"])
        if attempt < 4:
            assert got["status"] == "failed"
            assert got["node_id"] is None
            ceiling = min(CAP_S, BASE_S * 2 ** (attempt - 1))
            delay = ts(got["run_at"]) - finished
            assert ceiling / 2 - 1e-3 <= delay <= ceiling + 1e-3, (attempt, delay)
            delays.append(delay)
    # Each delay lies within its own attempt's bounds (checked above); with half of each
    # delay random they need not be sorted once the cap is reached. Below the cap the
    # windows [c/2, c] and [c, 2c] do not overlap, so the second wait is the longer one.
    assert delays[1] >= delays[0]
    assert max(delays) <= CAP_S + 1e-3

    got = await get_task(client, t["id"])
    assert got["status"] == "dead"
    assert got["error"] == "boom 4"
    assert got["attempts"] == 4 and got["finished_at"] is not None
    hist = got["attempts_history"]
    assert [a["outcome"] for a in hist] == ["failed"] * 4
    assert [a["error"] for a in hist] == [f"boom {i}" for i in range(1, 5)]
    # No attempt started before the retry time its predecessor set.
    for prev, nxt, delay in zip(hist, hist[1:], delays, strict=False):
        assert ts(nxt["leased_at"]) >= ts(prev["finished_at"]) + delay - 1e-3
    assert await agent.lease() == []
    events = await task_events(client, t["id"])
    assert events.count("task.failed") == 3 and events[-1] == "task.dead"
    r = await client.get("/api/v1/events", params={"type": "task.failed", "subject_id": t["id"]})
    failed = list(reversed(r.json()["items"]))
    assert [e["data"]["attempt"] for e in failed] == [1, 2, 3]
    for ev, prev, delay in zip(failed, hist[:3], delays, strict=True):
        assert ev["data"]["error"] == prev["error"]
        assert ev["data"]["retry_at"] == pytest.approx(ts(prev["finished_at"]) + delay, abs=1e-3)


async def test_not_retryable_or_last_failure_is_dead_at_once(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    fatal = await submit(client, max_attempts=5)
    last = await submit(client, max_attempts=1)
    first, second = await agent.lease(max_tasks=2)
    assert (await agent.result(first, "failed", error="bad input", retryable=False))["accepted"]
    assert (await agent.result(second, "failed", error="e"))["accepted"]
    got = await get_task(client, fatal["id"])
    assert (got["status"], got["attempts"], got["error"]) == ("dead", 1, "bad input")
    assert got["finished_at"] is not None
    assert await _status(client, last["id"]) == "dead"
    assert await agent.lease(wait_s=0.2) == []


# --- silent nodes and stale results -------------------------------------------------------


@pytest.fixture
async def quick_offline(
    db_url: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(
        database_url=db_url, heartbeat_interval_s=0.3, offline_after_s=1.2, reaper_interval_s=0.1
    )
    async with hub_client(settings) as (_, client):
        yield client


async def test_silent_node_loses_its_lease_to_a_live_node_and_only_one_result_counts(
    quick_offline: httpx.AsyncClient,
) -> None:
    client = quick_offline
    silent = await create_agent(client)
    live = await create_agent(client)
    t = await submit(client)
    (old,) = await silent.lease()
    assert await silent.start(old)
    other = await submit(client)
    (kept,) = await live.lease()
    assert kept["id"] == other["id"]

    # `silent` stops heart-beating, `live` goes on: only `silent` loses its lease.
    async def taken_back() -> bool:
        reply = await live.heartbeat([kept])
        assert reply == {"ok": True, "revoke": []}
        return await _status(client, t["id"]) not in ("leased", "running")

    await wait_until(taken_back, timeout_s=5, interval_s=0.2)
    nodes = {n["id"]: n for n in (await client.get("/api/v1/nodes")).json()["items"]}
    assert nodes[silent.id]["status"] == "offline"
    assert nodes[live.id]["status"] == "online"
    assert await _status(client, other["id"]) == "leased"

    (new,) = await wait_until(live.lease, timeout_s=10)
    assert new["id"] == t["id"]
    assert new["lease_token"] > old["lease_token"]

    late = await silent.result(old, result="from silent")
    assert late["accepted"] is False
    assert late["reason"] == "stale lease"
    assert (await live.result(new, result="from live"))["accepted"] is True

    got = await get_task(client, t["id"])
    assert (got["status"], got["result"], got["node_id"]) == ("succeeded", "from live", live.id)
    hist = got["attempts_history"]
    assert [(a["node_id"], a["outcome"]) for a in hist] == [
        (silent.id, "lost"),
        (live.id, "succeeded"),
    ]
    assert "offline" in hist[0]["error"]
    assert (await task_events(client, t["id"])).count("task.succeeded") == 1

    # When it comes back, the silent node is told to drop what it lost.
    assert (await silent.heartbeat([old]))["revoke"] == [t["id"]]
    node = (await client.get(f"/api/v1/nodes/{silent.id}")).json()
    assert node["status"] == "online"


# --- timeouts -----------------------------------------------------------------------------


@pytest.fixture
async def no_grace(
    db_url: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url=db_url, task_lease_grace_s=0, reaper_interval_s=0.05)
    async with hub_client(settings) as (_, client):
        yield client


async def test_task_over_its_timeout_goes_back_to_the_queue(no_grace: httpx.AsyncClient) -> None:
    client = no_grace
    agent = await create_agent(client)
    t = await submit(client, timeout_s=0.3, max_attempts=3)
    quick = await submit(client, timeout_s=5)
    lease, quick_lease = await agent.lease(max_tasks=2)
    leased_at = time.time()
    assert lease["lease_expires_at"] == pytest.approx(leased_at + 0.3, abs=0.2)
    await agent.start(lease)
    assert (await agent.result(quick_lease))["accepted"]  # within its timeout

    async def expired() -> bool:
        return await _status(client, t["id"]) == "failed"

    await wait_until(expired, timeout_s=10)
    assert time.time() - leased_at >= 0.3
    got = await get_task(client, t["id"])
    (attempt,) = got["attempts_history"]
    assert attempt["outcome"] == "lost"
    assert "lease expired" in attempt["error"]
    assert attempt["finished_at"] is not None

    assert (await agent.result(lease))["accepted"] is False
    assert (await agent.heartbeat([lease]))["revoke"] == [t["id"]]
    (again,) = await wait_until(agent.lease, timeout_s=10)
    assert (again["id"], again["attempt"], again["lease_token"]) == (t["id"], 2, 2)
    assert (await agent.result(again))["accepted"]
    assert await _status(client, t["id"]) == "succeeded"
    assert await _status(client, quick["id"]) == "succeeded"


async def test_task_that_always_times_out_ends_dead(no_grace: httpx.AsyncClient) -> None:
    client = no_grace
    agent = await create_agent(client)
    t = await submit(client, timeout_s=0.1, max_attempts=2)
    await agent.lease()

    async def dead_after_releasing() -> bool:
        if await _status(client, t["id"]) == "dead":
            return True
        await agent.lease()
        return False

    await wait_until(dead_after_releasing, timeout_s=8)
    got = await get_task(client, t["id"])
    assert [a["outcome"] for a in got["attempts_history"]] == ["lost", "lost"]


# --- node access --------------------------------------------------------------------------


async def test_disabled_node_is_403_on_agent_endpoints(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    await submit(client)
    r = await client.patch(f"/api/v1/nodes/{agent.id}", json={"disabled": True})
    assert r.status_code == 200, r.text
    for path, body in [
        ("/register", {"capabilities": ["echo"]}),
        ("/heartbeat", {}),
        ("/lease", {"wait_s": 0}),
        ("/tasks/x/start", {"lease_token": 1}),
        ("/tasks/x/result", {"lease_token": 1, "status": "succeeded"}),
    ]:
        r = await agent.post(path, body)
        assert r.status_code == 403, (path, r.text)
        assert "disabled" in r.json()["detail"]
    await client.patch(f"/api/v1/nodes/{agent.id}", json={"disabled": False})
    assert len(await agent.lease()) == 1


async def test_rotated_credentials_stop_the_old_secret(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    r = await client.post("/api/v1/auth/confirm", json={"password": ADMIN[1]})
    assert r.status_code == 200, r.text
    confirm = {r.json()["header"]: r.json()["confirm_token"]}
    r = await client.post(f"/api/v1/nodes/{agent.id}/credentials", headers=confirm)
    assert r.status_code == 200, r.text
    assert (await agent.post("/heartbeat")).status_code == 401
    creds = r.json()["credentials"]
    fresh = Agent(client, agent.node, creds["access_key"], creds["secret_key"])
    assert (await fresh.post("/heartbeat")).status_code == 200


# --- revoke lists -------------------------------------------------------------------------


async def test_heartbeat_revokes_tasks_the_node_no_longer_holds(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    other = await create_agent(client)
    await submit(client)
    await submit(client)
    kept, cancelled = await agent.lease(max_tasks=2)
    assert (await client.post(f"/api/v1/tasks/{cancelled['id']}/cancel")).status_code == 200
    unknown: dict[str, Any] = {"id": "never-leased", "lease_token": 1}
    stale = {**kept, "lease_token": kept["lease_token"] + 5}
    reply = await agent.heartbeat([kept, cancelled, unknown])
    assert reply["ok"] is True
    assert sorted(reply["revoke"]) == sorted([cancelled["id"], "never-leased"])
    assert (await agent.heartbeat([stale]))["revoke"] == [kept["id"]]
    assert (await other.heartbeat([kept]))["revoke"] == [kept["id"]]  # held by `agent`
    assert (await agent.heartbeat([kept]))["revoke"] == []
    assert await _status(client, kept["id"]) == "leased"
