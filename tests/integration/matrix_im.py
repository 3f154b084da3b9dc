"""Collected data and the IM API in the policy matrix, plus helpers the ``test_im_*``
files share: source rows inserted directly (the sources service is another area's), and
the documented snapshot (10 comments, 5 contents, 29 conversations, 10 messages)."""

from __future__ import annotations

import time
import uuid
from typing import Any

from sqlalchemy import insert

from zhongshu.db.schema import sources

Json = dict[str, Any]
BASE_MS = 1_761_804_248_025  # the seed's example timestamp


async def insert_source(
    hub: Any,
    owner_id: str,
    node_id: str | None = None,
    *,
    platform: str = "douyin",
    account_id: str = "",
    name: str = "",
) -> str:
    """A ``sources`` row owned by ``owner_id`` and assigned to ``node_id``; returns its id."""
    sid = uuid.uuid4().hex
    now = time.time()
    async with hub.db.write() as conn:
        await conn.execute(
            insert(sources).values(
                id=sid,
                owner_id=owner_id,
                platform=platform,
                name=name or f"account-{sid[:6]}",
                account_id=account_id,
                assigned_node_id=node_id,
                created_at=now,
                updated_at=now,
            )
        )
    return sid


def documented_data(tag: str = "") -> dict[str, list[Json]]:
    """The seed's snapshot: 10 comments (7 on contents no longer listed, as in the seed),
    5 contents, 29 conversations, 10 messages, no notifications."""
    contents = [
        {
            "id": f"{tag}aweme-{i}",
            "title": f"Video {i}",
            "url": f"https://www.douyin.com/video/{i}",
            "publish_time": BASE_MS - i * 3_600_000,
        }
        for i in range(5)
    ]
    comments = [
        {
            "id": f"{tag}cmt-{i}",
            "content_id": f"{tag}aweme-{i}" if i < 3 else f"{tag}old-aweme-{i}",
            "content": f"comment number {i}",
            "author_name": f"fan{i}",
            "author_id": f"uid-{i}",
            "create_time": BASE_MS - i * 60_000,
        }
        for i in range(10)
    ]
    conversations = [
        {
            "id": f"{tag}conv-{i}",
            "platform_user_id": f"peer-{i}",
            "platform_user_name": f"peer {i}",
            "last_message_content": f"hello {i}",
            "last_message_time": BASE_MS - i * 1000,
            "unread_count": i % 3,
        }
        for i in range(29)
    ]
    messages = [
        {
            "id": f"{tag}msg-{i}",
            "conversation_id": f"{tag}conv-{i % 3}",
            "content": f"message {i}",
            "sender_name": f"peer {i % 3}",
            "sender_id": f"peer-{i % 3}",
            "direction": "inbound" if i % 2 == 0 else "outbound",
            "create_time": BASE_MS - i * 500,
        }
        for i in range(10)
    ]
    return {
        "comments": comments,
        "contents": contents,
        "conversations": conversations,
        "messages": messages,
        "notifications": [],
    }


def payload(account: str, data: dict[str, list[Json]] | None = None, **extra: Any) -> Json:
    data = documented_data() if data is None else data
    return {
        "accountId": account,
        "platform": "douyin",
        "snapshot": {"platform": "douyin", "data": data},
        **extra,
    }


def envelope(account: str, data: dict[str, list[Json]] | None = None, **extra: Any) -> Json:
    return {
        "type": "worker:data:sync",
        "version": "v1",
        "timestamp": int(time.time() * 1000),
        "payload": payload(account, data, **extra),
    }


async def build_objects(client: Any, owner: Any, hub: Any) -> dict[str, str]:
    source_id = await insert_source(hub, owner.id)
    await hub.sync.sync(None, payload(source_id))
    r = await client.get("/api/im/conversations", params={"account_id": source_id, "limit": 1})
    assert r.status_code == 200, r.text
    conversation_id = r.json()["data"]["conversations"][0]["id"]
    note = await hub.notifications.create("system", "matrix", owner_id=owner.id)
    return {
        "source_id": source_id,
        "conversation_id": conversation_id,
        "notification_id": note["id"],
    }
