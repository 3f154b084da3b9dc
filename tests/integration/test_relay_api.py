"""The Conversation Bus relay over HTTP, exactly as the seed's curl examples use it.

Real hub, real database (SQLite and PostgreSQL), the real app through an in-process ASGI
client; the node that holds a relay task speaks the real HTTP pull door.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from helpers import create_agent, fast_passwords, hub_client  # noqa: F401

from zhongshu.config import Settings

pytestmark = pytest.mark.timeout(60)

KEY = "relay-key-0123456789abcdef"
AUTH = {"X-Relay-API-Key": KEY}
Relay = tuple[Any, httpx.AsyncClient]


@contextlib.asynccontextmanager
async def relay_hub(settings: Settings) -> AsyncIterator[Relay]:
    async with hub_client(settings) as (hub, admin):
        yield hub, admin


@pytest.fixture
async def relay(db_url: str, make_settings: Callable[..., Settings]) -> AsyncIterator[Relay]:
    """A hub with the relay on, and a client logged in as admin (relay calls add the key)."""
    settings = make_settings(database_url=db_url, relay_enabled=True, relay_api_keys=[KEY])
    async with relay_hub(settings) as pair:
        yield pair


async def send(c: httpx.AsyncClient, **body: Any) -> str:
    body.setdefault("from", "master")
    body.setdefault("to", "child")
    body.setdefault("type", "task")
    r = await c.post("/api/relay/send", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"
    return str(r.json()["task_id"])


async def status_of(c: httpx.AsyncClient, task_id: str) -> str:
    r = await c.get(f"/api/relay/task-status/{task_id}", headers={"authorization": ""})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok" and body["task_id"] == task_id
    return str(body["task_status"])


async def logs(c: httpx.AsyncClient, limit: int = 50) -> list[dict[str, Any]]:
    r = await c.get("/api/relay/logs", params={"limit": limit}, headers={"authorization": ""})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"
    return r.json()["logs"]  # type: ignore[no-any-return]


async def test_the_seeds_curl_flow_send_status_callback_logs(relay: Relay) -> None:
    hub, c = relay
    # curl -X POST /api/relay/send -H "X-Relay-API-Key: …" -d '{"from":"master",…}'
    r = await c.post(
        "/api/relay/send",
        headers={**AUTH, "Content-Type": "application/json"},
        content='{"from":"master","to":"child","type":"task","cmd":"test"}',
    )
    assert r.status_code == 200, r.text
    assert set(r.json()) >= {"status", "task_id"} and r.json()["status"] == "ok"
    task_id = r.json()["task_id"]
    assert task_id.startswith("t_") and task_id.split("_")[1].isdigit()
    assert await status_of(c, task_id) == "pending"

    # A child calls back (the seed's callback body); the task is completed.
    result = {"summary": "命盘验证完成", "score": 0.85}
    body = {"task_id": task_id, "child_id": "child_bazi", "status": "done", "result": result}
    r = await c.post("/api/relay/callback", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ok",
        "task_id": task_id,
        "task_status": "completed",
        "applied": True,
    }
    assert await status_of(c, task_id) == "completed"

    # The same callback again is acknowledged, not applied twice.
    r = await c.post("/api/relay/callback", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["applied"] is False
    assert r.json()["task_status"] == "completed"

    r = await c.post("/api/relay/ack", json={"task_id": task_id, "ack_by": "user_1"}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"status": "ok", "task_id": task_id}

    # The conversation, from the append-only event log.
    entries = [e for e in await logs(c, 10) if e["task_id"] == task_id]
    assert [e["event"] for e in entries] == ["send", "callback", "callback_ignored", "ack"]
    sent, done, ignored, acked = entries
    assert (sent["from"], sent["to"], sent["type"], sent["cmd"]) == (
        "master",
        "child",
        "task",
        "test",
    )
    assert (done["child_id"], done["status"], done["result"]) == ("child_bazi", "done", result)
    assert ignored["task_status"] == "completed"
    assert acked["ack_by"] == "user_1"
    assert all(e["ts"].endswith("Z") for e in entries)

    # The core agrees: one task, succeeded once, with the child's result.
    task = await hub.tasks.get(task_id)
    assert (task["status"], task["result"], task["kind"]) == ("succeeded", result, "relay.task")
    r = await c.get("/api/v1/events", params={"subject_id": task_id, "type": "task.succeeded"})
    assert r.json()["total"] == 1


async def test_wrong_or_missing_key_is_401_and_reads_need_none(relay: Relay) -> None:
    _, c = relay
    body = {"from": "master", "to": "child", "type": "task", "cmd": "test"}
    for headers in ({}, {"X-Relay-API-Key": "wrong-key-0123456789abcdef"}):
        for path in ("/api/relay/send", "/api/relay/callback", "/api/relay/ack"):
            r = await c.post(path, json=body, headers={"authorization": "", **headers})
            assert r.status_code == 401, (path, r.text)
            assert r.json()["status"] == "error" and r.json()["message"]
    r = await c.post("/api/relay/send", json=body, headers={"authorization": "Bearer x"})
    assert r.status_code == 401
    # The key may come as ?api_key= too.
    r = await c.post("/api/relay/send", json=body, params={"api_key": KEY})
    assert r.status_code == 200, r.text
    assert await status_of(c, r.json()["task_id"]) == "pending"
    assert len(await logs(c)) == 1


async def test_missing_from_or_to_and_other_bad_input_is_400(relay: Relay) -> None:
    _, c = relay
    for body, missing in (
        ({"to": "child", "type": "task"}, "from"),
        ({"from": "master", "type": "task"}, "to"),
        ({"type": "task"}, "from, to"),
    ):
        r = await c.post("/api/relay/send", json=body, headers=AUTH)
        assert r.status_code == 400, r.text
        assert r.json()["status"] == "error"
        assert r.json()["message"] == f"missing required field(s): {missing}"
    bad = [
        ("/api/relay/send", b"{not json"),
        ("/api/relay/send", b"[1, 2]"),
        ("/api/relay/send", b'{"from": "m", "to": "c", "type": "telegram"}'),
        ("/api/relay/send", b'{"from": "m", "to": "", "type": "task"}'),
        ("/api/relay/send", b'{"from": "m", "to": "c", "task_id": "a b"}'),
        ("/api/relay/send", b'{"from": "m\\u0000", "to": "c"}'),
        ("/api/relay/callback", b'{"task_id": "t_1", "status": "maybe"}'),
        ("/api/relay/callback", b'{"status": "done"}'),
        ("/api/relay/ack", b"{}"),
    ]
    for path, raw in bad:
        r = await c.post(path, content=raw, headers=AUTH)
        assert r.status_code == 400, (path, raw, r.text)
        assert r.json()["status"] == "error" and r.json()["message"]
    r = await c.get("/api/relay/logs", params={"limit": "lots"})
    assert r.status_code == 400 and r.json()["status"] == "error"
    # Unknown tasks are 404 in the same shape.
    for path in ("/api/relay/callback", "/api/relay/ack"):
        r = await c.post(path, json={"task_id": "t_0_nope", "status": "done"}, headers=AUTH)
        assert r.status_code == 404 and r.json()["status"] == "error", r.text
    r = await c.get("/api/relay/task-status/t_0_nope")
    assert r.status_code == 404 and r.json()["status"] == "error"
    assert await logs(c) == []


async def test_the_seeds_concurrent_test_ten_parallel_sends(relay: Relay) -> None:
    hub, c = relay
    # curl -X POST … -d "{…\"cmd\":\"test_$i\"}" & — no JSON Content-Type, ten at once.
    raw = '{{"from":"master","to":"child","type":"task","cmd":"test_{}"}}'
    replies = await asyncio.gather(
        *(
            c.post(
                "/api/relay/send",
                content=raw.format(i),
                headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
            )
            for i in range(1, 11)
        )
    )
    assert [r.status_code for r in replies] == [200] * 10, [r.text for r in replies]
    ids = [r.json()["task_id"] for r in replies]
    assert len(set(ids)) == 10
    for task_id in ids:
        assert await status_of(c, task_id) == "pending"
    sent = [e for e in await logs(c) if e["event"] == "send"]
    assert sorted(e["cmd"] for e in sent) == sorted(f"test_{i}" for i in range(1, 11))
    rows, total = await hub.tasks.store.find(kind="relay.task", limit=100)
    assert total == 10 and {t["id"] for t in rows} == set(ids)


async def test_a_given_task_id_is_sent_once(relay: Relay) -> None:
    hub, c = relay
    body = {"from": "master", "to": "child", "type": "task", "task_id": "t_42", "cmd": "x"}
    replies = await asyncio.gather(
        *(c.post("/api/relay/send", json=body, headers=AUTH) for _ in range(5))
    )
    assert {r.status_code for r in replies} == {200}
    assert {r.json()["task_id"] for r in replies} == {"t_42"}
    assert sum(r.json()["created"] for r in replies) == 1
    _, total = await hub.tasks.store.find(kind="relay.task")
    assert total == 1
    # A task id of a task that is not the relay's is neither shown nor taken.
    r = await c.post("/api/v1/tasks", json={"kind": "echo"})
    other = r.json()["id"]
    assert (await c.get(f"/api/relay/task-status/{other}")).status_code == 404
    r = await c.post("/api/relay/send", json={**body, "task_id": other}, headers=AUTH)
    assert r.status_code == 409 and r.json()["status"] == "error"
    assert [e["event"] for e in await logs(c)] == ["send"]


async def test_a_callback_finishes_a_task_a_node_holds_and_its_late_result_is_refused(
    relay: Relay,
) -> None:
    hub, c = relay
    agent = await create_agent(c, register=["child"])
    task_id = await send(c, to="child", cmd="verify_chart", payload={"user_id": "u123"})
    (lease,) = await agent.lease(wait_s=2)
    assert lease["id"] == task_id and lease["kind"] == "relay.task"
    assert lease["payload"]["payload"] == {"user_id": "u123"}
    assert await agent.start(lease)
    assert await status_of(c, task_id) == "pending"  # running, to the seed

    body = {"task_id": task_id, "child_id": "child_x", "status": "failed", "result": {"e": 1}}
    r = await c.post("/api/relay/callback", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["applied"] is True
    assert r.json()["task_status"] == "failed"
    r = await c.get(f"/api/relay/task-status/{task_id}")
    assert r.json()["hub_status"] == "dead"

    late = await agent.result(lease, result={"too": "late"})
    assert late["accepted"] is False
    task = await hub.tasks.get(task_id)
    assert (task["status"], task["result"]) == ("dead", {"e": 1})
    (attempt,) = await hub.tasks.attempts(task_id)
    assert attempt["outcome"] == "external" and attempt["finished_at"] is not None
    entries = [e["event"] for e in await logs(c)]
    assert entries == ["send", "leased", "running", "callback"]


async def test_a_node_result_completes_a_relay_task_too(relay: Relay) -> None:
    _, c = relay
    agent = await create_agent(c, register=["child"])
    task_id = await send(c, type="message", text="你好")
    (lease,) = await agent.lease(wait_s=2)
    assert lease["kind"] == "relay.message" and lease["payload"]["text"] == "你好"
    assert (await agent.result(lease, result={"reply": "收到"}))["accepted"] is True
    assert await status_of(c, task_id) == "completed"
    r = await c.post(
        "/api/relay/callback", json={"task_id": task_id, "status": "done"}, headers=AUTH
    )
    assert r.status_code == 200 and r.json()["applied"] is False
    last = (await logs(c))[-2]
    assert (last["event"], last["status"], last["result"]) == ("result", "done", {"reply": "收到"})


async def test_relay_disabled_refuses_writes_with_a_clear_401(
    db_url: str, make_settings: Callable[..., Settings]
) -> None:
    async with relay_hub(make_settings(database_url=db_url)) as (_, c):
        r = await c.post("/api/relay/send", json={"from": "m", "to": "c"}, headers=AUTH)
        assert r.status_code == 401
        assert "ZHONGSHU_RELAY_API_KEYS" in r.json()["message"]
        assert (await c.get("/api/relay/logs")).json() == {"status": "ok", "logs": []}
