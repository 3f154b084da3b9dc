"""AI providers: OpenAI-compatible chat-completions endpoints, configured per user.

A provider is a base URL, a model, a key (sealed at rest) and a prompt template rendered
with the message (``title``, ``content``, ``url``, ``page`` — the fetched text). None
exists by default: a message asks for AI only when its owner configured a provider.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import jinja2

from zhongshu import errors
from zhongshu.db.channel_store import ChannelStore, Row
from zhongshu.services.identity import Principal
from zhongshu.services.secrets import SecretBox, mask
from zhongshu.services.templates import TemplateFailed, TemplateRenderer, check_syntax

DEFAULT_PROMPT = (
    "Summarise the following message in a few short sentences, in the language it is "
    "written in.\n\nTitle: {{ title }}\nURL: {{ url }}\n\n{{ content }}\n\n{{ page }}"
)
# Keep prompts within what small models accept; the page is cut first.
MAX_PAGE_CHARS = 12_000


@dataclass(slots=True)
class ProviderSpec:
    name: str
    base_url: str
    model: str
    api_key: str | None = None
    prompt_template: str = DEFAULT_PROMPT
    is_default: bool = False


def provider_public(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "owner_id": row["owner_id"],
        "name": row["name"],
        "base_url": row["base_url"],
        "model": row["model"],
        "api_key": row["api_key_hint"],
        "prompt_template": row["prompt_template"],
        "is_default": row["is_default"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _check(spec: ProviderSpec) -> None:
    try:
        parts = urlsplit(spec.base_url)
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise errors.InvalidInput(
            "base_url: must be an http(s) URL, e.g. https://api.openai.com/v1"
        )
    try:
        check_syntax(spec.prompt_template)
    except jinja2.TemplateSyntaxError as exc:
        raise errors.InvalidInput(f"prompt_template: template error: {exc.message}") from exc


class AiService:
    def __init__(
        self,
        store: ChannelStore,
        secrets: SecretBox,
        templates: TemplateRenderer,
        *,
        timeout_s: float,
    ) -> None:
        self.store = store
        self.secrets = secrets
        self.templates = templates
        self.timeout_s = timeout_s

    # --- CRUD ----------------------------------------------------------------------------

    def _values(self, spec: ProviderSpec) -> Row:
        _check(spec)
        return {
            "name": spec.name,
            "base_url": spec.base_url.rstrip("/"),
            "model": spec.model,
            "api_key": self.secrets.seal(spec.api_key) if spec.api_key else None,
            "api_key_hint": mask(spec.api_key) if spec.api_key else "",
            "prompt_template": spec.prompt_template,
            "is_default": spec.is_default,
        }

    async def create(self, owner: Principal, spec: ProviderSpec) -> Row:
        now = time.time()
        values = {
            **self._values(spec),
            "id": uuid.uuid4().hex,
            "owner_id": owner.id,
            "created_at": now,
            "updated_at": now,
        }
        return await self.store.insert_provider(values)

    async def get(self, provider_id: str, viewer: Principal | None = None) -> Row:
        row = await self.store.provider(provider_id)
        if row is None or (viewer is not None and not viewer.may_see(row["owner_id"])):
            raise errors.AiProviderNotFound(f"AI provider {provider_id} not found")
        return row

    async def find(self, viewer: Principal) -> list[Row]:
        return await self.store.providers(viewer.owner_filter)

    async def update(self, provider_id: str, viewer: Principal, changes: dict[str, Any]) -> Row:
        row = await self.get(provider_id, viewer)
        spec = ProviderSpec(
            name=row["name"],
            base_url=row["base_url"],
            model=row["model"],
            api_key=self.secrets.open(row["api_key"]) if row["api_key"] else None,
            prompt_template=row["prompt_template"],
            is_default=row["is_default"],
        )
        for key, value in changes.items():
            setattr(spec, key, value)
        values = {**self._values(spec), "updated_at": time.time()}
        updated = await self.store.update_provider(provider_id, row["owner_id"], values)
        if updated is None:
            raise errors.AiProviderNotFound(f"AI provider {provider_id} not found")
        return updated

    async def delete(self, provider_id: str, viewer: Principal) -> None:
        await self.get(provider_id, viewer)
        await self.store.delete_provider(provider_id)

    async def default_for(self, owner_id: str) -> Row | None:
        return await self.store.default_provider(owner_id)

    # --- calling -------------------------------------------------------------------------

    async def complete(self, provider: Row, message: Row, page: str) -> str:
        """Run the provider's prompt over the message; returns the model's answer.

        Raises ``errors.AiCallFailed`` (``retryable`` False for a refusal that a retry
        cannot fix: a 4xx other than 408/429, a malformed answer).
        """
        context = {
            "title": message["title"],
            "content": message["content"],
            "url": message["url"],
            "page": page[:MAX_PAGE_CHARS],
        }
        try:
            prompt = await self.templates.render(provider["prompt_template"], context)
        except TemplateFailed as exc:
            raise errors.AiCallFailed(f"prompt_template: {exc}", retryable=False) from exc
        headers = {"content-type": "application/json"}
        if provider["api_key"]:
            headers["authorization"] = f"Bearer {self.secrets.open(provider['api_key'])}"
        body = {"model": provider["model"], "messages": [{"role": "user", "content": prompt}]}
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, trust_env=False) as client:
                r = await client.post(
                    f"{provider['base_url']}/chat/completions", json=body, headers=headers
                )
        except httpx.HTTPError as exc:
            raise errors.AiCallFailed(f"{type(exc).__name__}: {exc}"[:1000]) from exc
        if r.status_code >= 400:
            retryable = r.status_code >= 500 or r.status_code in (408, 429)
            raise errors.AiCallFailed(f"HTTP {r.status_code}: {r.text[:300]}", retryable=retryable)
        try:
            answer = r.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise errors.AiCallFailed(
                "the provider's answer has no choices[0].message.content", retryable=False
            ) from exc
        if not isinstance(answer, str):
            raise errors.AiCallFailed("the provider's answer is not text", retryable=False)
        return answer.strip()
