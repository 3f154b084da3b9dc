"""Helpers for the identity tests: users with roles, API keys, step-up headers, and a hub
with custom settings. Everything goes through the real HTTP API of a real hub."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from zhongshu import testing
from zhongshu.config import Settings

ADMIN = ("admin", "Admin-pass-1")
PASSWORD = "User-pass-1"
_names = itertools.count(1)


@dataclass
class Actor:
    """A logged-in user (or a key) and the headers that act as them."""

    id: str
    username: str
    role: str
    headers: dict[str, str]
    refresh_token: str = ""
    password: str = PASSWORD
    extra: dict[str, Any] = field(default_factory=dict)


async def login(client: httpx.AsyncClient, username: str, password: str) -> dict[str, Any]:
    r = await client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def make_user(
    client: httpx.AsyncClient, role: str = "user", name: str | None = None
) -> Actor:
    """Create a user through the admin API (``client`` acts as admin) and log them in."""
    name = name or f"{role}-{next(_names)}"
    r = await client.post(
        "/api/v1/users", json={"username": name, "password": PASSWORD, "role": role}
    )
    assert r.status_code == 201, r.text
    tokens = await login(client, name, PASSWORD)
    return Actor(
        r.json()["id"],
        name,
        role,
        {"authorization": f"Bearer {tokens['access_token']}"},
        tokens["refresh_token"],
    )


async def confirm(
    client: httpx.AsyncClient, headers: dict[str, str], password: str
) -> dict[str, str]:
    """Headers plus a fresh X-Confirm-Token for the caller."""
    r = await client.post("/api/v1/auth/confirm", json={"password": password}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    return {**headers, body["header"]: body["confirm_token"]}


async def make_key(
    client: httpx.AsyncClient, headers: dict[str, str], scopes: list[str], **fields: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """Create an API key as the caller; returns it and the headers that use it."""
    r = await client.post(
        "/api/v1/api-keys",
        json={"name": fields.pop("name", "k"), "scopes": scopes, **fields},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    return body, {"authorization": body["authorization"]}


async def audit_rows(client: httpx.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/audit", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def hub_client(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """A started hub with custom settings and an in-process client logged in as admin."""
    from zhongshu.app import create_app

    async with testing.running_hub(settings) as hub:
        await hub.identity.create_user(*ADMIN, role="admin")
        transport = httpx.ASGITransport(app=create_app(settings, hub=hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            tokens = await login(client, *ADMIN)
            client.headers["authorization"] = f"Bearer {tokens['access_token']}"
            yield hub, client
