"""WeRSS message tasks deliver what is new to a real HTTP receiver on 127.0.0.1: rendered
in the sandbox, retried with backoff when the receiver fails, every attempt recorded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from matrix_schedules import add_article, add_source
from sqlalchemy import select, update

from zhongshu import testing
from zhongshu.db.schema import message_tasks, tasks


class Receiver:
    """A webhook on 127.0.0.1 that answers ``fail_first`` requests with 503, then 200."""

    def __init__(self, fail_first: int = 0, fail_status: int = 503) -> None:
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.requests: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                failing = len(receiver.requests) <= receiver.fail_first
                self.send_response(receiver.fail_status if failing else 200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.close()


async def _task(hub: Any, task_id: str) -> dict[str, Any]:
    stmt = select(tasks).where(tasks.c.id == task_id)
    return await hub.db.run_read(lambda c: dict(c.execute(stmt).one()._mapping))


async def _wait_final(hub: Any, task_id: str, timeout_s: float = 15) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        t = await _task(hub, task_id)
        return t if t["status"] in ("succeeded", "dead", "cancelled") else None

    return await testing.wait_until(final, timeout_s=timeout_s)  # type: ignore[no-any-return]


TEMPLATE = (
    '{"feed": {{ feed.name | tojson }}, "count": {{ count }}, '
    '"titles": {{ articles | map(attribute="title") | list | tojson }}, '
    '"first": {{ article.title | tojson }}, "url": {{ article.url | tojson }}}'
)


async def test_renders_delivers_and_retries_until_the_receiver_accepts(
    hub: Any, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    me = (await client.get("/api/v1/auth/whoami")).json()
    feed = await add_source(hub, me["id"], name="科技日报")
    other = await add_source(hub, me["id"], name="quiet feed")
    r = await client.post(
        "/api/v1/message-tasks",
        json={
            "name": "digest",
            "message_type": 1,
            "message_template": TEMPLATE,
            "web_hook_url": receiver.url,
            "mps_id": [feed, other],
            "cron_exp": "0 9 * * *",
            "headers": {"X-Token": "tok-secret-123456"},
            "cookies": {"sid": "cookie-secret-987654"},
        },
    )
    assert r.status_code == 201, r.text
    mt = r.json()
    now = time.time()
    await add_article(hub, feed, "older", published_at=now - 100, url="https://a.test/1")
    await add_article(hub, feed, "newer", published_at=now - 10, url="https://a.test/2")
    await add_article(hub, feed, "a comment", kind="comment")

    r = await client.post(f"/api/v1/message-tasks/{mt['id']}/run")
    assert r.status_code == 202, r.text
    task = await _wait_final(hub, r.json()["task"]["id"])
    assert task["status"] == "succeeded", task
    assert task["attempts"] == 3
    assert task["result"] == {"articles": 2, "posts": 1}

    # One POST per feed with new articles, sent three times (503, 503, 200).
    assert len(receiver.requests) == 3
    got = receiver.requests[-1]
    assert got["headers"]["X-Token"] == "tok-secret-123456"
    assert got["headers"]["Cookie"] == "sid=cookie-secret-987654"
    assert got["headers"]["Content-Type"] == "application/json"
    assert json.loads(got["body"]) == {
        "feed": "科技日报",
        "count": 2,
        "titles": ["newer", "older"],
        "first": "newer",
        "url": "https://a.test/2",
    }

    r = await client.get(f"/api/v1/message-tasks/{mt['id']}")
    body = r.json()
    attempts = sorted(body["deliveries"], key=lambda d: d["attempt"])
    assert [(d["attempt"], d["status_code"], d["ok"]) for d in attempts] == [
        (1, 503, False),
        (2, 503, False),
        (3, 200, True),
    ]
    assert all(d["feed_id"] == feed and d["articles"] == 2 for d in attempts)
    events, _ = await hub.events.query(type_prefix="message_task.", subject_id=mt["id"])
    types = [e["type"] for e in events]
    assert types.count("message_task.delivered") == 1
    assert "message_task.failed" not in types
    # Secrets never in the reply.
    assert "tok-secret-123456" not in r.text and "cookie-secret-987654" not in r.text

    # The next run sends only what is new since this one.
    receiver.requests.clear()
    receiver.fail_first = 0
    await add_article(hub, other, "fresh")
    r = await client.post(f"/api/v1/message-tasks/{mt['id']}/run")
    task = await _wait_final(hub, r.json()["task"]["id"])
    assert task["status"] == "succeeded" and task["result"] == {"articles": 1, "posts": 1}
    assert len(receiver.requests) == 1
    sent = json.loads(receiver.requests[0]["body"])
    assert sent["feed"] == "quiet feed" and sent["titles"] == ["fresh"]

    # Nothing new: no POST at all.
    r = await client.post(f"/api/v1/message-tasks/{mt['id']}/run")
    task = await _wait_final(hub, r.json()["task"]["id"])
    assert task["result"] == {"articles": 0, "posts": 0}
    assert len(receiver.requests) == 1


async def test_the_cron_fires_it_through_the_schedule_loop(
    hub: Any, client: httpx.AsyncClient
) -> None:
    rec = Receiver()
    try:
        me = (await client.get("/api/v1/auth/whoami")).json()
        feed = await add_source(hub, me["id"], name="RSS one")
        r = await client.post(
            "/api/v1/message-tasks",
            json={
                "name": "on cron",
                "message_template": (
                    "{{feed.name}}: {% for a in articles %}{{a.title}} {% endfor %}"
                ),
                "web_hook_url": rec.url,
                "mps_id": [{"id": feed, "mp_name": "RSS one"}],
                "cron_exp": "*/5 * * * *",
                "timezone": "Asia/Shanghai",
            },
        )
        assert r.status_code == 201, r.text
        mt = r.json()
        await add_article(hub, feed, "hello")
        # Make it due now; the loop (woken by the change) fires it once.
        due = time.time() - 1
        stmt = update(message_tasks).where(message_tasks.c.id == mt["id"]).values(next_run_at=due)
        await hub.db.run_write(lambda c: c.execute(stmt))
        hub.schedules.wake()

        async def delivered() -> bool:
            return len(rec.requests) >= 1

        await testing.wait_until(delivered, timeout_s=10)
        body = json.loads(rec.requests[0]["body"])
        # message_type 0 to a plain URL: {"title", "content"}.
        assert body == {"title": "RSS one: 1 new", "content": "RSS one: hello "}
        row = (await client.get(f"/api/v1/message-tasks/{mt['id']}")).json()
        assert row["run_count"] == 1 and row["last_task_id"]
        assert row["next_run_at"] > row["last_run_at"]
        t = await _task(hub, row["last_task_id"])
        assert t["idempotency_key"] == f"message_task:{mt['id']}:{due!r}"
        assert await hub.schedules.fire_due() == 0
    finally:
        rec.close()


async def test_a_receiver_that_never_accepts_ends_dead_after_bounded_attempts(
    hub: Any, client: httpx.AsyncClient
) -> None:
    rec = Receiver(fail_first=1000)
    hub.message_tasks.max_attempts = 3
    try:
        me = (await client.get("/api/v1/auth/whoami")).json()
        feed = await add_source(hub, me["id"])
        r = await client.post(
            "/api/v1/message-tasks",
            json={
                "name": "doomed",
                "message_template": "x",
                "web_hook_url": rec.url,
                "mps_id": [feed],
                "cron_exp": "0 0 * * *",
            },
        )
        mt = r.json()
        await add_article(hub, feed, "a")
        r = await client.post(f"/api/v1/message-tasks/{mt['id']}/run")
        task = await _wait_final(hub, r.json()["task"]["id"])
        assert task["status"] == "dead" and task["attempts"] == 3
        assert "HTTP 503" in task["error"]
        assert len(rec.requests) == 3
        events, _ = await hub.events.query(type_prefix="message_task.failed", subject_id=mt["id"])
        assert len(events) == 1
    finally:
        rec.close()


async def test_a_4xx_from_the_receiver_is_not_retried(hub: Any, client: httpx.AsyncClient) -> None:
    rec = Receiver(fail_first=1000, fail_status=404)
    try:
        me = (await client.get("/api/v1/auth/whoami")).json()
        feed = await add_source(hub, me["id"])
        r = await client.post(
            "/api/v1/message-tasks",
            json={
                "name": "gone",
                "message_template": "x",
                "web_hook_url": rec.url,
                "mps_id": [feed],
                "cron_exp": "0 0 * * *",
            },
        )
        await add_article(hub, feed, "a")
        r = await client.post(f"/api/v1/message-tasks/{r.json()['id']}/run")
        task = await _wait_final(hub, r.json()["task"]["id"])
        assert task["status"] == "dead" and task["attempts"] == 1
        assert len(rec.requests) == 1
    finally:
        rec.close()
