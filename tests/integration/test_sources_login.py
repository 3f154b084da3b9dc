"""QR login sessions end to end: a hub served by uvicorn, a real python-socketio worker on
``/worker`` and real python-socketio admin/user clients on ``/admin``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helpers
import httpx
import pytest
import segno
import socketio
from helpers import fast_passwords  # noqa: F401
from identity_support import make_user

from zhongshu import testing
from zhongshu.config import Settings
from zhongshu.testing import wait_until

pytestmark = pytest.mark.timeout(60)
Json = dict[str, Any]
COOKIE = "sessionid-9b7e3f2a1c"
QR = segno.make("https://demo.example/scan/abc").png_data_uri(scale=2)


@pytest.fixture
def served_settings(db_url: str, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        database_url=db_url,
        # Long enough for a whole login on a busy machine; the expiry test shortens it.
        login_session_ttl_s=15.0,
        login_watch_interval_s=0.1,
        assignment_tick_s=0.2,
        monitor_tick_s=3600,
    )


# The served hub (with ADMIN) and its admin client, on the settings above.
served = helpers.served
api = helpers.api


@dataclass
class Client:
    """A Socket.IO client that records every event it receives."""

    url: str
    ns: str
    got: list[tuple[str, Any]] = field(default_factory=list)
    beating: asyncio.Task[None] | None = None
    sio: socketio.AsyncClient = field(
        default_factory=lambda: socketio.AsyncClient(reconnection=False)
    )

    def __post_init__(self) -> None:
        async def record(event: str, *args: Any) -> None:
            self.got.append((event, args[0] if args else None))

        self.sio.on("*", record, namespace=self.ns)

    async def connect(self, auth: Json) -> None:
        await self.sio.connect(
            self.url, namespaces=[self.ns], auth=auth, transports=["websocket"], wait_timeout=10
        )

    async def call(self, event: str, data: Json) -> Json:
        return await self.sio.call(event, data, namespace=self.ns, timeout=10)  # type: ignore[no-any-return]

    def beat(self) -> None:
        """Heartbeat like a worker (every 0.3 s) until disconnected."""

        async def loop() -> None:
            while self.sio.connected:
                await self.sio.emit("worker:heartbeat", {"stats": {}}, namespace=self.ns)
                await asyncio.sleep(0.3)

        self.beating = asyncio.get_running_loop().create_task(loop())

    def of(self, event: str) -> list[Any]:
        return [d for e, d in self.got if e == event]

    async def wait(self, event: str, n: int = 1, timeout_s: float = 10) -> list[Any]:
        await wait_until(lambda: len(self.of(event)) >= n, timeout_s=timeout_s)
        return self.of(event)


@pytest.fixture
async def clients(served: testing.ServedHub) -> AsyncIterator[Callable[[str], Client]]:
    made: list[Client] = []

    def make(ns: str) -> Client:
        c = Client(served.url, ns)
        made.append(c)
        return c

    yield make
    for c in made:
        if c.beating is not None:
            c.beating.cancel()
        if c.sio.connected:
            await c.sio.disconnect()


async def worker(
    api: httpx.AsyncClient, clients: Callable[[str], Client], caps: list[str]
) -> tuple[Client, str]:
    r = await api.post("/api/v1/nodes", json={"name": f"w-{time.monotonic()}"})
    assert r.status_code == 201, r.text
    creds = r.json()["credentials"]
    w = clients("/worker")
    await w.connect({"key": creds["access_key"], "secret": creds["secret_key"]})
    ack = await w.call("worker:register", {"capabilities": caps, "capacity": 2, "host": "t"})
    assert ack["node_id"] == r.json()["id"], ack
    w.beat()
    return w, ack["node_id"]


async def admin_socket(
    api: httpx.AsyncClient, clients: Callable[[str], Client], headers: dict[str, str] | None
) -> Client:
    token = (headers or dict(api.headers))["authorization"].split(" ", 1)[1]
    c = clients("/admin")
    await c.connect({"token": token})
    return c


async def test_qr_login_success_end_to_end(
    served: testing.ServedHub, api: httpx.AsyncClient, clients: Callable[[str], Client]
) -> None:
    owner = await make_user(api)
    other = await make_user(api)
    w, node_id = await worker(api, clients, ["demo"])
    admin = await admin_socket(api, clients, None)
    mine = await admin_socket(api, clients, owner.headers)
    theirs = await admin_socket(api, clients, other.headers)

    r = await api.post(
        "/api/v1/sources", json={"platform": "demo", "name": "acct"}, headers=owner.headers
    )
    src = r.json()
    assert src["assigned_node_id"] == node_id
    # The worker is told about its new account.
    (assign,) = await w.wait("master:task:assign")
    assert [a["id"] for a in assign["accounts"]] == [src["id"]]
    assert assign["accounts"][0]["platform"] == "demo"

    # Someone else cannot start it; the owner can.
    r = await api.post(f"/api/v1/sources/{src['id']}/login", headers=other.headers)
    assert r.status_code == 404
    r = await api.post(f"/api/v1/sources/{src['id']}/login", headers=owner.headers)
    assert r.status_code == 201, r.text
    session = r.json()
    assert (session["status"], session["account_id"], session["worker_id"]) == (
        "pending",
        src["id"],
        node_id,
    )
    assert session["expires_at"] - time.time() == pytest.approx(15.0, abs=2.0)
    (start,) = await w.wait("master:login:start")
    assert start["account_id"] == src["id"]
    assert start["session_id"] == session["session_id"]
    assert start["platform"] == "demo"
    assert "proxy" in start and start["proxy"] is None
    assert (await api.get(f"/api/v1/sources/{src['id']}")).json()["login_status"] == "logging_in"

    # The worker's QR code goes to the admins and the owner, not to another user.
    bad = await w.call(
        "worker:login:qrcode", {"session_id": session["session_id"], "qr_code_data": "hello"}
    )
    assert bad["ok"] is False and bad["status"] == 422 and "qr_code_data" in bad["error"]
    ack = await w.call(
        "worker:login:qrcode", {"session_id": session["session_id"], "qr_code_data": QR}
    )
    assert ack["ok"] is True and ack["status"] == "scanning", ack
    for c in (admin, mine):
        (ready,) = await c.wait("login:qrcode:ready")
        assert ready == {
            "session_id": session["session_id"],
            "account_id": src["id"],
            "qr_code_data": QR,
            "expires_at": session["expires_at"],
        }
    r = await api.get(f"/api/v1/login-sessions/{session['session_id']}", headers=owner.headers)
    assert r.json()["status"] == "scanning"
    assert r.json()["qr_code_data"] == QR

    ack = await w.call(
        "worker:login:status",
        {
            "session_id": session["session_id"],
            "status": "success",
            "cookies": [{"name": "sessionid", "value": COOKIE}],
            "user_info": {"nickname": "小明", "avatar": "https://a/x.png"},
            "fingerprint": {"userAgent": "UA"},
        },
    )
    assert ack["ok"] is True, ack
    for c in (admin, mine):
        (ok,) = await c.wait("login:success")
        assert ok == {
            "session_id": session["session_id"],
            "account_id": src["id"],
            "user_info": {"nickname": "小明", "avatar": "https://a/x.png"},
        }
    src_now = (await api.get(f"/api/v1/sources/{src['id']}", headers=owner.headers)).json()
    assert src_now["login_status"] == "logged_in"
    assert src_now["has_credentials"] is True
    assert src_now["user_info"]["nickname"] == "小明"
    acc = (await api.get(f"/api/v1/accounts/{src['id']}", headers=owner.headers)).json()
    assert acc["account"]["cookies_valid_until"] - time.time() == pytest.approx(7 * 86400, abs=60)
    # The serving worker gets the new credentials with its account.
    assigns = await w.wait("master:task:assign", 2)
    assert assigns[-1]["accounts"][0]["credentials"]["cookies"][0]["value"] == COOKIE
    assert theirs.of("login:qrcode:ready") == [] and theirs.of("login:success") == []
    # Repeating the report changes nothing.
    again = await w.call(
        "worker:login:status",
        {"session_id": session["session_id"], "status": "success", "cookies": []},
    )
    assert again["ok"] is False and again["status"] == 409

    # Sessions: over HTTP and over /admin, each sees their own.
    r = await api.get("/api/v1/login-sessions", headers=owner.headers)
    assert [s["status"] for s in r.json()["sessions"]] == ["success"]
    r = await api.get("/api/v1/login-sessions", headers=other.headers)
    assert r.json()["sessions"] == []
    listed = await mine.call("admin:request:login-sessions", {})
    assert [s["session_id"] for s in listed["sessions"]] == [session["session_id"]]
    listed = await theirs.call("admin:request:login-sessions", {})
    assert listed["success"] is True and listed["sessions"] == []

    # Credentials never in clear: not in any reply, not in the database file.
    for path in (f"/api/v1/sources/{src['id']}", "/api/v1/accounts", "/api/v1/login-sessions"):
        assert COOKIE not in (await api.get(path)).text
    if served.hub.db.is_sqlite:
        db_path = Path(served.hub.db.url.split(":///", 1)[1])
        data = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
        assert COOKIE.encode() not in data
        assert b"sessionid" not in data


async def test_qr_login_failure_and_start_over_admin_socket(
    api: httpx.AsyncClient, clients: Callable[[str], Client]
) -> None:
    owner = await make_user(api)
    w, node_id = await worker(api, clients, ["demo", "weibo"])
    admin = await admin_socket(api, clients, None)
    mine = await admin_socket(api, clients, owner.headers)
    src = (
        await api.post(
            "/api/v1/sources", json={"platform": "weibo", "name": "wb"}, headers=owner.headers
        )
    ).json()
    # Started over /admin by its owner, naming the worker.
    ack = await mine.call("master:login:start", {"account_id": src["id"], "worker_id": node_id})
    assert ack["success"] is True, ack
    (start,) = await w.wait("master:login:start")
    assert start["session_id"] == ack["session_id"]
    (started,) = await admin.wait("login:started")
    assert started["account_id"] == src["id"] and started["worker_id"] == node_id

    ack2 = await w.call(
        "worker:login:status",
        {"session_id": ack["session_id"], "status": "failed", "error_message": "用户取消"},
    )
    assert ack2["ok"] is True, ack2
    for c in (admin, mine):
        (failed,) = await c.wait("login:failed")
        assert failed == {
            "session_id": ack["session_id"],
            "account_id": src["id"],
            "error_message": "用户取消",
            "status": "failed",
        }
    r = await api.get(f"/api/v1/sources/{src['id']}")
    assert r.json()["login_status"] == "login_failed"
    r = await api.get(f"/api/v1/login-sessions/{ack['session_id']}")
    assert (r.json()["status"], r.json()["error_message"]) == ("failed", "用户取消")

    # A session of another worker is not this one's to report on.
    w2, _ = await worker(api, clients, ["demo"])
    ack3 = await mine.call("master:login:start", {"account_id": src["id"]})
    bogus = await w2.call(
        "worker:login:qrcode", {"session_id": ack3["session_id"], "qr_code_data": QR}
    )
    assert bogus["ok"] is False and bogus["status"] == 404


async def test_qr_login_expires_when_nobody_scans(
    served: testing.ServedHub, api: httpx.AsyncClient, clients: Callable[[str], Client]
) -> None:
    served.app.hub.logins.session_ttl_s = 2.0  # type: ignore[attr-defined]
    w, _ = await worker(api, clients, ["demo"])
    admin = await admin_socket(api, clients, None)
    src = (await api.post("/api/v1/sources", json={"platform": "demo", "name": "d"})).json()
    ack = await admin.call("master:login:start", {"account_id": src["id"]})
    assert ack["success"] is True, ack
    await w.wait("master:login:start")
    await w.call("worker:login:qrcode", {"session_id": ack["session_id"], "qr_code_data": QR})
    (expired,) = await admin.wait("login:failed", timeout_s=6)
    assert expired["session_id"] == ack["session_id"]
    assert expired["status"] == "expired"
    assert "not scanned" in expired["error_message"]
    r = await api.get(f"/api/v1/login-sessions/{ack['session_id']}")
    assert r.json()["status"] == "expired"
    assert (await api.get(f"/api/v1/sources/{src['id']}")).json()["login_status"] == (
        "not_logged_in"
    )
    late = await w.call(
        "worker:login:status", {"session_id": ack["session_id"], "status": "success", "cookies": []}
    )
    assert late["ok"] is False and late["status"] == 409


async def test_login_without_a_capable_worker_is_a_409_with_the_reason(
    api: httpx.AsyncClient, clients: Callable[[str], Client]
) -> None:
    admin = await admin_socket(api, clients, None)
    src = (await api.post("/api/v1/sources", json={"platform": "douyin", "name": "d"})).json()
    r = await api.post(f"/api/v1/sources/{src['id']}/login")
    assert r.status_code == 409
    assert "no worker serves platform 'douyin'" in r.json()["detail"]
    ack = await admin.call("master:login:start", {"account_id": src["id"]})
    assert (ack["success"], ack["status"]) == (False, 409)
    # A worker that serves it, but was named wrongly / is missing.
    _, node_id = await worker(api, clients, ["demo"])
    r = await api.post(f"/api/v1/sources/{src['id']}/login", json={"worker_id": node_id})
    assert r.status_code == 409
    assert "does not serve platform 'douyin'" in r.json()["detail"]
    r = await api.post(f"/api/v1/sources/{src['id']}/login", json={"worker_id": "nd_nope"})
    assert r.status_code == 422
    # An online node that is not connected over Socket.IO cannot show a QR code.
    r = await api.post("/api/v1/nodes", json={"name": "http-only"})
    pull = httpx.Headers({"authorization": r.json()["credentials"]["authorization"]})
    r = await api.post("/api/v1/agent/register", json={"capabilities": ["douyin"]}, headers=pull)
    assert r.status_code == 200, r.text
    r = await api.post(f"/api/v1/sources/{src['id']}/login")
    assert r.status_code == 409
    assert "connected over Socket.IO" in r.json()["detail"]


async def test_admin_namespace_refuses_bad_credentials_and_viewers_cannot_start(
    api: httpx.AsyncClient, clients: Callable[[str], Client]
) -> None:
    bad = clients("/admin")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await bad.connect({"token": "nope"})
    anon = clients("/admin")
    with pytest.raises(socketio.exceptions.ConnectionError):
        await anon.connect({})
    viewer = await make_user(api, role="viewer")
    v = await admin_socket(api, clients, viewer.headers)
    ack = await v.call("master:login:start", {"account_id": "src_x"})
    assert (ack["success"], ack["status"]) == (False, 403)
    ack = await v.call("master:login:start", {})
    assert ack["success"] is False


async def test_worker_reported_invalid_credentials_expire_once_and_sources_move(
    served: testing.ServedHub, api: httpx.AsyncClient, clients: Callable[[str], Client]
) -> None:
    owner = await make_user(api)
    w, node_id = await worker(api, clients, ["demo"])
    mine = await admin_socket(api, clients, owner.headers)
    src = (
        await api.post(
            "/api/v1/sources",
            json={"platform": "demo", "name": "d", "credentials": {"cookies": ["c"]}},
            headers=owner.headers,
        )
    ).json()
    r = await api.patch(
        f"/api/v1/sources/{src['id']}", json={"login_status": "logged_in"}, headers=owner.headers
    )
    assert r.json()["login_status"] == "logged_in"
    for _ in range(2):
        ack = await w.call("worker:login:status", {"account_id": src["id"], "status": "expired"})
        assert ack["ok"] is True, ack
    (ev,) = await mine.wait("account:login_expired")
    assert ev == {
        "account_id": src["id"],
        "platform": "demo",
        "name": "d",
        "reason": "reported_invalid",
    }
    r = await api.get("/api/v1/events", params={"type": "source.login_expired"})
    assert len(r.json()["items"]) == 1
    assert (await api.get(f"/api/v1/sources/{src['id']}")).json()["login_status"] == "expired"

    # Deleting a source revokes it on its worker.
    await api.delete(f"/api/v1/sources/{src['id']}", headers=owner.headers)
    (revoke,) = await w.wait("master:task:revoke")
    assert revoke["accountIds"] == [src["id"]]

    # Offline (no heartbeats for offline_after_s): its sources go to another worker.
    src2 = (await api.post("/api/v1/sources", json={"platform": "demo", "name": "e"})).json()
    assert src2["assigned_node_id"] == node_id
    w2, node2 = await worker(api, clients, ["demo"])
    await w.sio.disconnect()
    assigns = await w2.wait("master:task:assign", timeout_s=15)
    assert src2["id"] in [a["id"] for m in assigns for a in m["accounts"]]
    r = await api.get(f"/api/v1/sources/{src2['id']}")
    assert r.json()["assigned_node_id"] == node2
