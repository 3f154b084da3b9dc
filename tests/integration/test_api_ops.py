"""Health, readiness and Prometheus metrics after real queue work."""

from __future__ import annotations

import re

import httpx
import pytest
from helpers import create_agent, fast_passwords, submit  # noqa: F401

pytestmark = pytest.mark.timeout(60)


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one Prometheus sample, or None when it is absent."""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if got == labels:
            return float(m.group(3))
    return None


async def test_healthz_and_readyz_answer(client: httpx.AsyncClient) -> None:
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    # A browser opening the hub lands on the API docs.
    r = await client.get("/", headers={"authorization": ""})
    assert r.status_code == 307 and r.headers["location"] == "/docs"


async def test_metrics_count_tasks_by_state_and_dispatch_latency(
    client: httpx.AsyncClient,
) -> None:
    agent = await create_agent(client, register=["echo", "crawl"])
    for _ in range(3):
        await submit(client)
    await submit(client, kind="crawl", max_attempts=1)
    await submit(client, kind="later", delay_s=3600)
    done, failed = await agent.lease(max_tasks=2)
    await agent.result(done)
    await agent.result(failed, "failed", error="x", retryable=False)

    r = await client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    states: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = re.match(r"^zhongshu_tasks\{(.*)\} (\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            states[(labels["state"], labels["capability"])] = float(m.group(2))
    assert states[("pending", "later")] == 1
    assert sum(v for (s, _), v in states.items() if s == "succeeded") == 1
    assert sum(v for (s, _), v in states.items() if s == "dead") == 1
    assert sum(v for (s, _), v in states.items() if s == "pending") == 3
    assert _sample(text, "zhongshu_dispatch_latency_seconds_count") == 2
    assert (_sample(text, "zhongshu_dispatch_latency_seconds_sum") or 0) >= 0
    assert _sample(text, "zhongshu_dispatch_latency_seconds_bucket", le="+Inf") == 2


async def test_metrics_follow_completions_failures_and_emptied_states(
    client: httpx.AsyncClient,
) -> None:
    agent = await create_agent(client)
    await create_agent(client, register=None)  # never online
    await submit(client)
    await submit(client, max_attempts=2)
    cancelled = await submit(client, kind="spare")
    ok, bad = await agent.lease(max_tasks=2)
    await agent.result(ok)
    await agent.result(bad, "failed", error="x")
    text = (await client.get("/metrics")).text
    assert _sample(text, "zhongshu_tasks_completed_total", capability="echo") == 1
    assert _sample(text, "zhongshu_tasks_failed_total", capability="echo", final="false") == 1
    assert _sample(text, "zhongshu_tasks", state="failed", capability="echo") == 1
    assert _sample(text, "zhongshu_tasks", state="pending", capability="spare") == 1
    assert _sample(text, "zhongshu_nodes_online") == 1
    await client.post(f"/api/v1/tasks/{cancelled['id']}/cancel")
    text = (await client.get("/metrics")).text
    assert _sample(text, "zhongshu_tasks", state="pending", capability="spare") is None
    assert _sample(text, "zhongshu_tasks", state="cancelled", capability="spare") == 1
