"""The message pipeline: fetch the URL → AI → one delivery per channel, each a hub task.

Every stage is a task of the embedded executor (``services/executor.py``), so it gets the
queue's durability, retries with backoff and history. Stage state lives on the message
(``fetch_status``, ``ai_status``) and on its deliveries; ``advance`` looks at that state
and submits whatever comes next, with one idempotency key per (message, stage), so calling
it twice — after a crash, from a handler and from the ``task.dead`` listener — never
queues a stage twice.

A stage that fails for good does not stop the message: a page that cannot be fetched or an
AI provider that is down still lets the message go out without them; each failed stage
keeps its error. The message status is ``pending`` until a stage starts, ``processing``
while one runs, and once every delivery is final ``sent``, ``partially_sent`` or
``failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import httpx

from zhongshu import __version__, errors
from zhongshu.db.channel_store import ChannelStore
from zhongshu.db.message_store import MessageStore, Row
from zhongshu.services import executor as executor_mod
from zhongshu.services.ai import AiService
from zhongshu.services.channels import ChannelService, Outgoing
from zhongshu.services.events import Event, EventBus
from zhongshu.services.identity import Principal

log = logging.getLogger("zhongshu.pipeline")

FETCH, AI, DELIVER = "message.fetch", "message.ai", "message.deliver"
KINDS = (FETCH, AI, DELIVER)
PAGE_EXCERPT_CHARS = 1000


@dataclass(frozen=True, slots=True)
class StageLimits:
    priority: int
    concurrency: int
    timeout_s: float


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    data_dir: Path
    view_base_url: str
    max_attempts: int
    fetch: StageLimits
    ai: StageLimits
    deliver: StageLimits
    fetch_max_bytes: int
    # (host, port) pairs that are this hub: a message URL there is refused.
    hub_addresses: frozenset[tuple[str, int]]


def hub_addresses(host: str, port: int, public_url: str) -> frozenset[tuple[str, int]]:
    """Every (host, port) that reaches this hub: its bind address, loopback names, this
    machine's name, and the public URL's host."""
    names = {host.lower(), "localhost", "127.0.0.1", "::1", "0.0.0.0", "[::1]"}
    with contextlib.suppress(OSError):
        names.add(socket.gethostname().lower())
    found = {(n, port) for n in names}
    public = urlsplit(public_url)
    if public.hostname:
        found.add((public.hostname.lower(), _port(public)))
    return frozenset(found)


def _port(parts: Any) -> int:
    try:
        port = parts.port
    except ValueError:
        return -1
    return int(port) if port else (443 if parts.scheme == "https" else 80)


def url_problem(url: str, hub_addresses: frozenset[tuple[str, int]]) -> str | None:
    """Why ``url`` may not be fetched (``None``: it may)."""
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"url: not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return f"url: only http and https URLs can be fetched, not {parts.scheme or 'none'!r}"
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        return "url: the URL has no host"
    port = _port(parts)
    if port < 0:
        return "url: the port is not a number between 0 and 65535"
    if (host, port) in hub_addresses:
        return "url: the URL points at this hub itself"
    return None


def view_url(base: str, view_token: str) -> str:
    return f"{base.rstrip('/')}/view/{view_token}"


def page_path(data_dir: Path, message_id: str) -> Path:
    return data_dir / "messages" / message_id[:2] / f"{message_id}.txt"


def read_page(data_dir: Path, message: Row) -> str:
    if not message.get("fetch_path"):
        return ""
    try:
        return (data_dir / message["fetch_path"]).read_text(encoding="utf-8")
    except OSError:
        return ""


def outgoing(message: Row, page: str, view_base_url: str) -> Outgoing:
    """What the channels send: the AI result, else the content, else a page excerpt; the
    URL on its own line."""
    body = message.get("ai_result") or message["content"] or page[:PAGE_EXCERPT_CHARS]
    url = message["url"]
    if url and url not in body:
        body = f"{body}\n\n{url}" if body else url
    title = message["title"] or message.get("fetch_title") or message["content"][:50] or url or "·"
    return Outgoing(title, body, url, view_url(view_base_url, message["view_token"]))


def _extract(raw: bytes, content_type: str, encoding: str) -> tuple[str, str]:
    """(title, text) of a fetched page; trafilatura for HTML, as-is for plain text."""
    text = raw.decode(encoding or "utf-8", errors="replace")
    if "html" not in content_type and not text.lstrip().startswith("<"):
        return "", text
    import trafilatura

    extracted = trafilatura.extract(text, include_comments=False) or ""
    meta = trafilatura.extract_metadata(text)
    title = (meta.title if meta is not None else None) or ""
    return title, extracted


class Pipeline:
    def __init__(
        self,
        store: MessageStore,
        channel_store: ChannelStore,
        channels: ChannelService,
        ai: AiService,
        executor: executor_mod.EmbeddedExecutor,
        bus: EventBus,
        config: PipelineConfig,
    ) -> None:
        self.store = store
        self.channel_store = channel_store
        self.channels = channels
        self.ai = ai
        self.executor = executor
        self.bus = bus
        self.config = config
        self._pending: set[asyncio.Task[None]] = set()
        executor.register(FETCH, self._fetch, concurrency=config.fetch.concurrency)
        executor.register(AI, self._ai, concurrency=config.ai.concurrency)
        executor.register(DELIVER, self._deliver, concurrency=config.deliver.concurrency)
        # A stage task that ends dead without its handler seeing the last failure (a
        # timeout, a crash…) must still let the message move on.
        bus.listen("task.dead", self._on_dead)

    # --- moving a message along --------------------------------------------------------

    async def advance(self, message: Row) -> None:
        """Submit the next stage(s) of ``message`` (idempotent)."""
        owner = Principal("user", message["owner_id"], "user")
        mid = message["id"]
        if message["fetch_status"] == "pending":
            await self._submit(FETCH, {"message_id": mid}, owner, f"msg:{mid}:fetch", "fetch")
            return
        if message["ai_status"] == "pending":
            await self._submit(AI, {"message_id": mid}, owner, f"msg:{mid}:ai", "ai")
            return
        for d in await self.store.deliveries(mid):
            if d["status"] in ("pending", "sending"):
                payload = {"message_id": mid, "channel_id": d["channel_id"]}
                key = f"msg:{mid}:deliver:{d['channel_id']}"
                task = await self._submit(DELIVER, payload, owner, key, "deliver")
                if d["task_id"] != task["id"]:
                    await self.store.update_deliveries(
                        mid, [d["channel_id"]], {"task_id": task["id"]}
                    )

    async def _submit(self, kind: str, payload: Row, owner: Principal, key: str, stage: str) -> Row:
        limits: StageLimits = getattr(self.config, stage)
        return await self.executor.submit(
            kind,
            payload,
            owner=owner,
            priority=limits.priority,
            max_attempts=self.config.max_attempts,
            timeout_s=limits.timeout_s + 10,
            idempotency_key=key,
        )

    async def resume(self) -> int:
        """At start: queue the next stage of every unfinished message (a crash between a
        message's insert and its first task, or between two stages, leaves it waiting)."""
        count = 0
        offset = 0
        while True:
            rows, _ = await self.store.find(None, status=None, limit=500, offset=offset)
            if not rows:
                return count
            for m in rows:
                if m["status"] in ("pending", "processing"):
                    await self.advance(m)
                    count += 1
            offset += len(rows)

    async def run(self) -> None:
        """The hub's start-up step for messages: resume what a previous run left."""
        try:
            resumed = await self.resume()
        except Exception:
            log.exception("could not resume unfinished messages")
            return
        if resumed:
            log.info("resumed %d unfinished messages", resumed)

    async def _begin(self, message_id: str) -> Row | None:
        message = await self.store.get(message_id)
        if message is None:
            return None
        now = time.time()
        if message["status"] == "pending":
            updated = await self.store.update(
                message_id,
                {"status": "processing", "updated_at": now},
                only_if=[("status", ["pending"])],
            )
            if updated is not None:
                self.bus.publish(
                    [Event("message.processing", "message", message_id, "system", {}, now)]
                )
                return updated
        return message

    # --- stage: fetch ------------------------------------------------------------------

    async def _fetch(self, ctx: executor_mod.TaskContext) -> dict[str, Any] | None:
        message = await self._begin(ctx.payload["message_id"])
        if message is None:
            return {"skipped": "message deleted"}
        if message["fetch_status"] != "pending":
            await self.advance(message)
            return {"skipped": f"fetch already {message['fetch_status']}"}
        try:
            title, text = await self.fetch(message["url"])
        except errors.FetchFailed as exc:
            await self._stage_failed(ctx, message, "fetch", exc)
        path = page_path(self.config.data_dir, message["id"])
        await asyncio.to_thread(_write, path, text)
        values = {
            "fetch_status": "done",
            "fetch_title": title[:1000] or None,
            "fetch_path": str(path.relative_to(self.config.data_dir)),
            "fetch_chars": len(text),
            "fetch_error": None,
            "updated_at": time.time(),
        }
        updated = await self.store.update(message["id"], values)
        await self.advance(updated or {**message, **values})
        return {"chars": len(text), "title": title[:200]}

    async def fetch(self, url: str) -> tuple[str, str]:
        """GET ``url`` within the size and time limits; returns (title, extracted text)."""
        problem = url_problem(url, self.config.hub_addresses)
        if problem:
            raise errors.FetchFailed(problem, retryable=False)

        async def check_hop(request: httpx.Request) -> None:
            hop = url_problem(str(request.url), self.config.hub_addresses)
            if hop:
                raise errors.FetchFailed(f"redirected to a refused URL ({hop})", retryable=False)

        limit = self.config.fetch_max_bytes
        try:
            async with (
                httpx.AsyncClient(
                    timeout=self.config.fetch.timeout_s,
                    follow_redirects=True,
                    max_redirects=5,
                    trust_env=False,
                    headers={"user-agent": f"zhongshu/{__version__} (+message pipeline)"},
                    event_hooks={"request": [check_hop]},
                ) as client,
                client.stream("GET", url) as r,
            ):
                if r.status_code >= 400:
                    retryable = r.status_code >= 500 or r.status_code in (408, 429)
                    raise errors.FetchFailed(f"HTTP {r.status_code}", retryable=retryable)
                chunks: list[bytes] = []
                size = 0
                async for chunk in r.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise errors.FetchFailed(
                            f"the page is larger than {limit} bytes (messages_fetch_max_bytes)",
                            retryable=False,
                        )
                    chunks.append(chunk)
                content_type = r.headers.get("content-type", "")
                encoding = r.encoding or "utf-8"
        except httpx.HTTPError as exc:
            raise errors.FetchFailed(f"{type(exc).__name__}: {exc}"[:1000]) from exc
        return await asyncio.to_thread(_extract, b"".join(chunks), content_type, encoding)

    # --- stage: AI ---------------------------------------------------------------------

    async def _ai(self, ctx: executor_mod.TaskContext) -> dict[str, Any] | None:
        message = await self._begin(ctx.payload["message_id"])
        if message is None:
            return {"skipped": "message deleted"}
        if message["ai_status"] != "pending":
            await self.advance(message)
            return {"skipped": f"ai already {message['ai_status']}"}
        provider = (
            await self.channel_store.provider(message["ai_provider_id"])
            if message["ai_provider_id"]
            else None
        )
        try:
            if provider is None:
                raise errors.AiCallFailed("the message's AI provider was deleted", retryable=False)
            page = await asyncio.to_thread(read_page, self.config.data_dir, message)
            result = await self.ai.complete(provider, message, page)
        except errors.AiCallFailed as exc:
            await self._stage_failed(ctx, message, "ai", exc)
        values = {"ai_status": "done", "ai_result": result, "ai_error": None}
        updated = await self.store.update(message["id"], {**values, "updated_at": time.time()})
        await self.advance(updated or {**message, **values})
        return {"chars": len(result)}

    # --- stage: deliver ----------------------------------------------------------------

    async def _deliver(self, ctx: executor_mod.TaskContext) -> dict[str, Any] | None:
        message_id = ctx.payload["message_id"]
        channel_id = int(ctx.payload["channel_id"])
        message = await self._begin(message_id)
        if message is None:
            return {"skipped": "message deleted"}
        delivery = await self.store.delivery(message_id, channel_id)
        if delivery is None or delivery["status"] in ("sent", "failed"):
            return {"skipped": "delivery already final"}
        channel = await self.channel_store.channel(channel_id)
        now = time.time()
        try:
            if channel is None:
                raise errors.DeliveryFailed("the channel was deleted", retryable=False)
            page = await asyncio.to_thread(read_page, self.config.data_dir, message)
            report = await self.channels.send(
                channel, outgoing(message, page, self.config.view_base_url)
            )
        except errors.DeliveryFailed as exc:
            final = not exc.retryable or ctx.is_last_attempt
            values: Row = {
                "status": "failed" if final else "sending",
                "attempts": ctx.attempt,
                "error": exc.message,
                "updated_at": now,
            }
            await self._record(message_id, channel_id, values, now)
            if not exc.retryable:
                raise executor_mod.PermanentFailure(exc.message) from exc
            raise
        values = {
            "status": "sent",
            "attempts": ctx.attempt,
            "error": None,
            "truncated": report.truncated,
            "sent_at": now,
            "updated_at": now,
        }
        await self._record(message_id, channel_id, values, now)
        return {"truncated": report.truncated, "status_code": report.status_code}

    async def _record(self, message_id: str, channel_id: int, values: Row, now: float) -> None:
        def final_event(message: Row, status: str) -> Event:
            return Event(
                f"message.{status}",
                "message",
                message_id,
                "system",
                {"owner_id": message["owner_id"], "status": status},
                now,
            )

        _, ev = await self.store.record_delivery(message_id, channel_id, values, now, final_event)
        if ev is not None:
            self.bus.publish([ev])

    # --- failures ----------------------------------------------------------------------

    async def _stage_failed(
        self, ctx: executor_mod.TaskContext, message: Row, stage: str, exc: errors.DeliveryFailed
    ) -> NoReturn:
        """Record a failed attempt of the fetch or AI stage. The last one (or one a retry
        cannot fix) marks the stage failed and moves the message on. Always raises, so
        the task's own history has the error too."""
        final = not exc.retryable or ctx.is_last_attempt
        values: Row = {f"{stage}_error": exc.message, "updated_at": time.time()}
        if final:
            values[f"{stage}_status"] = "failed"
        updated = await self.store.update(
            message["id"], values, only_if=[(f"{stage}_status", ["pending"])]
        )
        if final and updated is not None:
            await self.advance(updated)
        if not exc.retryable:
            raise executor_mod.PermanentFailure(exc.message) from exc
        raise exc

    def _on_dead(self, ev: Event) -> None:
        if ev.data.get("kind") not in KINDS:
            return
        task = asyncio.get_running_loop().create_task(self._dead(ev))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _dead(self, ev: Event) -> None:
        try:
            task = await self.executor.tasks.get(ev.subject_id)
            payload = task["payload"] or {}
            message_id = str(payload.get("message_id") or "")
            error = ev.data.get("error") or task.get("error") or ev.type
            message = await self.store.get(message_id) if message_id else None
            if message is None:
                return
            now = time.time()
            if task["kind"] == DELIVER:
                channel_id = int(payload["channel_id"])
                delivery = await self.store.delivery(message_id, channel_id)
                if delivery is not None and delivery["status"] not in ("sent", "failed"):
                    values = {"status": "failed", "error": error, "updated_at": now}
                    await self._record(message_id, channel_id, values, now)
                return
            stage = "fetch" if task["kind"] == FETCH else "ai"
            updated = await self.store.update(
                message_id,
                {f"{stage}_status": "failed", f"{stage}_error": error, "updated_at": now},
                only_if=[(f"{stage}_status", ["pending"])],
            )
            if updated is not None:
                await self.advance(updated)
        except Exception:  # a listener's failure must not go unnoticed, nor crash the loop
            log.exception("could not settle the message of dead task %s", ev.subject_id)

    async def stop(self) -> None:
        for t in list(self._pending):
            t.cancel()
        for t in list(self._pending):
            with contextlib.suppress(asyncio.CancelledError):
                await t


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
