"""The documented Worker → Master → IM flow with a real python-socketio worker against a
hub served on a loopback port: sync over ``/worker``, ACKs, deltas, bad input, then every
IM and HisCRM endpoint, and the ``/client`` events of each user."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import helpers
import httpx
import pytest
import socketio
from helpers import fast_passwords  # noqa: F401
from identity_support import make_user
from matrix_im import documented_data, envelope, insert_source

from zhongshu import testing
from zhongshu.config import Settings
from zhongshu.db.engine import Database
from zhongshu.testing import wait_until

pytestmark = pytest.mark.timeout(90)

NS = "/worker"
Json = dict[str, Any]


@pytest.fixture
def served_settings(db_url: str, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(database_url=db_url, im_sync_max_items=500)


# The served hub (with ADMIN) and its admin client, on the settings above.
served = helpers.served
api = helpers.api


@pytest.fixture
async def side(db_url: str) -> AsyncIterator[Any]:
    """The served hub's database seen from the test's own event loop (the served hub runs
    its loop in another thread), for inserting source rows."""
    db = Database(db_url)
    yield SimpleNamespace(db=db)
    await db.dispose()


class Worker:
    """A worker on ``/worker`` that records the ``message`` envelopes the hub sends."""

    def __init__(self, url: str, credentials: Json) -> None:
        self.url = url
        self.credentials = credentials
        self.sio = socketio.AsyncClient(reconnection=False)
        self.messages: list[Json] = []
        self.sio.on("message", self.messages.append, namespace=NS)

    async def connect(self) -> None:
        await self.sio.connect(
            self.url,
            namespaces=[NS],
            auth={"key": self.credentials["access_key"], "secret": self.credentials["secret_key"]},
            transports=["websocket"],
            wait_timeout=10,
        )
        # Online, so the assignment loop never takes its sources away during the test.
        reply = await self.send(
            {"capabilities": ["douyin"], "capacity": 1, "host": "t", "version": "t"},
            event="worker:register",
        )
        assert reply.get("ok", True) is not False, reply

    async def send(self, data: Any, event: str = "message") -> Json:
        return await self.sio.call(event, data, namespace=NS, timeout=15)  # type: ignore[no-any-return]


class App:
    """A ``/client`` connection that records the events it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Json]] = []
        for name in ("notification:new", "item:created"):
            self.sio.on(name, self._record(name), namespace="/client")

    def _record(self, name: str) -> Callable[[Json], None]:
        return lambda data: self.events.append((name, data))

    async def connect(self, url: str, auth: Json) -> None:
        await self.sio.connect(
            url, namespaces=["/client"], auth=auth, transports=["websocket"], wait_timeout=10
        )


async def _node(api: httpx.AsyncClient, name: str) -> Json:
    r = await api.post("/api/v1/nodes", json={"name": name, "capabilities": ["douyin"]})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_documented_flow_over_socketio(
    served: testing.ServedHub, api: httpx.AsyncClient, side: Any
) -> None:
    alice = await make_user(api)
    bob = await make_user(api)
    node = await _node(api, "collector")
    source = await insert_source(side, alice.id, node["id"], account_id="dy-42")
    bob_source = await insert_source(side, bob.id, node["id"])

    apps = {"alice": App(), "bob": App(), "alice-key": App()}
    await apps["alice"].connect(served.url, {"token": alice.headers["authorization"][7:]})
    await apps["bob"].connect(served.url, {"token": bob.headers["authorization"][7:]})
    r = await api.post(
        "/api/v1/api-keys", json={"name": "app", "scopes": ["read"]}, headers=alice.headers
    )
    key = r.json()
    await apps["alice-key"].connect(
        served.url, {"key": key["access_key"], "secret": key["secret_key"]}
    )
    with pytest.raises(socketio.exceptions.ConnectionError):
        await App().connect(served.url, {"token": "not-a-jwt"})
    # A key that may only push does not read events either.
    r = await api.post(
        "/api/v1/api-keys", json={"name": "pusher", "scopes": ["push"]}, headers=alice.headers
    )
    push_only = r.json()
    with pytest.raises(socketio.exceptions.ConnectionError):
        await App().connect(
            served.url, {"key": push_only["access_key"], "secret": push_only["secret_key"]}
        )

    worker = Worker(served.url, node["credentials"])
    await worker.connect()
    ack = await worker.send(envelope(source))
    assert ack["type"] == "WORKER_DATA_SYNC_ACK"
    assert ack["payload"]["success"] is True
    assert ack["payload"]["accountId"] == source
    assert isinstance(ack["payload"]["timestamp"], int)
    assert ack["payload"]["created"] == {
        "comment": 10,
        "content": 5,
        "conversation": 29,
        "message": 10,
    }
    # The same ack also arrives as an emitted ``message``.
    await wait_until(lambda: any(m["type"] == "WORKER_DATA_SYNC_ACK" for m in worker.messages))

    # A re-sent snapshot (no ack seen) creates nothing new.
    again = await worker.send(envelope(source))
    assert again["payload"]["success"] and again["payload"]["created"] == {}

    # accountId may be the platform account id of a source assigned to this node.
    by_platform_id = await worker.send(envelope("dy-42"))
    assert by_platform_id["payload"]["success"], by_platform_id
    assert by_platform_id["payload"]["sourceId"] == source

    # Each IM endpoint returns the data in its documented shape.
    h = alice.headers
    r = await api.get("/api/im/accounts", headers=h)
    assert [a["id"] for a in r.json()["data"]["accounts"]] == [source]
    r = await api.get(
        "/api/im/conversations", params={"limit": 100, "include_total": True}, headers=h
    )
    data = r.json()["data"]
    assert data["total"] == 29 and len(data["conversations"]) == 29
    conv = data["conversations"][0]
    assert conv["conversation_id"] == "conv-0" and conv["platform_user_name"] == "peer 0"
    assert conv["last_message_content"] == "hello 0"
    assert conv["last_message_time"] == 1_761_804_248_025
    assert set(conv) >= {"id", "account_id", "unread_count", "is_pinned", "is_muted", "is_read"}
    r = await api.get(f"/api/im/conversations/{conv['id']}", headers=h)
    assert r.json()["data"]["conversation_id"] == "conv-0"
    r = await api.get("/api/im/messages", params={"limit": 100}, headers=h)
    msgs = r.json()["data"]["messages"]
    assert len(msgs) == 10
    assert set(msgs[0]) >= {"message_id", "conversation_id", "sender_name", "content", "direction"}
    r = await api.get("/api/im/messages", params={"conversation_id": "conv-0"}, headers=h)
    assert [m["message_id"] for m in r.json()["data"]["messages"]] == [
        "msg-0",
        "msg-3",
        "msg-6",
        "msg-9",
    ]
    r = await api.get(
        "/api/im/messages", params={"conversation_id": "conv-0", "direction": "outbound"}, headers=h
    )
    assert [m["message_id"] for m in r.json()["data"]["messages"]] == ["msg-3", "msg-9"]
    r = await api.get("/api/im/contents", headers=h)
    contents = r.json()["data"]["contents"]
    assert len(contents) == 5 and contents[0]["title"] == "Video 0"
    r = await api.get("/api/im/discussions", headers=h)
    assert len(r.json()["data"]["discussions"]) == 10
    r = await api.get("/api/im/discussions", params={"content_id": "aweme-1"}, headers=h)
    assert [c["comment_id"] for c in r.json()["data"]["discussions"]] == ["cmt-1"]
    r = await api.get("/api/im/unified-messages", params={"limit": 100}, headers=h)
    uni = r.json()["data"]
    assert len(uni["messages"]) == 20
    times = [m["created_at"] for m in uni["messages"]]
    assert times == sorted(times, reverse=True)
    assert uni["unread"] == {"comments": 10, "direct_messages": 10, "total": 20}
    r = await api.get("/api/im/stats", headers=h)
    stats = r.json()["data"]
    (acct,) = stats["accounts"]
    assert acct["items"] == {
        "contents": 5,
        "comments": 10,
        "conversations": 29,
        "messages": 10,
        "notifications": 0,
    }
    assert acct["syncs"] == 3 and stats["total_syncs"] == 3 and acct["last_sync_at"]
    r = await api.get("/api/im/integrity", headers=h)
    assert r.json()["data"]["orphan_comments"]["count"] == 7  # as in the seed's data
    assert r.json()["data"]["orphan_messages"]["count"] == 0

    # The HisCRM data API, with the seed's field names.
    r = await api.get("/api/v1/comments", params={"limit": 20, "account_id": source}, headers=h)
    body = r.json()
    assert body["success"] and body["total"] == 10
    first = body["comments"][0]
    assert set(first) == {
        "id",
        "account_id",
        "platform_comment_id",
        "content",
        "author_name",
        "author_id",
        "post_id",
        "post_title",
        "is_read",
        "detected_at",
        "created_at",
    }
    assert first["post_title"] == "Video 0"
    r = await api.get("/api/v1/direct-messages", params={"direction": "inbound"}, headers=h)
    assert r.json()["total"] == 5
    assert {"platform_message_id", "sender_name", "direction"} <= set(
        r.json()["direct_messages"][0]
    )
    r = await api.get("/api/v1/notifications", params={"type": "comment"}, headers=h)
    notes = r.json()["notifications"]
    assert len(notes) == 1 and notes[0]["title"] == "10 new comments"
    r = await api.put(f"/api/v1/notifications/{notes[0]['id']}/read", headers=h)
    assert r.json()["notification"]["is_read"] is True
    r = await api.get("/api/v1/status", headers=h)
    assert r.json()["data_store"]["total_items"] == 54

    # /client: alice's apps got her events, bob's got nothing of hers.
    await wait_until(
        lambda: {n for n, _ in apps["alice"].events} == {"notification:new", "item:created"}
    )
    await wait_until(lambda: len(apps["alice-key"].events) == len(apps["alice"].events))
    kinds = sorted(d["kind"] for n, d in apps["alice"].events if n == "item:created")
    assert kinds == ["comment", "content", "conversation", "message"]
    types = sorted(d["type"] for n, d in apps["alice"].events if n == "notification:new")
    assert types == ["comment", "direct_message"]
    assert apps["bob"].events == []
    await wait_until(
        lambda: _all_sent(api, h),
    )

    # Bob's data reaches bob only; alice's view does not change.
    ack = await worker.send(envelope(bob_source, documented_data("b-")))
    assert ack["payload"]["success"]
    await wait_until(lambda: len(apps["bob"].events) == 6)
    assert all(d.get("source_id", d.get("account_id")) == bob_source for _, d in apps["bob"].events)
    r = await api.get("/api/im/conversations", params={"include_total": True}, headers=h)
    assert r.json()["data"]["total"] == 29

    for app in apps.values():
        await app.sio.disconnect()
    await worker.sio.disconnect()


async def _all_sent(api: httpx.AsyncClient, headers: dict[str, str]) -> bool:
    r = await api.get("/api/v1/notifications", headers=headers)
    return all(n["is_sent"] for n in r.json()["notifications"])


async def test_deltas_bad_input_and_assignment_over_socketio(
    served: testing.ServedHub, api: httpx.AsyncClient, side: Any
) -> None:
    alice = await make_user(api)
    node = await _node(api, "collector")
    other = await _node(api, "other")
    source = await insert_source(side, alice.id, node["id"])
    worker = Worker(served.url, node["credentials"])
    await worker.connect()
    intruder = Worker(served.url, other["credentials"])
    await intruder.connect()

    def delta(seq: int, n: int) -> Json:
        data = {"messages": [{"id": f"d{seq}-{i}", "conversation_id": "c"} for i in range(n)]}
        return envelope(source, data, mode="delta", seq=seq)

    assert (await worker.send(delta(1, 3)))["payload"]["created"] == {"message": 3}
    dup = (await worker.send(delta(1, 3)))["payload"]
    assert dup["success"] and dup["duplicate"] and dup["created"] == {}
    gap = (await worker.send(delta(3, 2)))["payload"]
    assert gap["success"] is False and gap["resync"] is True and gap["expectedSeq"] == 2
    await wait_until(
        lambda: any(m["type"] == "MASTER_DATA_RESYNC_REQUEST" for m in worker.messages)
    )
    assert (await worker.send(delta(2, 2)))["payload"]["created"] == {"message": 2}
    assert (await worker.send(delta(3, 2)))["payload"]["created"] == {"message": 2}

    bad: list[tuple[Any, str]] = [
        ("not an object", "envelope"),
        ({"type": "worker:data:sync", "version": "v9", "payload": {}}, "version"),
        ({"type": "something:else", "version": "v1", "payload": {}}, "type"),
        ({**envelope(source), "payload": "x"}, "payload"),
        (envelope(source, {"likes": [{"id": "1"}]}), "unknown kind"),
        (envelope(source, {"comments": [{"id": "ok"}, {"content": "no id"}]}), "comments[1]"),
        (envelope(source, {"messages": [{"id": "m", "direction": "sideways"}]}), "direction"),
        (envelope(source, {"comments": [{"id": str(i)} for i in range(501)]}), "limit is 500"),
        (envelope(source, mode="delta"), "seq"),
        (envelope("no-such-source"), "no such source"),
    ]
    for data, needle in bad:
        ack = await worker.send(data)
        assert ack["payload"]["success"] is False, (data, ack)
        assert needle in ack["payload"]["error"], (needle, ack)
        assert 400 <= ack["payload"]["status"] < 500
    refused = (await intruder.send(envelope(source)))["payload"]
    assert refused["success"] is False and refused["status"] == 403
    assert "not assigned" in refused["error"]

    # Nothing of the refused syncs was written.
    r = await api.get("/api/im/stats", headers=alice.headers)
    (acct,) = r.json()["data"]["accounts"]
    assert acct["items"]["messages"] == 7 and acct["items"]["comments"] == 0
    assert acct["syncs"] == 3 and acct["last_seq"] == 3

    # worker:message:detected {type, account_id, messages}
    ack = await worker.send(
        {"type": "comment", "account_id": source, "messages": [{"id": "x1", "content": "hi"}]},
        event="worker:message:detected",
    )
    assert ack["success"] and ack["created"] == {"comment": 1}
    ack = await worker.send(
        {"type": "nonsense", "account_id": source, "messages": []},
        event="worker:message:detected",
    )
    assert ack["ok"] is False and "unknown kind" in ack["error"]
    await worker.sio.disconnect()
    await intruder.sio.disconnect()
