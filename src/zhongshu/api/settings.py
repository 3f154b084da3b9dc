"""Runtime settings: see what the hub runs with, change the few live knobs (step-up)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from zhongshu.api.deps import AdminDep, HubDep

router = APIRouter(prefix="/api/v1/settings", tags=["settings"])


@router.get("")
async def get_settings(hub: HubDep, p: AdminDep) -> dict[str, Any]:
    """The effective configuration (secrets shown as ***) and the live-changeable knobs."""
    return await hub.runtime.view()


@router.patch("")
async def change_settings(
    hub: HubDep, p: AdminDep, changes: dict[str, Any] = Body(..., examples=[{"log_level": "DEBUG"}])
) -> dict[str, Any]:
    """Change live settings, all or nothing; needs ``X-Confirm-Token``."""
    return await hub.runtime.update(changes, p)
