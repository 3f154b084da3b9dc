"""AI providers (OpenAI-compatible chat completions): CRUD; the key comes back masked."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, ConfigDict, Field

from zhongshu import errors
from zhongshu.api.deps import HubDep, UserDep, WriterDep
from zhongshu.api.shapes import iso_times
from zhongshu.api.validation import SafeStr
from zhongshu.services.ai import DEFAULT_PROMPT, ProviderSpec, provider_public

router = APIRouter(prefix="/api/v1/ai-providers", tags=["ai-providers"])


def public(row: dict[str, Any]) -> dict[str, Any]:
    return iso_times(provider_public(row))


class ProviderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: SafeStr = Field(min_length=1, max_length=128)
    base_url: SafeStr = Field(
        min_length=1, max_length=2048, description="e.g. https://api.openai.com/v1"
    )
    model: SafeStr = Field(min_length=1, max_length=128)
    api_key: SafeStr | None = Field(None, max_length=1024)
    prompt_template: SafeStr = Field(DEFAULT_PROMPT, min_length=1, max_length=16_384)
    is_default: bool = False


class ProviderUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: SafeStr | None = Field(None, min_length=1, max_length=128)
    base_url: SafeStr | None = Field(None, min_length=1, max_length=2048)
    model: SafeStr | None = Field(None, min_length=1, max_length=128)
    api_key: SafeStr | None = Field(None, max_length=1024, description='"" removes the key')
    prompt_template: SafeStr | None = Field(None, min_length=1, max_length=16_384)
    is_default: bool | None = None


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_provider(body: ProviderCreate, hub: HubDep, p: WriterDep) -> dict[str, Any]:
    """Add an AI provider (the key is stored encrypted)."""
    return public(await hub.ai.create(p, ProviderSpec(**body.model_dump())))


@router.get("")
async def list_providers(hub: HubDep, p: UserDep) -> dict[str, Any]:
    """List AI providers (yours; admins see all)."""
    return {"items": [public(r) for r in await hub.ai.find(p)]}


@router.get("/{provider_id}")
async def get_provider(provider_id: str, hub: HubDep, p: UserDep) -> dict[str, Any]:
    """One AI provider, key masked."""
    return public(await hub.ai.get(provider_id, p))


@router.patch("/{provider_id}")
async def update_provider(
    provider_id: str, body: ProviderUpdate, hub: HubDep, p: WriterDep
) -> dict[str, Any]:
    """Change an AI provider; fields left out keep their value."""
    changes = body.model_dump(exclude_unset=True)
    if changes.get("api_key") == "":
        changes["api_key"] = None
    if any(v is None for k, v in changes.items() if k != "api_key"):
        raise errors.InvalidInput('only api_key may be cleared (with "")')
    return public(await hub.ai.update(provider_id, p, changes))


@router.delete("/{provider_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_provider(provider_id: str, hub: HubDep, p: WriterDep) -> None:
    """Delete an AI provider."""
    await hub.ai.delete(provider_id, p)
