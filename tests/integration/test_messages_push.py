"""MessagePusher's surface: /token, /push, /message/{id} with its codes; bad input → 4xx."""

from __future__ import annotations

from typing import Any

import httpx
from identity_support import PASSWORD, make_user
from messages_support import finished, make_channel, receiver


async def test_token_push_and_message_status_like_messagepusher(
    client: httpx.AsyncClient, hub: Any
) -> None:
    alice = await make_user(client)
    anon = {"authorization": ""}
    with receiver() as rec:
        host = rec.url.removeprefix("http://")
        a = await make_channel(client, alice.headers, name="a", url=f"json://{host}/a")
        b = await make_channel(client, alice.headers, name="b", url=f"json://{host}/b")
        r = await client.get(
            "/api/v1/token", params={"username": alice.username, "password": PASSWORD}, headers=anon
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["code"] == 0 and body["data"]["channels"] == [] and body["data"]["ai"] is False
        token = body["data"]["token"]
        # The same token comes back; it is stored sealed and hashed, never in clear.
        again = await client.get(
            "/api/v1/token", params={"username": alice.username, "password": PASSWORD}, headers=anon
        )
        assert again.json()["data"]["token"] == token
        # Defaults used when a push names no channels.
        r = await client.put(
            "/api/v1/push-token", json={"channels": f"{a['id']}|{b['id']}"}, headers=alice.headers
        )
        assert r.json()["channels"] == [a["id"], b["id"]]

        r = await client.post(
            "/api/v1/push",
            json={"token": token, "title": "T", "content": "C", "channels": f"{a['id']}"},
            headers=anon,
        )
        assert r.status_code == 200, r.text
        reply = r.json()
        assert reply["code"] == 0 and reply["message"] == "success"
        assert reply["data"]["channels"] == [a["id"]] and reply["data"]["ai"] is False
        assert reply["data"]["view_url"].rsplit("/", 2)[1] == "view"
        mid = reply["data"]["message_id"]
        await finished(client, mid, alice.headers)
        r = await client.get(f"/api/v1/message/{mid}", headers=alice.headers)
        data = r.json()
        assert r.json()["code"] == 0
        assert data["data"]["status"] == "sent"
        assert data["data"]["channels"][0]["status"] == "sent"
        assert data["data"]["ai"]["result"] is None
        # A form post with no channels goes to the defaults.
        r = await client.post(
            "/api/v1/push", data={"token": token, "content": "via form"}, headers=anon
        )
        assert r.json()["data"]["channels"] == [a["id"], b["id"]]
        # A multipart form (curl -F) works the same way.
        r = await client.post(
            "/api/v1/push",
            files={"token": (None, token), "content": (None, "via multipart")},
            headers=anon,
        )
        assert r.status_code == 200, r.text
        assert r.json()["data"]["channels"] == [a["id"], b["id"]]
        # The push token alone (no Authorization header) reads the status of its owner's
        # messages, and nothing else.
        bare = httpx.AsyncClient(transport=client._transport, base_url=client.base_url)
        async with bare:
            r = await bare.get(f"/api/v1/message/{mid}", params={"token": token})
            assert r.status_code == 200, r.text
            assert r.json()["data"]["status"] == "sent"
            r = await bare.get(f"/api/v1/messages/{mid}", params={"token": token})
            assert r.status_code == 401, "only MessagePusher's status route takes the token"
            r = await bare.get(f"/api/v1/message/{mid}", params={"token": "PTnope"})
            assert r.status_code == 401
        # Someone else's message: 404 with MessagePusher's code, by login or by token.
        bob = await make_user(client)
        r = await client.get(f"/api/v1/message/{mid}", headers=bob.headers)
        assert r.status_code == 404 and r.json()["code"] == 2001
        bob_token = (await client.get("/api/v1/push-token", headers=bob.headers)).json()["token"]
        async with httpx.AsyncClient(transport=client._transport, base_url=client.base_url) as c:
            r = await c.get(f"/api/v1/message/{mid}", params={"token": bob_token})
            assert r.status_code == 404 and r.json()["code"] == 2001
        # Rotating the token retires the old one.
        new = (await client.post("/api/v1/push-token/rotate", headers=alice.headers)).json()
        assert new["token"] != token
        r = await client.post("/api/v1/push", json={"token": token, "content": "x"}, headers=anon)
        assert r.status_code == 401 and r.json()["code"] == 1002


async def test_push_error_codes(client: httpx.AsyncClient, hub: Any) -> None:
    alice = await make_user(client)
    bob = await make_user(client)
    anon = {"authorization": ""}
    token = (await client.get("/api/v1/push-token", headers=alice.headers)).json()["token"]
    mine = await make_channel(client, alice.headers, name="m", url="json://127.0.0.1:9/x")
    theirs = await make_channel(client, bob.headers, name="t", url="json://127.0.0.1:9/x")
    port = hub.settings.port
    cases: list[tuple[dict[str, Any], int, int]] = [
        ({}, 422, 1001),
        ({"token": "PTnope", "content": "x"}, 401, 1002),
        ({"token": token, "channels": str(mine["id"])}, 422, 1001),
        ({"token": token, "title": "  ", "channels": str(mine["id"])}, 422, 1001),
        ({"token": token, "content": "x", "channels": "999999"}, 422, 1003),
        ({"token": token, "content": "x", "channels": str(theirs["id"])}, 422, 1003),
        ({"token": token, "content": "x", "channels": "1|x"}, 422, 1003),
        ({"token": token, "content": "x"}, 422, 1003),  # no channels and no defaults
        ({"token": token, "url": "ftp://example.com/f", "channels": str(mine["id"])}, 422, 1004),
        ({"token": token, "url": "file:///etc/passwd", "channels": str(mine["id"])}, 422, 1004),
        (
            {
                "token": token,
                "url": f"http://127.0.0.1:{port}/api/v1/me",
                "channels": str(mine["id"]),
            },
            422,
            1004,
        ),
        (
            {"token": token, "url": f"http://localhost:{port}/x", "channels": str(mine["id"])},
            422,
            1004,
        ),
        ({"token": token, "content": "x" * 70_000, "channels": str(mine["id"])}, 413, 1005),
        ({"token": token, "content": "x", "channels": str(mine["id"]), "ai": True}, 422, 1006),
        ({"token": token, "content": 5, "channels": str(mine["id"])}, 422, 1001),
    ]
    for body, status, code in cases:
        r = await client.post("/api/v1/push", json=body, headers=anon)
        assert (r.status_code, r.json()["code"]) == (status, code), (body, r.text)
        assert r.json()["message"]
    r = await client.post(
        "/api/v1/push", content=b"{not json", headers={**anon, "content-type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["code"] == 1001
    r = await client.get("/api/v1/token", headers=anon)
    assert r.status_code == 400 and r.json()["code"] == 1001
    r = await client.get(
        "/api/v1/token", params={"username": alice.username, "password": "wrong"}, headers=anon
    )
    assert r.status_code == 401 and r.json()["code"] == 1002


async def test_native_messages_refuse_bad_input_with_4xx(
    client: httpx.AsyncClient, hub: Any
) -> None:
    ch = await make_channel(client, url="json://127.0.0.1:9/x")
    port = hub.settings.port
    for body, status in (
        ({"channels": [ch["id"]]}, 422),
        ({"title": "x", "channels": [424242]}, 422),
        ({"title": "x", "channels": "abc"}, 422),
        ({"url": "javascript:alert(1)", "channels": [ch["id"]]}, 422),
        ({"url": f"http://127.0.0.1:{port}/", "channels": [ch["id"]]}, 422),
        ({"url": "http://[::1", "channels": [ch["id"]]}, 422),
        ({"url": "http://example.com:99999/", "channels": [ch["id"]]}, 422),
        ({"content": "y" * 70_000, "channels": [ch["id"]]}, 413),
        ({"title": "x", "channels": [ch["id"]], "ai": True}, 422),
        ({"title": "x", "channels": [ch["id"]], "bogus": 1}, 422),
        ({"title": "x\u0000", "channels": [ch["id"]]}, 422),
    ):
        r = await client.post("/api/v1/messages", json=body)
        assert r.status_code == status, (body, r.text)
        assert r.json()["detail"]
    # A disabled channel cannot be used.
    await client.patch(f"/api/v1/channels/{ch['id']}", json={"enabled": False})
    r = await client.post("/api/v1/messages", json={"title": "x", "channels": [ch["id"]]})
    assert r.status_code == 422 and "disabled" in r.json()["detail"]
    assert (await client.get("/api/v1/messages/nope")).status_code == 404
    assert (await client.get("/view/" + "x" * 500)).status_code == 404
