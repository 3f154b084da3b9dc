"""``/worker`` events of collected data: ``message`` (the ``worker:data:sync`` envelope)
and ``worker:message:detected``.

The ack is sent twice on purpose: as the Socket.IO ack (the return value) and as an
emitted ``message`` ``{type: "WORKER_DATA_SYNC_ACK", payload: {success, accountId,
timestamp}}``, because the seed's workers listen for the latter. Both are produced only
after the sync's transaction committed. A delta that skips a sequence number is refused
with ``resync: true`` and ``expectedSeq``, and a ``MASTER_DATA_RESYNC_REQUEST`` message.
"""

from __future__ import annotations

import time
from typing import Any

import socketio

from zhongshu import errors
from zhongshu.hub import Hub
from zhongshu.realtime.worker import NS, WorkerConnections, error_ack
from zhongshu.services import items as item_rules


def _account_of(data: Any) -> str | None:
    if isinstance(data, dict):
        payload = data.get("payload")
        if isinstance(payload, dict):
            value = payload.get("accountId", payload.get("account_id"))
            return value if isinstance(value, str) else None
    return None


def _envelope(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": kind,
        "version": item_rules.VERSION,
        "timestamp": int(time.time() * 1000),
        "payload": payload,
    }


def install(sio: socketio.AsyncServer, hub: Hub, conns: WorkerConnections) -> None:
    @sio.on("message", namespace=NS)
    async def message(sid: str, data: Any) -> dict[str, Any]:
        account = _account_of(data)
        resync: dict[str, Any] | None = None
        try:
            node = await conns.node_of(sid)
            payload = await hub.sync.sync_envelope(node["id"], data)
        except Exception as exc:
            failure = error_ack(exc)
            payload = {
                "success": False,
                "accountId": account,
                "timestamp": int(time.time() * 1000),
                "error": failure["error"],
                "status": failure["status"],
            }
            if isinstance(exc, errors.SyncGap):
                payload.update(resync=True, expectedSeq=exc.expected_seq)
                resync = {"accountId": account, "expectedSeq": exc.expected_seq}
        ack = _envelope(item_rules.ACK_TYPE, payload)
        await sio.emit("message", ack, to=sid, namespace=NS)
        if resync is not None:
            await sio.emit(
                "message", _envelope(item_rules.RESYNC_TYPE, resync), to=sid, namespace=NS
            )
        return ack

    @sio.on("worker:message:detected", namespace=NS)
    async def detected(sid: str, data: Any) -> dict[str, Any]:
        try:
            node = await conns.node_of(sid)
            return {"ok": True, **await hub.sync.detected(node["id"], data)}
        except Exception as exc:
            return {**error_ack(exc), "success": False}
