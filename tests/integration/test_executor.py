"""The hub's embedded executor runs hub work as ordinary, durable queue tasks."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from zhongshu import testing
from zhongshu.config import Settings
from zhongshu.services.executor import CAPABILITY, PermanentFailure, TaskContext


async def finished(hub: Any, task_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        row = await hub.tasks.get(task_id)
        return row if row["status"] in ("succeeded", "dead") else None

    return await testing.wait_until(done, timeout_s=10)  # type: ignore[no-any-return]


async def test_a_hub_task_runs_and_its_result_is_stored(hub: Any) -> None:
    seen: list[Any] = []

    async def double(ctx: TaskContext) -> dict[str, Any]:
        seen.append(ctx.payload)
        return {"doubled": ctx.payload["n"] * 2, "attempt": ctx.attempt}

    hub.executor.register("test.double", double)
    row = await hub.executor.submit("test.double", {"n": 21})
    assert row["capability"] == CAPABILITY
    done = await finished(hub, row["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["result"] == {"doubled": 42, "attempt": 1}
    assert done["node_id"] == hub.executor.node_id
    assert seen == [{"n": 21}]


async def test_failures_retry_with_backoff_and_permanent_ones_stop_at_once(hub: Any) -> None:
    calls: dict[str, int] = {"flaky": 0, "broken": 0}

    async def flaky(ctx: TaskContext) -> dict[str, Any]:
        calls["flaky"] += 1
        if ctx.attempt < 3:
            raise ConnectionError("receiver down")
        return {"ok": True}

    async def broken(ctx: TaskContext) -> None:
        calls["broken"] += 1
        raise PermanentFailure("HTTP 400 from the receiver: bad template")

    hub.executor.register("test.flaky", flaky)
    hub.executor.register("test.broken", broken)
    a = await hub.executor.submit("test.flaky", {}, max_attempts=3)
    b = await hub.executor.submit("test.broken", {}, max_attempts=3)
    a_done, b_done = await finished(hub, a["id"]), await finished(hub, b["id"])
    assert a_done["status"] == "succeeded" and a_done["attempts"] == 3
    assert calls["flaky"] == 3
    attempts = await hub.tasks.attempts(a["id"])
    assert [x["error"] for x in attempts][:2] == ["ConnectionError: receiver down"] * 2
    assert b_done["status"] == "dead" and b_done["attempts"] == 1
    assert calls["broken"] == 1
    assert "bad template" in b_done["error"]


async def test_unknown_kinds_and_timeouts_fail_with_a_reason(hub: Any) -> None:
    async def slow(ctx: TaskContext) -> None:
        await asyncio.sleep(30)

    hub.executor.register("test.slow", slow)
    unknown = await hub.executor.submit("test.nobody", {}, max_attempts=1)
    late = await hub.executor.submit("test.slow", {}, max_attempts=1, timeout_s=0.2)
    u, s = await finished(hub, unknown["id"]), await finished(hub, late["id"])
    assert u["status"] == "dead" and "no hub handler for 'test.nobody'" in u["error"]
    assert s["status"] == "dead" and "timed out" in s["error"]


async def test_per_kind_concurrency_is_a_ceiling(hub: Any) -> None:
    running = 0
    peak = 0

    async def busy(ctx: TaskContext) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1

    hub.executor.register("test.busy", busy, concurrency=2)
    rows = [await hub.executor.submit("test.busy", {"i": i}) for i in range(8)]
    for r in rows:
        assert (await finished(hub, r["id"]))["status"] == "succeeded"
    assert peak == 2


async def test_a_restarted_hub_takes_back_what_its_previous_run_held(
    db_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_url=db_url)
    async with testing.running_hub(settings) as first:
        await first.executor.stop()  # the first run "dies" holding a lease, unsettled
        row = await first.executor.submit("test.resume", {"x": 1})
        leased = await first.tasks.lease(first.executor.node_id, [CAPABILITY], 1)
        assert [t["id"] for t in leased] == [row["id"]]
    async with testing.running_hub(settings) as second:
        # Register before the executor would run it: a fresh hub in the same data dir
        # is the same executor node, and hands the lease back at start.
        assert second.executor.node_id == first.executor.node_id

        async def resume(ctx: TaskContext) -> dict[str, Any]:
            return {"resumed": ctx.payload["x"]}

        second.executor.register("test.resume", resume)
        second.dispatcher.wake()
        done = await finished(second, row["id"])
    assert done["status"] == "succeeded" and done["result"] == {"resumed": 1}


@pytest.mark.parametrize("cap", ["hub", "node:nd_someone_else"])
async def test_workers_cannot_claim_the_hubs_reserved_capabilities(
    client: httpx.AsyncClient, cap: str
) -> None:
    r = await client.post("/api/v1/nodes", json={"name": "sneaky", "capabilities": [cap]})
    assert r.status_code in (400, 422), r.text
    assert "reserved" in r.text


async def test_a_new_task_is_offered_first_to_nodes_that_can_run_it(hub: Any) -> None:
    """The executor's session is always attached and idle; a worker task must not wait
    behind its (empty) lease query."""
    from zhongshu.services.dispatcher import NodeSession
    from zhongshu.services.identity import SYSTEM
    from zhongshu.services.tasks import TaskSpec

    asked: list[str] = []
    real_lease = hub.tasks.lease

    async def spy(node_id: str, caps: Any, limit: int, capacity: int | None = None) -> Any:
        asked.append(node_id)
        return await real_lease(node_id, caps, limit, capacity)

    got: list[Any] = []

    async def send(leases: list[Any]) -> None:
        got.extend(leases)

    async def revoke(task_ids: list[str], reason: str) -> None:
        return None

    # Rounds run by hand: the dispatcher's own loop is stopped, so none can interleave.
    loop = next(t for t in hub._loops if t.get_name() == "zhongshu-dispatcher")
    loop.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await loop
    hub.tasks.lease = spy
    hub.dispatcher.attach(NodeSession("worker-x", ["echo"], 4, send, revoke))
    await hub.tasks.submit(TaskSpec(kind="echo"), SYSTEM)
    assert await hub.dispatcher.dispatch_once() == 1
    assert asked[0] == "worker-x", asked
    assert len(got) == 1
