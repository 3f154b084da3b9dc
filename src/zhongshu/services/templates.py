"""Users' templates (channel bodies and URLs, message-task messages, AI prompts), rendered
in a child process with a time and a memory limit.

Jinja2's sandbox stops attribute tricks, but — as its documentation says — not resource
exhaustion: ``{% for a in range(99999) %}{% for b in range(99999) %}…`` or
``{{ "x" * 10**10 }}`` would hold the hub's event loop, or its memory, for as long as the
template likes, and any user may write a channel template. So every render runs in one
long-lived child process (spawned on first use) whose address space is capped; a render
that outlives ``timeout_s`` gets the child killed (a fresh one serves the next render), and
one that runs out of memory fails alone. A render costs one pipe round trip (~0.1 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
from collections import OrderedDict
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEnvironment

log = logging.getLogger("zhongshu.templates")

# Parsing is bounded by the template's size (callers cap it), so it stays in-process.
_PARSER = ImmutableSandboxedEnvironment(autoescape=False)


class TemplateFailed(Exception):
    """The template could not be rendered; ``str(exc)`` says why, for its author."""


def check_syntax(source: str) -> None:
    """Raise ``TemplateSyntaxError`` when ``source`` is not a valid template."""
    _PARSER.parse(source)


class TemplateRenderer:
    """Renders templates in a child process, one at a time, with limits.

    Parameters
    ----------
    timeout_s:
        Longest a render may take; past it the child is killed and the render fails.
    memory_mb:
        The child's address-space limit (RLIMIT_AS): a template that builds a huge string
        fails with "out of memory" instead of swapping the host.
    max_chars:
        Longest rendered text accepted.
    """

    def __init__(
        self, *, timeout_s: float = 2.0, memory_mb: int = 512, max_chars: int = 1024 * 1024
    ) -> None:
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.max_chars = max_chars
        self._lock = asyncio.Lock()
        self._proc: BaseProcess | None = None
        self._conn: Connection | None = None

    async def render(self, source: str, context: dict[str, Any], *, mutable: bool = False) -> str:
        """The rendered text; ``TemplateFailed`` with the reason when it cannot be had.

        ``mutable`` allows in-place changes of lists and dicts inside the template
        (``{{ items.append(x) }}``), which message-task templates have always allowed.
        """
        request = (source, context, mutable, self.max_chars)
        async with self._lock:
            conn = await self._child()
            try:
                conn.send(request)
            except (BrokenPipeError, ConnectionResetError):
                # The child died between renders (killed from outside): a fresh one.
                await self._kill("found dead")
                conn = await self._child()
                conn.send(request)
            answered = await asyncio.to_thread(conn.poll, self.timeout_s)
            if not answered:
                await self._kill("timed out")
                raise TemplateFailed(
                    f"the template took longer than {self.timeout_s:g} s to render"
                )
            try:
                ok, value = conn.recv()
            except (EOFError, OSError):
                await self._kill("died")
                raise TemplateFailed(
                    "the template could not be rendered: it needs more than "
                    f"{self.memory_mb} MiB or crashed the renderer"
                ) from None
        if not ok:
            raise TemplateFailed(value)
        return str(value)

    async def close(self) -> None:
        async with self._lock:
            if self._proc is not None:
                await self._kill(None)

    async def _child(self) -> Connection:
        if self._proc is not None and self._proc.is_alive() and self._conn is not None:
            return self._conn
        if self._proc is not None:
            await self._kill("found dead")
        # spawn, not fork: the hub has threads and open sockets a fork would copy.
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_serve, args=(child, self.memory_mb), name="zhongshu-templates", daemon=True
        )
        await asyncio.to_thread(proc.start)
        child.close()
        self._proc, self._conn = proc, parent
        return parent

    async def _kill(self, why: str | None) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if why:
            log.warning("template renderer %s: starting a new one", why)
        if conn is not None:
            conn.close()
        if proc is not None:
            if proc.is_alive():
                proc.kill()
            await asyncio.to_thread(proc.join, 5)


# --- the child process -------------------------------------------------------------------


def _serve(conn: Connection, memory_mb: int) -> None:  # pragma: no cover - runs in the child
    import resource

    limit = memory_mb * 1024 * 1024
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    envs = {
        False: ImmutableSandboxedEnvironment(autoescape=False),
        True: SandboxedEnvironment(autoescape=False),
    }
    compiled: OrderedDict[tuple[str, bool], Any] = OrderedDict()
    while True:
        try:
            source, context, mutable, max_chars = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        try:
            key = (source, mutable)
            template = compiled.get(key)
            if template is None:
                template = compiled[key] = envs[mutable].from_string(source)
                if len(compiled) > 256:
                    compiled.popitem(last=False)
            compiled.move_to_end(key)
            text = template.render(context)
            if len(text) > max_chars:
                answer: tuple[bool, str] = (
                    False,
                    f"the rendered text is over {max_chars} characters",
                )
            else:
                answer = (True, text)
        except MemoryError:
            answer = (False, "the template needs more memory than the renderer may use")
        except TemplateSyntaxError as exc:
            answer = (False, f"template syntax error: {exc.message} (line {exc.lineno})")
        except Exception as exc:
            answer = (False, f"template error: {type(exc).__name__}: {exc}")
        conn.send(answer)
