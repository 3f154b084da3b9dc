"""Schedules: cron or interval triggers that submit tasks, fired once per due time.

Fire times come from APScheduler 3.x triggers (``CronTrigger.from_crontab``,
``IntervalTrigger``); only the triggers are used, never APScheduler's scheduler, because
the database — not a process — decides who fires:

1. the loop reads the rows whose ``next_run_at`` has come;
2. it submits the template's task with the idempotency key ``schedule:<id>:<due>``, so a
   second hub (or a retry after a crash) that gets this far for the same due time gets the
   same task back instead of a second one;
3. it moves ``next_run_at`` on with a conditional UPDATE (``… WHERE next_run_at = :due``):
   the one hub whose update changed the row records the run and publishes
   ``schedule.fired``.

Submitting before claiming means a crash between the two loses nothing: the row is still
due and the next round submits again and gets the same task. Misfires coalesce: the next
due time is the first one after *now*, so a hub that was down for ten intervals fires once
and then resumes on its grid (interval grids are anchored at the schedule's creation).

The same loop drives other participants (message tasks) through ``DueSource``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from zhongshu import errors
from zhongshu.db.schedule_store import ScheduleStore
from zhongshu.services.events import Event, EventBus, wait_event
from zhongshu.services.identity import Principal
from zhongshu.services.tasks import TaskService, TaskSpec

log = logging.getLogger("zhongshu.schedules")

Row = dict[str, Any]
MAX_INTERVAL_S = 10 * 366 * 86400.0
# The loop never spins faster than this, even when a due time is "now".
MIN_SLEEP_S = 0.005
DUE_BATCH = 500


# --- triggers ----------------------------------------------------------------------------


def check_timezone(name: str) -> str:
    """``name`` if it is an IANA timezone this machine knows; InvalidSchedule otherwise."""
    if not isinstance(name, str) or not name or len(name) > 64:
        raise errors.InvalidSchedule(f"timezone: {name!r} is not an IANA timezone name")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise errors.InvalidSchedule(
            f"timezone: unknown timezone {name!r} (use an IANA name such as UTC or Asia/Shanghai)"
        ) from exc
    return name


def make_trigger(
    *, cron: str | None, interval_s: float | None, timezone: str, anchor_at: float
) -> BaseTrigger:
    """The APScheduler trigger for a schedule; InvalidSchedule names what is wrong."""
    tz = ZoneInfo(check_timezone(timezone))
    if (cron is None) == (interval_s is None):
        raise errors.InvalidSchedule("give exactly one of cron and interval_s")
    if cron is not None:
        fields = cron.split()
        if len(fields) != 5:
            raise errors.InvalidSchedule(
                f"cron: {cron!r} must have 5 fields (minute hour day month day-of-week), "
                f"got {len(fields)}"
            )
        try:
            trigger: BaseTrigger = CronTrigger.from_crontab(cron, timezone=tz)
        except (ValueError, TypeError, KeyError) as exc:
            raise errors.InvalidSchedule(f"cron: {cron!r} is not valid: {exc}") from exc
    else:
        assert interval_s is not None
        if not interval_s > 0:
            raise errors.InvalidSchedule(f"interval_s: must be > 0 seconds, got {interval_s}")
        if interval_s > MAX_INTERVAL_S:
            raise errors.InvalidSchedule(f"interval_s: at most {MAX_INTERVAL_S:.0f} seconds")
        trigger = IntervalTrigger(
            seconds=interval_s, start_date=datetime.fromtimestamp(anchor_at, tz), timezone=tz
        )
    if next_fire_at(trigger, anchor_at) is None:
        raise errors.InvalidSchedule(f"cron: {cron!r} never fires")
    return trigger


def next_fire_at(trigger: BaseTrigger, after: float) -> float | None:
    """The first fire time strictly after ``after`` (epoch seconds), or None for never."""
    tz = getattr(trigger, "timezone", None) or ZoneInfo("UTC")
    # One microsecond on: a fire time equal to ``after`` has been fired already.
    now = datetime.fromtimestamp(after, tz) + timedelta(microseconds=1)
    nxt = trigger.get_next_fire_time(None, now)
    return nxt.timestamp() if nxt is not None else None


def row_trigger(row: Row) -> BaseTrigger:
    return make_trigger(
        cron=row.get("cron"),
        interval_s=row.get("interval_s"),
        timezone=row["timezone"],
        anchor_at=row["anchor_at"],
    )


def owner_principal(owner_id: str) -> Principal:
    """Whom a fired task belongs to: the schedule's owner (the hub acts for them)."""
    return Principal("user", owner_id, "user", name="scheduler", via="system")


class DueSource(Protocol):
    """Something else the schedule loop fires (message tasks share the loop)."""

    async def fire_due(self, now: float) -> int: ...

    async def next_due(self) -> float | None: ...


# --- the service -------------------------------------------------------------------------

_TEMPLATE_FIELDS = ("kind", "payload", "capability", "priority", "max_attempts")
_TRIGGER_FIELDS = ("cron", "interval_s", "timezone")


class ScheduleService:
    """Schedule CRUD, "run now", and the loop that fires due schedules.

    Parameters
    ----------
    tick_s:
        The longest the loop sleeps between looks at the database; it wakes sooner when
        the next due time is sooner, or when a schedule changes in this process.
    default_timezone:
        The timezone of schedules created without one.
    """

    def __init__(
        self,
        store: ScheduleStore,
        tasks: TaskService,
        bus: EventBus,
        *,
        tick_s: float = 1.0,
        default_timezone: str = "UTC",
    ) -> None:
        self.store = store
        self.tasks = tasks
        self.bus = bus
        self.tick_s = tick_s
        self.default_timezone = default_timezone
        self.participants: list[DueSource] = []
        # Due times this process fired, and those another process claimed first.
        self.stats = {"fired": 0, "lost": 0}
        self._wake = asyncio.Event()

    def add_participant(self, source: DueSource) -> None:
        self.participants.append(source)

    def wake(self) -> None:
        """Recompute the loop's sleep now (a schedule was created or changed)."""
        self._wake.set()

    # --- CRUD -------------------------------------------------------------------------

    async def create(self, spec: Row, owner: Principal) -> Row:
        """Create a schedule from ``spec`` (name, cron | interval_s, timezone, kind,
        payload, capability, priority, max_attempts, enabled)."""
        now = time.time()
        row: Row = {
            "id": "sch_" + uuid.uuid4().hex[:16],
            "owner_id": owner.id,
            "name": spec.get("name") or "",
            "cron": spec.get("cron"),
            "interval_s": spec.get("interval_s"),
            "timezone": spec.get("timezone") or self.default_timezone,
            "kind": spec["kind"],
            "payload": spec.get("payload") if spec.get("payload") is not None else {},
            "capability": spec.get("capability"),
            "priority": spec.get("priority") or 0,
            "max_attempts": spec.get("max_attempts"),
            "enabled": spec.get("enabled", True),
            "anchor_at": now,
            "last_run_at": None,
            "last_due_at": None,
            "last_task_id": None,
            "run_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        trigger = row_trigger(row)
        row["next_run_at"] = next_fire_at(trigger, now)
        ev = Event(
            "schedule.created",
            "schedule",
            row["id"],
            owner.actor,
            {"kind": row["kind"], "cron": row["cron"], "interval_s": row["interval_s"]},
            now,
        )
        out = await self.store.insert(row, ev)
        self.bus.publish([ev])
        self.wake()
        return out

    async def get(self, schedule_id: str, viewer: Principal | None = None) -> Row:
        row = await self.store.get(schedule_id)
        if row is None or (viewer is not None and not viewer.may_see(row["owner_id"])):
            raise errors.ScheduleNotFound(f"schedule {schedule_id} not found")
        return row

    async def find(
        self, viewer: Principal, *, enabled: bool | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[Row], int]:
        owner = viewer.owner_filter
        return await self.store.find(owner_id=owner, enabled=enabled, limit=limit, offset=offset)

    async def update(self, schedule_id: str, changes: Row, actor: Principal) -> Row:
        """Change fields; a new trigger or re-enabling recomputes ``next_run_at`` from now
        (no backlog is fired for the time it was off)."""
        row = await self.get(schedule_id, actor)
        now = time.time()
        values: Row = {k: v for k, v in changes.items() if k in (*_TEMPLATE_FIELDS, "name")}
        # null clears an optional field; required ones fall back to their defaults.
        for name, default in (("payload", {}), ("name", ""), ("priority", 0)):
            if name in values and values[name] is None:
                values[name] = default
        if values.get("kind", row["kind"]) is None:
            values.pop("kind")
        trigger_changed = any(k in changes for k in _TRIGGER_FIELDS)
        if trigger_changed:
            merged = {**row, **{k: changes[k] for k in _TRIGGER_FIELDS if k in changes}}
            # Switching between cron and interval: the one given wins.
            if changes.get("cron") is not None:
                merged["interval_s"] = None
            elif changes.get("interval_s") is not None:
                merged["cron"] = None
            merged["timezone"] = merged["timezone"] or self.default_timezone
            merged["anchor_at"] = now
            values.update({k: merged[k] for k in (*_TRIGGER_FIELDS, "anchor_at")})
        if "enabled" in changes and changes["enabled"] is not None:
            values["enabled"] = bool(changes["enabled"])
        if trigger_changed or (values.get("enabled") and not row["enabled"]):
            merged = {**row, **values}
            values["next_run_at"] = next_fire_at(row_trigger(merged), now)
        values["updated_at"] = now
        ev = Event(
            "schedule.updated",
            "schedule",
            schedule_id,
            actor.actor,
            {k: v for k, v in values.items() if k not in ("payload", "updated_at")},
            now,
        )
        out = await self.store.update(schedule_id, values, ev)
        if out is None:
            raise errors.ScheduleNotFound(f"schedule {schedule_id} not found")
        self.bus.publish([ev])
        self.wake()
        return out

    async def delete(self, schedule_id: str, actor: Principal) -> None:
        await self.get(schedule_id, actor)
        ev = Event("schedule.deleted", "schedule", schedule_id, actor.actor, {})
        if not await self.store.delete(schedule_id, ev):
            raise errors.ScheduleNotFound(f"schedule {schedule_id} not found")
        self.bus.publish([ev])

    # --- firing -----------------------------------------------------------------------

    def _spec(self, row: Row, idempotency_key: str | None) -> TaskSpec:
        return TaskSpec(
            kind=row["kind"],
            payload=row["payload"],
            capability=row.get("capability"),
            priority=row.get("priority") or 0,
            max_attempts=row.get("max_attempts"),
            idempotency_key=idempotency_key,
        )

    async def run_now(self, schedule_id: str, actor: Principal) -> tuple[Row, Row]:
        """Submit the template's task now (also for a disabled schedule); the schedule's
        own due times are not changed. Returns the schedule and the task."""
        row = await self.get(schedule_id, actor)
        now = time.time()
        task, _ = await self.tasks.submit(self._spec(row, None), owner_principal(row["owner_id"]))
        ev = Event(
            "schedule.fired",
            "schedule",
            schedule_id,
            actor.actor,
            {"task_id": task["id"], "manual": True, "due_at": None},
            now,
        )
        values = {"last_run_at": now, "last_task_id": task["id"], "updated_at": now}
        await self.store.claims.record_run(schedule_id, values, [ev])
        self.bus.publish([ev])
        return await self.get(schedule_id), task

    async def fire(self, row: Row, now: float) -> bool:
        """Fire one due row if this process wins its due time; True if it did."""
        due = float(row["next_run_at"])
        try:
            trigger = row_trigger(row)
        except errors.InvalidSchedule:
            log.exception("schedule %s has an invalid trigger; skipped", row["id"])
            return False
        nxt = next_fire_at(trigger, max(now, due))
        key = f"schedule:{row['id']}:{due!r}"
        task, _ = await self.tasks.submit(self._spec(row, key), owner_principal(row["owner_id"]))
        ev = Event(
            "schedule.fired",
            "schedule",
            row["id"],
            "system",
            {"task_id": task["id"], "due_at": due, "next_run_at": nxt, "late_s": now - due},
            now,
        )
        values = {
            "next_run_at": nxt,
            "last_run_at": now,
            "last_due_at": due,
            "last_task_id": task["id"],
            "updated_at": now,
        }
        if not await self.store.claims.claim(row["id"], due, values, [ev]):
            self.stats["lost"] += 1
            return False
        self.stats["fired"] += 1
        self.bus.publish([ev])
        return True

    async def fire_due(self, now: float | None = None) -> int:
        """One round: fire every due schedule (and participant); returns how many fired."""
        now = time.time() if now is None else now
        fired = 0
        for row in await self.store.claims.due(now, DUE_BATCH):
            try:
                fired += await self.fire(row, now)
            except errors.ZhongshuError:
                log.exception("schedule %s could not fire", row["id"])
        for p in self.participants:
            fired += await p.fire_due(now)
        return fired

    async def next_due(self) -> float | None:
        times = [await self.store.claims.next_due()]
        times += [await p.next_due() for p in self.participants]
        known = [t for t in times if t is not None]
        return min(known) if known else None

    async def run(self) -> None:
        """Fire due schedules until cancelled (the hub's stop cancels it)."""
        while True:
            self._wake.clear()
            delay = self.tick_s
            try:
                await self.fire_due()
                nxt = await self.next_due()
                if nxt is not None:
                    delay = min(delay, max(MIN_SLEEP_S, nxt - time.time()))
            except Exception:
                log.exception("schedule round failed")
            await wait_event(self._wake, delay)
