"""Worker data sync: snapshots, deltas and detected messages into the items store.

The rules, shared by the Socket.IO door (``realtime/worker_data.py``) and the HTTP door
(``POST /api/v1/sources/{source_id}/sync``):

- Only the node a source is assigned to (``sources.assigned_node_id``) may sync it.
- One sync is one transaction; the answer (the ``WORKER_DATA_SYNC_ACK``) is built only
  after it committed, so a worker that gets no ack re-sends and the upsert makes that
  harmless.
- Deltas carry ``seq`` 1, 2, 3 … per source: a seq already applied is a duplicate (acked,
  nothing written); a seq past the next one is a gap (refused with the expected seq, and
  the worker resends or sends a snapshot, which restarts the sequence at its own seq or 0).
- New items raise one ``item.created`` event per batch per kind, and comment / inbound
  message batches one notification record each, written in the same transaction.
"""

from __future__ import annotations

import contextlib
import gc
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from zhongshu import errors
from zhongshu.db.item_store import ItemStore, SyncBatch, SyncOutcome
from zhongshu.services import items as item_rules
from zhongshu.services.events import Event, EventBus

Row = dict[str, Any]

_NOTIFY: dict[str, tuple[str, str]] = {
    # kind -> (notification type, title noun)
    "comment": ("comment", "comment"),
    "message": ("direct_message", "direct message"),
}


class SyncService:
    """Applies syncs. ``after_commit`` is a test seam: called after the commit and before
    the ack is returned (the crash-before-ack test kills the process there)."""

    def __init__(
        self,
        store: ItemStore,
        bus: EventBus,
        *,
        max_items: int,
        max_item_bytes: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.bus = bus
        self.max_items = max_items
        self.max_item_bytes = max_item_bytes
        self.clock = clock
        self.after_commit: Callable[[SyncOutcome], None] | None = None

    async def sync_envelope(self, node_id: str | None, envelope: Any) -> Row:
        """Handle a ``message`` envelope of type ``worker:data:sync``; returns the ack payload."""
        payload = item_rules.parse_envelope(envelope)
        return await self.sync(node_id, payload)

    async def sync(self, node_id: str | None, payload: Any, *, source_id: str | None = None) -> Row:
        """Apply one sync payload; returns the ack payload (``success`` is true).

        Raises ``InvalidInput``/``SyncTooLarge`` for bad input, ``SyncSourceUnknown``,
        ``SyncNotAssigned`` and ``SyncGap`` (with ``expected_seq``).
        """
        req = item_rules.parse_payload(payload, default_account=source_id)
        now = self.clock()
        with _gc_paused(sum(len(v) for v in req.data.values())):
            rows = item_rules.normalize_all(
                req.data,
                max_items=self.max_items,
                max_item_bytes=self.max_item_bytes,
                now=now,
                stream_from=self.store.stream_from,
            )
            batch = SyncBatch(req.account, node_id, req.mode, req.seq, rows, req.prune, now)
            outcome = await self._apply(batch)
        ack = self._ack(req.account, outcome)
        ack["mode"] = req.mode
        if req.seq is not None:
            ack["seq"] = req.seq
        return ack

    async def detected(self, node_id: str | None, data: Any) -> Row:
        """``worker:message:detected {type, account_id, messages}``: new items, no sequence."""
        if not isinstance(data, dict):
            raise errors.InvalidInput("worker:message:detected: payload must be an object")
        kind = item_rules.DETECTED_TYPES.get(str(data.get("type")))
        if kind is None:
            raise errors.InvalidInput(
                f"type: unknown kind {str(data.get('type'))[:40]!r}; expected one of "
                + ", ".join(item_rules.DETECTED_TYPES)
            )
        account = data.get("account_id", data.get("accountId"))
        if not isinstance(account, str) or not account:
            raise errors.InvalidInput("account_id: required (the source id)")
        messages = data.get("messages")
        if not isinstance(messages, list):
            raise errors.InvalidInput("messages: must be a list")
        now = self.clock()
        rows = item_rules.normalize_all(
            {kind: messages},
            max_items=self.max_items,
            max_item_bytes=self.max_item_bytes,
            now=now,
        )
        outcome = await self._apply(SyncBatch(account, node_id, "detected", None, rows, False, now))
        ack = self._ack(account, outcome)
        ack["account_id"] = ack["accountId"]
        return ack

    async def _apply(self, batch: SyncBatch) -> SyncOutcome:
        actor = f"node:{batch.node_id}" if batch.node_id else "system"

        def finish(
            source: Row, created: dict[str, list[int]], fresh: dict[str, list[Row]]
        ) -> tuple[list[Event], list[Row]]:
            return _announce(source, created, fresh, actor, batch.now)

        outcome = await self.store.apply_sync(batch, finish)
        if outcome.status == "unknown_source":
            raise errors.SyncSourceUnknown(
                f"accountId {batch.account[:64]!r}: no such source on this hub"
            )
        if outcome.status == "not_assigned":
            raise errors.SyncNotAssigned(
                f"source {batch.account[:64]!r} is not assigned to this node"
            )
        if outcome.status == "gap":
            assert outcome.expected_seq is not None
            raise errors.SyncGap(
                f"seq {batch.seq} skips ahead: the last applied seq is {outcome.last_seq}; "
                f"resend from seq {outcome.expected_seq} or send a full snapshot",
                expected_seq=outcome.expected_seq,
            )
        if self.after_commit is not None:
            self.after_commit(outcome)
        if outcome.events:
            self.bus.publish(outcome.events)
        return outcome

    def _ack(self, account: str, outcome: SyncOutcome) -> Row:
        source = outcome.source or {}
        return {
            "success": True,
            "accountId": account,
            "sourceId": source.get("id", account),
            "timestamp": int(self.clock() * 1000),
            "duplicate": outcome.status == "duplicate",
            "created": {k: len(v) for k, v in outcome.created.items()},
            "updated": outcome.updated,
            "pruned": outcome.pruned,
            "lastSeq": outcome.last_seq,
        }


_GC_PAUSE_FROM = 10_000  # items in one sync
_gc_pauses = 0


@contextlib.contextmanager
def _gc_paused(n_items: int) -> Iterator[None]:
    """Hold the cyclic garbage collector during a big sync. Its hundreds of thousands of new
    dicts and tuples (none of them cyclic) triggered full collections over every live object:
    ~0.2 s of a 100,000-item snapshot in cProfile. Reference counting still frees memory;
    collection resumes when the last big sync in the process ends."""
    global _gc_pauses
    if n_items < _GC_PAUSE_FROM or (_gc_pauses == 0 and not gc.isenabled()):
        yield
        return
    _gc_pauses += 1
    gc.disable()
    try:
        yield
    finally:
        _gc_pauses -= 1
        if _gc_pauses == 0:
            gc.enable()


def _announce(
    source: Row,
    created: dict[str, list[int]],
    fresh: dict[str, list[Row]],
    actor: str,
    now: float,
) -> tuple[list[Event], list[Row]]:
    """The events and notification records a sync's new items raise (one per kind)."""
    sid, owner = source["id"], source["owner_id"]
    evs: list[Event] = []
    notes: list[Row] = []
    for kind, ids in created.items():
        if not ids:
            continue
        evs.append(
            Event(
                "item.created",
                "source",
                sid,
                actor=actor,
                data={
                    "source_id": sid,
                    "owner_id": owner,
                    "kind": kind,
                    "ids": ids,
                    "count": len(ids),
                },
                at=now,
            )
        )
        if kind not in _NOTIFY:
            continue
        pairs = list(zip(ids, fresh.get(kind, []), strict=False))
        if kind == "message":
            pairs = [(i, r) for i, r in pairs if r.get("direction") != "outbound"]
        if not pairs:
            continue
        ntype, noun = _NOTIFY[kind]
        n = len(pairs)
        first = pairs[0][1]
        who = first.get("author_name") or "someone"
        title = f"New {noun} from {who}" if n == 1 else f"{n} new {noun}s"
        content = (first.get("text") or "")[:500]
        note = {
            "id": uuid.uuid4().hex,
            "type": ntype,
            "owner_id": owner,
            "source_id": sid,
            "related_id": first["platform_id"] if n == 1 else None,
            "title": title[:255],
            "content": content,
            "data": {
                "source_id": sid,
                "account_name": source.get("name", ""),
                "platform": source.get("platform", ""),
                "kind": kind,
                "item_ids": [i for i, _ in pairs[:1000]],
                "count": n,
            },
            "priority": "normal",
            "is_sent": False,
            "is_read": False,
            "created_at": now,
        }
        notes.append(note)
        evs.append(
            Event(
                "notification.created",
                "notification",
                note["id"],
                actor=actor,
                data={
                    k: note[k]
                    for k in (
                        "id",
                        "type",
                        "owner_id",
                        "source_id",
                        "title",
                        "content",
                        "data",
                        "priority",
                        "related_id",
                        "created_at",
                    )
                },
                at=now,
            )
        )
    return evs, notes
