"""The IM query side of collected data: pages of conversations, messages, contents,
comments and one unified feed; flags; stats; integrity.

Everything is ownership-filtered here, once: a user sees items of sources they own
(``sources.owner_id``), an admin sees all, and another user's object is "not found" so
ids do not leak. Pages are keyset-paged by an opaque cursor (``published_at``, ``id``) or
by limit/offset; the database answers them from the ``items`` indexes (no cache: the
benchmark in ``bench/im.py`` shows the database alone meets the targets).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from zhongshu import errors
from zhongshu.db.item_store import ItemStore, PageQuery, decode_cursor, encode_cursor
from zhongshu.services import items as item_rules
from zhongshu.services.identity import Principal

Row = dict[str, Any]
MAX_LIMIT = 500
ORPHAN_IDS_SHOWN = 100


@dataclass(slots=True)
class Page:
    rows: list[Row]
    has_more: bool
    next_cursor: str | None
    total: int | None = None
    unread: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Filters:
    """What a list call may filter on (times in epoch seconds)."""

    account_id: str | None = None
    parent_id: str | None = None
    direction: str | None = None
    is_read: bool | None = None
    since: float | None = None
    until: float | None = None
    keyword: str | None = None
    limit: int = 50
    offset: int = 0
    cursor: str | None = None
    order: str = "desc"
    with_total: bool = False


class ImService:
    def __init__(self, store: ItemStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    # -- lists ---------------------------------------------------------------------------

    async def page(self, p: Principal, kinds: tuple[str, ...], f: Filters) -> Page:
        """One page of ``kinds`` visible to ``p``, newest first unless ``order='asc'``."""
        if not 1 <= f.limit <= MAX_LIMIT:
            raise errors.InvalidInput(f"limit: must be between 1 and {MAX_LIMIT}")
        if f.offset < 0:
            raise errors.InvalidInput("offset: must be >= 0")
        if f.order not in ("asc", "desc"):
            raise errors.InvalidInput("order: must be 'asc' or 'desc'")
        if f.direction not in (None, "inbound", "outbound"):
            raise errors.InvalidInput("direction: must be 'inbound' or 'outbound'")
        try:
            cursor = decode_cursor(f.cursor) if f.cursor else None
        except ValueError as exc:
            raise errors.InvalidInput(f"cursor: {exc}") from exc
        q = PageQuery(
            kinds=kinds,
            owner_id=p.owner_filter,
            source_id=f.account_id,
            parent_id=f.parent_id,
            direction=f.direction,
            is_read=f.is_read,
            since=f.since,
            until=f.until,
            keyword=f.keyword or None,
            limit=f.limit,
            offset=f.offset,
            cursor=cursor,
            newest_first=f.order == "desc",
        )
        rows = await self.store.page(q)
        has_more = len(rows) > f.limit
        rows = rows[: f.limit]
        nxt = encode_cursor(rows[-1]["published_at"], rows[-1]["id"]) if has_more and rows else None
        total = await self.store.count(replace(q, cursor=None)) if f.with_total else None
        return Page(rows, has_more, nxt, total)

    async def unified(self, p: Principal, f: Filters) -> Page:
        """Comments and direct messages in one time-ordered feed, with unread counts."""
        page = await self.page(p, ("comment", "message"), f)
        q = PageQuery(
            kinds=("comment", "message"),
            owner_id=p.owner_filter,
            source_id=f.account_id,
        )
        page.unread = await self.store.unread_counts(q)
        return page

    # -- one conversation ------------------------------------------------------------------

    async def get(self, p: Principal, item_id: str, kind: str) -> Row:
        """One item of ``kind`` visible to ``p`` (else ``ItemNotFound``)."""
        row = await self.store.get(_item_id(item_id)) if item_id.isdigit() else None
        if row is None or row["kind"] != kind or (not p.is_admin and row["owner_id"] != p.id):
            raise errors.ItemNotFound(f"{kind} {item_id[:64]} not found")
        return row

    async def set_flags(
        self,
        p: Principal,
        item_id: str,
        kind: str,
        *,
        read: bool | None = None,
        pinned: bool | None = None,
        muted: bool | None = None,
    ) -> Row:
        """Set read/pinned/muted; marking a conversation read marks its messages read too."""
        await self.get(p, item_id, kind)
        values: Row = {}
        if read is not None:
            values["is_read"] = read
            if read:
                values["unread_count"] = 0
        if pinned is not None:
            values["is_pinned"] = pinned
        if muted is not None:
            values["is_muted"] = muted
        row = await self.store.set_flags(int(item_id), values, cascade_read=bool(read))
        if row is None:
            raise errors.ItemNotFound(f"{kind} {item_id[:64]} not found")
        return row

    async def delete(self, p: Principal, item_id: str, kind: str) -> None:
        await self.get(p, item_id, kind)
        if not await self.store.delete(int(item_id)):
            raise errors.ItemNotFound(f"{kind} {item_id[:64]} not found")

    async def create_conversation(self, p: Principal, account_id: str, raw: Row) -> Row:
        """Start a conversation from the hub side (kept until a sync prunes it)."""
        source = await self.store.source(account_id)
        if source is None or (not p.is_admin and source["owner_id"] != p.id):
            raise errors.NotFound(f"account {account_id[:64]} not found")
        raw = dict(raw)
        raw.setdefault("conversation_id", uuid.uuid4().hex)
        now = self.clock()
        row = item_rules.normalize(
            "conversation", raw, where="conversation", max_bytes=64 * 1024, now=now
        )
        row.pop("raw_json", None)
        row.update(source_id=account_id, kind="conversation", first_seen_at=now, updated_at=now)
        created = await self.store.insert_one(row)
        if created is None:
            raise errors.Conflict(
                f"conversation {row['platform_id'][:64]} exists already for this account"
            )
        return created

    # -- accounts, stats, integrity -------------------------------------------------------

    async def accounts(self, p: Principal) -> list[Row]:
        return await self.store.sources(p.owner_filter)

    async def titles(self, keys: list[tuple[str, str, str]]) -> dict[Any, Row]:
        """Parents by (source, kind, platform id), e.g. the contents comments belong to."""
        return await self.store.by_platform_ids(keys) if keys else {}

    async def stats(self, p: Principal) -> Row:
        """Items per kind per account, syncs in total and per account, last sync times."""
        counts, states = await self.store.stats(p.owner_filter)
        accounts: dict[str, Row] = {}

        def account(sid: str) -> Row:
            return accounts.setdefault(
                sid,
                {
                    "account_id": sid,
                    "items": {k: 0 for k in item_rules.DATA_KEYS},
                    "total_items": 0,
                    "syncs": 0,
                    "items_received": 0,
                    "last_sync_at": None,
                    "last_seq": 0,
                },
            )

        plural = {v: k for k, v in item_rules.DATA_KEYS.items()}
        totals = {k: 0 for k in item_rules.DATA_KEYS}
        for r in counts:
            a = account(r["source_id"])
            a["items"][plural[r["kind"]]] = int(r["n"])
            a["total_items"] += int(r["n"])
            totals[plural[r["kind"]]] += int(r["n"])
        for s in states:
            a = account(s["source_id"])
            a.update(
                syncs=int(s["syncs"]),
                items_received=int(s["items_received"]),
                last_sync_at=s["last_sync_at"],
                last_seq=int(s["last_seq"]),
            )
        return {
            "total_syncs": sum(a["syncs"] for a in accounts.values()),
            "total_items": sum(totals.values()),
            "items": totals,
            "accounts": sorted(accounts.values(), key=lambda a: a["account_id"]),
        }

    async def integrity(self, p: Principal) -> Row:
        """Orphans: comments whose content is unknown, messages whose conversation is."""
        found = await self.store.orphans(p.owner_filter, ORPHAN_IDS_SHOWN)
        out: Row = {}
        for kind, key in (("comment", "orphan_comments"), ("message", "orphan_messages")):
            n, rows = found[kind]
            out[key] = {
                "count": n,
                "ids": [str(r["id"]) for r in rows],
                "items": [
                    {
                        "id": str(r["id"]),
                        "account_id": r["source_id"],
                        "platform_id": r["platform_id"],
                        "parent_id": r["parent_id"],
                    }
                    for r in rows
                ],
            }
        out["ok"] = not (out["orphan_comments"]["count"] or out["orphan_messages"]["count"])
        return out


def _item_id(value: str) -> int:
    n = int(value)
    if n > 2**62:
        raise errors.ItemNotFound(f"item {value[:64]} not found")
    return n
