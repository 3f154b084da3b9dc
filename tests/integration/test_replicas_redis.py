"""Two hub replicas on one PostgreSQL database, joined by Redis.

A worker connected to replica B must hear what replica A decides (its source assignment,
a QR login started through A's API), and an admin watching A's ``/admin`` must see what
the worker reports to B. Real uvicorn servers, real Socket.IO clients, real Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import segno
import socketio
from cryptography.fernet import Fernet
from helpers import ADMIN, login

from zhongshu import testing
from zhongshu.config import Settings
from zhongshu.testing import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(90)]
QR = segno.make("https://demo.example/scan/replicas").png_data_uri(scale=2)


@pytest.fixture
def pg_url() -> Iterator[str]:
    if not testing.postgres_available():
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432")
    url = asyncio.run(testing.create_pg_database())
    yield url
    asyncio.run(testing.drop_pg_database(url))


@pytest.fixture
def replicas(
    pg_url: str,
    redis_settings: dict[str, str],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> Iterator[tuple[testing.ServedHub, testing.ServedHub]]:
    shared: dict[str, Any] = {
        "database_url": pg_url,
        # Replicas share their secrets: tokens and sealed credentials work on either.
        "encryption_keys": [Fernet.generate_key().decode()],
        "assignment_tick_s": 0.3,
        "monitor_tick_s": 3600,
        **redis_settings,
    }
    a = make_settings(data_dir=tmp_path / "a", **shared)
    b = make_settings(data_dir=tmp_path / "b", **shared)

    async def bootstrap() -> None:
        async with testing.running_hub(a) as h:
            await h.identity.create_user(*ADMIN, role="admin")

    asyncio.run(bootstrap())
    with testing.served_hub(a) as hub_a, testing.served_hub(b) as hub_b:
        yield hub_a, hub_b


class Recorder:
    def __init__(self, url: str, ns: str) -> None:
        self.url, self.ns = url, ns
        self.got: list[tuple[str, Any]] = []
        self.sio = socketio.AsyncClient(reconnection=False)

        async def record(event: str, *args: Any) -> None:
            self.got.append((event, args[0] if args else None))

        self.sio.on("*", record, namespace=ns)

    async def connect(self, auth: dict[str, str]) -> None:
        await self.sio.connect(
            self.url, namespaces=[self.ns], auth=auth, transports=["websocket"], wait_timeout=10
        )

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, namespace=self.ns, timeout=10)

    async def wait(self, event: str, timeout_s: float = 10) -> Any:
        def seen() -> Any:
            return next((d for e, d in self.got if e == event), None)

        return await wait_until(seen, timeout_s=timeout_s)


@pytest.fixture
async def api_a(
    replicas: tuple[testing.ServedHub, testing.ServedHub],
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=replicas[0].url, timeout=10) as client:
        await login(client)
        yield client


async def test_a_worker_on_one_replica_hears_what_another_decides(
    replicas: tuple[testing.ServedHub, testing.ServedHub], api_a: httpx.AsyncClient
) -> None:
    hub_a, hub_b = replicas
    r = await api_a.post("/api/v1/nodes", json={"name": "on-b"})
    creds, node_id = r.json()["credentials"], r.json()["id"]
    worker = Recorder(hub_b.url, "/worker")
    admin = Recorder(hub_a.url, "/admin")
    beat: asyncio.Task[None] | None = None
    try:
        await worker.connect({"key": creds["access_key"], "secret": creds["secret_key"]})
        await worker.call("worker:register", {"capabilities": ["demo"], "capacity": 2})

        async def heartbeat() -> None:
            while worker.sio.connected:
                await worker.sio.emit("worker:heartbeat", {"stats": {}}, namespace="/worker")
                await asyncio.sleep(0.3)

        beat = asyncio.get_running_loop().create_task(heartbeat())
        token = api_a.headers["authorization"].split(" ", 1)[1]
        await admin.connect({"token": token})
        # Replica A learns (through Redis) that the node is connected to B.
        conns_a = hub_a.app.fastapi.state.worker_connections
        await wait_until(lambda: conns_a.is_connected(node_id), timeout_s=10)
        assert node_id not in conns_a.sids

        # A source created through A is assigned to the node and B's socket carries it.
        r = await api_a.post("/api/v1/sources", json={"platform": "demo", "name": "x"})
        assert r.status_code == 201, r.text
        source = r.json()
        assign = await worker.wait("master:task:assign")
        assert [acc["id"] for acc in assign["accounts"]] == [source["id"]]

        # A QR login started through A reaches the worker on B ...
        started = time.monotonic()
        r = await api_a.post(f"/api/v1/sources/{source['id']}/login", json={})
        assert r.status_code == 201, r.text
        session_id = r.json()["session_id"]
        start = await worker.wait("master:login:start")
        assert start["session_id"] == session_id
        # ... and what the worker reports to B reaches the admin watching A.
        ack = await worker.call(
            "worker:login:qrcode", {"session_id": session_id, "qr_code_data": QR}
        )
        assert ack["ok"] is True, ack
        ready = await admin.wait("login:qrcode:ready")
        assert ready["session_id"] == session_id and ready["qr_code_data"] == QR
        await worker.call(
            "worker:login:status",
            {
                "session_id": session_id,
                "status": "success",
                "cookies": [{"name": "sid", "value": "cookie-on-b"}],
                "user_info": {"nickname": "b"},
            },
        )
        success = await admin.wait("login:success")
        assert success["session_id"] == session_id
        assert time.monotonic() - started < 10
        r = await api_a.get(f"/api/v1/sources/{source['id']}")
        assert r.json()["login_status"] == "logged_in"
    finally:
        if beat is not None:
            beat.cancel()
        for c in (worker, admin):
            if c.sio.connected:
                await c.sio.disconnect()
    # Gone from B: after the presence refresh, A no longer counts it as connected.
    await wait_until(lambda: not conns_a.is_connected(node_id), timeout_s=10)


async def test_failed_logins_spread_over_replicas_lock_the_username_on_both(
    pg_url: str,
    redis_settings: dict[str, str],
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    """Guessing on two replicas gets the limit once, not once per replica."""
    from identity_support import hub_client

    shared: dict[str, Any] = {
        "database_url": pg_url,
        "encryption_keys": [Fernet.generate_key().decode()],
        "auth_max_failures": 4,
        "auth_ip_max_failures": 100,
        "auth_lockout_base_s": 30,
        **redis_settings,
    }
    a = make_settings(data_dir=tmp_path / "a", **shared)
    b = make_settings(data_dir=tmp_path / "b", **shared)
    async with hub_client(a) as (hub_a, api_a), testing.running_hub(b) as hub_b:
        from zhongshu.app import create_app

        transport = httpx.ASGITransport(app=create_app(b, hub=hub_b))
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as api_b:

            async def guess(client: httpx.AsyncClient) -> int:
                r = await client.post(
                    "/api/v1/auth/login", json={"username": ADMIN[0], "password": "wrong-1"}
                )
                return r.status_code

            # Two wrong guesses on each replica: under the limit of 4 on either alone.
            assert [await guess(api_a), await guess(api_b)] == [401, 401]
            assert [await guess(api_a), await guess(api_b)] == [401, 401]

            # The shared count crossed the limit (4): both replicas now refuse — B
            # learns of the lock within a pull, without a fifth guess of its own.
            async def locked_on(hub: Any) -> bool:
                try:
                    hub.limiter.check([f"user:{ADMIN[0]}"])
                except Exception:
                    return True
                return False

            await wait_until(lambda: locked_on(hub_a), timeout_s=10)
            await wait_until(lambda: locked_on(hub_b), timeout_s=10)
            for client in (api_a, api_b):
                r = await client.post(
                    "/api/v1/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]}
                )
                assert r.status_code == 429, r.text  # even the right password waits
                assert int(r.headers["retry-after"]) > 1
