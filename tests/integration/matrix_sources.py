"""Policy-matrix objects for sources, accounts, proxies, workers and login sessions.

Everything is owned by the matrix's ``user``. The login session is written through the
service's store (a QR login needs a connected worker, which the matrix has not); the
``POST …/login`` calls themselves get 409 (no capable worker), which the matrix accepts.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx

from zhongshu.services.events import Event

BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/sources"): {"platform": "demo", "name": "matrix source"},
    ("PATCH", "/api/v1/sources/{source_id}"): {"name": "renamed"},
    ("POST", "/api/v1/accounts"): {"platform": "demo", "account_name": "matrix account"},
    ("PUT", "/api/v1/accounts/{source_id}"): {"account_name": "renamed"},
    ("POST", "/api/v1/proxies"): {"url": "http://127.0.0.1:3128"},
    ("PATCH", "/api/v1/proxies/{proxy_id}"): {"name": "renamed"},
    ("PUT", "/api/v1/nodes/{node_id}/proxy"): {"proxy_id": None},
}


async def build_objects(client: httpx.AsyncClient, owner: Any, hub: Any) -> dict[str, str]:
    r = await client.post(
        "/api/v1/sources",
        json={"platform": "demo", "name": "owned source"},
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    source_id = r.json()["id"]
    r = await client.post(
        "/api/v1/proxies", json={"url": "socks5://u:p@127.0.0.1:1080"}, headers=owner.headers
    )
    assert r.status_code == 201, r.text
    proxy_id = r.json()["id"]
    now = time.time()
    session = {
        "id": "ls_" + uuid.uuid4().hex[:16],
        "source_id": source_id,
        "owner_id": owner.id,
        "node_id": None,
        "status": "pending",
        "login_method": "qrcode",
        "started_by": f"user:{owner.id}",
        "expires_at": now + 300,
        "created_at": now,
        "updated_at": now,
    }
    ev = Event("login.started", "login_session", session["id"], "system", {})
    await hub.logins.store.start(session, ev, lambda old: ev)
    return {"source_id": source_id, "proxy_id": proxy_id, "login_session_id": session["id"]}
