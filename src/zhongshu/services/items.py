"""What a collected item is: parsing the worker's sync envelope and normalizing each item.

Workers send platform-shaped dicts (the Worker → Master → IM seed: ``worker:data:sync``
with ``snapshot.data.{comments, contents, conversations, messages, notifications}``).
Field names differ between platforms and worker versions, so each normalized column is
read from a short list of accepted keys; the whole dict is kept in ``raw``. Anything
that cannot be stored faithfully (no id, unknown kind, bad direction, too many items) is
refused with a message naming the item, and nothing of the batch is stored (big kinds on
PostgreSQL are normalized while they are copied, ``ItemStream``: the sync's transaction
then rolls back).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from zhongshu import errors
from zhongshu.db.item_store import KINDS, RowStream, dumps

Row = dict[str, Any]
SYNC_TYPE = "worker:data:sync"
ACK_TYPE = "WORKER_DATA_SYNC_ACK"
RESYNC_TYPE = "MASTER_DATA_RESYNC_REQUEST"
VERSION = "v1"
# Snapshot key (plural, as the seed sends it) -> item kind.
DATA_KEYS: dict[str, str] = {
    "contents": "content",
    "comments": "comment",
    "conversations": "conversation",
    "messages": "message",
    "notifications": "notification",
}
# ``worker:message:detected`` types -> item kind (HisCRM says comment / direct_message).
DETECTED_TYPES: dict[str, str] = {
    "comment": "comment",
    "comments": "comment",
    "direct_message": "message",
    "message": "message",
    "messages": "message",
    "content": "content",
    "conversation": "conversation",
    "notification": "notification",
}

_ID_KEYS: dict[str, tuple[str, ...]] = {
    "content": ("id", "content_id", "contentId", "aweme_id", "work_id", "post_id"),
    "comment": ("id", "comment_id", "commentId", "platform_comment_id", "cid"),
    "conversation": ("id", "conversation_id", "conversationId"),
    "message": ("id", "message_id", "messageId", "platform_message_id", "msg_id"),
    "notification": ("id", "notification_id", "notificationId"),
}
_PARENT_KEYS: dict[str, tuple[str, ...]] = {
    "comment": ("content_id", "contentId", "post_id", "aweme_id", "work_id"),
    "message": ("conversation_id", "conversationId"),
}
_TEXT_KEYS = ("content", "text", "message", "body", "description", "last_message_content")
_TITLE_KEYS = ("title", "name", "platform_user_name", "nickname", "user_name", "post_title")
_AUTHOR_KEYS = (
    "author_name",
    "authorName",
    "sender_name",
    "senderName",
    "platform_user_name",
    "nickname",
    "user_name",
)
_AUTHOR_ID_KEYS = ("author_id", "authorId", "sender_id", "senderId", "platform_user_id", "user_id")
_URL_KEYS = ("url", "link", "share_url", "shareUrl")
_TIME_KEYS = (
    "create_time",
    "createTime",
    "created_at",
    "createdAt",
    "publish_time",
    "publishTime",
    "timestamp",
    "time",
    "updated_at",
)
_CONVERSATION_TIME_KEYS = ("last_message_time", "lastMessageTime", "update_time", *_TIME_KEYS)
MAX_ID_CHARS = 255


@dataclass(frozen=True, slots=True)
class SyncRequest:
    """A parsed sync payload (not yet normalized item by item)."""

    account: str
    platform: str
    mode: Literal["snapshot", "delta"]
    seq: int | None
    prune: bool
    data: dict[str, list[Any]]  # kind -> raw item dicts


def parse_envelope(envelope: Any) -> Row:
    """Check the ``message`` envelope (type and version) and return its payload."""
    if not isinstance(envelope, dict):
        raise errors.InvalidInput(
            "message: the envelope must be an object {type, version, payload}"
        )
    kind = envelope.get("type")
    if kind != SYNC_TYPE:
        raise errors.InvalidInput(f"type: expected {SYNC_TYPE!r}, got {str(kind)[:60]!r}")
    version = envelope.get("version", VERSION)
    if version != VERSION:
        raise errors.InvalidInput(
            f"version: {str(version)[:20]!r} is not supported; this hub speaks {VERSION!r}"
        )
    payload = envelope.get("payload")
    if not isinstance(payload, dict):
        raise errors.InvalidInput("payload: must be an object {accountId, platform, snapshot}")
    return payload


def parse_payload(payload: Any, *, default_account: str | None = None) -> SyncRequest:
    """Parse a sync payload: ``{accountId, platform, mode?, seq?, prune?, snapshot: {data}}``."""
    if not isinstance(payload, dict):
        raise errors.InvalidInput("payload: must be an object {accountId, platform, snapshot}")
    account = payload.get("accountId", payload.get("account_id", default_account))
    if default_account is not None and account != default_account:
        raise errors.InvalidInput(
            f"accountId: {str(account)[:64]!r} does not match the source in the path"
        )
    if not isinstance(account, str) or not account:
        raise errors.InvalidInput("payload.accountId: required (the source id)")
    mode = payload.get("mode", "snapshot")
    if mode not in ("snapshot", "delta"):
        raise errors.InvalidInput(
            f"payload.mode: must be 'snapshot' or 'delta', got {str(mode)[:20]!r}"
        )
    seq = payload.get("seq")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
        raise errors.InvalidInput("payload.seq: must be a non-negative integer")
    if mode == "delta" and seq is None:
        raise errors.InvalidInput("payload.seq: required in delta mode (1, 2, 3, … per source)")
    snapshot = payload.get("snapshot")
    if snapshot is None and "data" in payload:
        snapshot = {"data": payload["data"]}
    if not isinstance(snapshot, dict):
        raise errors.InvalidInput("payload.snapshot: must be an object {platform, data}")
    data = snapshot.get("data")
    if not isinstance(data, dict):
        raise errors.InvalidInput("payload.snapshot.data: must be an object of item lists")
    parsed: dict[str, list[Any]] = {}
    for key, value in data.items():
        kind = DATA_KEYS.get(key)
        if kind is None:
            raise errors.InvalidInput(
                f"payload.snapshot.data.{str(key)[:40]}: unknown kind; expected one of "
                + ", ".join(DATA_KEYS)
            )
        if value is None:
            value = []
        if not isinstance(value, list):
            raise errors.InvalidInput(f"payload.snapshot.data.{key}: must be a list")
        parsed[kind] = value
    prune = payload.get("prune", snapshot.get("prune", False))
    if not isinstance(prune, bool):
        raise errors.InvalidInput("payload.prune: must be true or false")
    if prune and mode == "delta":
        raise errors.InvalidInput("payload.prune: only a snapshot can prune (a delta is partial)")
    platform = payload.get("platform", snapshot.get("platform", ""))
    return SyncRequest(
        account=account,
        platform=str(platform or ""),
        mode=mode,
        seq=seq,
        prune=prune,
        data=parsed,
    )


def normalize_all(
    data: Mapping[str, Sequence[Any]],
    *,
    max_items: int,
    max_item_bytes: int,
    now: float,
    stream_from: int | None = None,
) -> dict[str, list[Row] | RowStream]:
    """Normalize every item, refusing the whole batch on the first bad one.

    With ``stream_from``, a kind of at least that many items whose ids are all present and
    distinct comes back as an ``ItemStream``: normalized later, while the store writes it
    (``ItemStore.stream_from``); its first bad item refuses the batch from there.
    """
    total = sum(len(v) for v in data.values())
    if total > max_items:
        raise errors.SyncTooLarge(
            f"this sync carries {total} items; the limit is {max_items} (im_sync_max_items): "
            "split it into deltas"
        )
    out: dict[str, list[Row] | RowStream] = {}
    for kind, raw_items in data.items():
        if stream_from is not None and len(raw_items) >= stream_from:
            pids = _distinct_ids(kind, raw_items)
            if pids is not None:
                out[kind] = ItemStream(kind, raw_items, pids, max_bytes=max_item_bytes, now=now)
                continue
        seen: dict[str, int] = {}
        rows: list[Row] = []
        plural = _PLURAL[kind]
        for i, raw in enumerate(raw_items):
            row = normalize(kind, raw, where=f"{plural}[{i}]", max_bytes=max_item_bytes, now=now)
            # The same id twice in one batch: the later one wins (it is the newer state).
            if row["platform_id"] in seen:
                rows[seen[row["platform_id"]]] = row
            else:
                seen[row["platform_id"]] = len(rows)
                rows.append(row)
        out[kind] = rows
    return out


_PLURAL = {kind: key for key, kind in DATA_KEYS.items()}


class ItemStream:
    """One kind's raw items, normalized one by one as the store reads them (a
    ``RowStream``). The ids are read first (cheap), so the store can tell new items from
    known ones and reserve ids before the first row is normalized."""

    def __init__(
        self,
        kind: str,
        raw_items: Sequence[Any],
        platform_ids: list[str],
        *,
        max_bytes: int,
        now: float,
    ) -> None:
        self.kind = kind
        self.platform_ids = platform_ids
        self._raw = raw_items
        self._max_bytes = max_bytes
        self._now = now

    def __len__(self) -> int:
        return len(self._raw)

    def __iter__(self) -> Iterator[Row]:
        kind, max_bytes, now = self.kind, self._max_bytes, self._now
        plural = _PLURAL[kind]
        for i, raw in enumerate(self._raw):
            yield normalize(kind, raw, where=f"{plural}[{i}]", max_bytes=max_bytes, now=now)


def _distinct_ids(kind: str, raw_items: Sequence[Any]) -> list[str] | None:
    """The items' platform ids as ``normalize`` reads them; None when an item has none
    or an id repeats: the eager path then refuses the item, or lets the later one win."""
    keys = _ID_KEYS[kind]
    usual = keys[0]
    pids: list[str] = []
    for raw in raw_items:
        if not isinstance(raw, dict):
            return None
        pid = raw.get(usual)  # the usual spelling first: this pass is serial time
        if pid is None or pid == "":
            pid = _first(raw, keys)
        if pid is None or isinstance(pid, (dict, list, bool)):
            return None
        pids.append(pid if type(pid) is str else str(pid))
    return pids if len(set(pids)) == len(pids) else None


def normalize(kind: str, raw: Any, *, where: str, max_bytes: int, now: float) -> Row:
    """One platform item -> the ``items`` columns (without source, kind and times seen)."""
    if kind not in KINDS:
        raise errors.InvalidInput(f"{where}: unknown kind {kind!r}")
    if not isinstance(raw, dict):
        raise errors.InvalidInput(f"{where}: each item must be an object")
    platform_id = _first(raw, _ID_KEYS[kind])
    if platform_id is None or isinstance(platform_id, (dict, list, bool)) or platform_id == "":
        raise errors.InvalidInput(
            f"{where}: missing id (send one of {', '.join(_ID_KEYS[kind][:3])})"
        )
    platform_id = str(platform_id)
    if len(platform_id) > MAX_ID_CHARS:
        raise errors.InvalidInput(f"{where}: id is longer than {MAX_ID_CHARS} characters")
    encoded = dumps(raw)
    if len(encoded) > max_bytes:
        raise errors.SyncTooLarge(
            f"{where}: the item is {len(encoded)} bytes; the limit is {max_bytes} "
            "(im_sync_max_item_bytes)"
        )
    direction = raw.get("direction")
    if kind == "message":
        if direction is None:
            direction = "outbound" if raw.get("is_outbound") or raw.get("isOutbound") else "inbound"
        if direction not in ("inbound", "outbound"):
            raise errors.InvalidInput(
                f"{where}.direction: must be 'inbound' or 'outbound', got {str(direction)[:20]!r}"
            )
    elif kind == "comment":
        direction = "inbound"
    else:
        direction = None
    parent = _first(raw, _PARENT_KEYS.get(kind, ()))
    time_keys = _CONVERSATION_TIME_KEYS if kind == "conversation" else _TIME_KEYS
    published = _time(raw, time_keys, where)
    title = _text(_first(raw, _TITLE_KEYS))
    if kind == "conversation" and not title:
        title = _text(_first(raw, _AUTHOR_KEYS))
    text = raw.get("text") if kind == "conversation" else None
    if text is None:
        text = _first(raw, _TEXT_KEYS)
        if isinstance(text, dict):  # e.g. a conversation's last_message object
            text = text.get("content") or text.get("text")
    unread = raw.get("unread_count", raw.get("unreadCount", 0))
    return {
        "platform_id": platform_id,
        "parent_id": None if parent is None else str(parent)[:MAX_ID_CHARS],
        "title": title,
        "text": _text(text),
        "url": _text(_first(raw, _URL_KEYS)),
        "author_name": _text(_first(raw, _AUTHOR_KEYS))[:255],
        "author_id": _text(_first(raw, _AUTHOR_ID_KEYS))[:255],
        "direction": direction,
        "unread_count": unread if isinstance(unread, int) and not isinstance(unread, bool) else 0,
        "published_at": now if published is None else published,
        "digest": hashlib.blake2b(encoded.encode(), digest_size=16).hexdigest(),
        "raw": raw,
        "raw_json": encoded,  # the store writes it as is on SQLite (no second encode)
        "is_read": bool(raw.get("is_read", raw.get("isRead", False))),
        "is_pinned": bool(raw.get("is_pinned", raw.get("isPinned", False))),
        "is_muted": bool(raw.get("is_muted", raw.get("isMuted", False))),
    }


def _first(raw: Mapping[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        v = raw.get(k)
        if v is not None and v != "":
            return v
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return str(value)
    return dumps(value)


def _time(raw: Mapping[str, Any], keys: Sequence[str], where: str) -> float | None:
    """Epoch seconds from epoch s/ms numbers or ISO-8601 strings."""
    for k in keys:
        v = raw.get(k)
        if v is None or v == "":
            continue
        if isinstance(v, str):
            text = v
            try:
                v = float(text)
            except ValueError:
                try:
                    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
                except ValueError as exc:
                    raise errors.InvalidInput(
                        f"{where}.{k}: not a time (epoch seconds/milliseconds or ISO 8601)"
                    ) from exc
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise errors.InvalidInput(f"{where}.{k}: not a time")
        # Epoch milliseconds (the JS workers' Date.now()) are > 1e11 for any date after 1973.
        return float(v) / 1000.0 if v > 1e11 else float(v)
    return None
