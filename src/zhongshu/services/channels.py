"""Push channels: where a user's messages go.

Two kinds. ``apprise``: an Apprise URL (DingTalk, Lark, WeCom, ServerChan, PushPlus, Bark,
Telegram, e-mail, ntfy, JSON/form webhooks …) — Apprise does the talking, we write none of
it by hand, and a URL Apprise cannot parse is refused when the channel is saved. ``http``:
a request we build ourselves from a template (method, URL, headers, body rendered with a
sandboxed Jinja2 environment) for services Apprise does not cover.

Secrets (the Apprise URL, the HTTP URL and headers, the proxy) are sealed with the
``SecretBox``; responses show the masked ``display`` copy made when the channel is saved.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib.util
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

import apprise
import httpx
import jinja2
import requests

from zhongshu import errors
from zhongshu.db.channel_store import ChannelStore, Row
from zhongshu.services.identity import Principal
from zhongshu.services.secrets import SecretBox, mask
from zhongshu.services.templates import TemplateFailed, TemplateRenderer, check_syntax

log = logging.getLogger("zhongshu.channels")

KINDS = ("apprise", "http")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH")
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
MIN_MAX_LENGTH = 40
DEFAULT_BODY_TEMPLATE = (
    '{"title": {{ title|tojson }}, "content": {{ content|tojson }}, '
    '"url": {{ url|tojson }}, "view_url": {{ view_url|tojson }}, '
    '"timestamp": {{ timestamp }}}'
)


@dataclass(slots=True)
class ChannelSpec:
    """A channel as the user describes it (already shape-checked by the API layer)."""

    name: str
    kind: str
    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    body_template: str | None = None
    content_type: str = "application/json"
    proxy: str | None = None
    max_length: int | None = None
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message as a channel sends it."""

    title: str
    body: str
    url: str = ""
    view_url: str = ""


@dataclass(frozen=True, slots=True)
class SendReport:
    truncated: bool
    status_code: int | None = None


def truncate(body: str, max_length: int | None, view_url: str) -> tuple[str, bool]:
    """Cut ``body`` to ``max_length`` characters, ending with a link to the full message."""
    if not max_length or len(body) <= max_length:
        return body, False
    suffix = f"…\n{view_url}" if view_url else "…"
    keep = max(0, max_length - len(suffix))
    return body[:keep] + suffix, True


# --- proxies for Apprise ---------------------------------------------------------------
# Apprise talks through ``requests`` and has no per-URL proxy setting; requests only reads
# process-wide environment proxies. A context variable carries one send's proxy into the
# thread that runs it (asyncio.to_thread copies the context), and this hook, installed once,
# applies it. Sends without a proxy are untouched.
_apprise_proxy: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "zhongshu_apprise_proxy", default=None
)
_hook_lock = threading.Lock()
_hook_installed = False


def _install_requests_proxy_hook() -> None:
    global _hook_installed
    with _hook_lock:
        if _hook_installed:
            return
        original = requests.Session.merge_environment_settings

        def merge(self: requests.Session, url: Any, proxies: Any, *args: Any) -> Any:
            settings = original(self, url, proxies, *args)
            proxy = _apprise_proxy.get()
            if proxy:
                settings["proxies"] = {"http": proxy, "https": proxy}
            return settings

        requests.Session.merge_environment_settings = merge  # type: ignore[method-assign,assignment]
        _hook_installed = True


class _ThreadLogs(logging.Handler):
    """Apprise reports why a send failed only in its log: keep this thread's records."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.thread = threading.get_ident()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(record.getMessage())


@contextlib.contextmanager
def _captured_apprise_logs() -> Iterator[_ThreadLogs]:
    handler = _ThreadLogs()
    logger = logging.getLogger("apprise")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def _apprise_send(url: str, out: Outgoing, proxy: str | None) -> None:
    """Blocking: one Apprise notification, in the calling thread (run it in a thread)."""
    ap = apprise.Apprise(asset=apprise.AppriseAsset(async_mode=False))
    if not ap.add(url):
        raise errors.DeliveryFailed("the stored Apprise URL is not valid", retryable=False)
    token = _apprise_proxy.set(proxy)
    try:
        with _captured_apprise_logs() as logs:
            ok = ap.notify(
                title=out.title, body=out.body or out.title, body_format=apprise.NotifyFormat.TEXT
            )
    finally:
        _apprise_proxy.reset(token)
    if not ok:
        detail = "; ".join(dict.fromkeys(logs.lines)) or "Apprise reported a failure"
        raise errors.DeliveryFailed(detail[:1000])


# --- validation ------------------------------------------------------------------------


def _check_template(text: str, field_name: str) -> None:
    try:
        check_syntax(text)
    except jinja2.TemplateSyntaxError as exc:
        raise errors.InvalidChannel(f"{field_name}: template error: {exc.message}") from exc


def _split(url: str, field_name: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError as exc:
        raise errors.InvalidChannel(f"{field_name}: not a valid URL ({exc})") from exc


def _check_http_url(url: str, field_name: str) -> None:
    parts = _split(url, field_name)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.InvalidChannel(f"{field_name}: must be an http(s) URL with a host")


def check_proxy(proxy: str, kind: str) -> None:
    parts = _split(proxy, "proxy")
    if parts.scheme not in PROXY_SCHEMES or not parts.hostname:
        raise errors.InvalidChannel(
            "proxy: must look like http://host:port or socks5://user:pass@host:port"
        )
    try:
        parts.port  # noqa: B018 — raises ValueError for a port out of range
    except ValueError as exc:
        raise errors.InvalidChannel(f"proxy: {exc}") from exc
    if parts.scheme.startswith("socks"):
        module, extra = ("socks", "PySocks") if kind == "apprise" else ("socksio", "httpx[socks]")
        if importlib.util.find_spec(module) is None:
            raise errors.InvalidChannel(
                f"proxy: SOCKS proxies need the {extra!r} package on the hub "
                f"(pip install '{extra}'), or use an HTTP proxy"
            )


def _masked_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a templated URL may not parse before rendering
        return "****"
    hidden = "/****" if (parts.path.strip("/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


def _masked_proxy(proxy: str | None) -> str | None:
    if not proxy:
        return None
    parts = urlsplit(proxy)
    auth = "****@" if parts.username or parts.password else ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{auth}{parts.hostname}{port}"


def describe(spec: ChannelSpec) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Validate a spec; returns (secret, display, options)."""
    if spec.kind not in KINDS:
        raise errors.InvalidChannel(f"kind: must be one of {', '.join(KINDS)}")
    if spec.max_length is not None and spec.max_length < MIN_MAX_LENGTH:
        raise errors.InvalidChannel(f"max_length: must be at least {MIN_MAX_LENGTH}")
    if spec.proxy:
        check_proxy(spec.proxy, spec.kind)
    if spec.kind == "apprise":
        instance = apprise.Apprise.instantiate(spec.url)
        if instance is None:
            raise errors.InvalidChannel(
                "url: not a valid Apprise URL (see https://github.com/caronc/apprise/wiki "
                "for each service's URL format, e.g. json://host:port/path or "
                "dingtalk://token/)"
            )
        display = {"url": instance.url(privacy=True), "headers": {}}
        options = {
            "service": getattr(instance, "service_name", "") or _split(spec.url, "url").scheme
        }
        return {"url": spec.url}, display, options
    method = spec.method.upper()
    if method not in HTTP_METHODS:
        raise errors.InvalidChannel(f"method: must be one of {', '.join(HTTP_METHODS)}")
    _check_template(spec.url, "url")
    if "{{" not in spec.url and "{%" not in spec.url:
        _check_http_url(spec.url, "url")
    for name, value in spec.headers.items():
        if not name or any(c in name for c in " :\r\n") or any(c in value for c in "\r\n"):
            raise errors.InvalidChannel(f"headers: invalid header {name[:40]!r}")
    body_template = spec.body_template if spec.body_template is not None else DEFAULT_BODY_TEMPLATE
    _check_template(body_template, "body_template")
    display = {
        "url": _masked_url(spec.url),
        "headers": {k: mask(v) for k, v in spec.headers.items()},
    }
    options = {
        "method": method,
        "body_template": body_template,
        "content_type": spec.content_type,
    }
    return {"url": spec.url, "headers": spec.headers}, display, options


def render_context(out: Outgoing) -> dict[str, Any]:
    """What a templated channel's URL and body see."""
    return {
        "title": out.title,
        "content": out.body,
        "url": out.url,
        "view_url": out.view_url,
        "timestamp": int(time.time()),
        "random": uuid.uuid4().hex,
    }


def channel_public(row: Row) -> dict[str, Any]:
    display = row["display"] or {}
    options = row["options"] or {}
    return {
        "id": row["id"],
        "owner_id": row["owner_id"],
        "name": row["name"],
        "kind": row["kind"],
        "url": display.get("url", ""),
        "headers": display.get("headers", {}),
        "method": options.get("method"),
        "body_template": options.get("body_template"),
        "content_type": options.get("content_type"),
        "service": options.get("service"),
        "proxy": display.get("proxy"),
        "max_length": row["max_length"],
        "enabled": row["enabled"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


class ChannelService:
    def __init__(
        self,
        store: ChannelStore,
        secrets: SecretBox,
        templates: TemplateRenderer,
        *,
        send_timeout_s: float,
    ) -> None:
        self.store = store
        self.secrets = secrets
        self.templates = templates
        self.send_timeout_s = send_timeout_s
        _install_requests_proxy_hook()

    # --- CRUD ----------------------------------------------------------------------------

    def _values(self, spec: ChannelSpec) -> Row:
        secret, display, options = describe(spec)
        display["proxy"] = _masked_proxy(spec.proxy)
        return {
            "name": spec.name,
            "kind": spec.kind,
            "secret": self.secrets.seal_json(secret),
            "display": display,
            "options": options,
            "proxy": self.secrets.seal(spec.proxy) if spec.proxy else None,
            "max_length": spec.max_length,
            "enabled": spec.enabled,
        }

    async def create(self, owner: Principal, spec: ChannelSpec) -> Row:
        now = time.time()
        values = self._values(spec)
        return await self.store.insert_channel(
            {**values, "owner_id": owner.id, "created_at": now, "updated_at": now}
        )

    async def get(self, channel_id: int, viewer: Principal | None = None) -> Row:
        row = await self.store.channel(channel_id)
        if row is None or (viewer is not None and not viewer.may_see(row["owner_id"])):
            raise errors.ChannelNotFound(f"channel {channel_id} not found")
        return row

    async def find(self, viewer: Principal, *, limit: int = 100, offset: int = 0) -> list[Row]:
        owner = viewer.owner_filter
        return await self.store.channels(owner, limit=limit, offset=offset)

    def spec_of(self, row: Row) -> ChannelSpec:
        """The stored channel, unsealed (for an update that changes some fields)."""
        secret = self.secrets.open_json(row["secret"])
        options = row["options"] or {}
        return ChannelSpec(
            name=row["name"],
            kind=row["kind"],
            url=secret["url"],
            method=options.get("method") or "POST",
            headers=dict(secret.get("headers") or {}),
            body_template=options.get("body_template"),
            content_type=options.get("content_type") or "application/json",
            proxy=self.secrets.open(row["proxy"]) if row["proxy"] else None,
            max_length=row["max_length"],
            enabled=row["enabled"],
        )

    async def update(self, channel_id: int, viewer: Principal, changes: dict[str, Any]) -> Row:
        row = await self.get(channel_id, viewer)
        spec = self.spec_of(row)
        for key, value in changes.items():
            setattr(spec, key, value)
        values = self._values(spec)
        updated = await self.store.update_channel(channel_id, {**values, "updated_at": time.time()})
        if updated is None:
            raise errors.ChannelNotFound(f"channel {channel_id} not found")
        return updated

    async def delete(self, channel_id: int, viewer: Principal) -> None:
        await self.get(channel_id, viewer)
        await self.store.delete_channel(channel_id)

    async def owned(self, owner_id: str, ids: Sequence[int]) -> list[Row]:
        """The owner's enabled channels with these ids, in the order given; refuses ids
        that are unknown, disabled or someone else's (naming them)."""
        wanted = list(dict.fromkeys(ids))
        rows = {r["id"]: r for r in await self.store.channels_by_ids(wanted)}
        bad = [i for i in wanted if i not in rows or rows[i]["owner_id"] != owner_id]
        if bad:
            raise errors.MessageChannelsInvalid(
                f"channels: unknown channel id(s) {', '.join(map(str, bad))}"
            )
        disabled = [i for i in wanted if not rows[i]["enabled"]]
        if disabled:
            raise errors.MessageChannelsInvalid(
                f"channels: channel(s) {', '.join(map(str, disabled))} are disabled"
            )
        return [rows[i] for i in wanted]

    # --- sending -------------------------------------------------------------------------

    async def send(self, row: Row, out: Outgoing) -> SendReport:
        """Deliver one message through one channel, cut to its max length.

        Raises ``errors.DeliveryFailed`` (``retryable`` False when trying again cannot help).
        """
        body, truncated = truncate(out.body, row["max_length"], out.view_url)
        out = Outgoing(out.title, body, out.url, out.view_url)
        secret = self.secrets.open_json(row["secret"])
        proxy = self.secrets.open(row["proxy"]) if row["proxy"] else None
        if row["kind"] == "apprise":
            try:
                async with asyncio.timeout(self.send_timeout_s):
                    await asyncio.to_thread(_apprise_send, secret["url"], out, proxy)
            except TimeoutError as exc:
                raise errors.DeliveryFailed(
                    f"no answer within {self.send_timeout_s} s (send_timeout_s)"
                ) from exc
            return SendReport(truncated)
        status = await self._send_http(row, secret, out, proxy)
        return SendReport(truncated, status)

    async def _render(self, template: str, context: dict[str, Any]) -> str:
        try:
            return await self.templates.render(template, context)
        except TemplateFailed as exc:  # the same template fails the same way: no retry
            raise errors.DeliveryFailed(str(exc), retryable=False) from exc

    async def _send_http(
        self, row: Row, secret: dict[str, Any], out: Outgoing, proxy: str | None
    ) -> int:
        options = row["options"] or {}
        context = render_context(out)
        url = await self._render(secret["url"], context)
        body = await self._render(options.get("body_template") or DEFAULT_BODY_TEMPLATE, context)
        headers = {"content-type": options.get("content_type") or "application/json"}
        headers.update(secret.get("headers") or {})
        method = options.get("method") or "POST"
        try:
            async with httpx.AsyncClient(
                proxy=proxy, timeout=self.send_timeout_s, trust_env=False
            ) as client:
                r = await client.request(
                    method,
                    url,
                    headers=headers,
                    content=body.encode() if method != "GET" else None,
                )
        except (httpx.HTTPError, ValueError) as exc:
            raise errors.DeliveryFailed(f"{type(exc).__name__}: {exc}"[:1000]) from exc
        if r.status_code >= 400:
            retryable = r.status_code >= 500 or r.status_code in (408, 425, 429)
            raise errors.DeliveryFailed(
                f"HTTP {r.status_code}: {r.text[:300]}", retryable=retryable
            )
        return r.status_code
