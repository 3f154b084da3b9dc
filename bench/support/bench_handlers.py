"""Handlers used by the benchmarks (loaded with ``--handlers bench_handlers``)."""

from __future__ import annotations

import time
from typing import Any

from zhongshu.worker import TaskContext, handler


@handler("bench.noop")
async def noop(ctx: TaskContext, payload: Any) -> None:
    return None


@handler("bench.stamp")
async def stamp(ctx: TaskContext, payload: Any) -> dict[str, float]:
    """Report when the handler started, to measure submit → handler start."""
    return {"started": time.time()}
