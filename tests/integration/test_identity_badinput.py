"""Malformed credentials of every shape get a clear 4xx, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from identity_support import hub_client

from zhongshu.config import Settings

K32 = "A" * 32
MALFORMED = [
    "",
    " ",
    "Bearer",
    "Bearer ",
    "Bearer not.a.jwt",
    "Bearer " + "x" * 5000,
    "Basic dXNlcjpwYXNz",
    "Token abc",
    "bearer\tabc",
    "AK-SK",
    "AK-SK ",
    "AK-SK :",
    "AK-SK CN" + K32,
    "AK-SK CN" + K32 + ":",
    "AK-SK :CS" + K32,
    "AK-SK CN" + K32 + "CS" + K32,
    "AK-SK CN" + K32 + ";CS" + K32,
    "AK-SK CN" + K32 + ":SK" + K32,
    "AK-SK WK" + K32 + ":CS" + K32,
    "AK-SK WK" + K32 + ":SK" + "A" * 31,
    "AK-SK WK" + "A" * 33 + ":SK" + K32,
    "AK-SK XX" + K32 + ":SK" + K32,
    "AK-SK WK" + K32 + ":SK" + "A" * 31 + "!",
    "AK-SK WK" + K32 + ":SK" + K32 + ":extra",
    "AK-SK cn" + K32.lower() + ":cs" + K32.lower(),
    "AK-SK " + "CN" * 3000,
    "AK-SK WK" + "é" * 32 + ":SK" + K32,
    "Bearer é",
    "AKSK CN" + K32 + ":CS" + K32,
    "AK-SK  CN" + K32 + " : CS" + K32,
]


@pytest.fixture
async def lenient(
    db_url: str, make_settings: Callable[..., Settings]
) -> AsyncIterator[httpx.AsyncClient]:
    # Many failures from one IP on purpose: keep the lockout out of the way.
    settings = make_settings(database_url=db_url, auth_ip_max_failures=10_000)
    async with hub_client(settings) as (_, client):
        yield client


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/tasks"),
        ("GET", "/api/v1/auth/whoami"),
        ("POST", "/api/v1/agent/heartbeat"),
        ("GET", "/api/v1/audit"),
        ("POST", "/api/v1/api-keys"),
    ],
)
async def test_malformed_authorization_headers_are_4xx_with_a_message(
    lenient: httpx.AsyncClient, method: str, path: str
) -> None:
    problems = []
    for value in MALFORMED:
        headers = {"authorization": value.encode("utf-8")}  # raw bytes: non-ASCII too
        r = await lenient.request(method, path, headers=headers, json={})
        body: Any = r.json()
        if not (400 <= r.status_code < 500) or r.status_code in (404, 405):
            problems.append((value[:40], r.status_code, r.text[:200]))
        elif r.status_code in (401, 403) and not body.get("detail"):
            problems.append((value[:40], r.status_code, "no message"))
        elif r.status_code == 401 and len(body["detail"]) < 10:
            problems.append((value[:40], r.status_code, body["detail"]))
    assert not problems, problems


async def test_malformed_header_messages_name_the_problem(lenient: httpx.AsyncClient) -> None:
    async def detail(value: str | bytes) -> str:
        r = await lenient.get("/api/v1/tasks", headers={"authorization": value})
        assert r.status_code == 401, r.text
        return str(r.json()["detail"])

    assert "'<access key>:<secret>'" in await detail("AK-SK CN" + K32)
    assert "empty" in await detail("AK-SK CN" + K32 + ":")
    assert "CN (node key) or WK" in await detail("AK-SK XX" + K32 + ":SK" + K32)
    assert "secret must be SK" in await detail("AK-SK WK" + K32 + ":SK" + "A" * 31)
    assert "unknown scheme" in await detail("Basic dXNlcjpwYXNz")
    assert "longer than" in await detail("Bearer " + "x" * 5000)
    assert "ASCII" in await detail("Bearer \u00e9".encode())
    assert "nothing after" in await detail("Bearer")


async def test_bad_json_to_identity_endpoints_is_422(lenient: httpx.AsyncClient) -> None:
    for path in (
        "/api/v1/users",
        "/api/v1/api-keys",
        "/api/v1/auth/confirm",
        "/api/v1/auth/refresh",
    ):
        r = await lenient.post(path, content=b"{nope", headers={"content-type": "application/json"})
        assert r.status_code == 422, (path, r.text)
        assert "malformed JSON" in r.json()["detail"]
    r = await lenient.post("/api/v1/auth/login", json={"username": "a" * 100, "password": "x"})
    assert r.status_code == 422
    r = await lenient.post("/api/v1/auth/login", json={"username": "admin"})
    assert r.status_code == 422 and "password" in r.json()["detail"]
