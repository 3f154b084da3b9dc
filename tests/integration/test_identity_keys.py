"""User API keys end to end: create, use, scopes, modify, disable, expire, delete."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from identity_support import ADMIN, confirm, make_key, make_user


async def test_key_lifecycle_end_to_end(client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    key, key_headers = await make_key(client, user.headers, ["read", "write"], name="ci")
    assert key["access_key"].startswith("WK") and len(key["access_key"]) == 34
    assert key["secret_key"].startswith("SK") and len(key["secret_key"]) == 34
    assert key["last_used_at"] is None

    # It acts as its owner.
    r = await client.get("/api/v1/auth/whoami", headers=key_headers)
    assert r.status_code == 200 and r.json()["id"] == user.id
    r = await client.post("/api/v1/tasks", json={"kind": "echo"}, headers=key_headers)
    assert r.status_code == 201, r.text
    assert r.json()["owner_id"] == user.id

    # Listed with last use, never with the secret.
    r = await client.get("/api/v1/api-keys", headers=user.headers)
    (listed,) = r.json()["items"]
    assert listed["last_used_at"] is not None
    assert "secret_key" not in listed and key["secret_key"] not in r.text

    # Modify: name and scopes; losing "write" takes effect at once.
    r = await client.patch(
        f"/api/v1/api-keys/{key['id']}",
        json={"name": "ci-ro", "scopes": ["read"]},
        headers=user.headers,
    )
    assert r.status_code == 200 and r.json()["scopes"] == ["read"]
    r = await client.post("/api/v1/tasks", json={"kind": "echo"}, headers=key_headers)
    assert r.status_code == 403 and "'write' scope" in r.json()["detail"]

    # Disable / enable.
    r = await client.post(f"/api/v1/api-keys/{key['id']}/disable", headers=user.headers)
    assert r.json()["disabled"] is True
    r = await client.get("/api/v1/tasks", headers=key_headers)
    assert r.status_code == 401 and "disabled" in r.json()["detail"]
    await client.post(f"/api/v1/api-keys/{key['id']}/enable", headers=user.headers)
    assert (await client.get("/api/v1/tasks", headers=key_headers)).status_code == 200

    # Delete: refused from then on.
    r = await client.delete(f"/api/v1/api-keys/{key['id']}", headers=user.headers)
    assert r.status_code == 204
    r = await client.get("/api/v1/tasks", headers=key_headers)
    assert r.status_code == 401 and r.json()["detail"] == "invalid API key"
    assert (
        await client.get(f"/api/v1/api-keys/{key['id']}", headers=user.headers)
    ).status_code == 404


async def test_expired_keys_are_refused(client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    key, key_headers = await make_key(client, user.headers, ["read"], expires_in_s=1)
    assert key["expires_at"] is not None
    assert (await client.get("/api/v1/tasks", headers=key_headers)).status_code == 200
    await asyncio.sleep(1.1)
    r = await client.get("/api/v1/tasks", headers=key_headers)
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    r = await client.post(
        "/api/v1/api-keys",
        json={"name": "k", "expires_at": "2000-01-01T00:00:00Z"},
        headers=user.headers,
    )
    assert r.status_code == 422


async def test_a_wrong_secret_is_refused_without_saying_more(client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    key, _ = await make_key(client, user.headers, ["read"])
    wrong = {"authorization": f"AK-SK {key['access_key']}:SK{'A' * 32}"}
    r = await client.get("/api/v1/tasks", headers=wrong)
    assert r.status_code == 401 and r.json()["detail"] == "invalid API key"
    unknown = {"authorization": f"AK-SK WK{'B' * 32}:SK{'A' * 32}"}
    r = await client.get("/api/v1/tasks", headers=unknown)
    assert r.status_code == 401 and r.json()["detail"] == "invalid API key"


async def test_keys_of_a_disabled_owner_are_refused(client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    _, key_headers = await make_key(client, user.headers, ["read"])
    await client.patch(f"/api/v1/users/{user.id}", json={"disabled": True})
    r = await client.get("/api/v1/tasks", headers=key_headers)
    assert r.status_code == 401 and "owner" in r.json()["detail"]


async def test_a_key_never_exceeds_its_owners_role(client: httpx.AsyncClient) -> None:
    viewer = await make_user(client, role="viewer")
    r = await client.post(
        "/api/v1/api-keys", json={"name": "k", "scopes": ["read", "write"]}, headers=viewer.headers
    )
    assert r.status_code == 422 and "viewer" in r.json()["detail"]
    _, key_headers = await make_key(client, viewer.headers, ["read"])
    assert (await client.get("/api/v1/tasks", headers=key_headers)).status_code == 200
    r = await client.post("/api/v1/tasks", json={"kind": "echo"}, headers=key_headers)
    assert r.status_code == 403
    user = await make_user(client)
    _, user_key = await make_key(client, user.headers, ["read"])
    assert (await client.get("/api/v1/users", headers=user_key)).status_code == 403


@pytest.mark.parametrize("scopes", [[], ["admin"], ["read", "delete"], ["READ"]])
async def test_unknown_or_missing_scopes_are_422(
    client: httpx.AsyncClient, scopes: list[str]
) -> None:
    r = await client.post("/api/v1/api-keys", json={"name": "k", "scopes": scopes})
    assert r.status_code == 422, r.text
    assert "scope" in r.json()["detail"]


async def test_keys_cannot_manage_keys_or_sessions(client: httpx.AsyncClient) -> None:
    _, key_headers = await make_key(client, dict(client.headers), ["read", "write", "push"])
    for method, path in (
        ("GET", "/api/v1/api-keys"),
        ("POST", "/api/v1/api-keys"),
        ("POST", "/api/v1/auth/logout"),
        ("POST", "/api/v1/me/password"),
    ):
        r = await client.request(method, path, headers=key_headers, json={})
        assert r.status_code == 403, (method, path, r.text)
        assert "API keys cannot" in r.json()["detail"]


async def test_users_see_only_their_own_keys_admins_see_all(client: httpx.AsyncClient) -> None:
    alice = await make_user(client)
    bob = await make_user(client)
    a_key, _ = await make_key(client, alice.headers, ["read"])
    await make_key(client, bob.headers, ["read"])
    r = await client.get("/api/v1/api-keys", headers=bob.headers)
    assert all(k["owner_id"] == bob.id for k in r.json()["items"])
    for method in ("GET", "PATCH", "DELETE"):
        r = await client.request(
            method,
            f"/api/v1/api-keys/{a_key['id']}",
            headers=bob.headers,
            json={} if method == "PATCH" else None,
        )
        assert r.status_code == 404, (method, r.text)
    r = await client.post(f"/api/v1/api-keys/{a_key['id']}/disable", headers=bob.headers)
    assert r.status_code == 404
    r = await client.get("/api/v1/api-keys")
    assert {k["owner_id"] for k in r.json()["items"]} >= {alice.id, bob.id}
    r = await client.get("/api/v1/api-keys", params={"owner_id": alice.id})
    assert [k["id"] for k in r.json()["items"]] == [a_key["id"]]


async def test_admin_deleting_someone_elses_key_needs_confirmation(
    client: httpx.AsyncClient,
) -> None:
    user = await make_user(client)
    key, _ = await make_key(client, user.headers, ["read"])
    r = await client.delete(f"/api/v1/api-keys/{key['id']}")
    assert r.status_code == 403 and "X-Confirm-Token" in r.json()["detail"]
    headers = await confirm(client, dict(client.headers), ADMIN[1])
    assert (
        await client.delete(f"/api/v1/api-keys/{key['id']}", headers=headers)
    ).status_code == 204
    # Their own keys need no confirmation.
    own, _ = await make_key(client, dict(client.headers), ["read"])
    assert (await client.delete(f"/api/v1/api-keys/{own['id']}")).status_code == 204
