"""A 1,000-send burst at one hub over real HTTP (uvicorn on 127.0.0.1, a pool of client
threads), then racing duplicate callbacks: every id unique, every state right, nothing
lost, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from zhongshu import testing
from zhongshu.config import Settings
from zhongshu.services import relay as relay_mod

pytestmark = pytest.mark.timeout(120)

KEY = "relay-key-0123456789abcdef"
SENDS = 1000
THREADS = 8


def fire(urls: Sequence[str], calls: Sequence[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    """POST each ``(path, body)`` from a pool of threads, one client per thread, spreading
    the calls over ``urls`` in turn."""
    local = threading.local()

    def post(i: int) -> httpx.Response:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=30, trust_env=False)
            clients.append(client)
        path, body = calls[i]
        return client.post(urls[i % len(urls)] + path, json=body, headers={"X-Relay-API-Key": KEY})

    clients: list[httpx.Client] = []
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            return list(pool.map(post, range(len(calls))))
    finally:
        for c in clients:
            c.close()


def burst_and_callbacks(urls: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """Send ``SENDS`` tasks; then call back 60 of them twice at once (40 done, 20 failed).
    Returns the ids and the seed status each called-back task must end in."""
    sends = [
        ("/api/relay/send", {"from": "master", "to": "child", "type": "task", "cmd": f"c{i}"})
        for i in range(SENDS)
    ]
    replies = fire(urls, sends)
    assert [r.status_code for r in replies] == [200] * SENDS, {r.text for r in replies}
    ids = [r.json()["task_id"] for r in replies]
    assert len(set(ids)) == SENDS
    want = {t: "completed" for t in ids[:40]} | {t: "failed" for t in ids[40:60]}
    calls = [
        (
            "/api/relay/callback",
            {
                "task_id": t,
                "child_id": f"child{n}",
                "status": "done" if s == "completed" else "failed",
            },
        )
        for t, s in want.items()
        for n in (1, 2)
    ]
    replies = fire(urls, calls)
    assert [r.status_code for r in replies] == [200] * len(calls), {r.text for r in replies}
    applied = Counter(r.json()["task_id"] for r in replies if r.json()["applied"])
    assert applied == Counter(list(want)), "each task must be completed by one callback"
    return ids, want


async def check_database(settings: Settings, ids: list[str], want: dict[str, str]) -> None:
    """Read the durable truth: every task exactly once, in the right state, one log entry
    per send and exactly one applied callback per called-back task."""
    async with testing.running_hub(settings) as hub:
        rows, total = await hub.tasks.store.find(kind="relay.task", limit=10 * SENDS)
        assert total == len(ids) == len({t["id"] for t in rows})
        by_id = {t["id"]: t for t in rows}
        assert set(by_id) == set(ids)
        for t in ids:
            assert relay_mod.seed_status(by_id[t]["status"]) == want.get(t, "pending"), t
        entries = [e async for e in relay_mod.iter_log(hub.tasks.store)]
    events = Counter((e["task_id"], e["event"]) for e in entries)
    assert all(events[(t, "send")] == 1 for t in ids)
    assert all(events[(t, "callback")] == 1 for t in want)
    assert all(events[(t, "callback_ignored")] == 1 for t in want)
    assert sum(events.values()) == len(ids) + 2 * len(want)


def test_a_thousand_sends_at_one_hub(db_url: str, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(database_url=db_url, relay_enabled=True, relay_api_keys=[KEY])
    with testing.served_hub(settings) as served:
        ids, want = burst_and_callbacks([served.url])
    asyncio.run(check_database(settings, ids, want))
