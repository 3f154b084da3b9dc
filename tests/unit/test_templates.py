"""Users' templates render in a child process: a runaway loop or a memory bomb fails that
render alone, and the next one works."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from zhongshu.services.templates import TemplateFailed, TemplateRenderer


@pytest.fixture
async def renderer() -> AsyncIterator[TemplateRenderer]:
    r = TemplateRenderer(timeout_s=1.0, memory_mb=256, max_chars=10_000)
    yield r
    await r.close()


async def test_renders_with_the_context(renderer: TemplateRenderer) -> None:
    text = await renderer.render(
        "{{ title }}: {{ items|join(',') }}", {"title": "T", "items": [1, 2]}
    )
    assert text == "T: 1,2"


async def test_a_runaway_loop_times_out_and_the_next_render_works(
    renderer: TemplateRenderer,
) -> None:
    endless = "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}"
    started = time.monotonic()
    with pytest.raises(TemplateFailed, match="longer than 1 s"):
        await renderer.render(endless, {})
    assert time.monotonic() - started < 5
    assert await renderer.render("{{ 1 + 1 }}", {}) == "2"


async def test_the_event_loop_stays_free_while_a_template_runs(renderer: TemplateRenderer) -> None:
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticker = asyncio.create_task(tick())
    with pytest.raises(TemplateFailed):
        await renderer.render(
            "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}", {}
        )
    ticker.cancel()
    assert ticks > 30  # ~1 s of 10 ms ticks went on meanwhile


async def test_a_memory_bomb_fails_alone(renderer: TemplateRenderer) -> None:
    with pytest.raises(TemplateFailed, match="memory"):
        await renderer.render("{{ 'x' * 2000000000 }}", {})
    assert await renderer.render("ok", {}) == "ok"


async def test_errors_name_what_went_wrong(renderer: TemplateRenderer) -> None:
    with pytest.raises(TemplateFailed, match="syntax error"):
        await renderer.render("{% for %}", {})
    with pytest.raises(TemplateFailed, match="over 10000 characters"):
        await renderer.render("{{ 'x' * 20000 }}", {})
    with pytest.raises(TemplateFailed, match="SecurityError"):
        await renderer.render("{{ ''.__class__.__mro__ }}", {})
    # Lists change in place only where a template may mutate them.
    with pytest.raises(TemplateFailed, match="SecurityError"):
        await renderer.render("{{ xs.append(1) }}{{ xs }}", {"xs": []})
    assert (
        await renderer.render("{{ xs.append(1) or '' }}{{ xs }}", {"xs": []}, mutable=True) == "[1]"
    )


async def test_a_child_killed_between_renders_is_replaced(renderer: TemplateRenderer) -> None:
    assert await renderer.render("{{ 1 }}", {}) == "1"
    child = renderer._proc
    assert child is not None
    child.kill()
    child.join(5)
    assert await renderer.render("{{ 2 }}", {}) == "2"
