"""The worker runtime: run tasks the hub leases to this node and report their results.

Write a handler::

    from zhongshu.worker import TaskContext, handler

    @handler("greet")
    async def greet(ctx: TaskContext, payload: dict) -> dict:
        return {"hello": payload["name"]}

and start ``zhongshu worker --handlers my_package.handlers``. ``Worker`` (the process) is
imported lazily so that handler modules do not pull in Socket.IO and httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zhongshu.worker.errors import HandlerLoadError, PermanentFailure, WorkerError
from zhongshu.worker.registry import HandlerRegistry, TaskContext, handler

if TYPE_CHECKING:
    from zhongshu.worker.runtime import Worker

__all__ = [
    "HandlerLoadError",
    "HandlerRegistry",
    "PermanentFailure",
    "TaskContext",
    "Worker",
    "WorkerError",
    "handler",
]


def __getattr__(name: str) -> Any:
    if name == "Worker":
        from zhongshu.worker.runtime import Worker

        return Worker
    raise AttributeError(f"module 'zhongshu.worker' has no attribute {name!r}")
