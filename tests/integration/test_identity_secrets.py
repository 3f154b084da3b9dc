"""After creation, no API response, log line or database column holds a secret in clear."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from identity_support import PASSWORD, confirm, hub_client, login, make_user

from zhongshu.config import Settings
from zhongshu.db.schema import metadata


async def _make_secrets(client: httpx.AsyncClient) -> tuple[list[str], list[httpx.Response]]:
    """Exercise every secret-bearing flow; returns the secrets and the later responses."""
    secrets: list[str] = [PASSWORD, "Second-pass-22"]
    user = await make_user(client, name="secretive")
    tokens = await login(client, user.username, PASSWORD)
    secrets += [tokens["refresh_token"], user.refresh_token]
    r = await client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    secrets.append(r.json()["refresh_token"])
    headers = await confirm(client, user.headers, PASSWORD)
    secrets.append(headers["X-Confirm-Token"])
    r = await client.post(
        "/api/v1/api-keys", json={"name": "k", "scopes": ["read", "write"]}, headers=user.headers
    )
    key = r.json()
    secrets.append(key["secret_key"])
    key_headers = {"authorization": key["authorization"]}
    assert (await client.get("/api/v1/tasks", headers=key_headers)).status_code == 200
    # A failed attempt with a wrong secret must not log or store the guess either.
    guess = "SK" + "Q" * 32
    secrets.append(guess)
    await client.get(
        "/api/v1/tasks", headers={"authorization": f"AK-SK {key['access_key']}:{guess}"}
    )
    await client.post(
        "/api/v1/auth/login", json={"username": user.username, "password": "Guessed-pass-1"}
    )
    secrets.append("Guessed-pass-1")
    r = await client.post("/api/v1/nodes", json={"name": "n"})
    node = r.json()
    secrets.append(node["credentials"]["secret_key"])
    admin_confirm = await confirm(client, dict(client.headers), "Admin-pass-1")
    r = await client.post(f"/api/v1/nodes/{node['id']}/credentials", headers=admin_confirm)
    secrets.append(r.json()["credentials"]["secret_key"])
    r = await client.post(
        "/api/v1/me/password",
        json={"old_password": PASSWORD, "new_password": "Second-pass-22"},
        headers=user.headers,
    )
    assert r.status_code == 200, r.text

    later = [
        await client.get("/api/v1/api-keys"),
        await client.get(f"/api/v1/api-keys/{key['id']}"),
        await client.get("/api/v1/nodes"),
        await client.get(f"/api/v1/nodes/{node['id']}"),
        await client.get("/api/v1/users"),
        await client.get("/api/v1/me"),
        await client.get("/api/v1/audit", params={"limit": 1000}),
        await client.get("/api/v1/audit/export"),
        await client.get("/api/v1/events", params={"limit": 1000}),
    ]
    for r in later:
        assert r.status_code == 200, r.text
    return secrets, later


async def _all_rows_as_text(hub: object) -> str:
    out = []
    async with hub.db.engine.connect() as conn:  # type: ignore[attr-defined]
        for table in metadata.sorted_tables:
            for row in await conn.execute(sa.select(table)):
                out.append(repr(tuple(row)))
    return "\n".join(out)


async def test_secrets_appear_nowhere_after_creation(
    db_url: str, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with hub_client(make_settings(database_url=db_url)) as (hub, client):
        secrets, later = await _make_secrets(client)
        await hub.audit.flush()
        stored = await _all_rows_as_text(hub)
        for secret in secrets:
            for r in later:
                assert secret not in r.text, (secret[:6], str(r.request.url))
            assert secret not in stored, secret[:6]
            assert secret not in caplog.text, secret[:6]
        assert "api_keys" in {t.name for t in metadata.sorted_tables}

        if db_url.startswith("sqlite"):
            path = Path(db_url.split(":///", 1)[1])
            blobs = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
            assert len(blobs) > 10_000
            for secret in secrets:
                assert secret.encode() not in blobs, secret[:6]
