"""Result callbacks: POST a finished task to its ``callback_url``, signed.

Signing follows Standard Webhooks: headers ``webhook-id``, ``webhook-timestamp`` and
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``. The secret is the
hub's ``callback_secret`` (``whsec_<base64>``). Delivery state lives on the task row, so a
restart resumes pending deliveries; every attempt is stored in ``callback_deliveries``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

from zhongshu.db.task_store import TaskStore
from zhongshu.services.events import Event, EventBus, wait_event
from zhongshu.services.tasks import retry_delay_s

log = logging.getLogger("zhongshu.callbacks")


def secret_bytes(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_bytes(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance_s: int = 300) -> bool:
    """Check a delivery the way a receiver should (used by tests and docs)."""
    msg_id, ts = headers["webhook-id"], int(headers["webhook-timestamp"])
    if abs(time.time() - ts) > tolerance_s:
        return False
    expected = sign(secret, msg_id, ts, body).split(",", 1)[1]
    given = [
        s.split(",", 1)[1] for s in headers["webhook-signature"].split() if s.startswith("v1,")
    ]
    return any(hmac.compare_digest(expected, g) for g in given)


def callback_body(task: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": f"task.{task['status']}",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "data": {
            "id": task["id"],
            "kind": task["kind"],
            "status": task["status"],
            "result": task["result"],
            "error": task["error"],
            "attempts": task["attempts"],
        },
    }


class CallbackSender:
    def __init__(
        self,
        store: TaskStore,
        bus: EventBus,
        secret: str,
        *,
        max_attempts: int = 5,
        timeout_s: float = 10.0,
        retry_base_s: float = 1.0,
        poll_s: float = 1.0,
    ) -> None:
        self.store = store
        self.secret = secret
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.retry_base_s = retry_base_s
        self.poll_s = poll_s
        self._wake = asyncio.Event()
        bus.listen("task.", self._on_event)

    def _on_event(self, ev: Event) -> None:
        if ev.type in ("task.succeeded", "task.dead", "task.cancelled"):
            self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled (the app's lifespan cancels it on shutdown)."""
        async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=False) as client:
            while True:
                try:
                    due = await self.store.due_callbacks(time.time(), 20)
                    await asyncio.gather(*(self.deliver(client, t) for t in due))
                except Exception:
                    log.exception("callback round failed")
                    due = []
                if not due:
                    await wait_event(self._wake, self.poll_s)
                    self._wake.clear()

    async def deliver(self, client: httpx.AsyncClient, task: dict[str, Any]) -> bool:
        attempt = task["callback_attempts"] + 1
        msg_id = f"msg_{task['id']}_{task['status']}"
        body = json.dumps(callback_body(task), separators=(",", ":")).encode()
        ts = int(time.time())
        headers = {
            "content-type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": sign(self.secret, msg_id, ts, body),
            "user-agent": "zhongshu-callbacks/1",
        }
        started = time.perf_counter()
        status_code: int | None = None
        error: str | None = None
        try:
            resp = await client.post(task["callback_url"], content=body, headers=headers)
            status_code = resp.status_code
            ok = 200 <= resp.status_code < 300
            if not ok:
                error = f"receiver answered {resp.status_code}"
        except httpx.HTTPError as exc:
            ok = False
            error = f"{type(exc).__name__}: {exc}"
        now = time.time()
        delivery = {
            "task_id": task["id"],
            "attempt": attempt,
            "webhook_id": msg_id,
            "at": now,
            "status_code": status_code,
            "ok": ok,
            "error": error,
            "duration_ms": (time.perf_counter() - started) * 1000,
        }
        values: dict[str, Any] = {"callback_attempts": attempt}
        ev = None
        if ok:
            values.update(callback_status="delivered", callback_next_at=None)
            ev = Event(
                "task.callback_delivered", "task", task["id"], "system", {"attempt": attempt}, now
            )
        elif attempt >= self.max_attempts:
            values.update(callback_status="failed", callback_next_at=None)
            ev = Event(
                "task.callback_failed",
                "task",
                task["id"],
                "system",
                {"attempt": attempt, "error": error},
                now,
            )
        else:
            values["callback_next_at"] = now + retry_delay_s(attempt, self.retry_base_s, 300.0)
        await self.store.record_delivery(delivery, values, ev)
        return ok
