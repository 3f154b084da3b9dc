"""Socket.IO ``/client`` namespace (apps), and the relay of collected-data events to
``/client`` and ``/admin``.

``/client`` authenticates a user at connect — ``auth={"token": <JWT>}``, ``auth={"key":
"WK…", "secret": "SK…"}`` (a key with the ``read`` scope), or the same ``Authorization``
header as the REST API; bad tokens count against the caller's IP — and
puts the connection in the room ``user:<id>``. Events about a source go only to the room
of the source's owner, so a user receives only their own sources' events:

- ``item:created`` ``{source_id, kind, ids, count}`` — new items of a sync batch;
- ``notification:new`` ``{id, type, title, content, data, account_id, priority,
  created_at}`` — also on ``/admin`` to the rooms ``admins`` and ``user:<owner>`` (the
  ``/admin`` namespace itself belongs to ``realtime/admin.py``).

A relayed notification is then marked sent (``is_sent``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import socketio

from zhongshu import errors
from zhongshu.hub import Hub
from zhongshu.realtime import admin
from zhongshu.realtime.worker import WorkerConnections
from zhongshu.services.events import Event

log = logging.getLogger("zhongshu.realtime.client")
NS = "/client"


def notification_public(data: dict[str, Any]) -> dict[str, Any]:
    """The ``notification:new`` payload (the HisCRM seed's fields)."""
    return {
        "id": data["id"],
        "type": data["type"],
        "title": data["title"],
        "content": data.get("content", ""),
        "data": data.get("data") or {},
        "account_id": data.get("source_id"),
        "related_id": data.get("related_id"),
        "priority": data.get("priority", "normal"),
        "created_at": int(float(data.get("created_at") or 0) * 1000),
    }


def install(sio: socketio.AsyncServer, hub: Hub, conns: WorkerConnections) -> None:
    pending: set[asyncio.Task[None]] = set()

    @sio.on("connect", namespace=NS)
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            # The same callers, limits and scope rule as /admin (and as the REST API).
            p = await admin.authenticate(hub, environ, auth)
        except errors.ZhongshuError as exc:
            raise socketio.exceptions.ConnectionRefusedError(exc.message) from exc
        await sio.save_session(sid, {"user_id": p.id, "role": p.role}, namespace=NS)
        await sio.enter_room(sid, admin.user_room(p.id), namespace=NS)

    async def relay_items(ev: Event) -> None:
        d = ev.data
        await sio.emit(
            "item:created",
            {"source_id": d["source_id"], "kind": d["kind"], "ids": d["ids"], "count": d["count"]},
            room=admin.user_room(d["owner_id"]),
            namespace=NS,
        )

    async def relay_notification(ev: Event) -> None:
        d = ev.data
        body = notification_public(d)
        owner = d.get("owner_id")
        if owner:
            await sio.emit("notification:new", body, room=admin.user_room(owner), namespace=NS)
        rooms = [admin.ADMINS_ROOM, admin.user_room(owner)] if owner else [admin.ADMINS_ROOM]
        await sio.emit("notification:new", body, room=rooms, namespace=admin.NS)
        await hub.notifications.mark_sent([d["id"]])

    def spawn(coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        pending.add(task)
        task.add_done_callback(_done(pending))

    hub.bus.listen("item.created", lambda ev: spawn(relay_items(ev)))
    hub.bus.listen("notification.created", lambda ev: spawn(relay_notification(ev)))


def _done(pending: set[asyncio.Task[None]]) -> Any:
    def done(task: asyncio.Task[None]) -> None:
        pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("relaying an event to Socket.IO failed: %s", task.exception())

    return done
