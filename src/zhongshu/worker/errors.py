"""Errors raised by the worker runtime and by handlers.

They live in the worker package, not in ``zhongshu/errors.py``, because a handler plugin
imports only ``zhongshu.worker`` and must not pull in the hub.
"""

from __future__ import annotations


class WorkerError(Exception):
    """Root of every worker-side error."""


class PermanentFailure(WorkerError):
    """A handler raises this when retrying cannot help (bad payload, refused URL).

    The task is reported as failed with ``retryable: false`` and the hub sends it straight
    to ``dead``. Raise any other exception for a failure worth retrying.
    """

    def __init__(self, message: str = "permanent failure") -> None:
        super().__init__(message)
        self.message = message

    def __repr__(self) -> str:
        return f"PermanentFailure({self.message!r})"


class HandlerLoadError(WorkerError):
    """A handler module or entry point could not be imported.

    Check the module path given to ``--handlers`` (it must be importable from the worker's
    ``sys.path``) or reinstall the package that declares the ``zhongshu.handlers`` entry point.
    """


class ResultNotSerializable(PermanentFailure):
    """A handler returned something ``json.dumps`` refuses; return dicts, lists, str, numbers."""
