"""Bad input gets a clear 4xx, never a 5xx; who may read and change which task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from helpers import (  # noqa: F401
    create_agent,
    fast_passwords,
    get_task,
    hub_client,
    submit,
    user_headers,
)

from zhongshu.config import Settings

pytestmark = pytest.mark.timeout(60)


async def _post_raw(client: httpx.AsyncClient, path: str, content: bytes) -> httpx.Response:
    return await client.post(path, content=content, headers={"content-type": "application/json"})


# --- malformed and ill-typed bodies -------------------------------------------------------


MALFORMED = [b'{"kind": "echo",', b"not json", b"", b"[1, 2]", b'"echo"', b"null"]

WRONG_VALUES: list[tuple[dict[str, Any], str]] = [
    ({"kind": "echo", "priority": "high"}, "priority"),
    ({"kind": "echo", "priority": 1001}, "priority"),
    ({"kind": "echo", "priority": -1001}, "priority"),
    ({"kind": "echo", "priority": 1.5}, "priority"),
    ({"kind": "echo", "max_attempts": 0}, "max_attempts"),
    ({"kind": "echo", "max_attempts": 101}, "max_attempts"),
    ({"kind": "echo", "timeout_s": 0}, "timeout_s"),
    ({"kind": "echo", "timeout_s": -3}, "timeout_s"),
    ({"kind": "echo", "delay_s": -1}, "delay_s"),
    ({"kind": "echo", "run_at": "tomorrow"}, "run_at"),
    ({"kind": "echo", "payload": {"x": 1}, "tags": []}, "tags"),
    ({"kind": 12}, "kind"),
    ({"kind": ""}, "kind"),
    ({"kind": "has space"}, "kind"),
    ({"kind": "x" * 129}, "kind"),
    ({}, "kind"),
    ({"kind": "echo", "capability": ""}, "capability"),
    ({"kind": "echo", "idempotency_key": ""}, "idempotency_key"),
    ({"kind": "echo", "idempotency_key": "k" * 256}, "idempotency_key"),
    ({"kind": "echo", "callback_url": "ftp://example.com/x"}, "callback_url"),
    ({"kind": "echo", "callback_url": "javascript:alert(1)"}, "callback_url"),
    ({"kind": "echo", "callback_url": "not a url"}, "callback_url"),
]


async def test_malformed_or_non_object_json_is_422(client: httpx.AsyncClient) -> None:
    for content in MALFORMED:
        r = await _post_raw(client, "/api/v1/tasks", content)
        assert r.status_code == 422, (content, r.text)
        assert r.json()["detail"]
    r = await _post_raw(client, "/api/v1/tasks", b'{"kind": "echo",')
    assert "malformed JSON" in r.json()["detail"]


async def test_wrong_values_are_422_naming_the_field(client: httpx.AsyncClient) -> None:
    for body, field in WRONG_VALUES:
        r = await client.post("/api/v1/tasks", json=body)
        assert r.status_code == 422, (body, r.text)
        assert field in r.json()["detail"], (body, r.text)
    assert (await client.get("/api/v1/tasks")).json()["total"] == 0


async def test_boundary_values_are_accepted(client: httpx.AsyncClient) -> None:
    assert (await submit(client, priority=1000))["priority"] == 1000
    assert (await submit(client, priority=-1000))["priority"] == -1000
    t = await submit(client, callback_url="https://example.com/hook?x=1", delay_s=3600)
    assert t["callback_url"] == "https://example.com/hook?x=1"
    assert (await submit(client, callback_url="http://10.0.0.1:8080/cb", delay_s=3600))[
        "callback_url"
    ] == "http://10.0.0.1:8080/cb"


async def test_unknown_fields_are_422_naming_them(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/tasks", json={"kind": "echo", "prio": 3})
    assert r.status_code == 422
    assert "prio" in r.json()["detail"]
    assert "Extra inputs" in r.json()["detail"]
    r = await client.post(
        "/api/v1/tasks/batch", json={"tasks": [{"kind": "echo"}, {"kind": "echo", "colour": 1}]}
    )
    assert r.status_code == 422
    assert "tasks.1.colour" in r.json()["detail"]


async def test_start_time_must_be_unambiguous(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/tasks", json={"kind": "echo", "run_at": "2030-01-01T12:00:00"})
    assert r.status_code == 422
    assert "timezone" in r.json()["detail"]
    r = await client.post(
        "/api/v1/tasks", json={"kind": "echo", "run_at": "2030-01-01T12:00:00Z", "delay_s": 5}
    )
    assert r.status_code == 422
    assert "run_at" in r.json()["detail"] and "delay_s" in r.json()["detail"]
    assert (await client.get("/api/v1/tasks")).json()["total"] == 0


async def test_non_finite_numbers_in_the_payload_are_422(
    client: httpx.AsyncClient,
) -> None:
    # Python's JSON parser accepts these literals, but they are not JSON and PostgreSQL's
    # json type refuses them.
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        content = b'{"kind": "echo", "payload": {"x": ' + literal + b"}}"
        r = await _post_raw(client, "/api/v1/tasks", content)
        assert r.status_code == 422, (literal, r.text)
        assert "payload" in r.json()["detail"]


async def test_nul_character_in_a_text_field_is_422(
    client: httpx.AsyncClient,
) -> None:
    for field in ("idempotency_key", "capability"):
        r = await client.post("/api/v1/tasks", json={"kind": "echo", field: "a\x00b"})
        assert r.status_code == 422, (field, r.text)
        assert field in r.json()["detail"]
    r = await client.post("/api/v1/tasks", json={"kind": "echo", "payload": {"s": "a\x00b"}})
    assert r.status_code in (201, 422), r.text
    if r.status_code == 201:
        assert (await get_task(client, r.json()["id"]))["payload"] == {"s": "a\x00b"}


async def test_odd_values_from_a_node_are_refused_not_500(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    t = await submit(client)
    (lease,) = await agent.lease()
    for path, body in [
        ("start", {"lease_token": 2**70}),
        ("result", {"lease_token": 2**70, "status": "succeeded"}),
        ("result", {"lease_token": lease["lease_token"], "status": "failed", "error": "a\x00b"}),
        ("result", {"lease_token": lease["lease_token"], "status": "maybe"}),
    ]:
        r = await agent.post(f"/tasks/{t['id']}/{path}", body)
        assert r.status_code < 500, (body, r.text)
        if r.status_code == 200 and "error" not in body:
            assert r.json()["accepted"] is False, (body, r.text)


async def test_body_over_max_body_bytes_is_413(
    db_url: str, make_settings: Callable[..., Settings]
) -> None:
    async def chunks() -> Any:  # no Content-Length: the limit must count what arrives
        yield b'{"kind": "echo", "payload": "'
        for _ in range(10):
            yield b"x" * 512
        yield b'"}'

    async with hub_client(make_settings(database_url=db_url, max_body_bytes=2048)) as (_, client):
        r = await client.post("/api/v1/tasks", json={"kind": "echo", "payload": "x" * 4096})
        assert r.status_code == 413
        assert "max_body_bytes" in r.json()["detail"]
        r = await client.post(
            "/api/v1/tasks", content=chunks(), headers={"content-type": "application/json"}
        )
        assert r.status_code == 413
        small = await client.post("/api/v1/tasks", json={"kind": "echo", "payload": "x" * 100})
        assert small.status_code == 201
        assert (await client.get("/api/v1/tasks")).json()["total"] == 1


# --- authentication -----------------------------------------------------------------------


BAD_AUTHORIZATION = [
    None,
    "Bearer",
    "Bearer not-a-jwt",
    "Basic YWRtaW46eA==",
    "AK-SK nonsense",
    "AK-SK CN" + "a" * 32 + ":CS" + "b" * 32,
]


async def test_missing_or_invalid_authorization_is_401(client: httpx.AsyncClient) -> None:
    token = client.headers.pop("authorization")
    try:
        for authorization in BAD_AUTHORIZATION:
            headers = {} if authorization is None else {"authorization": authorization}
            for method, path in [("GET", "/api/v1/tasks"), ("POST", "/api/v1/tasks")]:
                r = await client.request(method, path, json={"kind": "echo"}, headers=headers)
                assert r.status_code == 401, (authorization, method, r.text)
                assert r.json()["detail"]
    finally:
        client.headers["authorization"] = token
    assert (await client.get("/api/v1/tasks")).json()["total"] == 0


async def test_wrong_node_secret_is_401_on_agent_endpoints(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    agent.secret = "CS" + "0" * 32
    for path in ("/register", "/heartbeat", "/lease"):
        r = await agent.post(path, {"wait_s": 0} if path == "/lease" else {})
        assert r.status_code == 401, (path, r.text)


async def test_node_and_user_credentials_only_open_their_own_door(
    client: httpx.AsyncClient,
) -> None:
    agent = await create_agent(client)
    r = await client.post("/api/v1/tasks", json={"kind": "echo"}, headers=agent.headers)
    assert r.status_code == 403
    r = await client.post("/api/v1/agent/lease", json={"wait_s": 0})
    assert r.status_code == 403
    assert "AK-SK" in r.json()["detail"]


# --- roles and ownership ------------------------------------------------------------------


async def test_viewer_may_read_but_not_write(hub: Any, client: httpx.AsyncClient) -> None:
    t = await submit(client)
    viewer = await user_headers(hub, client, role="viewer")
    assert (await client.get("/api/v1/tasks", headers=viewer)).status_code == 200
    for path, body in [
        ("/api/v1/tasks", {"kind": "echo"}),
        ("/api/v1/tasks/batch", {"tasks": [{"kind": "echo"}]}),
        (f"/api/v1/tasks/{t['id']}/cancel", None),
        (f"/api/v1/tasks/{t['id']}/retry", None),
    ]:
        r = await client.post(path, json=body, headers=viewer)
        assert r.status_code == 403, (path, r.text)
    assert (await get_task(client, t["id"]))["status"] == "pending"
    assert (await client.get("/api/v1/tasks")).json()["total"] == 1


async def test_user_sees_only_own_tasks(hub: Any, client: httpx.AsyncClient) -> None:
    admins = await submit(client)
    alice = await user_headers(hub, client)
    bob = await user_headers(hub, client)
    r = await client.post("/api/v1/tasks", json={"kind": "echo"}, headers=alice)
    assert r.status_code == 201
    alices = r.json()

    listed = (await client.get("/api/v1/tasks", headers=alice)).json()
    assert [t["id"] for t in listed["items"]] == [alices["id"]] and listed["total"] == 1
    assert (await client.get("/api/v1/tasks", headers=bob)).json()["total"] == 0
    for path in ("", "/cancel", "/retry"):
        method = "GET" if path == "" else "POST"
        r = await client.request(method, f"/api/v1/tasks/{admins['id']}{path}", headers=alice)
        assert r.status_code == 404, (path, r.text)
        r = await client.request(method, f"/api/v1/tasks/{alices['id']}{path}", headers=bob)
        assert r.status_code == 404, (path, r.text)
    assert (await get_task(client, alices["id"]))["status"] == "pending"
    # The admin sees everyone's tasks; the event log is for admins only.
    assert (await client.get("/api/v1/tasks")).json()["total"] == 2
    assert (await client.get("/api/v1/events", headers=alice)).status_code == 403
    # The owner may change their own task.
    r = await client.post(f"/api/v1/tasks/{alices['id']}/cancel", headers=alice)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
