"""Proxies: where a source's (or a node's) traffic goes out.

A proxy is ``protocol://[username[:password]@]host:port`` with protocol ``http``,
``https`` or ``socks5``. The password is sealed at rest and never shown again; workers
get it in clear only inside the messages that need it (``master:login:start``, the
accounts of ``master:task:assign``), never in stored tasks or events.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from zhongshu import errors
from zhongshu.db.proxy_store import ProxyStore
from zhongshu.services.events import Event, EventBus
from zhongshu.services.identity import Principal
from zhongshu.services.secrets import SecretBox

Row = dict[str, Any]
PROTOCOLS = ("http", "https", "socks5")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\]"
)


def parse_proxy(
    *,
    url: str | None = None,
    server: str | None = None,
    protocol: str | None = None,
    username: str | None = None,
    password: str | None = None,
) -> Row:
    """Check a proxy given as a URL or as HisCRM fields (``server`` = ``host:port``);
    returns ``{protocol, host, port, username, password}``. Raises ``InvalidInput``
    naming what to fix."""
    if url is not None:
        if server is not None:
            raise errors.InvalidInput("proxy: give either url or server, not both")
        if not isinstance(url, str) or "://" not in url:
            raise errors.InvalidInput(
                f"url: {url!r} is not a proxy URL like socks5://user:pass@host:1080"
            )
        parts = urlsplit(url.strip())
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise errors.InvalidInput("url: a proxy URL has no path, query or fragment")
        protocol = protocol or parts.scheme.lower()
        if parts.scheme.lower() != protocol:
            raise errors.InvalidInput("protocol: does not match the URL's scheme")
        try:
            port = parts.port
        except ValueError as exc:
            raise errors.InvalidInput(f"url: invalid port in {url!r}") from exc
        host = parts.hostname or ""
        if host and ":" in host:
            host = f"[{host}]"
        if parts.username is not None and username is None:
            username = unquote(parts.username)
        if parts.password is not None and password is None:
            password = unquote(parts.password)
    elif server is not None:
        if not isinstance(server, str) or ":" not in server:
            raise errors.InvalidInput(f"server: {server!r} must be host:port")
        host, _, port_text = server.strip().rpartition(":")
        if not port_text.isdigit():
            raise errors.InvalidInput(f"server: {server!r} must end with a numeric port")
        port = int(port_text)
    else:
        raise errors.InvalidInput("proxy: give url (socks5://host:1080) or server (host:port)")
    protocol = (protocol or "http").lower()
    if protocol not in PROTOCOLS:
        raise errors.InvalidInput(
            f"protocol: must be one of {', '.join(PROTOCOLS)}, got {protocol!r}"
        )
    if not host or len(host) > 255 or not _HOST.fullmatch(host):
        raise errors.InvalidInput(f"host: {host!r} is not a host name or IP address")
    if port is None or not 1 <= port <= 65535:
        raise errors.InvalidInput("port: a proxy needs a port between 1 and 65535")
    if username is not None and (len(username) > 255 or not username.isprintable()):
        raise errors.InvalidInput("username: at most 255 printable characters")
    if password is not None and (len(password) > 1024 or not password.isprintable()):
        raise errors.InvalidInput("password: at most 1024 printable characters")
    return {
        "protocol": protocol,
        "host": host,
        "port": port,
        "username": username or "",
        "password": password or None,
    }


def proxy_url(p: Row, password: str | None = None) -> str:
    """The proxy as a URL; with ``password`` only when it is given (for a worker)."""
    auth = ""
    if p["username"]:
        auth = quote(p["username"], safe="")
        if password:
            auth += ":" + quote(password, safe="")
        auth += "@"
    return f"{p['protocol']}://{auth}{p['host']}:{p['port']}"


def proxy_public(p: Row) -> Row:
    """A proxy as the API shows it: the password only as "is set"."""
    return {
        "id": p["id"],
        "owner_id": p["owner_id"],
        "name": p["name"],
        "protocol": p["protocol"],
        "server": f"{p['host']}:{p['port']}",
        "host": p["host"],
        "port": p["port"],
        "username": p["username"],
        "has_password": bool(p["password"]),
        "password": "****" if p["password"] else None,
        "url": proxy_url(p),
        "created_at": p["created_at"],
        "updated_at": p["updated_at"],
    }


class ProxyService:
    def __init__(self, store: ProxyStore, bus: EventBus, box: SecretBox) -> None:
        self.store = store
        self.bus = bus
        self.box = box

    async def create(self, actor: Principal, name: str, fields: Row) -> Row:
        parsed = parse_proxy(**fields)
        now = time.time()
        row: Row = {
            "id": "px_" + uuid.uuid4().hex[:16],
            "owner_id": actor.id,
            "name": name,
            "protocol": parsed["protocol"],
            "host": parsed["host"],
            "port": parsed["port"],
            "username": parsed["username"],
            "password": self.box.seal(parsed["password"]) if parsed["password"] else None,
            "created_at": now,
            "updated_at": now,
        }
        ev = Event(
            "proxy.created",
            "proxy",
            row["id"],
            actor.actor,
            {"protocol": row["protocol"], "host": row["host"], "port": row["port"]},
            now,
        )
        await self.store.insert(row, ev)
        self.bus.publish([ev])
        return row

    async def get(self, proxy_id: str, viewer: Principal | None = None) -> Row:
        row = await self.store.get(proxy_id)
        if row is None or (viewer is not None and not viewer.may_see(row["owner_id"])):
            raise errors.NotFound(f"proxy {proxy_id} not found")
        return row

    async def find(
        self, viewer: Principal, limit: int = 100, offset: int = 0
    ) -> tuple[list[Row], int]:
        return await self.store.find(viewer.owner_filter, limit, offset)

    async def update(self, proxy_id: str, changes: Row, actor: Principal) -> Row:
        """Change a proxy; the address may be given again as a URL or as fields."""
        current = await self.get(proxy_id, actor)
        values: Row = {}
        if "name" in changes and changes["name"] is not None:
            values["name"] = changes["name"]
        address = {k: changes[k] for k in ("url", "server") if changes.get(k) is not None}
        if address or any(changes.get(k) is not None for k in ("protocol", "username", "password")):
            merged = dict(address)
            if not address:
                merged["server"] = f"{current['host']}:{current['port']}"
            merged["protocol"] = changes.get("protocol") or (
                None if "url" in address else current["protocol"]
            )
            for k in ("username", "password"):
                if changes.get(k) is not None:
                    merged[k] = changes[k]
            parsed = parse_proxy(**merged)
            if not parsed["username"] and changes.get("username") is None:
                parsed["username"] = current["username"]  # not given: kept
            values.update({k: parsed[k] for k in ("protocol", "host", "port", "username")})
            if parsed["password"] is not None:
                values["password"] = self.box.seal(parsed["password"])
            elif changes.get("password") == "":
                values["password"] = None
        now = time.time()
        values["updated_at"] = now
        shown = {k: v for k, v in values.items() if k not in ("password", "updated_at")}
        ev = Event("proxy.updated", "proxy", proxy_id, actor.actor, shown, now)
        row = await self.store.update(proxy_id, values, ev)
        if row is None:
            raise errors.NotFound(f"proxy {proxy_id} not found")
        self.bus.publish([ev])
        return row

    async def delete(self, proxy_id: str, actor: Principal) -> None:
        await self.get(proxy_id, actor)
        now = time.time()
        ev = Event("proxy.deleted", "proxy", proxy_id, actor.actor, {}, now)
        if not await self.store.delete(proxy_id, ev, now):
            raise errors.NotFound(f"proxy {proxy_id} not found")
        self.bus.publish([ev])

    async def check_usable(self, proxy_id: str, owner_id: str, actor: Principal) -> None:
        """A source may use its owner's proxies (an admin may give it any)."""
        row = await self.store.get(proxy_id)
        if row is None or (row["owner_id"] != owner_id and not actor.is_admin):
            raise errors.InvalidInput(f"proxy_id: no proxy {proxy_id!r} of yours")

    async def set_node_proxy(self, node_id: str, proxy_id: str | None, actor: Principal) -> None:
        """The proxy a node's sources use when they name none (None: direct)."""
        if proxy_id is not None and await self.store.get(proxy_id) is None:
            raise errors.InvalidInput(f"proxy_id: no proxy {proxy_id!r}")
        now = time.time()
        ev = Event("proxy.node_set", "node", node_id, actor.actor, {"proxy_id": proxy_id}, now)
        await self.store.set_node_proxy(node_id, proxy_id, now, ev)
        self.bus.publish([ev])

    async def node_proxy_id(self, node_id: str) -> str | None:
        return await self.store.node_proxy_id(node_id)

    async def effective(
        self, source: Row, node_id: str | None, *, with_password: bool = True
    ) -> Row | None:
        """The proxy a worker uses for ``source`` on ``node_id``: the source's own, else
        the node's; ``{server, protocol, username, password, url}`` with the password in
        clear (for the worker's message only), or None for a direct connection.
        ``with_password=False`` skips decrypting it (password and url are then None)."""
        return (await self.effective_many([(source, node_id)], with_password=with_password))[0]

    async def effective_many(
        self, wanted: Sequence[tuple[Row, str | None]], *, with_password: bool = True
    ) -> list[Row | None]:
        """``effective`` for each ``(source, node_id)``, in order, read in one query."""
        rows = await self.store.in_use([(s.get("proxy_id"), node_id) for s, node_id in wanted])
        return [None if p is None else self._for_worker(p, with_password) for p in rows]

    def _for_worker(self, p: Row, with_password: bool) -> Row:
        password = self.box.open(p["password"]) if with_password and p["password"] else None
        return {
            "id": p["id"],
            "server": f"{p['host']}:{p['port']}",
            "protocol": p["protocol"],
            "username": p["username"] or None,
            "password": password,
            "url": proxy_url(p, password) if with_password else None,
            # For stored payloads (tasks): the address without the password.
            "public_url": proxy_url(p),
        }
