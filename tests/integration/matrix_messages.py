"""Objects for the policy matrix: a channel, a message (and its view token), an AI
provider and a notification rule, all owned by the matrix's ``user``."""

from __future__ import annotations

from typing import Any

import httpx

# Port 9 (discard) refuses at once on loopback: a test send fails fast, never hangs.
DEAD_END = "json://127.0.0.1:9/matrix"

BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/channels"): {"name": "matrix", "url": DEAD_END},
    ("POST", "/api/v1/messages"): {"title": "matrix"},
    ("POST", "/api/v1/ai-providers"): {
        "name": "matrix",
        "base_url": "http://127.0.0.1:9/v1",
        "model": "m",
    },
    ("POST", "/api/v1/notification-rules"): {"name": "m", "events": ["item.created"]},
}


async def build_objects(client: httpx.AsyncClient, owner: Any, hub: Any) -> dict[str, str]:
    h = owner.headers
    r = await client.post("/api/v1/channels", json={"name": "owned", "url": DEAD_END}, headers=h)
    assert r.status_code == 201, r.text
    channel_id = r.json()["id"]
    r = await client.post(
        "/api/v1/messages", json={"title": "owned", "channels": [channel_id]}, headers=h
    )
    assert r.status_code == 201, r.text
    message = r.json()
    r = await client.post(
        "/api/v1/ai-providers",
        json={"name": "owned", "base_url": "http://127.0.0.1:9/v1", "model": "m"},
        headers=h,
    )
    assert r.status_code == 201, r.text
    provider_id = r.json()["id"]
    r = await client.post(
        "/api/v1/notification-rules",
        json={"name": "owned", "events": ["item.created"], "channel_ids": [channel_id]},
        headers=h,
    )
    assert r.status_code == 201, r.text
    return {
        "channel_id": str(channel_id),
        "message_id": message["message_id"],
        "provider_id": provider_id,
        "rule_id": r.json()["id"],
        "view_token": message["view_url"].rsplit("/", 1)[1],
    }
