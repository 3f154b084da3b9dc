"""Helpers to shape rows into replies (ISO times, no secrets)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from zhongshu.services import nodes as node_rules


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


STAMPS = ("created_at", "updated_at")


def iso_times(view: dict[str, Any], keys: Iterable[str] = STAMPS) -> dict[str, Any]:
    """A copy of a service's view with the epoch seconds at ``keys`` as ISO strings.

    Services keep times as epoch seconds (what the store and Socket.IO use); the REST
    replies show ISO, so each router converts the same handful of keys in one place.
    Keys keep their position, so the reply's field order does not change."""
    return {**view, **{key: iso(view[key]) for key in keys}}


def ms(ts: float | None) -> int | None:
    """Epoch milliseconds, as the seeds' JavaScript clients expect (HisCRM, IM API)."""
    return None if ts is None else round(ts * 1000)


def task_public(t: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": t["id"],
        "kind": t["kind"],
        "capability": t["capability"],
        "payload": t["payload"],
        "priority": t["priority"],
        "status": t["status"],
        "attempts": t["attempts"],
        "max_attempts": t["max_attempts"],
        "timeout_s": t["timeout_s"],
        "run_at": iso(t["run_at"]),
        "node_id": t.get("node_id"),
        "lease_token": t.get("lease_token", 0),
        "lease_expires_at": iso(t.get("lease_expires_at")),
        "idempotency_key": t.get("idempotency_key"),
        "owner_id": t.get("owner_id"),
        "result": t.get("result"),
        "error": t.get("error"),
        "callback_url": t.get("callback_url"),
        "callback_status": t.get("callback_status", "none"),
        "created_at": iso(t["created_at"]),
        "updated_at": iso(t["updated_at"]),
        "started_at": iso(t.get("started_at")),
        "finished_at": iso(t.get("finished_at")),
    }


def attempt_public(a: dict[str, Any]) -> dict[str, Any]:
    return {
        "attempt": a["attempt"],
        "lease_token": a["lease_token"],
        "node_id": a["node_id"],
        "outcome": a["outcome"],
        "error": a["error"],
        "leased_at": iso(a["leased_at"]),
        "started_at": iso(a["started_at"]),
        "finished_at": iso(a["finished_at"]),
    }


def delivery_public(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "attempt": d["attempt"],
        "webhook_id": d["webhook_id"],
        "at": iso(d["at"]),
        "status_code": d["status_code"],
        "ok": d["ok"],
        "error": d["error"],
        "duration_ms": round(d["duration_ms"], 2),
    }


def node_public(n: dict[str, Any], running: int | None = None) -> dict[str, Any]:
    out = {
        "id": n["id"],
        "name": n["name"],
        "kind": n["kind"],
        "status": node_rules.public_status(n),
        "disabled": n["disabled"],
        "access_key": n["access_key"],
        "capabilities": n["capabilities"],
        "advertised_capabilities": n["advertised_capabilities"],
        "effective_capabilities": node_rules.effective_capabilities(n),
        "capacity": n["capacity"],
        "effective_capacity": node_rules.effective_capacity(n),
        "max_accounts": n["max_accounts"],
        "version": n["version"],
        "host": n["host"],
        "pid": n["pid"],
        "stats": n["stats"],
        "last_heartbeat_at": iso(n["last_heartbeat_at"]),
        "registered_at": iso(n["registered_at"]),
        "created_at": iso(n["created_at"]),
        "owner_id": n["owner_id"],
    }
    if running is not None:
        out["running_tasks"] = running
    return out


def event_public(e: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": e["id"],
        "at": iso(e["at"]),
        "type": e["type"],
        "actor": e["actor"],
        "subject_type": e["subject_type"],
        "subject_id": e["subject_id"],
        "data": e["data"],
    }
