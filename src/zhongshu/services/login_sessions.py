"""QR login sessions and login expiry.

A login of a source runs on a worker: the hub creates a session (``pending``, expires
after ``session_ttl_s``), the worker is told (``master:login:start``), it reports the QR
code (``scanning``) and then the outcome: ``success`` stores the credentials sealed and
trusts them for ``login_valid_s``; ``failed``; or nothing, and the watcher marks the
session ``expired``.

The watcher also turns logged-in sources whose credentials ran out (or that a worker
reported invalid) into ``expired`` and raises one ``source.login_expired`` per expiry —
the transition is conditional on ``logged_in``, so checking again raises nothing.

Events (``data`` always has ``session_id``, ``source_id``, ``owner_id``):
``login.started`` (``node_id``, ``platform``, ``expires_at``), ``login.qrcode_ready``
(``expires_at``), ``login.succeeded`` (``user_info``), ``login.failed``
(``error_message``), ``login.expired`` (``error_message``); and ``source.login_expired``
(``source_id, owner_id, platform, name, reason, node_id``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from zhongshu import errors
from zhongshu.db.login_session_store import OPEN_STATES, LoginSessionStore
from zhongshu.db.source_store import SourceStore
from zhongshu.services import nodes as node_rules
from zhongshu.services.events import Event, EventBus
from zhongshu.services.identity import Principal
from zhongshu.services.nodes import NodeService
from zhongshu.services.sources import SourceService, account_view, check_json

log = logging.getLogger("zhongshu.logins")
Row = dict[str, Any]
MAX_QR_BYTES = 2 * 1024 * 1024
_QR = re.compile(r"data:image/(png|jpeg|gif|webp|svg\+xml);base64,([A-Za-z0-9+/=\s]+)")
REPORTED = ("success", "failed", "expired")


def check_qr_code(value: Any) -> str:
    """A QR code must be an image data URL (``data:image/png;base64,…``)."""
    if not isinstance(value, str) or not value:
        raise errors.InvalidInput("qr_code_data: a data:image/png;base64,… URL is required")
    if len(value) > MAX_QR_BYTES:
        raise errors.InvalidInput(f"qr_code_data: larger than {MAX_QR_BYTES} bytes")
    m = _QR.fullmatch(value)
    if m is None:
        raise errors.InvalidInput(
            "qr_code_data: must be an image data URL like data:image/png;base64,iVBOR…"
        )
    try:
        base64.b64decode("".join(m.group(2).split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise errors.InvalidInput("qr_code_data: the base64 part does not decode") from exc
    return value


def session_view(s: Row) -> Row:
    """A session in the HisCRM shape (epoch seconds), with ``source_id`` as well."""
    return {
        "id": s["id"],
        "session_id": s["id"],
        "account_id": s["source_id"],
        "source_id": s["source_id"],
        "owner_id": s["owner_id"],
        "worker_id": s["node_id"],
        "status": s["status"],
        "login_method": s["login_method"],
        "qr_code_data": s["qr_code_data"],
        "error_message": s["error_message"],
        "expires_at": int(s["expires_at"]),
        "logged_in_at": None if s["logged_in_at"] is None else int(s["logged_in_at"]),
        "created_at": int(s["created_at"]),
        "updated_at": int(s["updated_at"]),
    }


def _ev(kind: str, s: Row, actor: str, now: float, **data: Any) -> Event:
    base = {"session_id": s["id"], "source_id": s["source_id"], "owner_id": s["owner_id"]}
    return Event(f"login.{kind}", "login_session", s["id"], actor, {**base, **data}, now)


class LoginService:
    def __init__(
        self,
        store: LoginSessionStore,
        source_store: SourceStore,
        sources: SourceService,
        nodes: NodeService,
        bus: EventBus,
        *,
        session_ttl_s: float,
        login_valid_s: float,
        watch_interval_s: float,
    ) -> None:
        self.store = store
        self.source_store = source_store
        self.sources = sources
        self.nodes = nodes
        self.bus = bus
        self.session_ttl_s = session_ttl_s
        self.login_valid_s = login_valid_s
        self.watch_interval_s = watch_interval_s

    # --- starting ----------------------------------------------------------------------

    async def start(
        self,
        source_id: str,
        actor: Principal,
        worker_id: str | None = None,
        reachable: Callable[[str], bool] | None = None,
    ) -> Row:
        """Open a login session for a source its ``actor`` owns (or any, for an admin)
        on a capable online worker (``worker_id``, else the source's node, else the
        least loaded). ``reachable`` says whether a node can be sent messages now.
        Raises ``NoCapableWorker`` (409) with the reason when no worker fits."""
        source = await self.sources.get(source_id, actor)
        node = await self._pick_worker(source, worker_id, reachable)
        now = time.time()
        row: Row = {
            "id": "ls_" + uuid.uuid4().hex[:16],
            "source_id": source["id"],
            "owner_id": source["owner_id"],
            "node_id": node["id"],
            "status": "pending",
            "login_method": "qrcode",
            "started_by": actor.actor,
            "expires_at": now + self.session_ttl_s,
            "created_at": now,
            "updated_at": now,
        }
        ev = _ev(
            "started",
            row,
            actor.actor,
            now,
            node_id=node["id"],
            platform=source["platform"],
            expires_at=int(row["expires_at"]),
        )
        superseded: list[Event] = []

        def supersede(old: Row) -> Event:
            e = _ev("expired", old, actor.actor, now, error_message="superseded by a newer login")
            superseded.append(e)
            return e

        await self.store.start(row, ev, supersede)
        self.bus.publish([*superseded, ev])
        return await self.get(row["id"])

    async def _pick_worker(
        self, source: Row, worker_id: str | None, reachable: Callable[[str], bool] | None
    ) -> Row:
        platform = source["platform"]
        nodes = await self.nodes.find()

        def serves(n: Row) -> bool:
            return platform in node_rules.effective_capabilities(n)

        def up(n: Row) -> bool:
            return n["status"] == "online" and not n["disabled"]

        def can_talk(n: Row) -> bool:
            return reachable is None or reachable(n["id"])

        if worker_id is not None:
            n = next((m for m in nodes if m["id"] == worker_id), None)
            if n is None:
                raise errors.InvalidInput(f"worker_id: no worker {worker_id!r}")
            if not up(n):
                raise errors.NoCapableWorker(f"worker {worker_id} is {node_rules.public_status(n)}")
            if not serves(n):
                raise errors.NoCapableWorker(
                    f"worker {worker_id} does not serve platform {platform!r}"
                )
            if not can_talk(n):
                raise errors.NoCapableWorker(
                    f"worker {worker_id} is not connected over Socket.IO (/worker), so it "
                    "cannot run a QR login"
                )
            return n
        capable = [n for n in nodes if serves(n)]
        online = [n for n in capable if up(n)]
        ready = [n for n in online if can_talk(n)]
        if not ready:
            if not capable:
                reason = f"no worker serves platform {platform!r}"
            elif not online:
                reason = f"no worker serving platform {platform!r} is online"
            else:
                reason = (
                    f"no worker serving platform {platform!r} is connected over Socket.IO "
                    "(/worker), which a QR login needs"
                )
            raise errors.NoCapableWorker(
                f"{reason}: start a worker with the {platform!r} capability and try again"
            )
        for n in ready:
            if n["id"] == source["assigned_node_id"]:
                return n
        load = await self.source_store.load_by_node()
        return min(ready, key=lambda n: (load.get(n["id"], 0), n["id"]))

    async def worker_message(self, session_id: str) -> tuple[str, Row]:
        """``(node id, master:login:start payload)`` for a session: the effective proxy
        in clear is only ever in this message, never stored."""
        s = await self.get(session_id)
        source = await self.sources.get(s["source_id"])
        proxy = await self.sources.proxies.effective(source, s["node_id"])
        return s["node_id"], {
            "account_id": source["id"],
            "session_id": s["id"],
            "platform": source["platform"],
            "proxy": proxy,
            "account": account_view(source),
            "expires_at": int(s["expires_at"]),
        }

    # --- reading -----------------------------------------------------------------------

    async def get(self, session_id: str, viewer: Principal | None = None) -> Row:
        row = await self.store.get(session_id)
        if row is None or (viewer is not None and not viewer.may_see(row["owner_id"])):
            raise errors.LoginSessionNotFound(f"login session {session_id} not found")
        return row

    async def find(self, viewer: Principal, **filters: Any) -> tuple[list[Row], int]:
        return await self.store.find(owner_id=viewer.owner_filter, **filters)

    # --- what the worker reports -------------------------------------------------------

    async def _session_of(self, node_id: str, data: Row) -> Row:
        session_id = data.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            raise errors.InvalidInput("session_id: required")
        s = await self.store.get(session_id)
        if s is None or s["node_id"] != node_id:
            raise errors.LoginSessionNotFound(f"no login session {session_id} for this worker")
        return s

    async def qrcode_ready(self, node_id: str, data: Row) -> Row:
        """``worker:login:qrcode``: the session shows a QR code (``scanning``)."""
        qr = check_qr_code(data.get("qr_code_data"))
        s = await self._session_of(node_id, data)
        now = time.time()
        if s["status"] not in OPEN_STATES:
            raise errors.Conflict(f"login session {s['id']} is {s['status']}")
        if s["expires_at"] < now:
            raise errors.Conflict(f"login session {s['id']} has expired")
        ev = _ev("qrcode_ready", s, f"node:{node_id}", now, expires_at=int(s["expires_at"]))
        row = await self.store.transition(
            s["id"],
            OPEN_STATES,
            {"status": "scanning", "qr_code_data": qr, "updated_at": now},
            None,
            None,
            ev,
        )
        if row is None:
            raise errors.Conflict(f"login session {s['id']} is no longer open")
        self.bus.publish([ev])
        return row

    async def report_status(self, node_id: str, data: Row) -> Row:
        """``worker:login:status``: ``success`` (cookies, user_info, fingerprint),
        ``failed`` (error_message) or ``expired``. ``expired`` for a source whose login
        is over (or with ``account_id`` and no session) means its credentials stopped
        working. Returns ``{session?, source_id, status, changed}``."""
        status = data.get("status")
        if status not in REPORTED:
            raise errors.InvalidInput(f"status: must be one of {', '.join(REPORTED)}")
        if not data.get("session_id"):
            if status != "expired":
                raise errors.InvalidInput("session_id: required unless status is expired")
            return await self._credentials_invalid(node_id, data.get("account_id"))
        s = await self._session_of(node_id, data)
        if s["status"] not in OPEN_STATES:
            if status == "expired" and s["status"] == "success":
                return await self._credentials_invalid(node_id, s["source_id"])
            raise errors.Conflict(f"login session {s['id']} is already {s['status']}")
        now = time.time()
        actor = f"node:{node_id}"
        if status == "success":
            row = await self._succeed(s, data, actor, now)
        elif status == "failed":
            message = str(data.get("error_message") or data.get("error") or "login failed")
            row = await self._close(s, "failed", message, "login_failed", actor, now)
        else:
            message = str(data.get("error_message") or "the QR code expired")
            row = await self._close(s, "expired", message, "not_logged_in", actor, now)
        if row is None:
            raise errors.Conflict(f"login session {s['id']} is no longer open")
        return {"session": row, "source_id": s["source_id"], "status": status, "changed": True}

    async def _close(
        self, s: Row, status: str, message: str, login_status: str, actor: str, now: float
    ) -> Row | None:
        """An open session ends ``failed`` or ``expired``; a source still ``logging_in``
        gets ``login_status``."""
        message = message[:2000]
        ev = _ev(status, s, actor, now, error_message=message)
        row = await self.store.transition(
            s["id"],
            OPEN_STATES,
            {"status": status, "error_message": message, "updated_at": now},
            {"login_status": login_status, "updated_at": now},
            ("logging_in",),
            ev,
        )
        if row is not None:
            self.bus.publish([ev])
        return row

    async def _succeed(self, s: Row, data: Row, actor: str, now: float) -> Row | None:
        cookies = data.get("cookies")
        if not isinstance(cookies, (list, dict)):
            raise errors.InvalidInput("cookies: a list (or object) of cookies is required")
        credentials: Row = {"cookies": cookies}
        for extra in ("tokens", "storage", "local_storage"):
            if data.get(extra) is not None:
                credentials[extra] = data[extra]
        user_info = check_json("user_info", data.get("user_info"), (dict,))
        fingerprint = check_json("fingerprint", data.get("fingerprint"), (dict,))
        source = await self.sources.get(s["source_id"])
        source_values: Row = {
            "login_status": "logged_in",
            "credentials": self.sources.box.seal_json(credentials),
            "cookies_valid_until": now + self.login_valid_s,
            "last_login_at": now,
            "updated_at": now,
        }
        if user_info is not None:
            source_values["user_info"] = user_info
        if fingerprint is not None:
            source_values["fingerprint"] = fingerprint
        ev = _ev("succeeded", s, actor, now, user_info=user_info, node_id=s["node_id"])
        row = await self.store.transition(
            s["id"],
            OPEN_STATES,
            {"status": "success", "logged_in_at": now, "updated_at": now},
            source_values,
            None,
            ev,
        )
        if row is None:
            return None
        evs = [ev]
        if source["assigned_node_id"]:
            # The node serving the source needs the new credentials (it may not be the
            # one that ran the login): the realtime layer re-sends the account.
            evs.append(
                Event(
                    "source.updated",
                    "source",
                    source["id"],
                    actor,
                    {"changed": ["credentials"], "node_id": source["assigned_node_id"]},
                    now,
                )
            )
        self.bus.publish(evs)
        return row

    async def _credentials_invalid(self, node_id: str, source_id: Any) -> Row:
        if not isinstance(source_id, str) or not source_id:
            raise errors.InvalidInput("account_id: required to report expired credentials")
        source = await self.source_store.get(source_id)
        if source is None or source["assigned_node_id"] not in (node_id, None):
            raise errors.SourceNotFound(f"no account {source_id} on this worker")
        changed = await self.expire_credentials(source_id, reason="reported_invalid")
        return {"source_id": source_id, "status": "expired", "changed": bool(changed)}

    # --- the watcher -------------------------------------------------------------------

    async def expire_due_sessions(self) -> list[Row]:
        now = time.time()
        evs: list[Event] = []

        def event(r: Row) -> Event:
            evs.append(_ev("expired", r, "system", now, error_message=r["error_message"]))
            return evs[-1]

        rows = await self.store.expire_due(now, event)
        self.bus.publish(evs)
        return rows

    async def expire_credentials(
        self, source_id: str | None = None, reason: str = "credentials_expired"
    ) -> list[Row]:
        """logged_in → expired (all past ``cookies_valid_until``, or ``source_id`` now)
        with one ``source.login_expired`` each."""
        now = time.time()
        evs: list[Event] = []

        def event(r: Row) -> Event:
            evs.append(
                Event(
                    "source.login_expired",
                    "source",
                    r["id"],
                    "system",
                    {
                        "source_id": r["id"],
                        "owner_id": r["owner_id"],
                        "platform": r["platform"],
                        "name": r["name"],
                        "reason": reason,
                        "node_id": r["assigned_node_id"],
                    },
                    now,
                )
            )
            return evs[-1]

        rows = await self.source_store.expire_logins(now, event, source_id)
        self.bus.publish(evs)
        return rows

    async def watch_once(self) -> None:
        await self.expire_due_sessions()
        await self.expire_credentials()

    async def run(self) -> None:
        """Watch until cancelled (the hub's stop)."""
        while True:
            try:
                await self.watch_once()
            except Exception:
                log.exception("login watch round failed")
            await asyncio.sleep(self.watch_interval_s)
