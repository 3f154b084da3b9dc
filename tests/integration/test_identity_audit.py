"""The audit log: rows for each audited action, filters, export, and a database that
refuses to change or delete them."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from identity_support import ADMIN, PASSWORD, audit_rows, confirm, make_key, make_user


async def test_logins_are_audited_success_and_failure(client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    r = await client.post(
        "/api/v1/auth/login", json={"username": user.username, "password": "Wrong-pass-1"}
    )
    assert r.status_code == 401
    r = await client.post(
        "/api/v1/auth/login", json={"username": "ghost", "password": "Wrong-pass-1"}
    )
    assert r.status_code == 401
    rows = await audit_rows(client, action="auth.login")
    outcomes = [(r["outcome"], r["detail"].get("username")) for r in rows]
    assert ("success", user.username) in outcomes
    assert ("failure", user.username) in outcomes
    assert ("failure", "ghost") in outcomes
    ok = next(r for r in rows if r["outcome"] == "success" and r["target_id"] == user.id)
    assert ok["actor"] == f"user:{user.id}"
    assert ok["client_ip"] == "127.0.0.1"
    assert ok["at"].endswith("Z")
    assert not any("Wrong-pass-1" in json.dumps(r) for r in rows)


async def test_user_key_and_node_changes_are_audited(client: httpx.AsyncClient) -> None:
    me = (await client.get("/api/v1/auth/whoami")).json()
    user = await make_user(client)
    await client.patch(f"/api/v1/users/{user.id}", json={"display_name": "U"})
    headers = await confirm(client, dict(client.headers), ADMIN[1])
    await client.put(f"/api/v1/users/{user.id}/role", json={"role": "viewer"}, headers=headers)
    key, _ = await make_key(client, user.headers, ["read"])
    await client.post(f"/api/v1/api-keys/{key['id']}/disable", headers=user.headers)
    await client.delete(f"/api/v1/api-keys/{key['id']}", headers=user.headers)
    node = (await client.post("/api/v1/nodes", json={"name": "n"})).json()
    await client.patch(f"/api/v1/nodes/{node['id']}", json={"capacity": 3})
    await client.post(f"/api/v1/nodes/{node['id']}/credentials", headers=headers)
    await client.delete(f"/api/v1/nodes/{node['id']}", headers=headers)
    await client.delete(f"/api/v1/users/{user.id}", headers=headers)

    rows = await audit_rows(client)
    actions = {(r["action"], r["target_id"]) for r in rows}
    for expected in [
        ("user.created", user.id),
        ("user.updated", user.id),
        ("user.role_changed", user.id),
        ("user.deleted", user.id),
        ("api_key.created", key["id"]),
        ("api_key.disabled", key["id"]),
        ("api_key.deleted", key["id"]),
        ("node.created", node["id"]),
        ("node.updated", node["id"]),
        ("node.credentials_rotated", node["id"]),
        ("node.deleted", node["id"]),
        ("auth.confirm", me["id"]),
    ]:
        assert expected in actions, expected
    role_row = next(r for r in rows if r["action"] == "user.role_changed")
    assert role_row["actor"] == f"user:{me['id']}"
    assert role_row["detail"] == {"username": user.username, "from": "user", "to": "viewer"}
    dump = json.dumps(rows)
    assert key["secret_key"] not in dump and PASSWORD not in dump


async def test_refusals_of_sensitive_operations_are_audited(client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    r = await client.delete(f"/api/v1/users/{user.id}")  # no confirmation
    assert r.status_code == 403
    r = await client.post(
        "/api/v1/users", json={"username": "x1", "password": PASSWORD}, headers=user.headers
    )
    assert r.status_code == 403
    rows = await audit_rows(client, action="access.denied")
    paths = {(r["detail"]["method"], r["detail"]["path"], r["outcome"]) for r in rows}
    assert ("DELETE", f"/api/v1/users/{user.id}", "denied") in paths
    assert ("POST", "/api/v1/users", "denied") in paths


async def test_filters_paging_and_export(client: httpx.AsyncClient) -> None:
    for i in range(3):
        await client.post(
            "/api/v1/auth/login", json={"username": f"nobody{i}", "password": "Wrong-pass-1"}
        )
    r = await client.get(
        "/api/v1/audit", params={"action": "auth.login", "outcome": "failure", "limit": 2}
    )
    body = r.json()
    assert body["total"] == 3 and len(body["items"]) == 2
    assert body["items"][0]["id"] > body["items"][1]["id"]  # newest first
    r = await client.get(
        "/api/v1/audit",
        params={"action": "auth.login", "outcome": "failure", "limit": 2, "offset": 2},
    )
    assert len(r.json()["items"]) == 1
    r = await client.get(
        "/api/v1/audit", params={"actor": "anonymous", "since": "2000-01-01T00:00:00Z"}
    )
    assert r.json()["total"] >= 3
    r = await client.get("/api/v1/audit", params={"until": "2000-01-01T00:00:00Z"})
    assert r.json()["total"] == 0
    r = await client.get("/api/v1/audit", params={"outcome": "maybe"})
    assert r.status_code == 422

    r = await client.get("/api/v1/audit/export", params={"action": "auth.login"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert len(lines) >= 4  # three failures and the fixture's admin login
    assert [x["id"] for x in lines] == sorted(x["id"] for x in lines)  # oldest first
    assert {x["action"] for x in lines} == {"auth.login"}


async def test_only_admins_read_the_audit_log(client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    for path in ("/api/v1/audit", "/api/v1/audit/export"):
        assert (await client.get(path, headers=user.headers)).status_code == 403
        assert (await client.get(path, headers={"authorization": ""})).status_code == 401


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE audit_log SET outcome = 'success'",
        "UPDATE audit_log SET detail = '{}' WHERE id = 1",
        "DELETE FROM audit_log",
        "DELETE FROM audit_log WHERE id = 1",
    ],
)
async def test_the_database_refuses_to_change_or_delete_audit_rows(
    hub: Any, client: httpx.AsyncClient, sql: str
) -> None:
    await client.post("/api/v1/auth/login", json={"username": "x", "password": "Wrong-pass-1"})
    before = await audit_rows(client)
    assert before
    with pytest.raises(sa.exc.DBAPIError) as info:
        async with hub.db.engine.begin() as conn:
            await conn.execute(sa.text(sql))
    assert "append-only" in str(info.value)
    after = await audit_rows(client)
    assert [(r["id"], r["outcome"], r["detail"]) for r in after[-len(before) :]] == [
        (r["id"], r["outcome"], r["detail"]) for r in before
    ]
    # Appending still works.
    async with hub.db.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO audit_log (at, actor, action, target_type, target_id, client_ip, "
                "outcome, detail) VALUES (1, 'system', 'test.append', '', '', '', 'success', '{}')"
            )
        )


async def test_no_api_changes_or_deletes_audit_rows(client: httpx.AsyncClient) -> None:
    for method in ("PUT", "PATCH", "DELETE", "POST"):
        r = await client.request(method, "/api/v1/audit")
        assert r.status_code == 405, (method, r.status_code)


def test_redact_masks_secrets_by_key_and_by_shape() -> None:
    from zhongshu.services.audit import redact

    secret = "SK" + "a" * 32
    jwt_like = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"
    out = redact(
        {
            "password": "p",
            "new_password": "p",
            "Authorization": "Bearer x",
            "refresh_token": "zsr_abc",
            "nested": {"api_key": "k", "note": f"leaked {secret} and {jwt_like}"},
            "list": [{"secret_key": "s"}, "zsr_abcdef"],
            "access_key": "WK" + "b" * 32,
            "count": 3,
        }
    )
    assert out["password"] == out["new_password"] == out["Authorization"] == "***"
    assert out["refresh_token"] == out["nested"]["api_key"] == "***"
    assert out["nested"]["note"] == "leaked *** and ***"
    assert out["list"] == [{"secret_key": "***"}, "***"]
    assert out["access_key"] == "WK" + "b" * 32  # the public half stays searchable
    assert out["count"] == 3
