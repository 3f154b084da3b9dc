"""Sources on the ``/worker`` namespace: QR login reports from workers, and what the
hub tells a node about its accounts.

worker → hub: ``worker:login:qrcode {session_id, qr_code_data}`` and
``worker:login:status {session_id, status, cookies?, user_info?, fingerprint?,
error_message?}`` (or ``{account_id, status: "expired"}`` for credentials that stopped
working). hub → worker, from bus events: ``master:task:assign {accounts: […]}``,
``master:task:revoke {accountIds: […], reason}`` and ``master:login:start
{account_id, session_id, platform, proxy}``. (The core's queue uses the same
``master:task:assign`` event with ``{tasks: […]}``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from zhongshu import errors
from zhongshu.hub import Hub
from zhongshu.realtime.worker import NS, WorkerConnections, error_ack
from zhongshu.services.events import Event

log = logging.getLogger("zhongshu.realtime.sources")


class OrderedSender:
    """Runs sends in the background, in order per key (a node, the admin stream), so an
    assign never overtakes the revoke published before it. Bus listeners are
    synchronous; this is how they start async work."""

    def __init__(self) -> None:
        self._tail: dict[str, asyncio.Task[None]] = {}

    def send(self, key: str, fn: Callable[[], Awaitable[Any]]) -> None:
        prev = self._tail.get(key)

        async def run() -> None:
            if prev is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await prev
            try:
                await fn()
            except Exception:
                log.exception("realtime send failed (%s)", key)

        task = asyncio.get_running_loop().create_task(run())
        self._tail[key] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._tail.get(key) is t:
                del self._tail[key]

        task.add_done_callback(done)

    async def drain(self) -> None:
        """Wait for everything sent so far (tests, shutdown)."""
        while self._tail:
            await asyncio.gather(*list(self._tail.values()), return_exceptions=True)


def install(sio: socketio.AsyncServer, hub: Hub, conns: WorkerConnections) -> OrderedSender:
    sender = OrderedSender()

    async def reporter(sid: str, event: str, data: Any) -> dict[str, Any]:
        """The node behind ``sid``, once its report is an object (the services read its
        fields by name); else ``InvalidInput`` naming the event."""
        if not isinstance(data, dict):
            raise errors.InvalidInput(f"{event} payload must be an object")
        return await conns.node_of(sid)

    @sio.on("worker:login:qrcode", namespace=NS)
    async def login_qrcode(sid: str, data: Any) -> dict[str, Any]:
        try:
            node = await reporter(sid, "worker:login:qrcode", data)
            row = await hub.logins.qrcode_ready(node["id"], data)
            return {"ok": True, "session_id": row["id"], "status": row["status"]}
        except Exception as exc:
            return error_ack(exc)

    @sio.on("worker:login:status", namespace=NS)
    async def login_status(sid: str, data: Any) -> dict[str, Any]:
        try:
            node = await reporter(sid, "worker:login:status", data)
            out = await hub.logins.report_status(node["id"], data)
            session = out.get("session")
            return {
                "ok": True,
                "source_id": out["source_id"],
                "status": out["status"],
                "changed": out["changed"],
                "session_id": session["id"] if session else None,
            }
        except Exception as exc:
            return error_ack(exc)

    async def assign(node_id: str, source_ids: list[str]) -> None:
        rows = [
            r for r in await hub.sources.get_many(source_ids) if r["assigned_node_id"] == node_id
        ]
        if rows:
            accounts = await hub.sources.worker_accounts(rows, node_id)
            await conns.emit(node_id, "master:task:assign", {"accounts": accounts})

    async def revoke(node_id: str, source_id: str, reason: str) -> None:
        await conns.emit(
            node_id, "master:task:revoke", {"accountIds": [source_id], "reason": reason}
        )

    async def resync(node_id: str) -> None:
        accounts = await hub.sources.accounts_of_node(node_id)
        if accounts:
            await conns.emit(node_id, "master:task:assign", {"accounts": accounts})

    async def login_start(session_id: str) -> None:
        node_id, payload = await hub.logins.worker_message(session_id)
        if not await conns.emit(node_id, "master:login:start", payload):
            log.warning("login %s: worker %s is not connected here", session_id, node_id)

    def on_event(ev: Event) -> None:
        node_id = ev.data.get("node_id")
        if ev.type == "login.started" and node_id:
            sender.send(node_id, lambda: login_start(ev.subject_id))
            return
        if not node_id or not conns.is_connected(node_id):
            return
        if ev.type == "source.assigned" or (ev.type == "source.updated" and ev.data.get("changed")):
            sender.send(node_id, lambda: assign(node_id, [ev.subject_id]))
        elif ev.type == "source.revoked":
            reason = str(ev.data.get("reason") or "revoked")
            sender.send(node_id, lambda: revoke(node_id, ev.subject_id, reason))
        elif ev.type == "source.deleted":
            sender.send(node_id, lambda: revoke(node_id, ev.subject_id, "source deleted"))
        elif ev.type == "node.online":
            # A (re)registered worker gets every account it serves: it may have restarted.
            sender.send(node_id, lambda: resync(node_id))

    def on_node(ev: Event) -> None:
        if ev.type == "node.online":
            on_event(Event(ev.type, "node", ev.subject_id, data={"node_id": ev.subject_id}))

    hub.bus.listen("source.", on_event)
    hub.bus.listen("login.started", on_event)
    hub.bus.listen("node.online", on_node)
    return sender
