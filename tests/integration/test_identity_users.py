"""User administration, self-service, roles, and bad input on both."""

from __future__ import annotations

import httpx
import pytest
from identity_support import ADMIN, PASSWORD, confirm, make_user


async def test_admin_creates_lists_shows_and_updates_users(client: httpx.AsyncClient) -> None:
    r = await client.post(
        "/api/v1/users",
        json={
            "username": "alice",
            "password": "Alice-pass-1",
            "role": "viewer",
            "display_name": "Alice",
            "email": "alice@example.com",
        },
    )
    assert r.status_code == 201, r.text
    alice = r.json()
    assert "password" not in str(alice) and "hash" not in str(alice)
    assert alice["role"] == "viewer" and alice["disabled"] is False
    r = await client.get("/api/v1/users", params={"role": "viewer"})
    assert [u["username"] for u in r.json()["items"]] == ["alice"]
    r = await client.get("/api/v1/users", params={"q": "lic"})
    assert r.json()["total"] == 1
    r = await client.get(f"/api/v1/users/{alice['id']}")
    assert r.json()["email"] == "alice@example.com"
    r = await client.patch(f"/api/v1/users/{alice['id']}", json={"display_name": "Alice B."})
    assert r.status_code == 200 and r.json()["display_name"] == "Alice B."
    r = await client.get("/api/v1/users/nope")
    assert r.status_code == 404


async def test_role_change_needs_confirmation_and_takes_effect(client: httpx.AsyncClient) -> None:
    user = await make_user(client, role="viewer")
    assert (
        await client.post("/api/v1/tasks", json={"kind": "echo"}, headers=user.headers)
    ).status_code == 403
    r = await client.put(f"/api/v1/users/{user.id}/role", json={"role": "user"})
    assert r.status_code == 403
    headers = await confirm(client, dict(client.headers), ADMIN[1])
    r = await client.put(f"/api/v1/users/{user.id}/role", json={"role": "user"}, headers=headers)
    assert r.status_code == 200 and r.json()["role"] == "user"
    r = await client.post("/api/v1/tasks", json={"kind": "echo"}, headers=user.headers)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("role", ["root", "Admin", "", "superuser", "viewer "])
async def test_unknown_roles_are_refused_with_the_valid_ones_named(
    client: httpx.AsyncClient, role: str
) -> None:
    r = await client.post(
        "/api/v1/users", json={"username": "bob", "password": PASSWORD, "role": role}
    )
    assert r.status_code == 422
    assert "admin, user, viewer" in r.json()["detail"]
    user = await make_user(client)
    headers = await confirm(client, dict(client.headers), ADMIN[1])
    r = await client.put(f"/api/v1/users/{user.id}/role", json={"role": role}, headers=headers)
    assert r.status_code == 422
    assert "admin, user, viewer" in r.json()["detail"]


@pytest.mark.parametrize(
    ("password", "says"),
    [
        ("short1A", "at least 8"),
        ("alllowercase", "mix at least two"),
        ("12345678", "well-known"),
        ("Password1", "well-known"),
        ("aaaaAAAA", "4 different"),
        ("x" * 300, "at most 256"),
        ("", "at least"),
    ],
)
async def test_weak_passwords_are_refused_with_a_clear_message(
    client: httpx.AsyncClient, password: str, says: str
) -> None:
    r = await client.post("/api/v1/users", json={"username": "bob", "password": password})
    assert r.status_code == 422, r.text
    assert says in r.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"username": "a b", "password": PASSWORD},
        {"username": "x" * 65, "password": PASSWORD},
        {"username": "bob", "password": PASSWORD, "email": "not-an-email"},
        {"username": "bob", "password": PASSWORD, "is_admin": True},
        {"username": 12, "password": PASSWORD},
        {"password": PASSWORD},
    ],
)
async def test_bad_user_input_is_422(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    r = await client.post("/api/v1/users", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


async def test_duplicate_username_is_409(client: httpx.AsyncClient) -> None:
    await make_user(client, name="carol")
    r = await client.post("/api/v1/users", json={"username": "carol", "password": PASSWORD})
    assert r.status_code == 409


async def test_the_last_admin_cannot_be_removed_or_demoted(client: httpx.AsyncClient) -> None:
    me = (await client.get("/api/v1/auth/whoami")).json()
    headers = await confirm(client, dict(client.headers), ADMIN[1])
    r = await client.put(f"/api/v1/users/{me['id']}/role", json={"role": "user"}, headers=headers)
    assert r.status_code == 409 and "last active admin" in r.json()["detail"]
    r = await client.delete(f"/api/v1/users/{me['id']}", headers=headers)
    assert r.status_code == 409
    r = await client.patch(f"/api/v1/users/{me['id']}", json={"disabled": True})
    assert r.status_code == 409


async def test_deleting_a_user_removes_their_keys(client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    r = await client.post(
        "/api/v1/api-keys", json={"name": "k", "scopes": ["read"]}, headers=user.headers
    )
    key_headers = {"authorization": r.json()["authorization"]}
    assert (await client.get("/api/v1/me", headers=key_headers)).status_code == 200
    headers = await confirm(client, dict(client.headers), ADMIN[1])
    assert (await client.delete(f"/api/v1/users/{user.id}", headers=headers)).status_code == 204
    assert (await client.get("/api/v1/me", headers=key_headers)).status_code == 401
    assert (await client.get(f"/api/v1/users/{user.id}")).status_code == 404


async def test_me_shows_and_changes_profile_and_preferences(client: httpx.AsyncClient) -> None:
    user = await make_user(client, role="viewer")
    r = await client.get("/api/v1/me", headers=user.headers)
    assert r.status_code == 200
    assert r.json()["username"] == user.username and r.json()["preferences"] == {}
    r = await client.patch(
        "/api/v1/me",
        json={"display_name": "Vee", "preferences": {"theme": "dark", "page_size": 50}},
        headers=user.headers,
    )
    assert r.status_code == 200, r.text
    assert r.json()["display_name"] == "Vee"
    assert r.json()["preferences"] == {"theme": "dark", "page_size": 50}
    # Role is not self-service.
    r = await client.patch("/api/v1/me", json={"role": "admin"}, headers=user.headers)
    assert r.status_code == 422
    r = await client.patch(
        "/api/v1/me", json={"preferences": {"x": "y" * 20_000}}, headers=user.headers
    )
    assert r.status_code == 422


async def test_users_and_viewers_cannot_administer_users(client: httpx.AsyncClient) -> None:
    for role in ("user", "viewer"):
        actor = await make_user(client, role=role)
        r = await client.get("/api/v1/users", headers=actor.headers)
        assert r.status_code == 403
        r = await client.post(
            "/api/v1/users",
            json={"username": f"x{role}", "password": PASSWORD},
            headers=actor.headers,
        )
        assert r.status_code == 403
