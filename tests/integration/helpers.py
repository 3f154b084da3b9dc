"""Helpers for the core-queue contract suite: a node speaking the HTTP pull door, task and
node factories, users with roles, and a hub started with custom settings.

Everything goes through the real HTTP API of a real hub on a real database.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from zhongshu import testing
from zhongshu.config import Settings

ADMIN = ("admin", "Admin-pass-1")
PASSWORD = "User-pass-1"
_names = itertools.count(1)

Json = dict[str, Any]


@pytest.fixture(autouse=True)
def fast_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real argon2, with the cheapest parameters: the default costs ~0.3-0.8 s per hash and
    verify, and every test creates and logs in users. Import this into a test module."""
    from zhongshu.services import identity

    monkeypatch.setattr(
        identity, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


def ts(iso: str) -> float:
    """Epoch seconds of an ISO time from the API (``…Z``)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def submit(client: httpx.AsyncClient, **fields: Any) -> Json:
    """Submit one task (kind ``echo`` unless given) and return it; must be created."""
    fields.setdefault("kind", "echo")
    r = await client.post("/api/v1/tasks", json=fields)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def get_task(client: httpx.AsyncClient, task_id: str) -> Json:
    r = await client.get(f"/api/v1/tasks/{task_id}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def task_events(client: httpx.AsyncClient, task_id: str) -> list[str]:
    """Event types recorded for a task, oldest first."""
    r = await client.get("/api/v1/events", params={"type": "task.", "subject_id": task_id})
    assert r.status_code == 200, r.text
    return [e["type"] for e in reversed(r.json()["items"])]


async def user_headers(
    hub: Any, client: httpx.AsyncClient, role: str = "user", name: str | None = None
) -> dict[str, str]:
    """Create a user with ``role`` and return the headers that act as them."""
    name = name or f"{role}{next(_names)}"
    await hub.identity.create_user(name, PASSWORD, role=role)
    r = await client.post("/api/v1/auth/login", json={"username": name, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return {"authorization": f"Bearer {r.json()['access_token']}"}


@dataclass
class Agent:
    """A node talking to the hub through the HTTP pull door (docs/protocol.md)."""

    client: httpx.AsyncClient
    node: Json
    access_key: str
    secret: str

    @property
    def id(self) -> str:
        return str(self.node["id"])

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"AK-SK {self.access_key}:{self.secret}"}

    async def post(self, path: str, body: Json | None = None) -> httpx.Response:
        return await self.client.post(f"/api/v1/agent{path}", json=body or {}, headers=self.headers)

    async def _ok(self, path: str, body: Json | None = None) -> Json:
        r = await self.post(path, body)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def register(
        self, capabilities: Iterable[str] = ("echo",), capacity: int | None = None
    ) -> Json:
        body: Json = {"capabilities": list(capabilities), "host": "test", "version": "t"}
        if capacity is not None:
            body["capacity"] = capacity
        return await self._ok("/register", body)

    async def heartbeat(self, running: Iterable[Json] = ()) -> Json:
        held = [{"task_id": t["id"], "lease_token": t["lease_token"]} for t in running]
        return await self._ok("/heartbeat", {"stats": {"running": len(held)}, "running": held})

    async def lease(self, max_tasks: int = 1, wait_s: float = 0.0) -> list[Json]:
        body = await self._ok("/lease", {"max_tasks": max_tasks, "wait_s": wait_s})
        return body["tasks"]  # type: ignore[no-any-return]

    async def start(self, lease: Json) -> bool:
        body = await self._ok(f"/tasks/{lease['id']}/start", {"lease_token": lease["lease_token"]})
        return bool(body["accepted"])

    async def result(self, lease: Json, status: str = "succeeded", **fields: Any) -> Json:
        body = {"lease_token": lease["lease_token"], "status": status, **fields}
        return await self._ok(f"/tasks/{lease['id']}/result", body)


async def create_agent(
    client: httpx.AsyncClient,
    *,
    name: str | None = None,
    capabilities: Iterable[str] = (),
    capacity: int = 8,
    register: Iterable[str] | None = ("echo",),
    advertised_capacity: int | None = None,
) -> Agent:
    """Create a node as admin; register it advertising ``register`` unless that is None."""
    r = await client.post(
        "/api/v1/nodes",
        json={
            "name": name or f"node-{next(_names)}",
            "capabilities": list(capabilities),
            "capacity": capacity,
        },
    )
    assert r.status_code == 201, r.text
    body = r.json()
    creds = body["credentials"]
    agent = Agent(client, body, creds["access_key"], creds["secret_key"])
    if register is not None:
        await agent.register(register, advertised_capacity)
    return agent


@pytest.fixture
async def served(served_settings: Settings) -> AsyncIterator[testing.ServedHub]:
    """A hub with ``ADMIN``, served by uvicorn on a loopback port. Import this (and ``api``)
    into a test module that defines a ``served_settings`` fixture."""
    # The admin is created through the services before the server starts: the served hub
    # runs its own event loop in another thread.
    async with testing.running_hub(served_settings) as h:
        await h.identity.create_user(*ADMIN, role="admin")
    with testing.served_hub(served_settings) as s:
        yield s


@pytest.fixture
async def api(served: testing.ServedHub) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of the served hub, logged in as ``ADMIN``."""
    async with httpx.AsyncClient(base_url=served.url, timeout=10) as client:
        await login(client)
        yield client


@contextlib.asynccontextmanager
async def hub_client(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """A started hub with custom settings and an in-process client logged in as admin."""
    from zhongshu.app import create_app

    async with testing.running_hub(settings) as hub:
        await hub.identity.create_user(*ADMIN, role="admin")
        transport = httpx.ASGITransport(app=create_app(settings, hub=hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            await login(client)
            yield hub, client


async def login(client: httpx.AsyncClient, user: tuple[str, str] = ADMIN) -> None:
    r = await client.post("/api/v1/auth/login", json={"username": user[0], "password": user[1]})
    assert r.status_code == 200, r.text
    client.headers["authorization"] = f"Bearer {r.json()['access_token']}"
