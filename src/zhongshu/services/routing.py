"""Notification routing: events on the bus → a user's rules → messages on their channels.

A rule names events (new items on my sources, ``source.login_expired``, ``task.dead`` of
my tasks; for admins also ``node.offline`` and ``system.alert``), optional filters, the
channels to use, a digest window and quiet hours. A matching event becomes a *digest
entry* in the database; when the rule's batch is due (the window after its first entry
has passed, and it is not quiet time) the batch becomes **one** message through the
message service, so it goes through the same pipeline as any push. Twenty comments in a
burst are one message; a restart loses nothing (the entries are rows), and a flush
repeated after a crash reuses the message id derived from the batch's first entry.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from zhongshu import errors
from zhongshu.db.routing_store import RoutingStore, Row
from zhongshu.services.channels import ChannelService
from zhongshu.services.events import Event, EventBus, wait_event
from zhongshu.services.identity import IdentityService, Principal
from zhongshu.services.messages import MessageDraft, MessageService
from zhongshu.services.tasks import TaskService

log = logging.getLogger("zhongshu.routing")
# A batch a hub claimed but did not finish in this long (it died) is taken over.
RECLAIM_AFTER_S = 120.0

USER_EVENTS = ("item.created", "source.login_expired", "task.dead")
ADMIN_EVENTS = ("node.offline", "system.alert")
EVENTS = USER_EVENTS + ADMIN_EVENTS
MAX_DIGEST_WINDOW_S = 7 * 86400
MAX_LINES = 50
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


@dataclass(slots=True)
class RuleSpec:
    name: str
    events: list[str]
    channel_ids: list[int]
    item_kinds: list[str] = field(default_factory=list)
    source_ids: list[str] = field(default_factory=list)
    digest_window_s: int = 0
    quiet_start: str | None = None
    quiet_end: str | None = None
    timezone: str = "UTC"
    enabled: bool = True


def rule_public(row: Row) -> dict[str, Any]:
    return {
        k: row[k]
        for k in (
            "id",
            "owner_id",
            "name",
            "events",
            "item_kinds",
            "source_ids",
            "channel_ids",
            "digest_window_s",
            "quiet_start",
            "quiet_end",
            "timezone",
            "enabled",
            "created_at",
            "updated_at",
        )
    }


def quiet_until(rule: Row, now: float) -> float | None:
    """When the rule's quiet hours end, if ``now`` is inside them (else ``None``)."""
    start, end = rule.get("quiet_start"), rule.get("quiet_end")
    if not start or not end or start == end:
        return None
    tz = ZoneInfo(rule.get("timezone") or "UTC")
    local = datetime.fromtimestamp(now, tz)
    minutes = local.hour * 60 + local.minute
    s = int(start[:2]) * 60 + int(start[3:])
    e = int(end[:2]) * 60 + int(end[3:])
    inside = s <= minutes < e if s < e else (minutes >= s or minutes < e)
    if not inside:
        return None
    end_at = local.replace(hour=e // 60, minute=e % 60, second=0, microsecond=0)
    if end_at <= local:
        end_at += timedelta(days=1)
    return end_at.timestamp()


def summarize(ev: Event) -> tuple[str, int]:
    """One line for a digest, and how many things it counts."""
    d = ev.data
    if ev.type == "item.created":
        count = int(d.get("count") or len(d.get("ids") or []) or 1)
        kind = d.get("kind") or "item"
        plural = "s" if count != 1 else ""
        return f"{count} new {kind}{plural} on source {d.get('source_id')}", count
    if ev.type == "source.login_expired":
        name = d.get("name") or d.get("source_id")
        return f"login expired: {name} ({d.get('platform', '')}) {d.get('reason') or ''}".strip(), 1
    if ev.type == "task.dead":
        return f"task {ev.subject_id} ({d.get('kind', '')}) is dead: {d.get('error') or ''}", 1
    if ev.type == "node.offline":
        return f"node {d.get('name') or ev.subject_id} went offline", 1
    if ev.type == "system.alert":
        return str(d.get("message") or ev.subject_id), 1
    return ev.type, 1


class RoutingService:
    def __init__(
        self,
        store: RoutingStore,
        messages: MessageService,
        channels: ChannelService,
        identity: IdentityService,
        tasks: TaskService,
        bus: EventBus,
        *,
        tick_s: float,
    ) -> None:
        self.store = store
        self.messages = messages
        self.channels = channels
        self.identity = identity
        self.tasks = tasks
        self.bus = bus
        self.tick_s = tick_s
        self._inbox: asyncio.Queue[Event] = asyncio.Queue(maxsize=100_000)
        self._wake = asyncio.Event()
        bus.listen("", self._on_event)

    # --- rules ---------------------------------------------------------------------------

    async def _check(self, owner_id: str, owner_role: str, spec: RuleSpec) -> None:
        if not spec.events:
            raise errors.InvalidInput("events: name at least one event")
        unknown = [e for e in spec.events if e not in EVENTS]
        if unknown:
            raise errors.InvalidInput(
                f"events: unknown event(s) {', '.join(unknown)}; known: {', '.join(EVENTS)}"
            )
        if owner_role != "admin" and any(e in ADMIN_EVENTS for e in spec.events):
            raise errors.InvalidInput(f"events: {', '.join(ADMIN_EVENTS)} are for admins only")
        if not spec.channel_ids:
            raise errors.InvalidInput("channel_ids: name at least one channel")
        try:
            await self.channels.owned(owner_id, spec.channel_ids)
        except errors.MessageChannelsInvalid as exc:
            raise errors.InvalidInput(exc.message.replace("channels:", "channel_ids:")) from exc
        if not 0 <= spec.digest_window_s <= MAX_DIGEST_WINDOW_S:
            raise errors.InvalidInput(f"digest_window_s: between 0 and {MAX_DIGEST_WINDOW_S}")
        if (spec.quiet_start is None) != (spec.quiet_end is None):
            raise errors.InvalidInput("quiet_start and quiet_end: give both or neither")
        for name, value in (("quiet_start", spec.quiet_start), ("quiet_end", spec.quiet_end)):
            if value is not None and not _HHMM.match(value):
                raise errors.InvalidInput(f"{name}: must be HH:MM (24-hour), got {value[:10]!r}")
        try:
            ZoneInfo(spec.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise errors.InvalidInput(
                f"timezone: unknown time zone {spec.timezone[:64]!r}"
            ) from exc

    def _values(self, spec: RuleSpec) -> Row:
        return {
            "name": spec.name,
            "events": list(dict.fromkeys(spec.events)),
            "item_kinds": spec.item_kinds,
            "source_ids": spec.source_ids,
            "channel_ids": list(dict.fromkeys(spec.channel_ids)),
            "digest_window_s": spec.digest_window_s,
            "quiet_start": spec.quiet_start,
            "quiet_end": spec.quiet_end,
            "timezone": spec.timezone,
            "enabled": spec.enabled,
        }

    async def create(self, owner: Principal, spec: RuleSpec) -> Row:
        await self._check(owner.id, owner.role, spec)
        now = time.time()
        return await self.store.insert_rule(
            {
                **self._values(spec),
                "id": uuid.uuid4().hex,
                "owner_id": owner.id,
                "created_at": now,
                "updated_at": now,
            }
        )

    async def get(self, rule_id: str, viewer: Principal | None = None) -> Row:
        row = await self.store.rule(rule_id)
        if row is None or (viewer is not None and not viewer.may_see(row["owner_id"])):
            raise errors.RuleNotFound(f"notification rule {rule_id} not found")
        return row

    async def find(self, viewer: Principal) -> list[Row]:
        return await self.store.rules(viewer.owner_filter)

    async def update(self, rule_id: str, viewer: Principal, changes: dict[str, Any]) -> Row:
        row = await self.get(rule_id, viewer)
        spec = RuleSpec(**{f.name: row[f.name] for f in fields(RuleSpec)})
        for key, value in changes.items():
            setattr(spec, key, value)
        owner = await self.identity.get_user(row["owner_id"])
        await self._check(row["owner_id"], owner["role"], spec)
        updated = await self.store.update_rule(
            rule_id, {**self._values(spec), "updated_at": time.time()}
        )
        if updated is None:
            raise errors.RuleNotFound(f"notification rule {rule_id} not found")
        return updated

    async def delete(self, rule_id: str, viewer: Principal) -> None:
        await self.get(rule_id, viewer)
        await self.store.delete_rule(rule_id)

    async def pending(self, rule_ids: list[str]) -> dict[str, int]:
        """Entries waiting in each rule's digest."""
        counts = await self.store.pending_counts(rule_ids)
        return {rule_id: counts.get(rule_id, 0) for rule_id in rule_ids}

    # --- events → digest entries ---------------------------------------------------------

    def _on_event(self, ev: Event) -> None:
        if ev.type not in EVENTS:
            return
        if ev.type == "task.dead" and str(ev.data.get("kind", "")).startswith("message."):
            return  # a failed delivery must not notify through channels in a loop
        try:
            self._inbox.put_nowait(ev)
        except asyncio.QueueFull:
            log.warning("routing inbox full: dropped %s", ev.type)
        self._wake.set()

    async def _owners_of(self, ev: Event) -> list[str] | None:
        """Whose rules may match (``None``: every admin's)."""
        if ev.type in ADMIN_EVENTS:
            return None
        if ev.type == "task.dead":
            try:
                task = await self.tasks.get(ev.subject_id)
            except errors.NotFound:
                return []
            owner = task.get("owner_id")
            return [owner] if owner and owner != "system" else []
        owner = ev.data.get("owner_id")
        return [str(owner)] if owner else []

    def _matches(self, rule: Row, ev: Event) -> bool:
        if ev.type not in (rule["events"] or []):
            return False
        kinds = rule["item_kinds"]
        if ev.type == "item.created" and kinds and ev.data.get("kind") not in kinds:
            return False
        if rule["source_ids"] and ev.type in ("item.created", "source.login_expired"):
            source = ev.data.get("source_id") or ev.subject_id
            if source not in rule["source_ids"]:
                return False
        return True

    async def route(self, ev: Event) -> int:
        """File one event under every rule it matches; returns how many."""
        owners = await self._owners_of(ev)
        if owners == []:
            return 0
        candidates: list[Row] = []
        if owners is None:
            roles: dict[str, str] = {}
            for rule in await self.store.rules(None, enabled_only=True):
                oid = rule["owner_id"]
                if oid not in roles:
                    try:
                        roles[oid] = (await self.identity.get_user(oid))["role"]
                    except errors.NotFound:
                        roles[oid] = ""
                if roles[oid] == "admin":
                    candidates.append(rule)
        else:
            for oid in owners:
                candidates.extend(await self.store.rules(oid, enabled_only=True))
        summary, count = summarize(ev)
        matched = 0
        for rule in candidates:
            if not self._matches(rule, ev):
                continue
            entry = {
                "rule_id": rule["id"],
                "owner_id": rule["owner_id"],
                "event_type": ev.type,
                "summary": summary[:1000],
                "count": count,
                "created_at": time.time(),
            }
            await self.store.add_entry(entry, float(rule["digest_window_s"]))
            matched += 1
        return matched

    # --- digest entries → messages -------------------------------------------------------

    async def flush_due(self, now: float | None = None) -> int:
        """Turn every due batch into a message; returns how many messages were made."""
        now = time.time() if now is None else now
        made = 0
        for rule_id in await self.store.due_rules(now, now - RECLAIM_AFTER_S):
            try:
                made += await self._flush(rule_id, now)
            except errors.StoreError:
                raise
            except Exception:
                log.exception("could not flush the digest of rule %s", rule_id)
        return made

    async def _flush(self, rule_id: str, now: float) -> int:
        rule = await self.store.rule(rule_id)
        if rule is not None and rule["enabled"]:
            until = quiet_until(rule, now)
            if until is not None:
                await self.store.postpone(rule_id, until)
                return 0
        # Claimed atomically: with several hubs, each entry goes into one batch only.
        batch_id = uuid.uuid4().hex[:29]  # "dg-" + this fits a message id (32)
        entries = await self.store.claim(rule_id, batch_id, now, now - RECLAIM_AFTER_S)
        if not entries:
            return 0
        batch_id = entries[0]["batch_id"]
        if rule is None or not rule["enabled"]:
            await self.store.remove_batch(batch_id)
            return 0
        title, content = _digest_text(rule, entries)
        owner = Principal("user", rule["owner_id"], "user")
        draft = MessageDraft(
            title=title,
            content=content,
            channel_ids=list(rule["channel_ids"]),
            ai=False,
            origin="routing",
            # One message per batch, even if a hub dies between sending and cleaning up.
            message_id=f"dg-{batch_id}",
        )
        try:
            await self.messages.create(owner, draft)
        except errors.InvalidInput as exc:
            # The rule's channels went away since it was saved: drop the batch, say why.
            log.warning("digest of rule %s dropped: %s", rule_id, exc.message)
        await self.store.remove_batch(batch_id)
        return 1

    async def run(self) -> None:
        """Route events as they come and flush due digests every ``tick_s``."""
        # Ends by cancellation (hub stop).
        while True:
            await wait_event(self._wake, self.tick_s)
            self._wake.clear()
            while not self._inbox.empty():
                ev = self._inbox.get_nowait()
                try:
                    await self.route(ev)
                except Exception:
                    log.exception("could not route %s %s", ev.type, ev.subject_id)
            try:
                await self.flush_due()
            except Exception:  # the database may be briefly unavailable: try next tick
                log.exception("digest flush failed")


def _digest_text(rule: Row, entries: Sequence[Row]) -> tuple[str, str]:
    total = sum(int(e["count"]) for e in entries)
    if len(entries) == 1:
        title = entries[0]["summary"][:200]
    else:
        title = f"{rule['name']}: {total} new events"
    lines = [f"- {e['summary']}" for e in entries[:MAX_LINES]]
    if len(entries) > MAX_LINES:
        lines.append(f"… and {len(entries) - MAX_LINES} more")
    return title, "\n".join(lines)
