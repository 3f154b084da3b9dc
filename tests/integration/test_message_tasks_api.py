"""Message tasks over HTTP: WeRSS field names, status 1/0, masking, ownership, bad input."""

from __future__ import annotations

import sqlite3
from typing import Any

import httpx
import pytest
from identity_support import make_user
from matrix_schedules import add_source

from zhongshu.services.message_tasks import parse_mps_id


def _body(source_id: str, **over: Any) -> dict[str, Any]:
    return {
        "name": "daily",
        "message_type": 0,
        "message_template": "{{feed.name}}: {{article.title}}",
        "web_hook_url": "https://hooks.example.test/x",
        "mps_id": [source_id],
        "cron_exp": "0 8 * * *",
        **over,
    }


async def test_crud_with_werss_fields_and_masked_secrets(
    hub: Any, client: httpx.AsyncClient, db_url: str
) -> None:
    me = (await client.get("/api/v1/auth/whoami")).json()
    src = await add_source(hub, me["id"])
    r = await client.post(
        "/api/v1/message-tasks",
        json=_body(
            src,
            headers={"Authorization": "Bearer very-secret-token"},
            cookies="session=cookie-value-abcdef",
        ),
    )
    assert r.status_code == 201, r.text
    mt = r.json()
    for field in (
        "name",
        "message_type",
        "message_template",
        "web_hook_url",
        "mps_id",
        "cron_exp",
        "status",
        "headers",
        "cookies",
    ):
        assert field in mt
    assert mt["status"] == 1 and mt["mps_id"] == [src]
    assert mt["headers"] == {"Authorization": "Bear****"}
    assert mt["cookies"] == "sess****"
    assert mt["next_run_at"] and mt["next_run_at"][11:19] == "08:00:00"

    r = await client.put(
        f"/api/v1/message-tasks/{mt['id']}", json={"status": 0, "cron_exp": "30 7 * * 1-5"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == 0 and r.json()["cron_exp"] == "30 7 * * 1-5"
    assert r.json()["headers"] == {"Authorization": "Bear****"}  # untouched
    r = await client.get("/api/v1/message-tasks", params={"status": 1})
    assert r.json()["total"] == 0
    r = await client.patch(f"/api/v1/message-tasks/{mt['id']}", json={"headers": None})
    assert r.status_code == 200 and r.json()["headers"] == {}

    if db_url.startswith("sqlite"):
        raw = sqlite3.connect(db_url.split(":///", 1)[1]).execute(
            "SELECT cookies FROM message_tasks"
        )
        stored = raw.fetchone()[0]
        assert stored.startswith("fernet:") and "cookie-value" not in stored

    r = await client.delete(f"/api/v1/message-tasks/{mt['id']}")
    assert r.status_code == 204
    assert (await client.get(f"/api/v1/message-tasks/{mt['id']}")).status_code == 404


async def test_mps_id_must_name_sources_the_owner_owns(hub: Any, client: httpx.AsyncClient) -> None:
    alice = await make_user(client)
    bob = await make_user(client)
    alices = await add_source(hub, alice.id)
    bobs = await add_source(hub, bob.id)
    r = await client.post("/api/v1/message-tasks", json=_body(bobs), headers=alice.headers)
    assert r.status_code == 422
    assert "mps_id" in r.json()["detail"] and bobs in r.json()["detail"]
    r = await client.post("/api/v1/message-tasks", json=_body("src_nope"), headers=alice.headers)
    assert r.status_code == 422
    r = await client.post("/api/v1/message-tasks", json=_body(alices), headers=alice.headers)
    assert r.status_code == 201
    mt = r.json()
    r = await client.put(
        f"/api/v1/message-tasks/{mt['id']}", json={"mps_id": [alices, bobs]}, headers=alice.headers
    )
    assert r.status_code == 422
    # Bob cannot see or run Alice's task.
    for method, path in (
        ("GET", f"/api/v1/message-tasks/{mt['id']}"),
        ("PUT", f"/api/v1/message-tasks/{mt['id']}"),
        ("POST", f"/api/v1/message-tasks/{mt['id']}/run"),
        ("DELETE", f"/api/v1/message-tasks/{mt['id']}"),
    ):
        r = await client.request(method, path, headers=bob.headers, json={})
        assert r.status_code == 404, (method, r.text)


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"cron_exp": "99 * * * *"}, "cron"),
        ({"cron_exp": "every day"}, "cron"),
        ({"timezone": "Not/AZone"}, "timezone"),
        ({"status": 2}, "status"),
        ({"message_type": 7}, "message_type"),
        ({"message_template": "{% for %}"}, "message_template"),
        ({"web_hook_url": "ftp://example.test/x"}, "web_hook_url"),
        ({"web_hook_url": "not a url"}, "web_hook_url"),
        ({"headers": {"X-Bad": "a\r\nInjected: 1"}}, "headers"),
        ({"headers": "Authorization: x"}, "headers"),
        ({"mps_id": 5}, "mps_id"),
        ({"name": ""}, "name"),
    ],
)
async def test_bad_input_is_4xx_with_a_message(
    hub: Any, client: httpx.AsyncClient, over: dict[str, Any], needle: str
) -> None:
    me = (await client.get("/api/v1/auth/whoami")).json()
    src = await add_source(hub, me["id"])
    r = await client.post("/api/v1/message-tasks", json=_body(src, **over))
    assert 400 <= r.status_code < 500, r.text
    assert needle in r.json()["detail"], r.text


def test_mps_id_accepts_the_werss_shapes() -> None:
    assert parse_mps_id(["a", "b", "a"]) == ["a", "b"]
    assert parse_mps_id([{"id": "a", "mp_name": "x"}]) == ["a"]
    assert parse_mps_id('[{"id": "a"}, {"id": "b"}]') == ["a", "b"]
    assert parse_mps_id("a, b") == ["a", "b"]
    assert parse_mps_id("") == []
