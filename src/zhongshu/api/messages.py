"""Messages: the native API, MessagePusher's surface (``/api/v1/push``,
``/api/v1/message/{id}``, ``/api/v1/token``), push-token settings and ``/view/{token}``.

MessagePusher answers ``{code, message, data}``: ``code`` 0 on success, else one of the
codes in docs/messages.md (carried by the domain errors as ``push_code``), with the
HTTP status of the error.
"""

from __future__ import annotations

import json
from typing import Any, Literal
from urllib.parse import parse_qsl

import jinja2
from fastapi import APIRouter, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from zhongshu import errors
from zhongshu.api.deps import HubDep, UserDep, WriterDep, client_ip
from zhongshu.api.shapes import iso
from zhongshu.api.validation import SafeStr
from zhongshu.hub import Hub
from zhongshu.services.messages import MessageDraft, message_public

router = APIRouter(tags=["messages"])
V1 = "/api/v1"
MessageStatus = Literal["pending", "processing", "sent", "partially_sent", "failed"]
CODE_BAD_PARAMETER = 1001
CODE_BAD_TOKEN = 1002


def parse_channels(value: Any) -> list[int]:
    """MessagePusher's ``"1|2|3"`` (or a list of ids) → channel ids."""
    if value is None or value == "":
        return []
    items = value.replace(",", "|").split("|") if isinstance(value, str) else value
    if not isinstance(items, list):
        raise errors.MessageChannelsInvalid('channels: give ids as "1|2|3" or a list')
    out = []
    for item in items:
        text = str(item).strip()
        if isinstance(item, bool) or not text.isdigit() or len(text) > 18:
            raise errors.MessageChannelsInvalid(f"channels: {text[:20]!r} is not a channel id")
        out.append(int(text))
    return out


def _shape(hub: Hub, row: dict[str, Any], deliveries: list[dict[str, Any]]) -> dict[str, Any]:
    out = message_public(row, deliveries, hub.messages.view_url(row))
    for key in ("created_at", "updated_at", "finished_at"):
        out[key] = iso(out[key])
    for c in out["channels"]:
        c["sent_at"] = iso(c["sent_at"])
    return out


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: SafeStr = Field("", max_length=1024)
    content: SafeStr = ""
    url: SafeStr = Field("", max_length=4096)
    channels: list[int] | SafeStr = Field(
        default_factory=list, description='channel ids: a list, or "1|2|3"'
    )
    ai: bool | None = Field(None, description="run the AI stage (default: the token's default)")

    def draft(self, origin: str) -> MessageDraft:
        return MessageDraft(
            title=self.title,
            content=self.content,
            url=self.url,
            channel_ids=parse_channels(self.channels),
            ai=self.ai,
            origin=origin,
        )


class PushBody(MessageCreate):
    """MessagePusher's push body: the native fields plus the user's push token."""

    model_config = ConfigDict(extra="ignore")
    token: SafeStr = Field(min_length=1, max_length=128)

    @field_validator("ai", mode="before")
    @classmethod
    def _loose_bool(cls, value: Any) -> Any:
        # Form posts and query strings send "1"/"0"/"true"/"false".
        if isinstance(value, str):
            return value.strip().lower() in ("1", "true", "yes", "on")
        return value


def push_reply(
    code: int, message: str, data: Any = None, status_code: int = 200, headers: Any = None
) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, "data": data}, status_code, headers=headers
    )


def push_error(exc: errors.ZhongshuError) -> JSONResponse:
    default = CODE_BAD_TOKEN if isinstance(exc, errors.AuthenticationFailed) else 1001
    headers = None
    if isinstance(exc, errors.TooManyRequests):
        headers = {"Retry-After": str(max(1, int(exc.retry_after_s + 0.999)))}
    code = getattr(exc, "push_code", default)
    return push_reply(code, exc.message, None, exc.status_code, headers)


async def _push_fields(request: Request) -> dict[str, Any]:
    """The push request's fields: a JSON body, a form, or the query string."""
    fields: dict[str, Any] = dict(request.query_params)
    ctype = request.headers.get("content-type", "")
    raw = await request.body()
    if not raw:
        return fields
    if "x-www-form-urlencoded" in ctype:
        fields.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
        return fields
    if "multipart/" in ctype:
        try:
            form = await request.form()
        except Exception as exc:  # python-multipart's parse errors have no common base
            raise errors.MessageInvalid(f"malformed multipart form: {exc}") from exc
        fields.update({k: v for k, v in form.items() if isinstance(v, str)})
        return fields
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.MessageInvalid(f"malformed JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise errors.MessageInvalid("the body must be a JSON object")
    fields.update(body)
    return fields


# --- MessagePusher ---------------------------------------------------------------------


@router.post(f"{V1}/push")
async def push(request: Request, hub: HubDep) -> JSONResponse:
    """MessagePusher push: token + title/content/url + channels "1|2|3" + ai."""
    try:
        fields = await _push_fields(request)
        if not fields.get("token"):
            raise errors.MessageInvalid("token: required (get yours from GET /api/v1/token)")
        try:
            body = PushBody.model_validate(fields)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise errors.MessageInvalid(f"{where}: {first['msg']}") from exc
        owner = await hub.messages.principal_for_token(body.token, client_ip(request))
        row, deliveries = await hub.messages.create(owner, body.draft("push"))
    except errors.ZhongshuError as exc:
        return push_error(exc)
    data = {
        "message_id": row["id"],
        "channels": [d["channel_id"] for d in deliveries],
        "ai": row["ai"],
        "view_url": hub.messages.view_url(row),
    }
    return push_reply(0, "success", data)


@router.get(f"{V1}/message/{{message_id}}")
async def get_message_compat(message_id: str, hub: HubDep, p: UserDep) -> JSONResponse:
    """MessagePusher: one message with per-channel status, errors and the AI result."""
    try:
        row = await hub.messages.get(message_id, p)
    except errors.MessageNotFound as exc:
        return push_error(exc)
    return push_reply(0, "success", _shape(hub, row, await hub.messages.deliveries(row["id"])))


@router.get(f"{V1}/token")
async def get_token(
    request: Request,
    hub: HubDep,
    username: str | None = Query(None, max_length=64),
    password: str | None = Query(None, max_length=256),
) -> JSONResponse:
    """MessagePusher: username + password → the push token, default channels and AI."""
    if not username or not password:
        return push_reply(CODE_BAD_PARAMETER, "username and password are required", None, 400)
    try:
        token = await hub.messages.token_by_password(username, password, client_ip(request))
    except errors.ZhongshuError as exc:
        return push_error(exc)
    return push_reply(
        0, "success", {"token": token["token"], "channels": token["channels"], "ai": token["ai"]}
    )


# --- native ----------------------------------------------------------------------------


@router.post(f"{V1}/messages", status_code=status.HTTP_201_CREATED)
async def create_message(body: MessageCreate, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Submit a message: it is fetched, run through AI and sent to its channels."""
    row, deliveries = await hub.messages.create(p, body.draft("api"))
    return _shape(hub, row, deliveries)


@router.get(f"{V1}/messages")
async def list_messages(
    hub: HubDep,
    p: UserDep,
    status_: MessageStatus | None = Query(None, alias="status"),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> dict[str, Any]:
    """List messages, newest first (yours; admins see all)."""
    rows, total = await hub.messages.find(p, status=status_, limit=limit, offset=offset)
    deliveries = await hub.messages.deliveries_of([r["id"] for r in rows])
    items = [_shape(hub, r, deliveries[r["id"]]) for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


@router.get(f"{V1}/messages/{{message_id}}")
async def get_message(message_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """One message with every stage's status."""
    row = await hub.messages.get(message_id, p)
    return _shape(hub, row, await hub.messages.deliveries(row["id"]))


class PushTokenUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    channels: list[int] | SafeStr | None = None
    ai: bool | None = None


@router.get(f"{V1}/push-token")
async def get_push_token(hub: HubDep, p: UserDep) -> dict[str, Any]:
    """Your push token (made on first use) and its defaults."""
    return _token_shape(await hub.messages.push_token(p.id))


@router.put(f"{V1}/push-token")
async def set_push_token(body: PushTokenUpdate, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Set the channels and AI choice a push without them uses."""
    channels = parse_channels(body.channels) if body.channels is not None else None
    return _token_shape(await hub.messages.set_token_defaults(p, channels, body.ai))


@router.post(f"{V1}/push-token/rotate")
async def rotate_push_token(hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Replace your push token; the old one stops working at once."""
    return _token_shape(await hub.messages.rotate_token(p))


def _token_shape(token: dict[str, Any]) -> dict[str, Any]:
    return {**token, "created_at": iso(token["created_at"]), "updated_at": iso(token["updated_at"])}


# --- the view page ---------------------------------------------------------------------

_html = jinja2.Environment(autoescape=True).from_string(
    """<!doctype html>
<html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>{{ title }}</title>
<style>body{font:16px/1.6 system-ui,sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}
pre{white-space:pre-wrap;word-wrap:break-word;font:inherit}
.meta{color:#666;font-size:.9em}section{border-top:1px solid #ddd;margin-top:1.5rem}</style>
</head><body>
<h1>{{ title }}</h1>
<p class="meta">{{ created }}{% if url %} ·
<a href="{{ url }}" rel="noreferrer noopener">{{ url }}</a>{% endif %}</p>
{% if content %}<pre>{{ content }}</pre>{% endif %}
{% if ai_result %}<section><h2>AI</h2><pre>{{ ai_result }}</pre></section>{% endif %}
{% if page %}<section><h2>{{ page_title or "Page" }}</h2><pre>{{ page }}</pre></section>{% endif %}
</body></html>
"""
)
_VIEW_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "Cache-Control": "private, no-store",
}


@router.get("/view/{view_token}", response_class=HTMLResponse)
async def view_message(view_token: str, hub: HubDep) -> HTMLResponse:
    """The full message (and its fetched page) for whoever holds the link."""
    try:
        row, page = await hub.messages.view(view_token)
    except errors.MessageNotFound:
        return HTMLResponse(
            "<!doctype html><title>Not found</title><p>No message behind this link.</p>",
            404,
            headers=_VIEW_HEADERS,
        )
    html = _html.render(
        title=row["title"] or row["fetch_title"] or row["url"] or "Message",
        created=iso(row["created_at"]),
        url=row["url"],
        content=row["content"],
        ai_result=row["ai_result"],
        page=page,
        page_title=row["fetch_title"],
    )
    return HTMLResponse(html, headers=_VIEW_HEADERS)
