"""Worker lifecycle: start, stop and restart the local worker processes of the configured
profiles (``worker_profiles``), and watch them. Admins only.

The path parameter is the profile name; ``/api/v1/workers`` and
``/api/v1/workers/{worker_id}`` (the HisCRM node list) belong to the sources area.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from zhongshu.api.deps import AdminDep, HubDep
from zhongshu.api.shapes import iso_times

router = APIRouter(prefix="/api/v1/workers/{profile}/lifecycle", tags=["worker lifecycle"])


def lifecycle_public(s: dict[str, Any]) -> dict[str, Any]:
    return iso_times(s, ("started_at",))


@router.get("")
async def worker_lifecycle(profile: str, hub: HubDep, p: AdminDep) -> dict[str, Any]:
    """The profile's worker process: status, pid, uptime and restarts."""
    return lifecycle_public(await hub.lifecycle.status(profile))


@router.post("/start")
async def start_worker(profile: str, hub: HubDep, p: AdminDep) -> dict[str, Any]:
    """Start the profile's worker process (a running one is left as it is)."""
    return lifecycle_public(await hub.lifecycle.start(profile, p))


@router.post("/stop")
async def stop_worker(profile: str, hub: HubDep, p: AdminDep) -> dict[str, Any]:
    """Stop the profile's worker process: SIGTERM, then SIGKILL after the grace."""
    return lifecycle_public(await hub.lifecycle.stop(profile, p))


@router.post("/restart")
async def restart_worker(profile: str, hub: HubDep, p: AdminDep) -> dict[str, Any]:
    """Stop, then start the profile's worker process."""
    return lifecycle_public(await hub.lifecycle.restart(profile, p))
