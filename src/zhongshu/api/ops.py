"""Health, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST

from zhongshu import __version__
from zhongshu.api.deps import HubDep

router = APIRouter(tags=["ops"])


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    """Someone opened the hub in a browser: the API docs are the front door."""
    return RedirectResponse("/docs", status_code=307)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok", "version": __version__}


@router.get("/readyz")
async def readyz(hub: HubDep) -> JSONResponse:
    """The database answers."""
    if await hub.db.ping():
        return JSONResponse({"status": "ready"})
    return JSONResponse({"status": "unavailable", "detail": "database unreachable"}, 503)


@router.get("/metrics")
async def metrics(hub: HubDep) -> Response:
    """Prometheus metrics."""
    return Response(await hub.metrics.render(), media_type=CONTENT_TYPE_LATEST)
