"""Abuse limits: exponential lockout per username, key and client IP; 429 with Retry-After;
recovery; no user enumeration."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from identity_support import PASSWORD, audit_rows, hub_client, make_key, make_user

from zhongshu.config import Settings


@pytest.fixture
async def strict(
    db_url: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    settings = make_settings(
        database_url=db_url,
        auth_max_failures=3,
        auth_ip_max_failures=8,
        auth_lockout_base_s=0.5,
        auth_lockout_cap_s=2.0,
    )
    async with hub_client(settings) as pair:
        yield pair


async def _login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    return await client.post(
        "/api/v1/auth/login", json={"username": username, "password": password}
    )


async def test_login_failures_lock_the_username_then_recover(
    strict: tuple[Any, httpx.AsyncClient],
) -> None:
    _, client = strict
    user = await make_user(client)
    for _ in range(3):
        assert (await _login(client, user.username, "Wrong-pass-1")).status_code == 401
    r = await _login(client, user.username, PASSWORD)  # even the right password waits
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert "try again in" in r.json()["detail"]
    # Lockouts grow exponentially while failures continue.
    await asyncio.sleep(0.6)
    assert (await _login(client, user.username, "Wrong-pass-1")).status_code == 401
    r = await _login(client, user.username, PASSWORD)
    assert r.status_code == 429
    await asyncio.sleep(1.1)
    r = await _login(client, user.username, PASSWORD)
    assert r.status_code == 200, r.text
    # Success resets the count.
    assert (await _login(client, user.username, "Wrong-pass-1")).status_code == 401
    assert (await _login(client, user.username, PASSWORD)).status_code == 200
    denied = await audit_rows(client, action="auth.login", outcome="denied")
    assert denied and denied[0]["detail"]["reason"] == "locked out"


async def test_unknown_and_known_usernames_look_the_same(
    strict: tuple[Any, httpx.AsyncClient],
) -> None:
    _, client = strict
    user = await make_user(client)
    known = [await _login(client, user.username, "Wrong-pass-1") for _ in range(4)]
    unknown = [await _login(client, "no-such-user", "Wrong-pass-1") for _ in range(4)]
    assert (
        [r.status_code for r in known] == [r.status_code for r in unknown] == [401, 401, 401, 429]
    )
    assert known[0].json() == unknown[0].json() == {"detail": "wrong username or password"}


async def test_failures_from_one_ip_across_usernames_lock_the_ip(
    strict: tuple[Any, httpx.AsyncClient],
) -> None:
    _, client = strict
    for i in range(8):
        assert (await _login(client, f"spray{i}", "Wrong-pass-1")).status_code == 401
    r = await _login(client, "spray-next", "Wrong-pass-1")
    assert r.status_code == 429 and "retry-after" in r.headers
    await asyncio.sleep(0.6)
    assert (await _login(client, "spray-last", "Wrong-pass-1")).status_code == 401


async def test_key_secret_guessing_is_limited(strict: tuple[Any, httpx.AsyncClient]) -> None:
    _, client = strict
    user = await make_user(client)
    key, key_headers = await make_key(client, user.headers, ["read"])
    wrong = {"authorization": f"AK-SK {key['access_key']}:SK{'x' * 32}"}
    for _ in range(3):
        assert (await client.get("/api/v1/tasks", headers=wrong)).status_code == 401
    r = await client.get("/api/v1/tasks", headers=key_headers)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    await asyncio.sleep(0.6)
    assert (await client.get("/api/v1/tasks", headers=key_headers)).status_code == 200


async def test_node_secret_guessing_is_limited(strict: tuple[Any, httpx.AsyncClient]) -> None:
    _, client = strict
    node = (await client.post("/api/v1/nodes", json={"name": "n"})).json()
    ak = node["credentials"]["access_key"]
    wrong = {"authorization": f"AK-SK {ak}:CS{'x' * 32}"}
    for _ in range(3):
        assert (
            await client.post("/api/v1/agent/heartbeat", json={}, headers=wrong)
        ).status_code == 401
    right = {"authorization": node["credentials"]["authorization"]}
    r = await client.post("/api/v1/agent/heartbeat", json={}, headers=right)
    assert r.status_code == 429
    await asyncio.sleep(0.6)
    r = await client.post("/api/v1/agent/register", json={}, headers=right)
    assert r.status_code == 200, r.text
    rows = await audit_rows(client, action="auth.node_key", outcome="failure")
    assert len(rows) == 3


async def test_confirm_failures_are_limited_too(strict: tuple[Any, httpx.AsyncClient]) -> None:
    _, client = strict
    user = await make_user(client)
    for _ in range(3):
        r = await client.post(
            "/api/v1/auth/confirm", json={"password": "Wrong-pass-1"}, headers=user.headers
        )
        assert r.status_code == 403
    r = await client.post("/api/v1/auth/confirm", json={"password": PASSWORD}, headers=user.headers)
    assert r.status_code == 429


# --- the limiter itself (no hub) ------------------------------------------------------------


def test_lockout_grows_exponentially_up_to_the_cap_and_expires_with_the_window() -> None:
    from zhongshu import errors
    from zhongshu.services.ratelimit import FailureLimiter, LockoutPolicy

    now = [1000.0]
    limiter = FailureLimiter(
        {"*": LockoutPolicy(max_failures=2, window_s=100, base_s=1, cap_s=5)}, clock=lambda: now[0]
    )
    waits = []
    for _ in range(6):
        limiter.fail(["user:a"])
        try:
            limiter.check(["user:a"])
            waits.append(0.0)
        except errors.TooManyRequests as exc:
            waits.append(exc.retry_after_s)
    assert waits == [0.0, 1.0, 2.0, 4.0, 5.0, 5.0]
    now[0] += 5.1
    limiter.check(["user:a"])  # the lock has passed
    limiter.check(["user:b", "ip:x"])  # others were never locked
    now[0] += 200  # past the window: the count starts again
    limiter.fail(["user:a"])
    limiter.check(["user:a"])
    limiter.succeed(["user:a"])
    assert "user:a" not in limiter._records
