"""Handlers: what a worker can run, keyed by task kind.

A handler is a plain function marked with ``@handler("kind")``. The decorator only tags
the function; a ``HandlerRegistry`` collects tagged functions when it loads a module. So
importing a handler module has no global side effect, and two workers in one process (the
tests) each get exactly the handlers they asked for.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache, partial
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, TypeAlias, TypeVar

import anyio.to_thread

from zhongshu.worker import errors

logger = logging.getLogger("zhongshu.worker")

ENTRY_POINT_GROUP = "zhongshu.handlers"
BUILTIN_MODULE = "zhongshu.worker.handlers.builtin"
_KIND_ATTR = "__zhongshu_handler_kind__"

Handler: TypeAlias = Callable[["TaskContext", dict[str, Any]], Awaitable[Any] | Any]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class TaskContext:
    """What a handler knows about the task it runs, besides the payload.

    Parameters
    ----------
    task_id, kind, attempt, max_attempts, lease_token, timeout_s
        Copied from the hub's lease. ``attempt`` counts from 1.
    node_id
        This worker's node id, as the hub reported at registration ("" before that).
    cancelled
        Set to ``True`` when the task is revoked, times out or the worker shuts down.
        Async handlers are cancelled for real; sync handlers run in a thread that cannot
        be interrupted, so long sync loops should check this flag and return early.
    """

    task_id: str
    kind: str
    attempt: int = 1
    max_attempts: int = 1
    lease_token: Any = None
    timeout_s: float | None = None
    node_id: str = ""
    cancelled: bool = False
    logger: logging.Logger = field(default=logger, repr=False)
    # The hub side of the master protocol (accounts, QR codes, data sync); ``None`` when
    # the handler runs outside a worker (unit tests).
    hub: Any = field(default=None, repr=False)


def handler(kind: str) -> Callable[[F], F]:
    """Mark ``fn`` as the handler for tasks of ``kind``.

    ``fn(ctx, payload)`` may be ``async`` (runs on the worker's event loop) or sync (runs in
    a thread). Its return value becomes the task result and must be JSON-serialisable.
    Raise ``PermanentFailure`` for a failure that retrying cannot fix.
    """
    assert kind and isinstance(kind, str), "handler kind must be a non-empty string"

    def mark(fn: F) -> F:
        setattr(fn, _KIND_ATTR, kind)
        return fn

    return mark


class HandlerRegistry:
    """Task kind → handler function, filled from modules and entry points."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def __contains__(self, kind: object) -> bool:
        return kind in self._handlers

    def __iter__(self) -> Iterator[str]:
        return iter(self._handlers)

    def __len__(self) -> int:
        return len(self._handlers)

    @property
    def kinds(self) -> list[str]:
        """Every kind this registry can run, sorted (advertised as capabilities)."""
        return sorted(self._handlers)

    def get(self, kind: str) -> Handler | None:
        return self._handlers.get(kind)

    def register(self, kind: str, fn: Handler) -> None:
        """Map ``kind`` to ``fn``; a later registration replaces an earlier one."""
        assert callable(fn), f"handler for {kind!r} is not callable"
        previous = self._handlers.get(kind)
        if previous is not None and previous is not fn:
            logger.warning("handler for kind %r replaced by %s", kind, _qualname(fn))
        self._handlers[kind] = fn

    def handler(self, kind: str) -> Callable[[F], F]:
        """Decorator form of ``register`` for handlers defined next to their registry."""

        def mark(fn: F) -> F:
            self.register(kind, handler(kind)(fn))
            return fn

        return mark

    def load_module(self, module: ModuleType | str) -> list[str]:
        """Register every ``@handler``-tagged function of ``module``; return their kinds."""
        if isinstance(module, str):
            module = _import(module)
        kinds = []
        for value in list(vars(module).values()):
            kind = getattr(value, _KIND_ATTR, None)
            if isinstance(kind, str) and callable(value):
                self.register(kind, value)
                kinds.append(kind)
        return kinds

    def load_object(self, obj: object) -> list[str]:
        """Register what an entry point points at: a module, a tagged function or a registry."""
        if isinstance(obj, ModuleType):
            return self.load_module(obj)
        if isinstance(obj, HandlerRegistry):
            for kind, fn in obj._handlers.items():
                self.register(kind, fn)
            return obj.kinds
        tag = getattr(obj, _KIND_ATTR, None)
        if isinstance(tag, str) and callable(obj):
            self.register(tag, obj)
            return [tag]
        raise errors.HandlerLoadError(
            f"{obj!r} is not a module, a @handler function or a HandlerRegistry"
        )

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Load every installed plugin of ``group``; return the kinds they added."""
        kinds: list[str] = []
        for ep in entry_points(group=group):
            try:
                obj = ep.load()
            except Exception as exc:
                raise errors.HandlerLoadError(
                    f"entry point {ep.name!r} = {ep.value!r} of group {group!r} failed to "
                    f"load: {exc}"
                ) from exc
            added = self.load_object(obj)
            logger.debug("entry point %s loaded kinds %s", ep.name, added)
            kinds.extend(added)
        return kinds

    @classmethod
    def from_config(
        cls, modules: Iterable[str] = (), *, entry_points_group: str | None = ENTRY_POINT_GROUP
    ) -> HandlerRegistry:
        """The registry a ``zhongshu worker`` process uses: plugins, then ``--handlers``.

        The built-in handlers are declared as an entry point; when the package runs from a
        source tree without being installed, that entry point is missing, so they are loaded
        directly instead.
        """
        registry = cls()
        if entry_points_group:
            registry.load_entry_points(entry_points_group)
            if "echo" not in registry:
                registry.load_module(BUILTIN_MODULE)
        for module in modules:
            registry.load_module(module)
        return registry


async def invoke(fn: Handler, ctx: TaskContext, payload: dict[str, Any]) -> Any:
    """Call a handler: await a coroutine function, run a sync one in a worker thread.

    A cancelled or timed-out sync handler cannot be stopped, so its thread is abandoned
    (``ctx.cancelled`` tells it to return) while the task is reported at once.
    """
    if _is_async(fn):
        return await fn(ctx, payload)
    result = await anyio.to_thread.run_sync(partial(fn, ctx, payload), abandon_on_cancel=True)
    if inspect.isawaitable(result):
        result = await result
    return result


@lru_cache(maxsize=1024)
def _is_async(fn: Handler) -> bool:
    # inspect's check walks wrappers and flags on every call; handlers never change.
    return inspect.iscoroutinefunction(fn)


def _import(path: str) -> ModuleType:
    try:
        return importlib.import_module(path)
    except Exception as exc:
        raise errors.HandlerLoadError(f"cannot import handler module {path!r}: {exc}") from exc


def _qualname(fn: object) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
