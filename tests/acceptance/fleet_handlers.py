"""Handlers loaded by the real worker processes of the fleet tests (``--handlers fleet_handlers``).

Each run appends one JSON line when it starts and one when it ends to ``$ZS_FLEET_RUNS``
(one file per worker process), so a test can tell where, when and how often a task ran,
and how many of these handlers ran at once in one process. Results name the node and the
process that produced them, so a test can tell whose result the hub kept.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from zhongshu.worker import TaskContext, handler

_running = 0


def _record(ctx: TaskContext, event: str, **extra: Any) -> None:
    line = {
        "ev": event,
        "task": ctx.task_id,
        "token": ctx.lease_token,
        "attempt": ctx.attempt,
        "node": ctx.node_id,
        "pid": os.getpid(),
        "t": time.time(),
        "running": _running,
        **extra,
    }
    # One short O_APPEND write per line: lines never interleave.
    with open(os.environ["ZS_FLEET_RUNS"], "a") as f:
        f.write(json.dumps(line) + "\n")


async def _run(ctx: TaskContext, payload: dict[str, Any], capability: str) -> dict[str, Any]:
    global _running
    _running += 1
    peak = _running
    outcome = "cancelled"
    try:
        _record(ctx, "start")
        # A re-run (a retry, or a lease handed back: lease_token > 1) may be told to be
        # quick, so a test need not wait twice.
        seconds = payload.get("seconds", 0)
        if ctx.attempt > 1 or int(ctx.lease_token or 1) > 1:
            seconds = payload.get("retry_seconds", seconds)
        await asyncio.sleep(seconds)
        outcome = "done"
        return {
            "capability": capability,
            "n": payload.get("n"),
            "node": ctx.node_id,
            "pid": os.getpid(),
            "token": ctx.lease_token,
            "attempt": ctx.attempt,
            "concurrent": peak,
        }
    finally:
        _running -= 1
        _record(ctx, "end", outcome=outcome)


@handler("alpha.work")
async def alpha_work(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Work that only a node advertising ``alpha`` may get (submitted with capability=alpha)."""
    return await _run(ctx, payload, "alpha")


@handler("beta.work")
async def beta_work(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Work that only a node advertising ``beta`` may get (submitted with capability=beta)."""
    return await _run(ctx, payload, "beta")


@handler("fleet.sleep")
async def fleet_sleep(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Sleep ``seconds`` (``retry_seconds`` on a retry) and say who ran it; any node may."""
    return await _run(ctx, payload, "fleet.sleep")
