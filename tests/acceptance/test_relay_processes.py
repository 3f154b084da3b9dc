"""The relay with real processes.

- Two ``zhongshu serve`` processes on one PostgreSQL database take a 1,000-send burst split
  between them, then racing duplicate callbacks (the two copies of a callback go to
  different hubs): every id unique, every state right, nothing lost.
- A real ``zhongshu worker`` serves as the child: one relay task is finished by the
  handler's result, one by a callback the handler posts itself; each is completed once.
"""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from procs import ZHONGSHU, HubProc, Proc, clean_env, wait_for

from zhongshu import testing
from zhongshu.config import Settings
from zhongshu.db.engine import Database
from zhongshu.services import relay as relay_mod

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

KEY = "relay-key-0123456789abcdef"
SENDS = 1000


def fire(urls: Sequence[str], calls: Sequence[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    """POST each ``(path, body)`` from 8 threads (one client each), call ``i`` to
    ``urls[i % len(urls)]``."""
    local = threading.local()
    clients: list[httpx.Client] = []

    def post(i: int) -> httpx.Response:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=30, trust_env=False)
            clients.append(client)
        path, body = calls[i]
        return client.post(urls[i % len(urls)] + path, json=body, headers={"X-Relay-API-Key": KEY})

    try:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(post, range(len(calls))))
    finally:
        for c in clients:
            c.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test only."""
    if not testing.postgres_available():
        if os.environ.get("ZHONGSHU_REQUIRE_SERVICES") == "1":
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required (ZHONGSHU_REQUIRE_SERVICES=1)")
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432")
    url = asyncio.run(testing.create_pg_database())
    yield url
    asyncio.run(testing.drop_pg_database(url))


@pytest.mark.postgres
def test_two_hub_processes_on_one_postgres_take_a_thousand_sends(
    pg_url: str, tmp_path: Path
) -> None:
    relay_env = {
        "ZHONGSHU_DATABASE_URL": pg_url,
        "ZHONGSHU_RELAY_ENABLED": "true",
        "ZHONGSHU_RELAY_API_KEYS": f'["{KEY}"]',
    }
    hubs = [HubProc(tmp_path / name, **relay_env) for name in ("hub-a", "hub-b")]
    try:
        for h in hubs:
            h.workdir.mkdir()
        asyncio.run(_migrate(pg_url))
        # Both at once: the schema is there, so neither migrates anything.
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda h: h.start(), hubs))
        urls = [h.url for h in hubs]
        sends = [
            ("/api/relay/send", {"from": "master", "to": "child", "type": "task", "cmd": f"c{i}"})
            for i in range(SENDS)
        ]
        replies = fire(urls, sends)
        assert [r.status_code for r in replies] == [200] * SENDS, {r.text for r in replies}
        ids = [r.json()["task_id"] for r in replies]
        assert len(set(ids)) == SENDS
        # Both copies of each callback at once, one to each hub.
        want = {t: "completed" for t in ids[:40]} | {t: "failed" for t in ids[40:60]}
        calls = [
            (
                "/api/relay/callback",
                {
                    "task_id": t,
                    "child_id": f"c{n}",
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
        # Either hub answers for every task.
        with httpx.Client(trust_env=False, timeout=10) as c:
            for i, t in enumerate(ids[:100]):
                r = c.get(f"{urls[i % 2]}/api/relay/task-status/{t}")
                assert r.status_code == 200 and r.json()["task_status"] == want.get(t, "pending")
    finally:
        for h in hubs:
            h.kill()
    asyncio.run(_check_database(pg_url, tmp_path, ids, want))


async def _migrate(url: str) -> None:
    db = Database(url)
    try:
        await db.migrate()
    finally:
        await db.dispose()


async def _check_database(url: str, tmp_path: Path, ids: list[str], want: dict[str, str]) -> None:
    settings = Settings(database_url=url, data_dir=tmp_path / "check", secret_key="x" * 40)
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
    assert all(events[(t, "callback")] == 1 and events[(t, "callback_ignored")] == 1 for t in want)
    assert sum(events.values()) == len(ids) + 2 * len(want)


CHILD_HANDLERS = """
import os

import httpx

from zhongshu.worker import handler

RUNS = os.environ["ZS_RELAY_RUNS"]


@handler("relay.task")
def relay_task(ctx, payload):
    with open(RUNS, "a") as f:
        f.write(ctx.task_id + "\\n")
    if payload["cmd"] == "call_back":
        # The child reports through the relay itself, as the seed's children do.
        r = httpx.post(
            os.environ["ZS_RELAY_URL"] + "/api/relay/callback",
            json={"task_id": ctx.task_id, "child_id": "child_bazi", "status": "done",
                  "result": {"by": "callback"}},
            headers={"X-Relay-API-Key": os.environ["ZS_RELAY_KEY"]},
            timeout=10,
        )
        r.raise_for_status()
        return {"by": "handler, too late"}
    return {"by": "handler", "cmd": payload["cmd"], "args": payload["payload"]}
"""


async def _create_admin(settings: Settings) -> None:
    async with testing.running_hub(settings) as hub:
        await hub.identity.create_user("admin", "Admin-pass-1", role="admin")


def test_a_zhongshu_worker_serves_as_the_child(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}",
        relay_enabled=True,
        relay_api_keys=[KEY],
    )
    asyncio.run(_create_admin(settings))
    (tmp_path / "zs_relay_child.py").write_text(textwrap.dedent(CHILD_HANDLERS))
    runs = tmp_path / "runs.txt"
    with (
        testing.served_hub(settings) as served,
        httpx.Client(base_url=served.url, timeout=30, trust_env=False) as c,
    ):
        r = c.post("/api/v1/auth/login", json={"username": "admin", "password": "Admin-pass-1"})
        admin = {"authorization": f"Bearer {r.json()['access_token']}"}
        r = c.post("/api/v1/nodes", json={"name": "child_bazi", "capacity": 4}, headers=admin)
        assert r.status_code == 201, r.text
        creds = r.json()["credentials"]
        worker = Proc("worker", tmp_path / "worker.log")
        env = clean_env(
            PYTHONPATH=os.pathsep.join([str(tmp_path), *sys.path]),
            ZHONGSHU_WORKER_KEY=creds["access_key"],
            ZHONGSHU_WORKER_SECRET=creds["secret_key"],
            ZS_RELAY_RUNS=str(runs),
            ZS_RELAY_URL=served.url,
            ZS_RELAY_KEY=KEY,
        )
        args = [
            *ZHONGSHU,
            "worker",
            "--hub",
            served.url,
            "--handlers",
            "zs_relay_child",
            "--journal",
            str(tmp_path / "journal.db"),
            "--capability",
            "child_bazi",
            "--grace",
            "0.5",
        ]
        worker._spawn(args, env)
        try:
            ids = {}
            for cmd in ("verify_chart", "call_back"):
                body = {"from": "master", "to": "child_bazi", "type": "task", "cmd": cmd}
                r = c.post(
                    "/api/relay/send",
                    json={**body, "payload": {"user_id": "u123"}},
                    headers={"X-Relay-API-Key": KEY},
                )
                assert r.status_code == 200, r.text
                ids[cmd] = r.json()["task_id"]

            def finished() -> bool:
                if not worker.alive:
                    raise AssertionError(f"the worker exited\n{worker.tail()}")
                states = [c.get(f"/api/relay/task-status/{t}").json() for t in ids.values()]
                return all(s["task_status"] == "completed" for s in states)

            wait_for(finished, 30, "both relay tasks to complete")
            # Let the late handler result of the self-reporting child reach the hub.
            time.sleep(0.5)
        finally:
            worker.kill()
        r = c.get(f"/api/v1/tasks/{ids['verify_chart']}", headers=admin)
        assert r.json()["result"] == {
            "by": "handler",
            "cmd": "verify_chart",
            "args": {"user_id": "u123"},
        }
        r = c.get(f"/api/v1/tasks/{ids['call_back']}", headers=admin)
        assert r.json()["result"] == {"by": "callback"}
        # A callback for the task the worker finished is acknowledged, not applied.
        r = c.post(
            "/api/relay/callback",
            json={"task_id": ids["verify_chart"], "child_id": "x", "status": "failed"},
            headers={"X-Relay-API-Key": KEY},
        )
        assert r.status_code == 200 and r.json()["applied"] is False
        logs = c.get("/api/relay/logs", params={"limit": 100}).json()["logs"]
    finished_by = Counter(
        (e["task_id"], e["event"]) for e in logs if e["event"] in ("result", "callback")
    )
    assert finished_by == Counter(
        {(ids["verify_chart"], "result"): 1, (ids["call_back"], "callback"): 1}
    )
    assert Counter(runs.read_text().split()) == Counter(ids.values())
