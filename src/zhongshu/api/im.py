"""The IM API (``/api/im/*``): what a chat client asks of the collected data.

Every reply is ``{"success": true, "data": {...}}``; lists carry ``has_more`` and
``next_cursor`` (pass it back as ``cursor``), and ``total`` when ``include_total=true``.
Times are epoch milliseconds, as the seed's JavaScript clients expect; ``since`` and
``until`` accept epoch seconds or milliseconds. Item ids (``id``) are the hub's; the
platform's ids are ``conversation_id``, ``message_id``, ``content_id``, ``comment_id``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, ConfigDict, Field

from zhongshu.api.deps import HubDep, UserDep, WriterDep
from zhongshu.api.shapes import ms
from zhongshu.services.im import Filters, Page

router = APIRouter(prefix="/api/im", tags=["im"])
Row = dict[str, Any]


def _seconds(value: float | None) -> float | None:
    if value is None:
        return None
    return value / 1000.0 if value > 1e11 else value


def conversation_public(r: Row) -> Row:
    return {
        "id": str(r["id"]),
        "conversation_id": r["platform_id"],
        "account_id": r["source_id"],
        "platform": r.get("platform", ""),
        "platform_user_id": r["author_id"],
        "platform_user_name": r["author_name"] or r["title"],
        "title": r["title"],
        "last_message_content": r["text"],
        "last_message_time": ms(r["published_at"]),
        "unread_count": r["unread_count"],
        "is_read": bool(r["is_read"]),
        "is_pinned": bool(r["is_pinned"]),
        "is_muted": bool(r["is_muted"]),
        "created_at": ms(r["first_seen_at"]),
        "updated_at": ms(r["updated_at"]),
        "raw": r["raw"],
    }


def message_public(r: Row) -> Row:
    return {
        "id": str(r["id"]),
        "message_id": r["platform_id"],
        "conversation_id": r["parent_id"],
        "account_id": r["source_id"],
        "platform": r.get("platform", ""),
        "sender_id": r["author_id"],
        "sender_name": r["author_name"],
        "content": r["text"],
        "direction": r["direction"],
        "is_read": bool(r["is_read"]),
        "created_at": ms(r["published_at"]),
        "detected_at": ms(r["first_seen_at"]),
        "raw": r["raw"],
    }


def content_public(r: Row) -> Row:
    return {
        "id": str(r["id"]),
        "content_id": r["platform_id"],
        "account_id": r["source_id"],
        "platform": r.get("platform", ""),
        "title": r["title"],
        "description": r["text"],
        "url": r["url"],
        "author_id": r["author_id"],
        "author_name": r["author_name"],
        "publish_time": ms(r["published_at"]),
        "detected_at": ms(r["first_seen_at"]),
        "raw": r["raw"],
    }


def comment_public(r: Row) -> Row:
    return {
        "id": str(r["id"]),
        "comment_id": r["platform_id"],
        "content_id": r["parent_id"],
        "account_id": r["source_id"],
        "platform": r.get("platform", ""),
        "author_id": r["author_id"],
        "author_name": r["author_name"],
        "content": r["text"],
        "is_read": bool(r["is_read"]),
        "created_at": ms(r["published_at"]),
        "detected_at": ms(r["first_seen_at"]),
        "raw": r["raw"],
    }


def unified_public(r: Row) -> Row:
    if r["kind"] == "comment":
        return {"type": "comment", **comment_public(r)}
    return {"type": "direct_message", **message_public(r)}


def account_public(r: Row) -> Row:
    return {
        "id": r["id"],
        "account_id": r["account_id"],
        "account_name": r["name"],
        "platform": r["platform"],
        "status": r["status"],
        "login_status": r["login_status"],
        "owner_id": r["owner_id"],
        "assigned_node_id": r["assigned_node_id"],
        "syncs": r["syncs"] or 0,
        "last_sync_at": ms(r["last_sync_at"]),
    }


def _listing(page: Page, key: str, shape: Any) -> Row:
    data: Row = {
        key: [shape(r) for r in page.rows],
        "count": len(page.rows),
        "has_more": page.has_more,
        "next_cursor": page.next_cursor,
    }
    if page.total is not None:
        data["total"] = page.total
    return {"success": True, "data": data}


class ListParams(BaseModel):
    account_id: str | None = Field(None, max_length=64, description="the source id")
    is_read: bool | None = None
    since: float | None = Field(None, ge=0, description="epoch s or ms, inclusive")
    until: float | None = Field(None, ge=0, description="epoch s or ms, exclusive")
    keyword: str | None = Field(None, max_length=200)
    limit: int = Field(50, ge=1, le=500)
    offset: int = Field(0, ge=0, le=1_000_000)
    cursor: str | None = Field(None, max_length=200)
    order: Literal["asc", "desc"] = "desc"
    include_total: bool = False

    def filters(self, **extra: Any) -> Filters:
        return Filters(
            account_id=self.account_id,
            is_read=self.is_read,
            since=_seconds(self.since),
            until=_seconds(self.until),
            keyword=self.keyword,
            limit=self.limit,
            offset=self.offset,
            cursor=self.cursor,
            order=self.order,
            with_total=self.include_total,
            **extra,
        )


Params = Annotated[ListParams, Query()]


@router.get("/accounts")
async def list_accounts(hub: HubDep, p: UserDep) -> Row:
    """List the accounts (sources) whose data you can read."""
    rows = await hub.im.accounts(p)
    return {"success": True, "data": {"accounts": [account_public(r) for r in rows]}}


@router.get("/conversations")
async def list_conversations(hub: HubDep, p: UserDep, params: Params) -> Row:
    """List conversations, newest activity first."""
    page = await hub.im.page(p, ("conversation",), params.filters())
    return _listing(page, "conversations", conversation_public)


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="allow")
    account_id: str = Field(min_length=1, max_length=64)
    conversation_id: str | None = Field(None, min_length=1, max_length=255)
    platform_user_id: str | None = Field(None, max_length=255)
    platform_user_name: str | None = Field(None, max_length=255)
    title: str | None = Field(None, max_length=255)


@router.post("/conversations", status_code=status.HTTP_201_CREATED)
async def create_conversation(body: ConversationCreate, hub: HubDep, p: WriterDep) -> Row:
    """Create a conversation on one of your accounts."""
    raw = body.model_dump(exclude_none=True, exclude={"account_id"})
    row = await hub.im.create_conversation(p, body.account_id, raw)
    return {"success": True, "data": conversation_public(row)}


@router.get("/conversations/{conversation_id}")
async def get_conversation(conversation_id: str, hub: HubDep, p: UserDep) -> Row:
    """Get one conversation."""
    row = await hub.im.get(p, conversation_id, "conversation")
    return {"success": True, "data": conversation_public(row)}


@router.put("/conversations/{conversation_id}/read")
async def read_conversation(conversation_id: str, hub: HubDep, p: WriterDep) -> Row:
    """Mark a conversation and its messages read."""
    row = await hub.im.set_flags(p, conversation_id, "conversation", read=True)
    return {"success": True, "data": conversation_public(row)}


@router.delete("/conversations/{conversation_id}")
async def delete_conversation(conversation_id: str, hub: HubDep, p: WriterDep) -> Row:
    """Delete a conversation and its messages (a later sync may bring it back)."""
    await hub.im.delete(p, conversation_id, "conversation")
    return {"success": True, "data": {"id": conversation_id, "deleted": True}}


@router.put("/conversations/{conversation_id}/pin")
async def pin_conversation(conversation_id: str, hub: HubDep, p: WriterDep) -> Row:
    """Pin a conversation."""
    row = await hub.im.set_flags(p, conversation_id, "conversation", pinned=True)
    return {"success": True, "data": conversation_public(row)}


@router.delete("/conversations/{conversation_id}/pin")
async def unpin_conversation(conversation_id: str, hub: HubDep, p: WriterDep) -> Row:
    """Unpin a conversation."""
    row = await hub.im.set_flags(p, conversation_id, "conversation", pinned=False)
    return {"success": True, "data": conversation_public(row)}


@router.put("/conversations/{conversation_id}/mute")
async def mute_conversation(conversation_id: str, hub: HubDep, p: WriterDep) -> Row:
    """Mute a conversation."""
    row = await hub.im.set_flags(p, conversation_id, "conversation", muted=True)
    return {"success": True, "data": conversation_public(row)}


@router.delete("/conversations/{conversation_id}/mute")
async def unmute_conversation(conversation_id: str, hub: HubDep, p: WriterDep) -> Row:
    """Unmute a conversation."""
    row = await hub.im.set_flags(p, conversation_id, "conversation", muted=False)
    return {"success": True, "data": conversation_public(row)}


@router.get("/messages")
async def list_messages(
    hub: HubDep,
    p: UserDep,
    params: Params,
    conversation_id: Annotated[str | None, Query(max_length=255)] = None,
    direction: Annotated[Literal["inbound", "outbound"] | None, Query()] = None,
) -> Row:
    """List direct messages, of one conversation (its platform conversation_id) or all."""
    f = params.filters(parent_id=conversation_id, direction=direction)
    page = await hub.im.page(p, ("message",), f)
    return _listing(page, "messages", message_public)


@router.get("/contents")
async def list_contents(hub: HubDep, p: UserDep, params: Params) -> Row:
    """List contents (posts, videos, articles)."""
    page = await hub.im.page(p, ("content",), params.filters())
    return _listing(page, "contents", content_public)


@router.get("/discussions")
async def list_discussions(
    hub: HubDep,
    p: UserDep,
    params: Params,
    content_id: Annotated[str | None, Query(max_length=255)] = None,
) -> Row:
    """List comments, of one content (its platform content_id) or all."""
    page = await hub.im.page(p, ("comment",), params.filters(parent_id=content_id))
    return _listing(page, "discussions", comment_public)


@router.get("/unified-messages")
async def unified_messages(hub: HubDep, p: UserDep, params: Params) -> Row:
    """Comments and direct messages in one time-ordered feed, with unread counts."""
    page = await hub.im.unified(p, params.filters())
    out = _listing(page, "messages", unified_public)
    unread = page.unread
    out["data"]["unread"] = {
        "comments": unread.get("comment", 0),
        "direct_messages": unread.get("message", 0),
        "total": sum(unread.values()),
    }
    return out


@router.get("/stats")
async def im_stats(hub: HubDep, p: UserDep) -> Row:
    """Items per kind per account, syncs per account and last sync times."""
    stats = await hub.im.stats(p)
    for a in stats["accounts"]:
        a["last_sync_at"] = ms(a["last_sync_at"])
    return {"success": True, "data": stats}


@router.get("/integrity")
async def im_integrity(hub: HubDep, p: UserDep) -> Row:
    """Orphans: comments whose content and messages whose conversation are unknown."""
    return {"success": True, "data": await hub.im.integrity(p)}
