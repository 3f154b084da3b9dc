"""The fake platform's HTTP API (docs/demo.md).

- ``POST /login/qr`` → ``{qr_id, scan_url, qr_code_data}`` (a PNG data URL made by segno)
- ``GET /login/qr/{qr_id}/scan`` → "scans" the code (what a phone would do)
- ``GET /login/qr/{qr_id}`` → ``{status: waiting|confirmed|expired, cookies, user_info}``
- ``GET /api/inbox`` (cookie ``demo_session``) → everything the account has so far:
  posts, comments on them, conversations and their messages. New activity appears every
  ``activity_every_s`` seconds, so a monitor sees things arrive. 401 for a bad session.

State is in memory: the platform is a toy and forgets everything when it stops.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import segno
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

NAMES = ["Lin", "Wang Fang", "Chen Jie", "Zhao Lei", "Sun Li", "Zhou Min", "Wu Hao", "Xu Ting"]
POST_TITLES = [
    "Morning run by the river",
    "Trying the new noodle place",
    "Our team offsite photos",
    "Three tips for better sleep",
    "Weekend hiking route",
]
COMMENT_TEXTS = [
    "Love this!",
    "Where is this place?",
    "Great tips, thanks",
    "I was there last week too",
    "Can you share more details?",
    "Amazing photos",
]
DM_TEXTS = [
    "Hi! Is the item still available?",
    "Thanks for the quick reply",
    "Can we collaborate on a post?",
    "What time does the shop open?",
    "Sent you the details by mail",
]


@dataclass
class QrLogin:
    qr_id: str
    created_at: float
    status: str = "waiting"
    session: str = ""


@dataclass
class Account:
    """One logged-in demo user and the activity generated for it."""

    session: str
    user_id: str
    started_at: float
    posts: list[dict[str, Any]] = field(default_factory=list)


class DemoPlatform:
    def __init__(
        self, base_url: str, *, activity_every_s: float = 5.0, qr_ttl_s: float = 300.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.activity_every_s = activity_every_s
        self.qr_ttl_s = qr_ttl_s
        self.qrs: dict[str, QrLogin] = {}
        self.accounts: dict[str, Account] = {}

    def new_qr(self) -> dict[str, Any]:
        qr_id = secrets.token_urlsafe(12)
        self.qrs[qr_id] = QrLogin(qr_id, time.time())
        scan_url = f"{self.base_url}/login/qr/{qr_id}/scan"
        data = segno.make(scan_url, error="m").png_data_uri(scale=4)
        return {"qr_id": qr_id, "scan_url": scan_url, "qr_code_data": data}

    def scan(self, qr_id: str) -> QrLogin:
        qr = self._qr(qr_id)
        if qr.status == "waiting":
            qr.status = "confirmed"
            qr.session = secrets.token_urlsafe(24)
            user_id = f"demo_{len(self.accounts) + 1:03d}"
            self.accounts[qr.session] = Account(qr.session, user_id, time.time())
        return qr

    def qr_status(self, qr_id: str) -> dict[str, Any]:
        qr = self._qr(qr_id)
        out: dict[str, Any] = {"status": qr.status}
        if qr.status == "confirmed":
            account = self.accounts[qr.session]
            out["cookies"] = [{"name": "demo_session", "value": qr.session}]
            out["user_info"] = {"user_id": account.user_id, "nickname": account.user_id}
        return out

    def _qr(self, qr_id: str) -> QrLogin:
        qr = self.qrs.get(qr_id)
        if qr is None:
            raise HTTPException(404, "unknown QR code")
        if qr.status == "waiting" and time.time() - qr.created_at > self.qr_ttl_s:
            qr.status = "expired"
        return qr

    def inbox(self, session: str) -> dict[str, list[dict[str, Any]]]:
        """Everything the account has by now: a deterministic function of elapsed time."""
        account = self.accounts.get(session)
        if account is None:
            raise HTTPException(401, "not logged in (demo_session cookie missing or unknown)")
        ticks = 1 + int((time.time() - account.started_at) / self.activity_every_s)
        uid = account.user_id
        contents, comments, conversations, messages = [], [], [], []
        for p in range(min(len(POST_TITLES), 1 + ticks // 4)):
            contents.append(
                {
                    "id": f"{uid}-post-{p}",
                    "title": POST_TITLES[p],
                    "text": f"{POST_TITLES[p]} — a demo post.",
                    "url": f"{self.base_url}/p/{uid}-post-{p}",
                    "author_name": uid,
                    "create_time": account.started_at + p,
                }
            )
        for c in range(ticks * 2):
            post = contents[c % len(contents)]
            comments.append(
                {
                    "id": f"{uid}-comment-{c}",
                    "content_id": post["id"],
                    "author_name": NAMES[c % len(NAMES)],
                    "text": COMMENT_TEXTS[c % len(COMMENT_TEXTS)],
                    "create_time": account.started_at + c * self.activity_every_s / 2,
                }
            )
        for m in range(ticks):
            peer = NAMES[m % len(NAMES)]
            conv_id = f"{uid}-conv-{m % len(NAMES)}"
            if m < len(NAMES):
                conversations.append(
                    {"id": conv_id, "title": peer, "peer_name": peer, "peer_id": f"peer-{m}"}
                )
            messages.append(
                {
                    "id": f"{uid}-dm-{m}",
                    "conversation_id": conv_id,
                    "author_name": peer,
                    "direction": "inbound",
                    "text": DM_TEXTS[m % len(DM_TEXTS)],
                    "create_time": account.started_at + m * self.activity_every_s,
                }
            )
        return {
            "contents": contents,
            "comments": comments,
            "conversations": conversations,
            "messages": messages,
        }


def create_platform_app(platform: DemoPlatform) -> FastAPI:
    app = FastAPI(title="zhongshu demo platform")

    @app.post("/login/qr")
    async def new_qr() -> dict[str, Any]:
        return platform.new_qr()

    @app.get("/login/qr/{qr_id}/scan", response_class=HTMLResponse)
    async def scan(qr_id: str) -> str:
        qr = platform.scan(qr_id)
        if qr.status != "confirmed":
            return f"<h1>QR code {qr.status}</h1><p>Start the login again.</p>"
        return "<h1>Scanned ✔</h1><p>The demo account is logged in; back to the console.</p>"

    @app.get("/login/qr/{qr_id}")
    async def qr_status(qr_id: str) -> dict[str, Any]:
        return platform.qr_status(qr_id)

    @app.get("/api/inbox")
    async def inbox(request: Request) -> dict[str, Any]:
        return platform.inbox(request.cookies.get("demo_session", ""))

    return app
