"""What a handler may ask of the hub besides returning a result: the HisCRM master side.

A worker that watches accounts (sources) keeps the ones the hub assigned to it, with their
credentials, in memory only (they arrive over ``master:task:assign {accounts}`` and are
never written to the journal). Platform handlers reach them, send QR codes while a login
runs, and push collected data through ``ctx.hub`` — a ``HubLink``.

Wire shapes are the seed's (docs/protocol.md, "Accounts, QR login, data sync").
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from zhongshu.worker.errors import PermanentFailure

if TYPE_CHECKING:
    from zhongshu.worker.runtime import Worker

logger = logging.getLogger("zhongshu.worker")

SYNC_EVENT = "message"
SYNC_TYPE = "worker:data:sync"
SYNC_ACK_TYPE = "WORKER_DATA_SYNC_ACK"


class SyncRefused(Exception):
    """The hub refused a data sync (bad data, not assigned, a delta gap). ``resync`` is
    true when the hub asks for a full snapshot instead of the delta."""

    def __init__(self, message: str, *, resync: bool = False) -> None:
        super().__init__(message)
        self.resync = resync


class HubLink:
    def __init__(self, worker: Worker, session_id: str | None = None) -> None:
        self.worker = worker
        self.session_id = session_id

    def account(self, account_id: str) -> dict[str, Any]:
        """An account the hub assigned to this worker (with its credentials)."""
        account = self.worker.accounts.get(str(account_id))
        if account is None:
            raise PermanentFailure(f"account {account_id} is not assigned to this worker")
        return account

    async def emit_qrcode(self, qr_code_data: str) -> None:
        """During a login: show this QR code (a ``data:image/png;base64,…`` URL) to the
        admin who started it."""
        if self.session_id is None:
            raise RuntimeError("emit_qrcode is only available while a login runs")
        # Acknowledged: the hub handles a client's events concurrently, so without waiting
        # a quick login's outcome could overtake its QR code.
        ack = await self.worker.transport.call(
            "worker:login:qrcode", {"session_id": self.session_id, "qr_code_data": qr_code_data}
        )
        if isinstance(ack, dict) and ack.get("ok") is False:
            raise RuntimeError(f"the hub refused the QR code: {ack.get('error')}")

    async def report_login_expired(self, account_id: str, reason: str) -> None:
        """The platform refused the account's credentials: the hub marks the source
        expired, pauses its monitoring and asks its owner to log in again."""
        await self.worker.transport.call(
            "worker:login:status",
            {"account_id": str(account_id), "status": "expired", "error_message": reason},
        )

    async def sync(
        self,
        account_id: str,
        platform: str,
        data: dict[str, list[dict[str, Any]]],
        *,
        mode: str = "snapshot",
        seq: int | None = None,
        prune: bool = False,
    ) -> dict[str, Any]:
        """Send collected items; returns the hub's ACK payload once they are committed.

        Raises ``SyncRefused`` when the hub refuses them; any other exception means the
        hub did not confirm, so the caller should send them again (the hub merges
        idempotently, so a repeat never duplicates).
        """
        payload: dict[str, Any] = {
            "accountId": str(account_id),
            "platform": platform,
            "snapshot": {"platform": platform, "data": data},
        }
        if mode == "delta":
            payload.update(mode="delta", seq=seq)
        if prune:
            payload["prune"] = True
        envelope = {
            "type": SYNC_TYPE,
            "version": "v1",
            "timestamp": int(time.time() * 1000),
            "payload": payload,
        }
        ack = await self.worker.transport.sync_data(str(account_id), envelope)
        body = ack.get("payload") if isinstance(ack, dict) else None
        if not isinstance(body, dict) or not body.get("success"):
            error = (body or {}).get("error") or (ack or {}).get("error") or "sync refused"
            raise SyncRefused(str(error), resync=bool((body or {}).get("resync")))
        return body
