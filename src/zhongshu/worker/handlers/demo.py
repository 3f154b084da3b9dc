"""Handlers for the ``demo`` platform (src/zhongshu/demo/platform.py).

Start a worker for it with ``--capability demo --handlers zhongshu.worker.handlers.demo``;
the platform's URL comes from ``ZHONGSHU_DEMO_PLATFORM_URL``. These are also the model for
a real platform's handlers: ``<platform>.login`` shows QR codes and returns credentials,
``<platform>.monitor`` collects with the account's credentials and syncs to the hub.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import httpx

from zhongshu.worker.errors import PermanentFailure
from zhongshu.worker.registry import TaskContext, handler

PLATFORM = "demo"
DEFAULT_URL = "http://127.0.0.1:8765"
LOGIN_POLL_S = 1.0
LOGIN_TIMEOUT_S = 300.0


def platform_url() -> str:
    return os.environ.get("ZHONGSHU_DEMO_PLATFORM_URL", DEFAULT_URL).rstrip("/")


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=platform_url(), timeout=10.0, trust_env=False)


@handler("demo.login")
async def login(ctx: TaskContext, request: dict[str, Any]) -> dict[str, Any]:
    """Show the platform's QR code, wait until it is scanned, return the session."""
    async with _client() as client:
        qr = (await client.post("/login/qr")).raise_for_status().json()
        await ctx.hub.emit_qrcode(qr["qr_code_data"])
        ctx.logger.info("demo login %s: scan %s", ctx.task_id, qr["scan_url"])
        deadline = time.monotonic() + LOGIN_TIMEOUT_S
        while time.monotonic() < deadline:
            state = (await client.get(f"/login/qr/{qr['qr_id']}")).raise_for_status().json()
            if state["status"] == "confirmed":
                return {
                    "status": "success",
                    "cookies": state["cookies"],
                    "user_info": state["user_info"],
                    "fingerprint": {"user_agent": "zhongshu-demo/1.0", "platform": PLATFORM},
                }
            if state["status"] == "expired":
                return {"status": "failed", "error_message": "the QR code expired unscanned"}
            await asyncio.sleep(LOGIN_POLL_S)
    return {"status": "failed", "error_message": "nobody scanned the QR code in time"}


def _session_cookie(account: dict[str, Any]) -> str:
    """The ``demo_session`` cookie, wherever the hub put the credentials."""
    creds = account.get("credentials") or {}
    cookies = account.get("cookies") or (creds.get("cookies") if isinstance(creds, dict) else None)
    if isinstance(cookies, dict):
        return str(cookies.get("demo_session", ""))
    for cookie in cookies or []:
        if isinstance(cookie, dict) and cookie.get("name") == "demo_session":
            return str(cookie.get("value", ""))
    return ""


@handler("demo.monitor")
async def monitor(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Collect the account's inbox and sync it to the hub (a snapshot; the hub merges)."""
    source_id = str(payload.get("source_id") or payload.get("account_id") or "")
    if not source_id:
        raise PermanentFailure("monitor payload needs source_id")
    account = ctx.hub.account(source_id)
    async with _client() as client:
        r = await client.get("/api/inbox", cookies={"demo_session": _session_cookie(account)})
    if r.status_code == 401:
        await ctx.hub.report_login_expired(source_id, "the demo platform refused the session")
        raise PermanentFailure("login expired: the demo platform refused the session")
    data = r.raise_for_status().json()
    ack = await ctx.hub.sync(source_id, PLATFORM, data)
    return {"synced": {kind: len(items) for kind, items in data.items()}, "ack": ack}
