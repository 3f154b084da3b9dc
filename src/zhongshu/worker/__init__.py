"""The worker runtime: run tasks the hub leases to this node and report their results.

Write a handler::

    from zhongshu.worker import TaskContext, handler

    @handler("greet")
    async def greet(ctx: TaskContext, payload: dict) -> dict:
        return {"hello": payload["name"]}

and start ``zhongshu worker --handlers my_package.handlers`` (or declare the module in the
``zhongshu.handlers`` entry-point group of your package). Sync handlers run in a thread.
Raise ``PermanentFailure`` for a failure retrying cannot fix.

In Python::

    worker = Worker("http://127.0.0.1:8001", key, secret, journal_path="w.db",
                    registry=HandlerRegistry.from_config(["my_package.handlers"]))
    await worker.run()  # until worker.request_stop()

``Worker`` is imported lazily so that handler modules do not pull in Socket.IO.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from zhongshu.worker.errors import HandlerLoadError, PermanentFailure, WorkerError
from zhongshu.worker.link import SyncRefused
from zhongshu.worker.registry import HandlerRegistry, TaskContext, handler

if TYPE_CHECKING:
    from zhongshu.worker.runtime import Worker

__all__ = [
    "HandlerLoadError",
    "HandlerRegistry",
    "PermanentFailure",
    "SyncRefused",
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
