"""Socket.IO ``/admin`` namespace: people watching logins (and, from other areas,
notifications) live.

Connect with ``auth={"token": "<access token>"}``, ``auth={"key": "WK…", "secret":
"SK…"}`` (a user API key with the ``read`` scope) or an ``Authorization`` header
(``Bearer …`` / ``AK-SK WK…:SK…``). Each connection joins the room ``user:<user id>``;
admins also join ``admins``. Events about a source go to ``admins`` and to its owner's
room, so a user sees only their own sources.

admin → hub: ``master:login:start {account_id, worker_id?}`` (ack: ``{success,
session_id, …}``), ``admin:request:login-sessions {status?, account_id?}`` (ack:
``{success, sessions}``; also emitted as ``login:sessions``).
hub → admin: ``login:qrcode:ready {session_id, account_id, qr_code_data, expires_at}``,
``login:success {session_id, account_id, user_info}``, ``login:failed {session_id,
account_id, error_message, status}`` (``status`` is ``failed`` or ``expired``),
``login:started {session_id, account_id, worker_id, expires_at}`` and
``account:login_expired {account_id, platform, name, reason}``.
"""

from __future__ import annotations

import logging
from typing import Any

import socketio

from zhongshu import errors
from zhongshu.hub import Hub
from zhongshu.realtime.worker import _client_ip, error_ack
from zhongshu.realtime.worker_sources import OrderedSender
from zhongshu.services import identity
from zhongshu.services.events import Event
from zhongshu.services.identity import Principal
from zhongshu.services.login_sessions import session_view

log = logging.getLogger("zhongshu.realtime.admin")
NS = "/admin"
ADMINS_ROOM = "admins"


def user_room(user_id: str) -> str:
    return f"user:{user_id}"


async def authenticate(hub: Hub, environ: dict[str, Any], auth: Any) -> Principal:
    """The user behind a ``/admin`` or ``/client`` connection (token, user API key with the
    ``read`` scope, or an Authorization header). Failed tokens count against the IP, as
    failed keys do (``api_keys.authenticate``)."""
    ip = _client_ip(environ)
    token: str | None = None
    pair: str | None = None
    if isinstance(auth, dict) and auth.get("token"):
        token = str(auth["token"])
    elif isinstance(auth, dict) and auth.get("key") and auth.get("secret"):
        pair = f"{auth['key']}:{auth['secret']}"
    else:
        scheme, _, value = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            token = value.strip()
        elif scheme.upper() == "AK-SK" and value.strip():
            pair = value.strip()
    if token is not None:
        subjects = [f"ip:{ip}"]
        hub.limiter.check(subjects)
        try:
            p = await hub.identity.principal_from_token(token)
        except errors.AuthenticationFailed:
            hub.limiter.fail(subjects)
            raise
    elif pair is not None:
        key, secret = identity.parse_key_pair(pair, "WK", "SK")
        p = await hub.api_keys.authenticate(key, secret, ip)
        if "read" not in p.scopes:
            raise errors.Forbidden("this API key lacks the 'read' scope")
    else:
        raise errors.AuthenticationFailed(
            "send auth={token} (an access token) or auth={key, secret} (a user API key)"
        )
    if p.kind != "user":
        raise errors.Forbidden("only users connect here, not nodes")
    return p


def _may_write(p: Principal) -> None:
    if p.role == "viewer":
        raise errors.Forbidden("viewers have read-only access")
    if p.via == "key" and "write" not in p.scopes:
        raise errors.Forbidden("this API key lacks the 'write' scope")


def _ack_error(exc: Exception) -> dict[str, Any]:
    out = error_ack(exc)
    return {**out, "success": False}


def install(sio: socketio.AsyncServer, hub: Hub, conns: Any = None) -> OrderedSender:
    sender = OrderedSender()

    async def principal_of(sid: str) -> Principal:
        session = await sio.get_session(sid, namespace=NS)
        p = session.get("principal")
        if p is None:
            raise errors.AuthenticationFailed("this connection is not authenticated")
        return p  # type: ignore[no-any-return]

    @sio.on("connect", namespace=NS)
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            p = await authenticate(hub, environ, auth)
        except errors.ZhongshuError as exc:
            raise socketio.exceptions.ConnectionRefusedError(exc.message) from exc
        await sio.save_session(sid, {"principal": p}, namespace=NS)
        await sio.enter_room(sid, user_room(p.id), namespace=NS)
        if p.is_admin:
            await sio.enter_room(sid, ADMINS_ROOM, namespace=NS)

    @sio.on("master:login:start", namespace=NS)
    async def login_start(sid: str, data: Any) -> dict[str, Any]:
        try:
            if not isinstance(data, dict):
                raise errors.InvalidInput("master:login:start payload must be an object")
            p = await principal_of(sid)
            _may_write(p)
            account_id = data.get("account_id")
            if not isinstance(account_id, str) or not account_id:
                raise errors.InvalidInput("account_id: required")
            worker_id = data.get("worker_id")
            if worker_id is not None and not isinstance(worker_id, str):
                raise errors.InvalidInput("worker_id: must be a string")
            row = await hub.logins.start(
                account_id, p, worker_id=worker_id or None, reachable=_reachable(conns)
            )
            return {"success": True, "ok": True, **session_view(row)}
        except Exception as exc:
            return _ack_error(exc)

    @sio.on("admin:request:login-sessions", namespace=NS)
    async def list_sessions(sid: str, data: Any = None) -> dict[str, Any]:
        try:
            p = await principal_of(sid)
            filters = data if isinstance(data, dict) else {}
            status = filters.get("status")
            source_id = filters.get("account_id") or filters.get("source_id")
            rows, total = await hub.logins.find(
                p,
                status=status if isinstance(status, str) else None,
                source_id=source_id if isinstance(source_id, str) else None,
                limit=200,
            )
            sessions = [session_view(r) for r in rows]
            await sio.emit("login:sessions", {"sessions": sessions}, to=sid, namespace=NS)
            return {"success": True, "ok": True, "sessions": sessions, "total": total}
        except Exception as exc:
            return _ack_error(exc)

    def rooms(owner_id: str) -> list[str]:
        return [ADMINS_ROOM, user_room(owner_id)]

    async def emit(event: str, data: dict[str, Any], owner_id: str) -> None:
        await sio.emit(event, data, to=rooms(owner_id), namespace=NS)

    async def qrcode_ready(ev: Event) -> None:
        s = await hub.logins.get(ev.subject_id)
        await emit(
            "login:qrcode:ready",
            {
                "session_id": s["id"],
                "account_id": s["source_id"],
                "qr_code_data": s["qr_code_data"],
                "expires_at": int(s["expires_at"]),
            },
            s["owner_id"],
        )

    def on_event(ev: Event) -> None:
        d = ev.data
        owner = d.get("owner_id")
        if not owner:
            return
        if ev.type == "login.qrcode_ready":
            sender.send("admin", lambda: qrcode_ready(ev))
            return
        out: tuple[str, dict[str, Any]] | None = None
        if ev.type == "login.started":
            out = (
                "login:started",
                {
                    "session_id": d["session_id"],
                    "account_id": d["source_id"],
                    "worker_id": d.get("node_id"),
                    "platform": d.get("platform"),
                    "expires_at": d.get("expires_at"),
                },
            )
        elif ev.type == "login.succeeded":
            out = (
                "login:success",
                {
                    "session_id": d["session_id"],
                    "account_id": d["source_id"],
                    "user_info": d.get("user_info"),
                },
            )
        elif ev.type in ("login.failed", "login.expired"):
            out = (
                "login:failed",
                {
                    "session_id": d["session_id"],
                    "account_id": d["source_id"],
                    "error_message": d.get("error_message"),
                    "status": "failed" if ev.type == "login.failed" else "expired",
                },
            )
        elif ev.type == "source.login_expired":
            out = (
                "account:login_expired",
                {k: d.get(k) for k in ("platform", "name", "reason")}
                | {"account_id": d.get("source_id")},
            )
        if out is not None:
            event, data = out
            sender.send("admin", lambda: emit(event, data, owner))

    hub.bus.listen("login.", on_event)
    hub.bus.listen("source.login_expired", on_event)
    return sender


def _reachable(conns: Any) -> Any:
    return None if conns is None else conns.is_connected
