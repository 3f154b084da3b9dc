"""Nodes: creation and credentials, registration, heartbeats, going offline."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from zhongshu import errors
from zhongshu.db.node_store import NodeStore
from zhongshu.services import identity
from zhongshu.services.events import Event, EventBus
from zhongshu.services.identity import Principal

Row = dict[str, Any]
KINDS = ("worker", "hub")


# Capabilities the hub gives out itself: ``hub`` is its embedded executor's, ``node:<id>``
# each node's own. A node claiming one could take work meant for someone else.
RESERVED_CAPABILITY = "hub"
RESERVED_PREFIX = "node:"


def node_capability(node_id: str) -> str:
    """The capability only this node has: a task with it goes to exactly this node
    (monitor tasks of the sources assigned to it, a relay ``to`` naming a node)."""
    return f"{RESERVED_PREFIX}{node_id}"


def effective_capabilities(node: Row) -> list[str]:
    """What the node may be given: what it advertised, narrowed to the admin's list if any,
    plus its own ``node:<id>``."""
    advertised = list(node.get("advertised_capabilities") or [])
    allowed = list(node.get("capabilities") or [])
    if not allowed:
        caps = advertised
    elif not advertised:
        caps = allowed
    else:
        caps = [c for c in advertised if c in allowed]
    return [*caps, node_capability(node["id"])]


def effective_capacity(node: Row) -> int:
    advertised = node.get("advertised_capacity")
    return min(node["capacity"], advertised) if advertised else int(node["capacity"])


def public_status(node: Row) -> str:
    return "disabled" if node["disabled"] else str(node["status"])


def _check_capabilities(caps: Sequence[str]) -> list[str]:
    out = []
    for c in caps:
        if not isinstance(c, str) or not c or len(c) > 128 or c.strip() != c:
            raise errors.InvalidInput(f"capabilities: invalid capability {c!r}")
        if c == RESERVED_CAPABILITY or c.startswith(RESERVED_PREFIX):
            raise errors.InvalidInput(
                f"capabilities: {c!r} is reserved for the hub (hub, node:<id>)"
            )
        out.append(c)
    return sorted(set(out))


class NodeService:
    def __init__(self, store: NodeStore, bus: EventBus) -> None:
        self.store = store
        self.bus = bus
        # Nodes whose heartbeats take the fast path, and their beats not yet written.
        self._beating: set[str] = set()
        self._beats: dict[str, Row] = {}
        bus.listen("node.", self._on_node_event)

    async def create(
        self,
        name: str,
        *,
        kind: str = "worker",
        capabilities: Sequence[str] = (),
        capacity: int = 8,
        max_accounts: int = 10,
        actor: Principal = identity.SYSTEM,
    ) -> tuple[Row, str]:
        """Create a node; returns it and its secret, which is shown this once only."""
        if kind not in KINDS:
            raise errors.InvalidInput(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
        if not name or len(name) > 128:
            raise errors.InvalidInput("name: 1-128 characters")
        if not 1 <= capacity <= 10_000:
            raise errors.InvalidInput("capacity: must be between 1 and 10000")
        now = time.time()
        secret = identity.random_token("CS")
        node_id = "nd_" + uuid.uuid4().hex[:16]
        row: Row = {
            "id": node_id,
            "name": name,
            "kind": kind,
            "capabilities": _check_capabilities(capabilities),
            "advertised_capabilities": [],
            "capacity": capacity,
            "max_accounts": max_accounts,
            "access_key": identity.random_token("CN"),
            "secret_hash": identity.hash_secret(secret),
            "status": "offline",
            "disabled": False,
            "owner_id": actor.id if actor.kind == "user" else None,
            "stats": {},
            "created_at": now,
            "updated_at": now,
        }
        ev = Event("node.created", "node", node_id, actor.actor, {"name": name, "kind": kind})
        await self.store.insert(row, ev)
        self.bus.publish([ev])
        return await self.get(node_id), secret

    async def rotate_credentials(self, node_id: str, actor: Principal) -> tuple[Row, str]:
        secret = identity.random_token("CS")
        values = {
            "access_key": identity.random_token("CN"),
            "secret_hash": identity.hash_secret(secret),
            "updated_at": time.time(),
        }
        ev = Event("node.credentials_rotated", "node", node_id, actor.actor, {})
        row = await self.store.update(node_id, values, [ev])
        if row is None:
            raise errors.NodeNotFound(f"node {node_id} not found")
        self.bus.publish([ev])
        return row, secret

    async def get(self, node_id: str) -> Row:
        row = await self.store.get(node_id)
        if row is None:
            raise errors.NodeNotFound(f"node {node_id} not found")
        return row

    async def find(self, owner_id: str | None = None) -> list[Row]:
        return await self.store.find(owner_id)

    async def update(self, node_id: str, changes: Row, actor: Principal) -> Row:
        allowed = {"name", "capabilities", "capacity", "max_accounts", "disabled"}
        values = {k: v for k, v in changes.items() if k in allowed and v is not None}
        if "capabilities" in values:
            values["capabilities"] = _check_capabilities(values["capabilities"])
        if "capacity" in values and not 1 <= values["capacity"] <= 10_000:
            raise errors.InvalidInput("capacity: must be between 1 and 10000")
        values["updated_at"] = time.time()
        evs = [
            Event(
                "node.updated",
                "node",
                node_id,
                actor.actor,
                {k: v for k, v in values.items() if k != "updated_at"},
            )
        ]
        if "disabled" in values:
            evs.append(
                Event(
                    "node.disabled" if values["disabled"] else "node.enabled",
                    "node",
                    node_id,
                    actor.actor,
                    {},
                )
            )
        row = await self.store.update(node_id, values, evs)
        if row is None:
            raise errors.NodeNotFound(f"node {node_id} not found")
        self.bus.publish(evs)
        return row

    async def delete(self, node_id: str, actor: Principal) -> None:
        ev = Event("node.deleted", "node", node_id, actor.actor, {})
        if not await self.store.delete(node_id, ev):
            raise errors.NodeNotFound(f"node {node_id} not found")
        self.bus.publish([ev])

    async def authenticate(self, access_key: str, secret: str) -> Row:
        """The node for a key pair; 401 for a wrong pair, 403 for a disabled node."""
        node = await self.store.by_access_key(access_key)
        if node is None or not identity.secret_matches(secret, node["secret_hash"]):
            raise errors.AuthenticationFailed("invalid node credentials")
        if node["disabled"]:
            raise errors.NodeDisabled(f"node {node['id']} is disabled")
        return node

    async def register(self, node: Row, info: Row) -> Row:
        """A node (re)announces itself: what it can do, how much, and where it runs."""
        now = time.time()
        values: Row = {
            "advertised_capabilities": _check_capabilities(info.get("capabilities") or []),
            "advertised_capacity": info.get("capacity"),
            "version": str(info.get("version") or "")[:64],
            "host": str(info.get("host") or "")[:255],
            "pid": info.get("pid"),
            "status": "online",
            "last_heartbeat_at": now,
            "registered_at": now,
            "updated_at": now,
        }
        if info.get("maxAccounts"):
            values["max_accounts"] = int(info["maxAccounts"])
        ev = Event(
            "node.online",
            "node",
            node["id"],
            f"node:{node['id']}",
            {"name": node["name"], "version": values["version"], "host": values["host"]},
            now,
        )
        row = await self.store.update(node["id"], values, [ev])
        if row is None:
            raise errors.NodeNotFound(f"node {node['id']} was deleted")
        self.bus.publish([ev])
        return row

    async def heartbeat(self, node: Row, stats: Row) -> None:
        """Record a heartbeat; a node that was marked offline but beats again is back online.

        A node known to be online and enabled only has its beat buffered: ``flush_heartbeats``
        writes all buffered beats in one transaction (the reaper calls it before it looks for
        silent nodes). Anything that changes a node's status evicts it from that fast path.
        """
        now = time.time()
        clean = {k: stats[k] for k in ("cpu", "memory", "running", "completed") if k in stats}
        if node["id"] in self._beating:
            self._beats[node["id"]] = {"id": node["id"], "at": now, "stats": clean}
            return
        current = await self.store.get(node["id"])
        if current is None:
            raise errors.NodeNotFound(f"node {node['id']} was deleted")
        if current["disabled"]:
            raise errors.NodeDisabled(f"node {node['id']} is disabled")
        if current["status"] != "online":
            ev = Event(
                "node.online", "node", node["id"], f"node:{node['id']}", {"name": node["name"]}, now
            )
            values = {
                "status": "online",
                "last_heartbeat_at": now,
                "stats": clean,
                "updated_at": now,
            }
            await self.store.update(node["id"], values, [ev])
            self.bus.publish([ev])
        else:
            await self.store.touch_many([{"id": node["id"], "at": now, "stats": clean}])
        self._beating.add(node["id"])

    async def flush_heartbeats(self) -> int:
        """Write buffered beats. A node another hub process marked offline meanwhile leaves
        the fast path, so its next beat brings it back online (with its event)."""
        beats, self._beats = list(self._beats.values()), {}
        for node_id in await self.store.touch_many(beats):
            self._beating.discard(node_id)
        return len(beats)

    def _on_node_event(self, ev: Event) -> None:
        if ev.type != "node.online":
            self._beating.discard(ev.subject_id)
            self._beats.pop(ev.subject_id, None)

    async def mark_silent_offline(self, offline_after_s: float) -> list[Row]:
        now = time.time()
        gone = await self.store.mark_offline(now - offline_after_s, now)
        if gone:
            self.bus.publish(
                [
                    Event("node.offline", "node", g["id"], "system", {"name": g["name"]}, now)
                    for g in gone
                ]
            )
        return gone
