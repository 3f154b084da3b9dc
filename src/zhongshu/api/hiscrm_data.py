"""The HisCRM Master's data API: comments, direct messages, notifications, status.

Field names are the seed's (``docs/im.md`` lists them); times are epoch milliseconds.
Comments and direct messages are the same collected items the IM API serves.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from zhongshu import __version__
from zhongshu.api.deps import HubDep, UserDep
from zhongshu.api.shapes import ms
from zhongshu.services.im import Filters

router = APIRouter(prefix="/api/v1", tags=["hiscrm data"])
Row = dict[str, Any]
Limit = Annotated[int, Query(ge=1, le=500)]
Offset = Annotated[int, Query(ge=0, le=1_000_000)]


def _listing(key: str, items: list[Row], total: int | None, limit: int, offset: int) -> Row:
    """The seed's list reply: ``{success, <key>: […], total, limit, offset}``."""
    return {"success": True, key: items, "total": total, "limit": limit, "offset": offset}


def comment_public(r: Row, post: Row | None) -> Row:
    return {
        "id": str(r["id"]),
        "account_id": r["source_id"],
        "platform_comment_id": r["platform_id"],
        "content": r["text"],
        "author_name": r["author_name"],
        "author_id": r["author_id"],
        "post_id": r["parent_id"],
        "post_title": post["title"] if post else None,
        "is_read": bool(r["is_read"]),
        "detected_at": ms(r["first_seen_at"]),
        "created_at": ms(r["published_at"]),
    }


def direct_message_public(r: Row) -> Row:
    return {
        "id": str(r["id"]),
        "account_id": r["source_id"],
        "platform_message_id": r["platform_id"],
        "conversation_id": r["parent_id"],
        "content": r["text"],
        "sender_name": r["author_name"],
        "sender_id": r["author_id"],
        "direction": r["direction"],
        "is_read": bool(r["is_read"]),
        "detected_at": ms(r["first_seen_at"]),
        "created_at": ms(r["published_at"]),
    }


def notification_public(r: Row) -> Row:
    return {
        "id": r["id"],
        "type": r["type"],
        "account_id": r["source_id"],
        "related_id": r["related_id"],
        "title": r["title"],
        "content": r["content"],
        "data": r["data"],
        "priority": r["priority"],
        "is_sent": bool(r["is_sent"]),
        "sent_at": ms(r["sent_at"]),
        "is_read": bool(r["is_read"]),
        "created_at": ms(r["created_at"]),
    }


@router.get("/comments")
async def list_comments(
    hub: HubDep,
    p: UserDep,
    limit: Limit = 20,
    offset: Offset = 0,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Row:
    """List comments, newest first."""
    f = Filters(account_id=account_id, limit=limit, offset=offset, with_total=True)
    page = await hub.im.page(p, ("comment",), f)
    posts = await hub.im.titles(
        [(r["source_id"], "content", r["parent_id"]) for r in page.rows if r["parent_id"]]
    )
    comments = [
        comment_public(r, posts.get((r["source_id"], "content", r["parent_id"]))) for r in page.rows
    ]
    return _listing("comments", comments, page.total, limit, offset)


@router.get("/direct-messages")
async def list_direct_messages(
    hub: HubDep,
    p: UserDep,
    limit: Limit = 20,
    offset: Offset = 0,
    direction: Annotated[Literal["inbound", "outbound"] | None, Query()] = None,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Row:
    """List direct messages, newest first."""
    f = Filters(
        account_id=account_id, direction=direction, limit=limit, offset=offset, with_total=True
    )
    page = await hub.im.page(p, ("message",), f)
    messages = [direct_message_public(r) for r in page.rows]
    return _listing("direct_messages", messages, page.total, limit, offset)


@router.get("/notifications")
async def list_notifications(
    hub: HubDep,
    p: UserDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
    type: Annotated[
        Literal["comment", "direct_message", "system", "account_status"] | None, Query()
    ] = None,
    is_read: bool | None = None,
) -> Row:
    """List your notifications, newest first."""
    rows, total = await hub.notifications.find(
        p, type=type, is_read=is_read, limit=limit, offset=offset
    )
    return _listing("notifications", [notification_public(r) for r in rows], total, limit, offset)


@router.put("/notifications/{notification_id}/read")
async def read_notification(notification_id: str, hub: HubDep, p: UserDep) -> Row:
    """Mark a notification read."""
    row = await hub.notifications.mark_read(p, notification_id)
    return {"success": True, "notification": notification_public(row)}


@router.get("/status")
async def status(hub: HubDep, p: UserDep) -> Row:
    """Hub status with the collected-data statistics you can see."""
    stats = await hub.im.stats(p)
    for a in stats["accounts"]:
        a["last_sync_at"] = ms(a["last_sync_at"])
    return {
        "success": True,
        "status": "running",
        "version": __version__,
        "data_store": stats,
    }
