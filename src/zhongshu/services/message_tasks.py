"""WeRSS message tasks: on a cron, tell a webhook what is new in some feeds.

A message task names sources (``mps_id``), a cron (``cron_exp``), a Jinja2 template and a
webhook. It shares the schedule loop and its due-claim (``services/schedules.py``): each due
time submits one ``message_task.deliver`` task to the hub's embedded executor carrying the
collection window ``(since, until]``, then moves ``next_run_at`` and the cursor
(``last_run_at``) on with one conditional UPDATE. The window is fixed in the task, so every
retry delivers the same articles; the cursor moves exactly once per due time.

The delivery handler reads the articles of the window from the collected ``items`` (kind
``content``), renders the template once per feed in a sandbox, and POSTs each rendering.
A failed POST raises, so the executor retries the task with the queue's backoff up to
``max_attempts``; parts a webhook already accepted are not sent again. Every POST is
recorded in ``message_task_deliveries``.

``status``: 1 = enabled, 0 = disabled (the seed used both readings; we fixed one).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import httpx
from jinja2 import TemplateError

from zhongshu import errors
from zhongshu.db.message_task_store import MessageTaskStore
from zhongshu.services.events import Event, EventBus
from zhongshu.services.executor import EmbeddedExecutor, PermanentFailure, TaskContext
from zhongshu.services.identity import Principal
from zhongshu.services.schedules import make_trigger, next_fire_at, owner_principal
from zhongshu.services.secrets import SecretBox, mask
from zhongshu.services.templates import TemplateFailed, TemplateRenderer, check_syntax

log = logging.getLogger("zhongshu.message_tasks")

Row = dict[str, Any]
KIND = "message_task.deliver"
ENABLED, DISABLED = 1, 0
# message_type: 0 = a chat message (body shaped for DingTalk, Lark/Feishu or WeCom robots
# by the URL, else {"title", "content"}); 1 = a raw webhook (the rendering is the body).
MESSAGE, WEBHOOK = 0, 1
MAX_TEMPLATE_CHARS = 64 * 1024
MAX_SOURCES = 200
DUE_BATCH = 500
# Remote answers that will not change on a retry.
_PERMANENT_STATUSES = {400, 401, 403, 404, 405, 410, 413, 422}


def _tz(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local(ts: float | None, tz: ZoneInfo) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S")


def article_vars(item: Row, tz: ZoneInfo) -> Row:
    """One collected content as the template sees it (``{{article.title}}`` …)."""
    raw: Row = item["raw"] if isinstance(item.get("raw"), dict) else {}
    return {
        "id": item["platform_id"],
        "title": item["title"],
        "content": item["text"],
        "description": raw.get("description") or item["text"][:200],
        "url": item["url"],
        "link": item["url"],
        "author": item["author_name"],
        "pic_url": raw.get("pic_url") or raw.get("cover") or "",
        "publish_time": _local(item["published_at"], tz),
        "publish_timestamp": item["published_at"],
        "first_seen_time": _local(item["first_seen_at"], tz),
        "raw": raw,
    }


def render_context(mt: Row, feed: Row, articles: Sequence[Row], tz: ZoneInfo, now: float) -> Row:
    shaped = [article_vars(a, tz) for a in articles]
    return {
        "feed": {
            "id": feed["id"],
            "name": feed.get("name", ""),
            "mp_name": feed.get("name", ""),
            "platform": feed.get("platform", ""),
            "account_id": feed.get("account_id", ""),
        },
        "articles": shaped,
        "article": shaped[0] if shaped else {},
        "count": len(shaped),
        "now": _local(now, tz),
        "task": {"id": mt["id"], "name": mt["name"]},
    }


def request_body(message_type: int, url: str, title: str, text: str) -> tuple[bytes, str]:
    """The POST body and its content type for a rendering."""
    if message_type == WEBHOOK:
        try:
            json.loads(text)
        except ValueError:
            return text.encode(), "text/plain; charset=utf-8"
        return text.encode(), "application/json"
    host = (urlsplit(url).hostname or "").lower()
    body: Row
    if host.endswith("dingtalk.com"):
        body = {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
    elif host.endswith(("feishu.cn", "larksuite.com")):
        body = {"msg_type": "text", "content": {"text": text}}
    elif host == "qyapi.weixin.qq.com":
        body = {"msgtype": "markdown", "markdown": {"content": text}}
    else:
        body = {"title": title, "content": text}
    return json.dumps(body, ensure_ascii=False).encode(), "application/json"


class MessageTaskService:
    """CRUD, manual runs, due-time firing (a ``DueSource`` of the schedule loop) and the
    executor handler that delivers.

    Parameters
    ----------
    max_attempts:
        Attempts of one run's delivery (retried with the queue's exponential backoff).
    timeout_s:
        Timeout of one webhook POST.
    """

    def __init__(
        self,
        store: MessageTaskStore,
        executor: EmbeddedExecutor,
        bus: EventBus,
        secrets: SecretBox,
        templates: TemplateRenderer,
        *,
        default_timezone: str = "UTC",
        max_attempts: int = 5,
        timeout_s: float = 10.0,
    ) -> None:
        self.store = store
        self.executor = executor
        self.bus = bus
        self.secrets = secrets
        self.templates = templates
        self.default_timezone = default_timezone
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.on_change: list[Any] = []

    def register(self) -> None:
        """Give the executor the delivery handler."""
        self.executor.register(KIND, self.deliver, concurrency=4)

    # --- validation -------------------------------------------------------------------

    async def _check(self, values: Row, owner: Principal, owner_id: str) -> Row:
        """Validate and normalise changed fields; InvalidInput names the field."""
        out = dict(values)
        if "name" in out and (not out["name"] or len(out["name"]) > 255):
            raise errors.InvalidInput("name: 1-255 characters")
        if "message_type" in out and out["message_type"] not in (MESSAGE, WEBHOOK):
            raise errors.InvalidInput("message_type: 0 (message) or 1 (webhook)")
        if "status" in out and out["status"] not in (ENABLED, DISABLED):
            raise errors.InvalidInput("status: 1 (enabled) or 0 (disabled)")
        if "message_template" in out:
            tpl = out["message_template"]
            if len(tpl) > MAX_TEMPLATE_CHARS:
                raise errors.InvalidInput(f"message_template: at most {MAX_TEMPLATE_CHARS} chars")
            try:
                check_syntax(tpl)
            except TemplateError as exc:
                raise errors.InvalidInput(f"message_template: {exc}") from exc
        if "web_hook_url" in out:
            parts = urlsplit(out["web_hook_url"])
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise errors.InvalidInput("web_hook_url: must be an http(s) URL with a host")
        if "mps_id" in out:
            out["mps_id"] = await self._check_sources(out["mps_id"], owner, owner_id)
        if "timezone" in out and out["timezone"] is None:
            out["timezone"] = self.default_timezone
        if "cron_exp" in out or "timezone" in out:
            make_trigger(
                cron=out.get("cron_exp", values.get("_cron")),
                interval_s=None,
                timezone=str(out.get("timezone", values.get("_timezone"))),
                anchor_at=time.time(),
            )
        for name in ("headers", "cookies"):
            if name in out:
                out[name] = self._seal(name, out[name])
        out.pop("_cron", None)
        out.pop("_timezone", None)
        return out

    async def _check_sources(self, ids: Any, actor: Principal, owner_id: str) -> list[str]:
        ids = parse_mps_id(ids)
        if len(ids) > MAX_SOURCES:
            raise errors.InvalidInput(f"mps_id: at most {MAX_SOURCES} sources")
        found = {s["id"]: s for s in await self.store.sources(ids)}
        # Admins may watch anyone's sources; users only their own.
        mine = [
            i for i in ids if i in found and (actor.is_admin or found[i]["owner_id"] == owner_id)
        ]
        unknown = [i for i in ids if i not in mine]
        if unknown:
            raise errors.InvalidInput(
                f"mps_id: no source of yours with id {', '.join(map(repr, unknown[:10]))}"
            )
        return ids

    def _seal(self, name: str, value: Any) -> str | None:
        if value is None or value == {} or value == "":
            return None
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str) or not isinstance(v, str) or not k:
                    raise errors.InvalidInput(f"{name}: a mapping of strings to strings")
                if any(c in k + v for c in "\r\n\0") or (name == "headers" and ":" in k):
                    raise errors.InvalidInput(f"{name}: {k!r} has a forbidden character")
        elif isinstance(value, str):
            if name == "headers":
                raise errors.InvalidInput("headers: a mapping of header names to values")
            if any(c in value for c in "\r\n\0"):
                raise errors.InvalidInput("cookies: line breaks are not allowed")
        else:
            raise errors.InvalidInput(f"{name}: a mapping of strings to strings")
        return self.secrets.seal_json(value)

    def masked(self, sealed: str | None) -> Any:
        """What a reply shows of stored headers or cookies: names, never values."""
        if not sealed:
            return {}
        value = self.secrets.open_json(sealed)
        if isinstance(value, dict):
            return {k: mask(v) for k, v in value.items()}
        return mask(value)

    # --- CRUD -------------------------------------------------------------------------

    async def create(self, spec: Row, owner: Principal) -> Row:
        now = time.time()
        spec = {**spec, "timezone": spec.get("timezone") or self.default_timezone}
        checked = await self._check(spec, owner, owner.id)
        row: Row = {
            "id": "mt_" + uuid.uuid4().hex[:16],
            "owner_id": owner.id,
            "name": checked["name"],
            "message_type": checked.get("message_type", MESSAGE),
            "message_template": checked["message_template"],
            "web_hook_url": checked["web_hook_url"],
            "mps_id": checked.get("mps_id", []),
            "cron_exp": checked["cron_exp"],
            "timezone": checked["timezone"],
            "status": checked.get("status", ENABLED),
            "headers": checked.get("headers"),
            "cookies": checked.get("cookies"),
            "last_run_at": now,
            "last_due_at": None,
            "last_task_id": None,
            "run_count": 0,
            "created_at": now,
            "updated_at": now,
        }
        row["next_run_at"] = self._next(row, now)
        ev = Event(
            "message_task.created",
            "message_task",
            row["id"],
            owner.actor,
            {"name": row["name"], "cron_exp": row["cron_exp"], "sources": len(row["mps_id"])},
            now,
        )
        out = await self.store.insert(row, ev)
        self.bus.publish([ev])
        self._changed()
        return out

    def _next(self, row: Row, now: float) -> float | None:
        trigger = make_trigger(
            cron=row["cron_exp"], interval_s=None, timezone=row["timezone"], anchor_at=now
        )
        return next_fire_at(trigger, now)

    def _changed(self) -> None:
        for fn in self.on_change:
            fn()

    async def get(self, message_task_id: str, viewer: Principal | None = None) -> Row:
        row = await self.store.get(message_task_id)
        if row is None or (viewer is not None and not viewer.may_see(row["owner_id"])):
            raise errors.MessageTaskNotFound(f"message task {message_task_id} not found")
        return row

    async def find(
        self, viewer: Principal, *, status: int | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[Row], int]:
        owner = viewer.owner_filter
        return await self.store.find(owner_id=owner, status=status, limit=limit, offset=offset)

    async def deliveries(self, message_task_id: str, limit: int = 20) -> list[Row]:
        return await self.store.deliveries(message_task_id, limit)

    async def update(self, message_task_id: str, changes: Row, actor: Principal) -> Row:
        """Change fields; a new cron or timezone, or re-enabling, recomputes the next run
        from now (no backlog is fired for the time it was off)."""
        row = await self.get(message_task_id, actor)
        now = time.time()
        allowed = (
            "name",
            "message_type",
            "message_template",
            "web_hook_url",
            "mps_id",
            "cron_exp",
            "timezone",
            "status",
            "headers",
            "cookies",
        )
        # null clears headers/cookies/timezone; for required fields it means "unchanged".
        values = {
            k: v
            for k, v in changes.items()
            if k in allowed and (v is not None or k in ("headers", "cookies", "timezone"))
        }
        values = await self._check(
            {**values, "_cron": row["cron_exp"], "_timezone": row["timezone"]},
            actor,
            row["owner_id"],
        )
        merged = {**row, **values}
        reschedule = "cron_exp" in values or "timezone" in values
        if reschedule or (values.get("status") == ENABLED and row["status"] != ENABLED):
            values["next_run_at"] = self._next(merged, now)
        values["updated_at"] = now
        ev = Event(
            "message_task.updated",
            "message_task",
            message_task_id,
            actor.actor,
            {k: v for k, v in values.items() if k not in ("headers", "cookies", "updated_at")},
            now,
        )
        out = await self.store.update(message_task_id, values, ev)
        if out is None:
            raise errors.MessageTaskNotFound(f"message task {message_task_id} not found")
        self.bus.publish([ev])
        self._changed()
        return out

    async def delete(self, message_task_id: str, actor: Principal) -> None:
        await self.get(message_task_id, actor)
        ev = Event("message_task.deleted", "message_task", message_task_id, actor.actor, {})
        if not await self.store.delete(message_task_id, ev):
            raise errors.MessageTaskNotFound(f"message task {message_task_id} not found")
        self.bus.publish([ev])

    # --- firing -----------------------------------------------------------------------

    async def _submit(
        self, row: Row, since: float, until: float, key: str, due: float | None
    ) -> Row:
        payload = {
            "message_task_id": row["id"],
            "since": since,
            "until": until,
            "due_at": due,
        }
        return await self.executor.submit(
            KIND,
            payload,
            owner=owner_principal(row["owner_id"]),
            max_attempts=self.max_attempts,
            idempotency_key=key,
        )

    async def run_now(self, message_task_id: str, actor: Principal) -> tuple[Row, Row]:
        """Collect and deliver now (also when disabled); the cron's due times stay."""
        row = await self.get(message_task_id, actor)
        now = time.time()
        since = float(row["last_run_at"] if row["last_run_at"] is not None else row["created_at"])
        until = max(now, since)
        task_key = f"message_task:{row['id']}:manual:{uuid.uuid4().hex}"
        ev = Event(
            "message_task.fired",
            "message_task",
            row["id"],
            actor.actor,
            {"manual": True, "since": since, "until": until},
            now,
        )
        # Claim the window first (the cursor moves only if nobody moved it meanwhile).
        values = {"last_run_at": until, "updated_at": now}
        claimed = await self.store.claims.record_run(
            row["id"], values, [ev], expect={"last_run_at": row["last_run_at"]}
        )
        if not claimed:
            raise errors.Conflict(f"message task {message_task_id} is starting a run: try again")
        task = await self._submit(row, since, until, task_key, None)
        await self.store.claims.record_run(row["id"], {"last_task_id": task["id"]}, [], count=False)
        self.bus.publish([ev])
        return await self.get(message_task_id), task

    async def fire(self, row: Row, now: float) -> bool:
        due = float(row["next_run_at"])
        try:
            nxt = next_fire_at(
                make_trigger(
                    cron=row["cron_exp"], interval_s=None, timezone=row["timezone"], anchor_at=now
                ),
                max(now, due),
            )
        except errors.InvalidSchedule:
            log.exception("message task %s has an invalid cron; skipped", row["id"])
            return False
        since = float(row["last_run_at"] if row["last_run_at"] is not None else row["created_at"])
        task = await self._submit(
            row, since, max(now, since), f"message_task:{row['id']}:{due!r}", due
        )
        # A repeat of the key returns the task first submitted: its window is the truth.
        until = float(task["payload"]["until"])
        ev = Event(
            "message_task.fired",
            "message_task",
            row["id"],
            "system",
            {
                "task_id": task["id"],
                "due_at": due,
                "next_run_at": nxt,
                "since": since,
                "until": until,
            },
            now,
        )
        values = {
            "next_run_at": nxt,
            "last_run_at": until,
            "last_due_at": due,
            "last_task_id": task["id"],
            "updated_at": now,
        }
        if not await self.store.claims.claim(row["id"], due, values, [ev]):
            return False
        self.bus.publish([ev])
        return True

    async def fire_due(self, now: float) -> int:
        fired = 0
        for row in await self.store.claims.due(now, DUE_BATCH):
            try:
                fired += await self.fire(row, now)
            except errors.ZhongshuError:
                log.exception("message task %s could not fire", row["id"])
        return fired

    async def next_due(self) -> float | None:
        return await self.store.claims.next_due()

    # --- delivery (an executor handler) ------------------------------------------------

    async def deliver(self, ctx: TaskContext) -> dict[str, Any]:
        """Collect the window's new articles per feed, render and POST each; raise to retry."""
        p = ctx.payload
        mt = await self.store.get(p["message_task_id"])
        if mt is None:
            raise PermanentFailure(f"message task {p['message_task_id']} no longer exists")
        tz = _tz(mt["timezone"])
        ids = list(mt["mps_id"])
        feeds = {s["id"]: s for s in await self.store.sources(ids)}
        articles = await self.store.new_articles(ids, float(p["since"]), float(p["until"]))
        per_feed: dict[str, list[Row]] = {}
        for a in articles:
            per_feed.setdefault(a["source_id"], []).append(a)
        if not per_feed:
            return {"articles": 0, "posts": 0}
        done = await self.store.delivered_parts(ctx.task["id"])
        headers = self.secrets.open_json(mt["headers"]) if mt["headers"] else {}
        cookies = self.secrets.open_json(mt["cookies"]) if mt["cookies"] else None
        send_headers = dict(headers)
        if isinstance(cookies, dict):
            send_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        elif isinstance(cookies, str):
            send_headers["Cookie"] = cookies
        now = time.time()
        records: list[Row] = []
        failures: list[str] = []
        permanent = False
        async with httpx.AsyncClient(timeout=self.timeout_s, trust_env=False) as client:
            for source_id in [i for i in ids if i in per_feed]:
                if source_id in done:
                    continue
                feed = feeds.get(source_id, {"id": source_id, "name": ""})
                arts = per_feed[source_id]
                try:
                    # Templates may change their own lists, as they always could (mutable).
                    text = await self.templates.render(
                        mt["message_template"],
                        render_context(mt, feed, arts, tz, now),
                        mutable=True,
                    )
                except TemplateFailed as exc:
                    raise PermanentFailure(f"message_template: {exc}") from exc
                title = f"{feed.get('name') or source_id}: {len(arts)} new"
                body, ctype = request_body(mt["message_type"], mt["web_hook_url"], title, text)
                rec, failure, fatal = await self._post(
                    client, mt, body, {**send_headers, "Content-Type": ctype}
                )
                rec.update(
                    message_task_id=mt["id"],
                    task_id=ctx.task["id"],
                    attempt=ctx.attempt,
                    part=source_id,
                    articles=len(arts),
                )
                records.append(rec)
                if failure:
                    failures.append(f"{source_id}: {failure}")
                    permanent = permanent or fatal
        last = permanent or ctx.is_last_attempt
        evs: list[Event] = []
        data = {
            "task_id": ctx.task["id"],
            "attempt": ctx.attempt,
            "articles": len(articles),
            "posts": len(records),
        }
        if not failures:
            evs.append(Event("message_task.delivered", "message_task", mt["id"], "system", data))
        elif last:
            evs.append(
                Event(
                    "message_task.failed",
                    "message_task",
                    mt["id"],
                    "system",
                    {**data, "error": "; ".join(failures)[:1000]},
                )
            )
        await self.store.record_deliveries(records, evs)
        self.bus.publish(evs)
        if failures:
            msg = "webhook delivery failed: " + "; ".join(failures)[:1000]
            if permanent:
                raise PermanentFailure(msg)
            raise RuntimeError(msg)
        return {"articles": len(articles), "posts": len(records)}

    async def _post(
        self, client: httpx.AsyncClient, mt: Row, body: bytes, headers: dict[str, str]
    ) -> tuple[Row, str | None, bool]:
        started = time.perf_counter()
        rec: Row = {"at": time.time(), "status_code": None, "ok": False, "error": None}
        failure: str | None = None
        fatal = False
        try:
            r = await client.post(mt["web_hook_url"], content=body, headers=headers)
            rec["status_code"] = r.status_code
            if 200 <= r.status_code < 300:
                rec["ok"] = True
            else:
                failure = f"HTTP {r.status_code}"
                fatal = r.status_code in _PERMANENT_STATUSES
        except httpx.HTTPError as exc:
            failure = f"{type(exc).__name__}: {exc}"[:500] or type(exc).__name__
        rec["error"] = failure
        rec["duration_ms"] = (time.perf_counter() - started) * 1000
        return rec, failure, fatal


def parse_mps_id(value: Any) -> list[str]:
    """WeRSS sends ``mps_id`` as a list of ids, a list of ``{"id": …}`` objects, or a JSON
    string of either; all become a list of ids (order kept, duplicates dropped)."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except ValueError:
            value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list):
        raise errors.InvalidInput("mps_id: a list of source ids")
    out: list[str] = []
    for v in value:
        if isinstance(v, dict):
            v = v.get("id")
        if not isinstance(v, str) or not v or len(v) > 64:
            raise errors.InvalidInput(f"mps_id: {v!r} is not a source id")
        if v not in out:
            out.append(v)
    return out
