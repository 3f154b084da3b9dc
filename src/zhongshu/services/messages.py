"""Messages: accept, check, store and hand to the pipeline; push tokens; the view page.

One service behind three doors: the native ``POST /api/v1/messages``, MessagePusher's
``POST /api/v1/push`` (authenticated by the user's push token) and notification routing.
Everything a message needs is checked before it is stored — at least one of title, content
and url; sizes; an http(s) URL that is not this hub; channels that exist, are enabled and
are the sender's; an AI provider when AI is asked for — so bad input is refused at
submit, never discovered by the pipeline.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from zhongshu import errors
from zhongshu.db.message_store import MessageStore, Row
from zhongshu.services import pipeline as pipeline_mod
from zhongshu.services.ai import AiService
from zhongshu.services.channels import ChannelService
from zhongshu.services.events import Event, EventBus
from zhongshu.services.identity import IdentityService, Principal, hash_token, random_token
from zhongshu.services.ratelimit import FailureLimiter
from zhongshu.services.secrets import SecretBox

TOKEN_PREFIX = "PT"
MAX_URL_CHARS = 4096


@dataclass(slots=True)
class MessageDraft:
    """A message as submitted (already shape-checked by the API layer)."""

    title: str = ""
    content: str = ""
    url: str = ""
    channel_ids: list[int] = field(default_factory=list)
    ai: bool | None = None
    origin: str = "api"
    message_id: str | None = None


class MessageService:
    def __init__(
        self,
        store: MessageStore,
        channels: ChannelService,
        ai: AiService,
        pipeline: pipeline_mod.Pipeline,
        identity: IdentityService,
        limiter: FailureLimiter,
        secrets_box: SecretBox,
        bus: EventBus,
        *,
        max_content_chars: int,
    ) -> None:
        self.store = store
        self.channels = channels
        self.ai = ai
        self.pipeline = pipeline
        self.identity = identity
        self.limiter = limiter
        self.secrets = secrets_box
        self.bus = bus
        self.max_content_chars = max_content_chars

    @property
    def config(self) -> pipeline_mod.PipelineConfig:
        return self.pipeline.config

    # --- submit --------------------------------------------------------------------------

    async def create(self, owner: Principal, draft: MessageDraft) -> tuple[Row, list[Row]]:
        """Check, store and start a message; returns it and its deliveries."""
        title, content, url = draft.title.strip(), draft.content.strip(), draft.url.strip()
        if not (title or content or url):
            raise errors.MessageInvalid("give at least one of title, content and url")
        if len(title) + len(content) > self.max_content_chars:
            raise errors.MessageTooLarge(
                f"title and content are {len(title) + len(content)} characters, more than "
                f"{self.max_content_chars} (messages_max_content_chars)"
            )
        if url:
            if len(url) > MAX_URL_CHARS:
                raise errors.MessageUrlRefused(f"url: longer than {MAX_URL_CHARS} characters")
            problem = pipeline_mod.url_problem(url, self.config.hub_addresses)
            if problem:
                raise errors.MessageUrlRefused(problem)
        token = await self.store.token_of(owner.id)
        channel_ids = list(draft.channel_ids) or list((token or {}).get("default_channels") or [])
        if not channel_ids:
            raise errors.MessageChannelsInvalid(
                "channels: name at least one channel (or set default channels on your push "
                "token with PUT /api/v1/push-token)"
            )
        chans = await self.channels.owned(owner.id, channel_ids)
        want_ai = draft.ai if draft.ai is not None else bool(token and token["default_ai"])
        provider_id = None
        if want_ai:
            provider = await self.ai.default_for(owner.id)
            if provider is None:
                raise errors.AiUnavailable()
            provider_id = provider["id"]
        now = time.time()
        message_id = draft.message_id or uuid.uuid4().hex
        row = {
            "id": message_id,
            "owner_id": owner.id,
            "title": title,
            "content": content,
            "url": url,
            "ai": bool(want_ai),
            "ai_provider_id": provider_id,
            "status": "pending",
            "view_token": secrets.token_urlsafe(24),
            "origin": draft.origin,
            "priority": 0,
            "fetch_status": "pending" if url else "skipped",
            "ai_status": "pending" if want_ai else "skipped",
            "created_at": now,
            "updated_at": now,
        }
        deliveries = [
            {
                "message_id": message_id,
                "channel_id": c["id"],
                "channel_name": c["name"],
                "status": "pending",
                "attempts": 0,
                "updated_at": now,
            }
            for c in chans
        ]
        ev = Event(
            "message.created",
            "message",
            message_id,
            owner.actor,
            {"owner_id": owner.id, "origin": draft.origin, "channels": [c["id"] for c in chans]},
            now,
        )
        stored, created = await self.store.insert(row, deliveries, [ev])
        if created:
            self.bus.publish([ev])
            await self.pipeline.advance(stored)
        return stored, await self.store.deliveries(stored["id"])

    # --- read ----------------------------------------------------------------------------

    async def get(self, message_id: str, viewer: Principal | None = None) -> Row:
        row = await self.store.get(message_id)
        if row is None or (
            viewer is not None and not viewer.is_admin and row["owner_id"] != viewer.id
        ):
            raise errors.MessageNotFound(f"message {message_id} not found")
        return row

    async def deliveries(self, message_id: str) -> list[Row]:
        return await self.store.deliveries(message_id)

    async def deliveries_of(self, message_ids: Sequence[str]) -> dict[str, list[Row]]:
        return await self.store.deliveries_of(message_ids)

    async def find(
        self, viewer: Principal, *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[Row], int]:
        owner = viewer.owner_filter
        return await self.store.find(owner, status=status, limit=limit, offset=offset)

    def view_url(self, message: Row) -> str:
        return pipeline_mod.view_url(self.config.view_base_url, message["view_token"])

    async def view(self, view_token: str) -> tuple[Row, str]:
        """The message a view link names, and its fetched page text."""
        row = await self.store.by_view_token(view_token) if len(view_token) <= 64 else None
        if row is None:
            raise errors.MessageNotFound("no message behind this link")
        return row, pipeline_mod.read_page(self.config.data_dir, row)

    # --- push tokens ---------------------------------------------------------------------

    async def push_token(self, user_id: str) -> dict[str, Any]:
        """The user's push token (made on first use) with its defaults."""
        row = await self.store.token_of(user_id)
        if row is None:
            token = random_token(TOKEN_PREFIX)
            now = time.time()
            row = await self.store.ensure_token(
                {
                    "user_id": user_id,
                    "token_hash": hash_token(token),
                    "token": self.secrets.seal(token),
                    "default_channels": [],
                    "default_ai": False,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        return _token_public(row, self.secrets.open(row["token"]))

    async def token_by_password(self, username: str, password: str, ip: str) -> dict[str, Any]:
        """MessagePusher's ``GET /api/v1/token``: a password check, limited like logins."""
        subjects = [f"user:{username.lower()[:64]}", f"ip:{ip}"]
        self.limiter.check(subjects)
        try:
            user = await self.identity.authenticate(username, password)
        except errors.AuthenticationFailed:
            self.limiter.fail(subjects)
            raise
        self.limiter.succeed(subjects[:1])
        return await self.push_token(user["id"])

    async def set_token_defaults(
        self, me: Principal, channel_ids: Sequence[int] | None, default_ai: bool | None
    ) -> dict[str, Any]:
        await self.push_token(me.id)
        values: Row = {"updated_at": time.time()}
        if channel_ids is not None:
            await self.channels.owned(me.id, channel_ids)
            values["default_channels"] = list(dict.fromkeys(channel_ids))
        if default_ai is not None:
            if default_ai and await self.ai.default_for(me.id) is None:
                raise errors.AiUnavailable()
            values["default_ai"] = default_ai
        row = await self.store.update_token(me.id, values)
        assert row is not None
        return _token_public(row, self.secrets.open(row["token"]))

    async def rotate_token(self, me: Principal) -> dict[str, Any]:
        await self.push_token(me.id)
        token = random_token(TOKEN_PREFIX)
        row = await self.store.update_token(
            me.id,
            {
                "token_hash": hash_token(token),
                "token": self.secrets.seal(token),
                "updated_at": time.time(),
            },
        )
        assert row is not None
        return _token_public(row, token)

    async def principal_for_token(self, token: str, ip: str) -> Principal:
        """The user a push token belongs to (failures count against the caller's IP)."""
        subjects = [f"ip:{ip}"]
        self.limiter.check(subjects)
        row = await self.store.token_by_hash(hash_token(token)) if token else None
        user = None
        if row is not None:
            try:
                user = await self.identity.get_user(row["user_id"])
            except errors.NotFound:
                user = None
        if user is None or user["disabled"]:
            self.limiter.fail(subjects)
            raise errors.InvalidPushToken("invalid push token")
        return Principal("user", user["id"], user["role"], name=user["username"], via="push")

    async def reader_for_token(self, token: str, ip: str) -> Principal:
        """A push token as a read-only key to its owner's own messages: MessagePusher
        clients poll a message's status with the token they pushed it with. Even an
        admin's token reads only their own messages (it is a secret in scripts)."""
        p = await self.principal_for_token(token, ip)
        role = "user" if p.role == "admin" else p.role
        return replace(p, role=role, scopes=frozenset({"read"}), via="key")


def _token_public(row: Row, token: str) -> dict[str, Any]:
    return {
        "token": token,
        "channels": row["default_channels"],
        "ai": row["default_ai"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def message_public(row: Row, deliveries: Sequence[Row], view_url: str) -> dict[str, Any]:
    """A message with every stage's status, for GET /api/v1/message/{id} and friends."""
    return {
        "message_id": row["id"],
        "id": row["id"],
        "owner_id": row["owner_id"],
        "title": row["title"],
        "content": row["content"],
        "url": row["url"],
        "status": row["status"],
        "origin": row["origin"],
        "view_url": view_url,
        "fetch": {
            "status": row["fetch_status"],
            "title": row["fetch_title"],
            "chars": row["fetch_chars"],
            "error": row["fetch_error"],
        },
        "ai": {
            "enabled": row["ai"],
            "status": row["ai_status"],
            "provider_id": row["ai_provider_id"],
            "result": row["ai_result"],
            "error": row["ai_error"],
        },
        "channels": [
            {
                "channel_id": d["channel_id"],
                "name": d["channel_name"],
                "status": d["status"],
                "attempts": d["attempts"],
                "error": d["error"],
                "truncated": d["truncated"],
                "task_id": d["task_id"],
                "sent_at": d["sent_at"],
            }
            for d in deliveries
        ],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "finished_at": row["finished_at"],
    }
