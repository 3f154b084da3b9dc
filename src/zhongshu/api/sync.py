"""The HTTP door of worker data sync, for workers that do not speak Socket.IO."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse

from zhongshu import errors
from zhongshu.api.deps import HubDep, NodeDep
from zhongshu.services import items as item_rules

router = APIRouter(prefix="/api/v1/sources", tags=["collected data"])


@router.post("/{source_id}/sync", response_model=None)
async def sync_source(
    source_id: str, hub: HubDep, node: NodeDep, body: dict[str, Any] = Body(...)
) -> Any:
    """Store a snapshot or delta of a source's data (body: the sync payload or envelope)."""
    payload = item_rules.parse_envelope(body) if "type" in body else body
    try:
        ack = await hub.sync.sync(node["id"], payload, source_id=source_id)
    except errors.SyncGap as exc:
        return JSONResponse(
            {
                "detail": exc.message,
                "resync": True,
                "expected_seq": exc.expected_seq,
                "type": item_rules.ACK_TYPE,
                "payload": {
                    "success": False,
                    "accountId": source_id,
                    "timestamp": int(time.time() * 1000),
                    "error": exc.message,
                    "resync": True,
                    "expectedSeq": exc.expected_seq,
                },
            },
            status_code=exc.status_code,
        )
    return {
        "type": item_rules.ACK_TYPE,
        "version": item_rules.VERSION,
        "timestamp": ack["timestamp"],
        "payload": ack,
    }
