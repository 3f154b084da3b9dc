"""Policy-matrix objects for schedules, message tasks and worker lifecycle, plus small
helpers the schedule and message-task tests share (rows written straight to the tables
another area owns: sources and collected items).

``profile``: the matrix's hub has no ``worker_profiles``, so no id is returned for it and
the lifecycle routes get an unknown profile name: admins get 404 (accepted by the matrix
for an id nobody owns), everyone else 401/403 from the policy. A matrix run therefore never
starts a process; tests/acceptance/test_lifecycle_processes.py covers the real starts.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from sqlalchemy import insert

from zhongshu.db.schema import items, sources

BODIES: dict[tuple[str, str], dict[str, Any]] = {}


async def add_source(hub: Any, owner_id: str, name: str = "feed", platform: str = "rss") -> str:
    """A source row owned by ``owner_id`` (written directly: another area owns the API)."""
    source_id = "src_" + uuid.uuid4().hex[:16]
    now = time.time()
    row = {
        "id": source_id,
        "owner_id": owner_id,
        "platform": platform,
        "name": name,
        "account_id": "",
        "monitor_interval_s": 20,
        "status": "active",
        "login_status": "not_logged_in",
        "created_at": now,
        "updated_at": now,
    }
    await hub.db.run_write(lambda conn: conn.execute(insert(sources).values(**row)))
    return source_id


async def add_article(
    hub: Any,
    source_id: str,
    title: str,
    *,
    first_seen_at: float | None = None,
    published_at: float | None = None,
    text: str = "body",
    url: str | None = None,
    kind: str = "content",
) -> None:
    """A collected item row, as the collected-data area would store it."""
    now = time.time()
    row = {
        "source_id": source_id,
        "kind": kind,
        "platform_id": uuid.uuid4().hex,
        "title": title,
        "text": text,
        "url": url or f"https://example.test/{uuid.uuid4().hex[:8]}",
        "author_name": "author",
        "published_at": published_at if published_at is not None else now,
        "first_seen_at": first_seen_at if first_seen_at is not None else now,
        "updated_at": now,
        "digest": uuid.uuid4().hex,
        "raw": {},
    }
    await hub.db.run_write(lambda conn: conn.execute(insert(items).values(**row)))


async def build_objects(client: httpx.AsyncClient, owner: Any, hub: Any) -> dict[str, str]:
    r = await client.post(
        "/api/v1/schedules",
        json={"name": "matrix", "interval_s": 3600, "kind": "matrix.noop"},
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    schedule_id = r.json()["id"]
    source_id = await add_source(hub, owner.id)
    r = await client.post(
        "/api/v1/message-tasks",
        json={
            "name": "matrix",
            "message_template": "{{feed.name}}",
            "web_hook_url": "http://127.0.0.1:9/hook",
            "mps_id": [source_id],
            "cron_exp": "0 0 1 1 *",
        },
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    return {"schedule_id": schedule_id, "message_task_id": r.json()["id"]}
