"""The queue's background loops end when the hub stops, whatever they were doing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from helpers import fast_passwords  # noqa: F401

from zhongshu.services.callbacks import CallbackSender
from zhongshu.services.events import Event, EventBus
from zhongshu.testing import wait_until

pytestmark = pytest.mark.timeout(60)

# Regression tests: asyncio.wait_for on 3.11 could swallow a cancel (services.events.wait_event).


async def _ended(task: asyncio.Task[Any], timeout_s: float) -> bool:
    """Whether ``task`` finished within ``timeout_s``; if not, cancel it again to clean up."""
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=timeout_s)
    return bool(done)


def _waiting(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` is parked waiting for an event (``Event.wait``, maybe in wait_for)."""
    aw: Any = task.get_coro()
    while aw is not None:
        if getattr(getattr(aw, "cr_code", None), "co_name", "") in ("wait", "wait_for"):
            return True
        aw = getattr(aw, "cr_await", None)
    return False


def _loop_task(name: str) -> asyncio.Task[Any]:
    (task,) = [t for t in asyncio.all_tasks() if t.get_name() == name]
    return task


async def test_callback_loop_ends_when_cancelled_just_as_it_is_woken(hub: Any) -> None:
    bus = EventBus()
    sender = CallbackSender(hub.tasks.store, bus, "whsec_" + "A" * 44, poll_s=5)
    runner = asyncio.create_task(sender.run())
    await wait_until(lambda: _waiting(runner), timeout_s=10)
    bus.publish([Event("task.succeeded", "task", "t1")])
    await asyncio.sleep(0)
    runner.cancel()
    assert await _ended(runner, 0.5)


async def test_hub_stop_returns_when_a_task_event_just_woke_the_dispatcher(hub: Any) -> None:
    await wait_until(lambda: _waiting(_loop_task("zhongshu-dispatcher")), timeout_s=10)
    hub.dispatcher.wake()
    await asyncio.sleep(0)
    stopping = asyncio.ensure_future(hub.stop())
    ended = await _ended(stopping, 0.5)
    if not ended:  # free the stuck loops so the fixture can finish
        for t in asyncio.all_tasks():
            if t.get_name().startswith("zhongshu-"):
                t.cancel()
        await asyncio.wait({stopping}, timeout=5)
    assert ended
