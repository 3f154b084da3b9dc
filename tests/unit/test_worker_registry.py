"""The handler registry: tagged functions, modules, entry points, sync handlers in threads."""

from __future__ import annotations

import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from zhongshu.worker import HandlerLoadError, HandlerRegistry, TaskContext, handler
from zhongshu.worker.registry import invoke


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real installed-looking distribution on sys.path declaring a zhongshu.handlers plugin."""
    (tmp_path / "zs_plugin_mod.py").write_text(
        textwrap.dedent(
            """
            from zhongshu.worker import handler

            @handler("plugin.hello")
            async def hello(ctx, payload):
                return {"hello": payload.get("name", "world")}

            def not_a_handler():
                return None
            """
        )
    )
    dist = tmp_path / "zs_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: zs-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[zhongshu.handlers]\nhello = zs_plugin_mod\n\n[zhongshu.handlers.broken]\nbad = zs_nope\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("zs_plugin_mod", None)


def ctx(kind: str = "k") -> TaskContext:
    return TaskContext(task_id="t1", kind=kind)


def test_decorator_only_tags_the_function() -> None:
    @handler("tagged")
    def fn(ctx: TaskContext, payload: dict[str, Any]) -> int:
        return 1

    assert fn(ctx(), {}) == 1
    registry = HandlerRegistry()
    assert registry.kinds == []
    assert registry.load_object(fn) == ["tagged"]
    assert registry.get("tagged") is fn


def test_load_module_by_path() -> None:
    registry = HandlerRegistry()
    kinds = registry.load_module("zhongshu.worker.handlers.builtin")
    assert set(kinds) == {"echo", "sleep", "fail", "http.fetch"}
    assert registry.kinds == sorted(kinds)


def test_load_module_error_names_the_module() -> None:
    with pytest.raises(HandlerLoadError, match="no_such_module_zs"):
        HandlerRegistry().load_module("no_such_module_zs")


def test_entry_points_are_loaded(plugin_dir: Path) -> None:
    registry = HandlerRegistry()
    kinds = registry.load_entry_points()
    assert "plugin.hello" in kinds
    # The project's own entry point (pyproject: builtin = zhongshu.worker.handlers.builtin).
    assert "echo" in registry


def test_broken_entry_point_is_reported(plugin_dir: Path) -> None:
    with pytest.raises(HandlerLoadError, match="bad"):
        HandlerRegistry().load_entry_points("zhongshu.handlers.broken")


def test_from_config_adds_handler_modules(plugin_dir: Path) -> None:
    (plugin_dir / "zs_more_handlers.py").write_text(
        "from zhongshu.worker import handler\n\n"
        "@handler('more.sync')\n"
        "def run(ctx, payload):\n"
        "    return 42\n"
    )
    try:
        registry = HandlerRegistry.from_config(["zs_more_handlers"])
        assert {"echo", "plugin.hello", "more.sync"} <= set(registry)
    finally:
        sys.modules.pop("zs_more_handlers", None)


def test_builtins_load_without_entry_points() -> None:
    registry = HandlerRegistry.from_config(entry_points_group="zhongshu.handlers.none")
    assert "echo" in registry


def test_later_registration_wins() -> None:
    registry = HandlerRegistry()

    @registry.handler("x")
    async def first(ctx: TaskContext, payload: dict[str, Any]) -> int:
        return 1

    @registry.handler("x")
    async def second(ctx: TaskContext, payload: dict[str, Any]) -> int:
        return 2

    assert registry.get("x") is second


def test_registry_can_be_an_entry_point_target() -> None:
    inner = HandlerRegistry()
    inner.register("a", handler("a")(lambda ctx, payload: 1))
    outer = HandlerRegistry()
    assert outer.load_object(inner) == ["a"]
    with pytest.raises(HandlerLoadError):
        outer.load_object(42)


async def test_async_handler_runs_on_the_loop() -> None:
    seen: list[int] = []

    async def fn(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(threading.get_ident())
        return payload

    assert await invoke(fn, ctx(), {"a": 1}) == {"a": 1}
    assert seen == [threading.get_ident()]


async def test_sync_handler_runs_in_a_thread() -> None:
    seen: list[int] = []

    def fn(ctx: TaskContext, payload: dict[str, Any]) -> int:
        seen.append(threading.get_ident())
        return payload["n"] * 2

    assert await invoke(fn, ctx(), {"n": 21}) == 42
    assert seen and seen[0] != threading.get_ident()


async def test_sync_handler_exceptions_propagate() -> None:
    def fn(ctx: TaskContext, payload: dict[str, Any]) -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        await invoke(fn, ctx(), {})
