"""Sessions: refresh rotation and reuse detection, logout, revocation on password change
and disable, and step-up confirmation."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
from identity_support import ADMIN, PASSWORD, confirm, login, make_user


async def _refresh(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/api/v1/auth/refresh", json={"refresh_token": token})


async def _whoami(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    return (await client.get("/api/v1/auth/whoami", headers=headers)).status_code


def _bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"authorization": f"Bearer {tokens['access_token']}"}


async def test_login_returns_an_access_and_a_refresh_token(client: httpx.AsyncClient) -> None:
    tokens = await login(client, *ADMIN)
    assert tokens["token_type"] == "bearer"
    assert tokens["refresh_token"].startswith("zsr_")
    assert tokens["expires_in"] > 0 and tokens["refresh_expires_in"] > tokens["expires_in"]


async def test_refresh_rotates_and_the_old_refresh_token_is_refused(
    client: httpx.AsyncClient,
) -> None:
    user = await make_user(client)
    r = await _refresh(client, user.refresh_token)
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != user.refresh_token
    assert await _whoami(client, _bearer(second)) == 200
    r = await _refresh(client, user.refresh_token)
    assert r.status_code == 401
    assert "already used" in r.json()["detail"]


async def test_reuse_of_a_rotated_refresh_token_revokes_the_whole_session(
    client: httpx.AsyncClient,
) -> None:
    user = await make_user(client)
    second = (await _refresh(client, user.refresh_token)).json()
    assert (await _refresh(client, user.refresh_token)).status_code == 401  # stolen copy used
    # The legitimate holder's newer tokens die with the session.
    assert (await _refresh(client, second["refresh_token"])).status_code == 401
    assert await _whoami(client, _bearer(second)) == 401
    assert await _whoami(client, user.headers) == 401
    # Other sessions of the same user are untouched.
    other = await login(client, user.username, PASSWORD)
    assert await _whoami(client, _bearer(other)) == 200


async def test_garbage_refresh_tokens_are_401(client: httpx.AsyncClient) -> None:
    for token in ("zsr_nope", "not-a-token", "zsr_" + "x" * 300):
        r = await _refresh(client, token)
        assert r.status_code in (401, 422), r.text


async def test_logout_revokes_the_session_at_once(client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    other = await login(client, user.username, PASSWORD)
    r = await client.post("/api/v1/auth/logout", headers=user.headers)
    assert r.status_code == 200, r.text
    assert await _whoami(client, user.headers) == 401
    assert (await _refresh(client, user.refresh_token)).status_code == 401
    assert await _whoami(client, _bearer(other)) == 200  # only this session ended


async def test_logout_everywhere_revokes_every_session(client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    other = await login(client, user.username, PASSWORD)
    r = await client.post("/api/v1/auth/logout", json={"everywhere": True}, headers=user.headers)
    assert r.status_code == 200, r.text
    assert await _whoami(client, user.headers) == 401
    assert await _whoami(client, _bearer(other)) == 401
    assert (await _refresh(client, other["refresh_token"])).status_code == 401


async def test_password_change_revokes_old_tokens_and_returns_new_ones(
    client: httpx.AsyncClient,
) -> None:
    user = await make_user(client)
    other = await login(client, user.username, PASSWORD)
    r = await client.post(
        "/api/v1/me/password",
        json={"old_password": PASSWORD, "new_password": "Brand-new-pass-2"},
        headers=user.headers,
    )
    assert r.status_code == 200, r.text
    fresh = r.json()
    for headers in (user.headers, _bearer(other)):
        assert await _whoami(client, headers) == 401
    assert (await _refresh(client, other["refresh_token"])).status_code == 401
    assert await _whoami(client, _bearer(fresh)) == 200
    await login(client, user.username, "Brand-new-pass-2")
    r = await client.post(
        "/api/v1/auth/login", json={"username": user.username, "password": PASSWORD}
    )
    assert r.status_code == 401


async def test_password_change_needs_the_right_old_password(client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    r = await client.post(
        "/api/v1/me/password",
        json={"old_password": "Wrong-pass-9", "new_password": "Brand-new-pass-2"},
        headers=user.headers,
    )
    assert r.status_code == 403
    assert "current password" in r.json()["detail"]
    r = await client.post(
        "/api/v1/me/password",
        json={"old_password": PASSWORD, "new_password": "short"},
        headers=user.headers,
    )
    assert r.status_code == 422
    assert "at least 8" in r.json()["detail"]


async def test_disabling_a_user_revokes_their_tokens_at_once(client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    r = await client.patch(f"/api/v1/users/{user.id}", json={"disabled": True})
    assert r.status_code == 200, r.text
    assert await _whoami(client, user.headers) == 401
    assert (await _refresh(client, user.refresh_token)).status_code == 401
    r = await client.post(
        "/api/v1/auth/login", json={"username": user.username, "password": PASSWORD}
    )
    assert r.status_code == 401
    assert r.json()["detail"] == "wrong username or password"  # no hint that the user exists
    await client.patch(f"/api/v1/users/{user.id}", json={"disabled": False})
    await login(client, user.username, PASSWORD)


async def test_admin_password_reset_revokes_the_users_tokens(client: httpx.AsyncClient) -> None:
    user = await make_user(client)
    headers = await confirm(client, dict(client.headers), ADMIN[1])
    r = await client.post(
        f"/api/v1/users/{user.id}/password", json={"password": "Reset-pass-77"}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert await _whoami(client, user.headers) == 401
    await login(client, user.username, "Reset-pass-77")


# --- step-up ------------------------------------------------------------------------------


async def test_sensitive_operation_without_confirmation_says_what_is_needed(
    client: httpx.AsyncClient,
) -> None:
    user = await make_user(client)
    r = await client.delete(f"/api/v1/users/{user.id}")
    assert r.status_code == 403
    detail = r.json()["detail"]
    assert "/api/v1/auth/confirm" in detail and "X-Confirm-Token" in detail
    headers = await confirm(client, dict(client.headers), ADMIN[1])
    r = await client.delete(f"/api/v1/users/{user.id}", headers=headers)
    assert r.status_code == 204, r.text


async def test_confirm_with_a_wrong_password_is_403(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/auth/confirm", json={"password": "Not-the-pass-1"})
    assert r.status_code == 403
    assert r.json()["detail"] == "wrong password"


async def test_a_confirm_token_works_only_for_its_own_session(
    hub: Any, client: httpx.AsyncClient
) -> None:
    other_admin = await make_user(client, role="admin")
    victim = await make_user(client)
    theirs = await confirm(client, other_admin.headers, PASSWORD)
    token_header = {"X-Confirm-Token": theirs["X-Confirm-Token"]}
    # The admin client presenting someone else's confirmation: refused.
    r = await client.delete(f"/api/v1/users/{victim.id}", headers=token_header)
    assert r.status_code == 403
    # An access token is not a confirmation.
    access = other_admin.headers["authorization"].split()[1]
    r = await client.delete(
        f"/api/v1/users/{victim.id}", headers={**other_admin.headers, "X-Confirm-Token": access}
    )
    assert r.status_code == 403
    # An expired confirmation is refused with a clear message.
    now = int(time.time())
    me = (await client.get("/api/v1/auth/whoami")).json()
    expired = jwt.encode(
        {
            "sub": me["id"],
            "ver": 0,
            "sid": None,
            "iat": now - 600,
            "exp": now - 300,
            "typ": "confirm",
        },
        hub.identity.signing_key,
        algorithm="HS256",
    )
    r = await client.delete(f"/api/v1/users/{victim.id}", headers={"X-Confirm-Token": expired})
    assert r.status_code == 403
    assert "expired" in r.json()["detail"]
    r = await client.delete(f"/api/v1/users/{victim.id}", headers=theirs)
    assert r.status_code == 204, r.text


async def test_api_keys_cannot_confirm(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/api-keys", json={"name": "k", "scopes": ["read"]})
    key_headers = {"authorization": r.json()["authorization"]}
    r = await client.post("/api/v1/auth/confirm", json={"password": ADMIN[1]}, headers=key_headers)
    assert r.status_code == 403
    assert "API keys" in r.json()["detail"]


async def test_node_credentials_rotation_and_deletion_need_confirmation(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post("/api/v1/nodes", json={"name": "n1"})
    node_id = r.json()["id"]
    r = await client.post(f"/api/v1/nodes/{node_id}/credentials")
    assert r.status_code == 403 and "X-Confirm-Token" in r.json()["detail"]
    r = await client.delete(f"/api/v1/nodes/{node_id}")
    assert r.status_code == 403
    headers = await confirm(client, dict(client.headers), ADMIN[1])
    r = await client.post(f"/api/v1/nodes/{node_id}/credentials", headers=headers)
    assert r.status_code == 200, r.text
    r = await client.delete(f"/api/v1/nodes/{node_id}", headers=headers)
    assert r.status_code == 204, r.text
