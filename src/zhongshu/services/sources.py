"""Sources: things on a platform a worker watches for their owner (HisCRM "accounts",
WeRSS "feeds"). One model, two shapes: ``source_view`` (zhongshu) and ``account_view``
(the HisCRM field names).

Credentials (cookies, tokens) are sealed with the hub's ``SecretBox`` and never leave the
hub in clear except in a message to the worker that serves the source.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zhongshu import errors
from zhongshu.db.source_store import SourceStore
from zhongshu.services.events import Event, EventBus
from zhongshu.services.identity import Principal
from zhongshu.services.proxies import ProxyService
from zhongshu.services.secrets import SecretBox

if TYPE_CHECKING:
    from zhongshu.services.assignment import AssignmentService

Row = dict[str, Any]
STATUSES = ("active", "inactive")
LOGIN_STATUSES = ("not_logged_in", "logging_in", "logged_in", "login_failed", "expired")
_PLATFORM = re.compile(r"[a-z][a-z0-9_]{0,63}")


def source_view(s: Row) -> Row:
    """A source as the zhongshu API shows it (credentials only as "are set")."""
    return {
        "id": s["id"],
        "owner_id": s["owner_id"],
        "platform": s["platform"],
        "name": s["name"],
        "account_id": s["account_id"],
        "monitor_interval_s": s["monitor_interval_s"],
        "status": s["status"],
        "login_status": s["login_status"],
        "has_credentials": bool(s["credentials"]),
        "credentials": "****" if s["credentials"] else None,
        "user_info": s["user_info"],
        "fingerprint": s["fingerprint"],
        "proxy_id": s["proxy_id"],
        "assigned_node_id": s["assigned_node_id"],
        "assigned_at": s["assigned_at"],
        "cookies_valid_until": s["cookies_valid_until"],
        "last_login_at": s.get("last_login_at"),
        "last_monitored_at": s["last_monitored_at"],
        "created_at": s["created_at"],
        "updated_at": s["updated_at"],
    }


def _epoch(ts: float | None) -> int | None:
    return None if ts is None else int(ts)


def account_view(s: Row) -> Row:
    """A source as a HisCRM account (seed field names; times in epoch seconds, except
    ``last_login_time`` in milliseconds as the seed stores it)."""
    last_login = s.get("last_login_at")
    return {
        "id": s["id"],
        "platform": s["platform"],
        "account_name": s["name"],
        "account_id": s["account_id"],
        "status": s["status"],
        "login_status": s["login_status"],
        "monitor_interval": s["monitor_interval_s"],
        "assigned_worker_id": s["assigned_node_id"],
        "user_info": s["user_info"],
        "fingerprint": s["fingerprint"],
        "has_credentials": bool(s["credentials"]),
        "proxy_id": s["proxy_id"],
        "owner_id": s["owner_id"],
        "cookies_valid_until": _epoch(s["cookies_valid_until"]),
        "last_login_time": None if last_login is None else int(last_login * 1000),
        "created_at": _epoch(s["created_at"]),
        "updated_at": _epoch(s["updated_at"]),
    }


def check_platform(platform: str, known: Sequence[str]) -> str:
    if not isinstance(platform, str) or not _PLATFORM.fullmatch(platform):
        raise errors.InvalidInput(
            f"platform: {platform!r} is not a lowercase token like 'douyin'; "
            f"allowed: {', '.join(known)}"
        )
    if platform not in known:
        raise errors.InvalidInput(
            f"platform: unknown platform {platform!r}; allowed: {', '.join(known)} "
            "(known_platforms in the config)"
        )
    return platform


def _check_name(value: Any) -> str:
    name = str(value or "").strip()
    if not name or len(name) > 255:
        raise errors.InvalidInput("name: 1-255 characters")
    return name


def _check_interval(value: Any) -> int:
    if not isinstance(value, int) or value <= 0:
        raise errors.InvalidInput(f"monitor_interval_s: must be > 0 seconds, got {value!r}")
    return value


def _check_one_of(field: str, value: Any, allowed: Sequence[str]) -> Any:
    if value not in allowed:
        raise errors.InvalidInput(f"{field}: must be one of {', '.join(allowed)}")
    return value


def check_json(field: str, value: Any, kinds: tuple[type, ...]) -> Any:
    if value is not None and not isinstance(value, kinds):
        names = " or ".join("an object" if k is dict else "a list" for k in kinds)
        raise errors.InvalidInput(f"{field}: must be {names}")
    return value


class SourceService:
    def __init__(
        self,
        store: SourceStore,
        bus: EventBus,
        box: SecretBox,
        proxies: ProxyService,
        *,
        known_platforms: Sequence[str],
        login_valid_s: float,
    ) -> None:
        self.store = store
        self.bus = bus
        self.box = box
        self.proxies = proxies
        self.known_platforms = list(known_platforms)
        self.login_valid_s = login_valid_s
        # Set by the hub once the assignment exists (it needs this service's store).
        self.assignment: AssignmentService | None = None

    # --- CRUD --------------------------------------------------------------------------

    async def create(self, actor: Principal, fields: Row) -> Row:
        """Create a source owned by ``actor`` and give it to a capable node if one is free."""
        now = time.time()
        platform = check_platform(fields.get("platform", ""), self.known_platforms)
        name = _check_name(fields.get("name"))
        interval = _check_interval(fields.get("monitor_interval_s", 20))
        status = _check_one_of("status", fields.get("status") or "active", STATUSES)
        if fields.get("proxy_id") is not None:
            await self.proxies.check_usable(fields["proxy_id"], actor.id, actor)
        creds = check_json("credentials", fields.get("credentials"), (dict, list))
        row: Row = {
            "id": "src_" + uuid.uuid4().hex[:16],
            "owner_id": actor.id,
            "platform": platform,
            "name": name,
            "account_id": str(fields.get("account_id") or ""),
            "monitor_interval_s": interval,
            "status": status,
            "login_status": "not_logged_in",
            "credentials": self._seal(creds),
            "user_info": check_json("user_info", fields.get("user_info"), (dict,)),
            "fingerprint": check_json("fingerprint", fields.get("fingerprint"), (dict,)),
            "proxy_id": fields.get("proxy_id"),
            "cookies_valid_until": now + self.login_valid_s if creds is not None else None,
            "created_at": now,
            "updated_at": now,
        }
        ev = Event(
            "source.created",
            "source",
            row["id"],
            actor.actor,
            {"platform": platform, "name": name, "owner_id": actor.id},
            now,
        )
        created = await self.store.insert(row, ev)
        self.bus.publish([ev])
        if self.assignment is not None and status == "active":
            await self.assignment.assign_pending([created["id"]])
            created = await self.get(created["id"])
        return created

    def _seal(self, creds: Any) -> str | None:
        return None if creds is None else self.box.seal_json(creds)

    async def get(self, source_id: str, viewer: Principal | None = None) -> Row:
        row = await self.store.get(source_id)
        if row is None or (viewer is not None and not viewer.may_see(row["owner_id"])):
            raise errors.SourceNotFound(f"source {source_id} not found")
        return row

    async def find(self, viewer: Principal, **filters: Any) -> tuple[list[Row], int]:
        return await self.store.find(owner_id=viewer.owner_filter, **filters)

    async def get_many(self, source_ids: Sequence[str]) -> list[Row]:
        return await self.store.get_many(source_ids)

    async def on_node(self, node_id: str) -> list[Row]:
        """Every source the node serves now."""
        rows, _ = await self.store.find(node_id=node_id, limit=100_000)
        return rows

    async def load_by_node(self) -> dict[str, int]:
        """How many sources each node serves now."""
        return await self.store.load_by_node()

    async def update(self, source_id: str, changes: Row, actor: Principal) -> Row:
        """Change a source. Keys absent from ``changes`` stay; ``proxy_id``/``credentials``
        set to None clear them. A platform change or deactivation takes the source off its
        node (it is given to a capable node again when active)."""
        current = await self.get(source_id, actor)
        now = time.time()
        values: Row = {}
        if "platform" in changes:
            values["platform"] = check_platform(changes["platform"], self.known_platforms)
        if "name" in changes:
            values["name"] = _check_name(changes["name"])
        if "account_id" in changes:
            values["account_id"] = str(changes["account_id"] or "")
        if "monitor_interval_s" in changes:
            values["monitor_interval_s"] = _check_interval(changes["monitor_interval_s"])
        if "status" in changes:
            values["status"] = _check_one_of("status", changes["status"], STATUSES)
        if "login_status" in changes:
            values["login_status"] = _check_one_of(
                "login_status", changes["login_status"], LOGIN_STATUSES
            )
        if "proxy_id" in changes:
            if changes["proxy_id"] is not None:
                await self.proxies.check_usable(changes["proxy_id"], current["owner_id"], actor)
            values["proxy_id"] = changes["proxy_id"]
        if "credentials" in changes:
            creds = check_json("credentials", changes["credentials"], (dict, list))
            values["credentials"] = self._seal(creds)
            values["cookies_valid_until"] = now + self.login_valid_s if creds else None
        for key in ("user_info", "fingerprint"):
            if key in changes:
                values[key] = check_json(key, changes[key], (dict,))
        values["updated_at"] = now
        node_id = current["assigned_node_id"]
        leaves = node_id is not None and (
            values.get("status") == "inactive"
            or values.get("platform", current["platform"]) != current["platform"]
        )
        if leaves:
            values["assigned_node_id"] = None
            values["assigned_at"] = None
        shown = sorted(k for k in values if k not in ("updated_at", "credentials"))
        if "credentials" in values:
            shown.append("credentials")
        evs = [
            Event(
                "source.updated",
                "source",
                source_id,
                actor.actor,
                {"changed": shown, "node_id": None if leaves else node_id},
                now,
            )
        ]
        if leaves:
            evs.append(revoked_event(current, "source changed", now))
        # Conditional on the node it had, so a concurrent reassignment is not undone.
        row = await self.store.update(source_id, values, evs, node_was=node_id if leaves else None)
        if row is None:
            raise errors.Conflict(f"source {source_id} changed meanwhile: try again")
        self.bus.publish(evs)
        if self.assignment is not None and row["status"] == "active":
            await self.assignment.assign_pending([source_id])
            row = await self.get(source_id)
        return row

    async def delete(self, source_id: str, actor: Principal) -> None:
        current = await self.get(source_id, actor)
        ev = Event(
            "source.deleted",
            "source",
            source_id,
            actor.actor,
            {"owner_id": current["owner_id"], "node_id": current["assigned_node_id"]},
        )
        if await self.store.delete(source_id, ev) is None:
            raise errors.SourceNotFound(f"source {source_id} not found")
        self.bus.publish([ev])

    # --- what a worker gets ------------------------------------------------------------

    async def worker_accounts(self, rows: Sequence[Row], node_id: str) -> list[Row]:
        """Accounts for ``master:task:assign``: the HisCRM shape plus the credentials in
        clear and the effective proxy — only ever sent to the node that serves them."""
        out = []
        proxies = await self.proxies.effective_many([(s, node_id) for s in rows])
        for s, proxy in zip(rows, proxies, strict=True):
            creds = None
            if s["credentials"]:
                try:
                    creds = self.box.open_json(s["credentials"])
                except errors.ConfigError:
                    creds = None  # a key was removed: the worker must log in again
            out.append(
                {
                    **account_view(s),
                    "credentials": creds,
                    "proxy": proxy,
                }
            )
        return out

    async def accounts_of_node(self, node_id: str) -> list[Row]:
        return await self.worker_accounts(await self.on_node(node_id), node_id)


def revoked_event(s: Row, reason: str, now: float | None = None) -> Event:
    """``source.revoked``: the source left ``s["assigned_node_id"]``."""
    return Event(
        "source.revoked",
        "source",
        s["id"],
        "system",
        {
            "node_id": s["assigned_node_id"],
            "owner_id": s["owner_id"],
            "platform": s["platform"],
            "reason": reason,
        },
        time.time() if now is None else now,
    )


def assigned_event(s: Row, now: float | None = None) -> Event:
    """``source.assigned``: the source went to ``s["assigned_node_id"]`` (account payload
    without secrets; the realtime layer adds them for the node)."""
    return Event(
        "source.assigned",
        "source",
        s["id"],
        "system",
        {"node_id": s["assigned_node_id"], "owner_id": s["owner_id"], "account": account_view(s)},
        time.time() if now is None else now,
    )
