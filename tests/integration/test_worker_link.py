"""The worker side of the HisCRM master surface, with a real ``Worker`` against a served
hub: assigned accounts (with credentials) reach handlers, a QR login runs the platform's
``<platform>.login`` handler, monitor tasks sync collected data through ``ctx.hub.sync``
(Socket.IO and HTTP), and a delta gap comes back as ``SyncRefused(resync=True)``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import helpers
import httpx
import pytest
import segno

from zhongshu import testing
from zhongshu.config import Settings
from zhongshu.testing import wait_until
from zhongshu.worker.link import HubLink, SyncRefused
from zhongshu.worker.registry import HandlerRegistry, TaskContext
from zhongshu.worker.runtime import Worker

pytestmark = pytest.mark.timeout(60)
QR = segno.make("https://demo.example/scan/link").png_data_uri(scale=2)
COOKIE = "link-cookie-0a1b2c"


@pytest.fixture
def served_settings(db_url: str, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        database_url=db_url, assignment_tick_s=0.2, monitor_tick_s=0.2, login_watch_interval_s=0.1
    )


served = helpers.served
api = helpers.api


def registry(seen: dict[str, Any]) -> HandlerRegistry:
    reg = HandlerRegistry()

    async def login(ctx: TaskContext, request: dict[str, Any]) -> dict[str, Any]:
        seen["login_request"] = request
        await ctx.hub.emit_qrcode(QR)
        return {
            "status": "success",
            "cookies": [{"name": "sid", "value": COOKIE}],
            "user_info": {"nickname": "link"},
        }

    async def monitor(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        source_id = payload["account_id"]
        account = ctx.hub.account(source_id)
        seen.setdefault("cookies", []).append(account["credentials"]["cookies"][0]["value"])
        data = {
            "contents": [{"id": "p1", "title": "Post"}],
            "comments": [
                {"id": f"c{i}", "content_id": "p1", "text": f"hi {i}", "author_name": "fan"}
                for i in range(3)
            ],
        }
        ack = await ctx.hub.sync(source_id, "demo", data)
        return {"ack": ack}

    reg.register("demo.login", login)
    reg.register("demo.monitor", monitor)
    return reg


@pytest.fixture
async def run_worker(
    served: testing.ServedHub, api: httpx.AsyncClient, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(reg: HandlerRegistry, transport: str = "socketio") -> tuple[Worker, str]:
        r = await api.post("/api/v1/nodes", json={"name": f"link-{transport}"})
        creds = r.json()["credentials"]
        w = Worker(
            served.url,
            creds["access_key"],
            creds["secret_key"],
            journal_path=tmp_path / f"{transport}.db",
            registry=reg,
            capabilities=["demo"],
            concurrency=2,
            transport=transport,
            http_wait_s=0.5,
        )
        started.append((w, asyncio.create_task(w.run())))
        await wait_until(lambda: w.node_id, timeout_s=10)
        return w, w.node_id

    yield start
    for w, task in started:
        w.request_stop()
        w.request_stop()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


async def _stats(api: httpx.AsyncClient, source_id: str) -> dict[str, int]:
    stats = (await api.get("/api/im/stats")).json()["data"]
    for a in stats["accounts"]:
        if a["account_id"] == source_id:
            return a["items"]  # type: ignore[no-any-return]
    return {}


async def test_accounts_login_and_monitor_sync_through_a_real_worker(
    api: httpx.AsyncClient, run_worker: Callable[..., Any]
) -> None:
    seen: dict[str, Any] = {}
    worker, node_id = await run_worker(registry(seen))
    r = await api.post(
        "/api/v1/sources", json={"platform": "demo", "name": "linked", "monitor_interval_s": 1}
    )
    source = r.json()
    await wait_until(lambda: source["id"] in worker.accounts, timeout_s=10)
    assert worker.accounts[source["id"]]["assigned_worker_id"] == node_id

    r = await api.post(f"/api/v1/sources/{source['id']}/login", json={})
    assert r.status_code == 201, r.text

    async def logged_in() -> bool:
        row = (await api.get(f"/api/v1/sources/{source['id']}")).json()
        return bool(row["login_status"] == "logged_in")

    await wait_until(logged_in, timeout_s=10)
    assert seen["login_request"]["account_id"] == source["id"]
    session = (await api.get(f"/api/v1/login-sessions/{r.json()['session_id']}")).json()
    assert session["status"] == "success" and session["qr_code_data"] == QR

    # After the login, the hub re-sends the account with its credentials; the monitor
    # handler uses them and syncs what it collected.
    async def synced() -> bool:
        return (await _stats(api, source["id"])).get("comments") == 3

    await wait_until(synced, timeout_s=15)
    assert COOKIE in seen["cookies"]
    r = await api.get("/api/v1/comments", params={"account_id": source["id"]})
    assert sorted(c["content"] for c in r.json()["comments"]) == ["hi 0", "hi 1", "hi 2"]


@pytest.mark.parametrize("transport", ["socketio", "http"])
async def test_sync_acks_and_delta_gaps_reach_the_handler(
    api: httpx.AsyncClient, run_worker: Callable[..., Any], transport: str
) -> None:
    worker, node_id = await run_worker(HandlerRegistry(), transport)
    r = await api.post("/api/v1/sources", json={"platform": "demo", "name": f"d-{transport}"})
    source_id = r.json()["id"]

    async def assigned() -> bool:
        row = (await api.get(f"/api/v1/sources/{source_id}")).json()
        return bool(row["assigned_node_id"] == node_id)

    await wait_until(assigned, timeout_s=10)
    link = HubLink(worker)  # what a handler gets as ctx.hub
    msgs = {"messages": [{"id": "m1", "conversation_id": "cv", "text": "hello"}]}
    ack = await link.sync(source_id, "demo", msgs, mode="delta", seq=1)
    assert ack["success"] is True and ack["lastSeq"] == 1
    again = await link.sync(source_id, "demo", msgs, mode="delta", seq=1)
    assert again["duplicate"] is True
    with pytest.raises(SyncRefused) as refused:
        await link.sync(source_id, "demo", msgs, mode="delta", seq=5)
    assert refused.value.resync is True
    with pytest.raises(SyncRefused) as bad:
        await link.sync(source_id, "demo", {"messages": [{"text": "no id"}]})
    assert bad.value.resync is False and "id" in str(bad.value)
