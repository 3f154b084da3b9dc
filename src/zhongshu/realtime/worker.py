"""Socket.IO ``/worker`` namespace: the push door of the worker protocol.

Event names are the HisCRM seed's (docs/protocol.md). Handlers parse, then call the same
``AgentService`` as the HTTP pull door; a handler's return value is the Socket.IO ack.
"""

from __future__ import annotations

import logging
from typing import Any

import socketio

from zhongshu import errors
from zhongshu.hub import Hub
from zhongshu.realtime.presence import RedisPresence
from zhongshu.services import node_auth
from zhongshu.services import nodes as node_rules
from zhongshu.services.dispatcher import NodeSession

log = logging.getLogger("zhongshu.realtime.worker")
NS = "/worker"


def _key_pair(environ: dict[str, Any], auth: Any) -> str:
    if isinstance(auth, dict) and auth.get("key") and auth.get("secret"):
        return f"{auth['key']}:{auth['secret']}"
    header = environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, value = header.partition(" ")
    if scheme.upper() == "AK-SK":
        return value.strip()
    raise errors.AuthenticationFailed("send auth={key, secret} or an AK-SK Authorization header")


def _client_ip(environ: dict[str, Any]) -> str:
    # engine.io's environ says 127.0.0.1 for everyone; the ASGI scope knows the peer.
    client = (environ.get("asgi.scope") or {}).get("client")
    return str(client[0]) if client else str(environ.get("REMOTE_ADDR", ""))


def node_room(node_id: str) -> str:
    """Every connection of a node joins this room: emits to it cross replicas (Redis)."""
    return f"node:{node_id}"


class WorkerConnections:
    """The live ``/worker`` connections, by node id: this process's, and — with Redis
    and several replicas — the other replicas' (``presence``).

    Other realtime modules (sources, collected data) register their own ``/worker``
    events and reach a node through this: ``await conns.emit(node_id, event, data)``.
    """

    def __init__(self, sio: socketio.AsyncServer, presence: RedisPresence | None = None) -> None:
        self.sio = sio
        self.presence = presence
        self.sids: dict[str, str] = {}

    def is_connected(self, node_id: str) -> bool:
        """Connected here, or (with Redis) to another replica."""
        if node_id in self.sids:
            return True
        return self.presence is not None and self.presence.elsewhere(node_id)

    async def emit(self, node_id: str, event: str, data: Any) -> bool:
        """Send ``event`` to the node wherever it is connected; False when it is not."""
        sid = self.sids.get(node_id)
        if sid is not None:
            # Local: no need to go through the Redis queue.
            await self.sio.emit(event, data, to=sid, namespace=NS, ignore_queue=True)
            return True
        if self.presence is not None and self.presence.elsewhere(node_id):
            await self.sio.emit(event, data, room=node_room(node_id), namespace=NS)
            return True
        return False

    async def node_of(self, sid: str) -> dict[str, Any]:
        """The authenticated node row of a connection (raises if it never authenticated)."""
        session = await self.sio.get_session(sid, namespace=NS)
        node = session.get("node")
        if node is None:
            raise errors.AuthenticationFailed("this connection is not an authenticated node")
        return node  # type: ignore[no-any-return]


async def _quietly(op: Any) -> None:
    # Presence is advisory: Redis being away must not refuse or break a connection.
    try:
        await op
    except Exception as exc:
        log.warning("worker presence update failed: %s", exc)


def error_ack(exc: Exception) -> dict[str, Any]:
    """The ack a ``/worker`` handler returns for ``exc`` (never raises to the client)."""
    if isinstance(exc, errors.ZhongshuError):
        return {"ok": False, "error": exc.message, "status": exc.status_code}
    if isinstance(exc, (KeyError, TypeError, ValueError)):
        return {"ok": False, "error": f"malformed payload: {exc}", "status": 400}
    log.exception("worker event failed")
    return {"ok": False, "error": "internal error", "status": 500}


def install(
    sio: socketio.AsyncServer, hub: Hub, presence: RedisPresence | None = None
) -> WorkerConnections:
    conns = WorkerConnections(sio, presence)
    # node id -> sid of its live connection (in this process).
    connected = conns.sids
    node_of = conns.node_of

    @sio.on("connect", namespace=NS)
    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        try:
            node = await node_auth.authenticate_node(
                hub.nodes,
                hub.limiter,
                hub.audit,
                _key_pair(environ, auth),
                _client_ip(environ),
            )
        except errors.ZhongshuError as exc:
            raise socketio.exceptions.ConnectionRefusedError(exc.message) from exc
        if node["id"] in connected:
            # Two processes on one key pair would share leases but not journals, so a task
            # could run twice. (A killed process's socket closes at once, so a restart works.)
            raise socketio.exceptions.ConnectionRefusedError(
                f"node {node['id']} is already connected; give each worker process its own key pair"
            )
        connected[node["id"]] = sid
        await sio.save_session(sid, {"node": node}, namespace=NS)
        await sio.enter_room(sid, node_room(node["id"]), namespace=NS)
        if presence is not None:
            await _quietly(presence.joined(node["id"]))

    @sio.on("disconnect", namespace=NS)
    async def disconnect(sid: str, *args: Any) -> None:
        session = await sio.get_session(sid, namespace=NS)
        node = session.get("node")
        if node is not None and connected.get(node["id"]) == sid:
            del connected[node["id"]]
            if presence is not None:
                await _quietly(presence.left(node["id"]))
        node_session = session.get("dispatch")
        if node_session is not None:
            hub.dispatcher.detach(node_session.node_id, node_session)

    @sio.on("worker:register", namespace=NS)
    async def register(sid: str, data: Any) -> dict[str, Any]:
        try:
            if not isinstance(data, dict):
                raise errors.InvalidInput("worker:register payload must be an object")
            node = await node_of(sid)
            ack = await hub.agent.register(node, data)
            row = await hub.nodes.get(node["id"])

            # Leases go to this connection only: never through the Redis queue.
            async def send_tasks(leases: list[dict[str, Any]]) -> None:
                await sio.emit(
                    "master:task:assign",
                    {"tasks": leases},
                    to=sid,
                    namespace=NS,
                    ignore_queue=True,
                )

            async def send_revoke(task_ids: list[str], reason: str) -> None:
                await sio.emit(
                    "master:task:revoke",
                    {"task_ids": task_ids, "reason": reason},
                    to=sid,
                    namespace=NS,
                    ignore_queue=True,
                )

            dispatch = NodeSession(
                node_id=node["id"],
                capabilities=node_rules.effective_capabilities(row),
                capacity=node_rules.effective_capacity(row),
                send_tasks=send_tasks,
                send_revoke=send_revoke,
            )
            session = await sio.get_session(sid, namespace=NS)
            session["node"] = row
            session["dispatch"] = dispatch
            await sio.save_session(sid, session, namespace=NS)
            held = await hub.agent.held_leases(node["id"])
            dispatch.held.update((t["id"], t["lease_token"]) for t in held)
            hub.dispatcher.attach(dispatch)
            await sio.emit("worker:registered", ack, to=sid, namespace=NS)
            if held:
                # After a reconnect: the node gets back what it held, so nothing waits for
                # a lease to expire. It re-sends journaled results instead of re-running.
                await send_tasks(held)
            return ack
        except Exception as exc:
            return error_ack(exc)

    @sio.on("worker:heartbeat", namespace=NS)
    async def heartbeat(sid: str, data: Any) -> dict[str, Any]:
        try:
            return await hub.agent.heartbeat(
                await node_of(sid), data if isinstance(data, dict) else {}
            )
        except Exception as exc:
            return error_ack(exc)

    @sio.on("worker:task:started", namespace=NS)
    async def started(sid: str, data: Any) -> dict[str, Any]:
        try:
            items = data["tasks"] if isinstance(data, dict) and "tasks" in data else [data]
            accepted = await hub.agent.started(await node_of(sid), items)
            return {"ok": True, "accepted": accepted}
        except Exception as exc:
            return error_ack(exc)

    @sio.on("worker:task:release", namespace=NS)
    async def release(sid: str, data: Any) -> dict[str, Any]:
        try:
            if not isinstance(data, dict):
                raise errors.InvalidInput("worker:task:release payload must be an object")
            released = await hub.agent.release(
                await node_of(sid), data.get("tasks") or [], bool(data.get("draining"))
            )
            return {"ok": True, "released": released}
        except Exception as exc:
            return error_ack(exc)

    @sio.on("worker:task:result", namespace=NS)
    async def result(sid: str, data: Any) -> dict[str, Any]:
        try:
            items = data["results"] if isinstance(data, dict) and "results" in data else [data]
            return {"ok": True, "acks": await hub.agent.results(await node_of(sid), items)}
        except Exception as exc:
            return error_ack(exc)

    return conns
