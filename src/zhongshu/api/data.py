"""Admin export/import of collected data (the HTTP twin of ``zhongshu data``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from zhongshu.api.deps import AdminDep, HubDep
from zhongshu.services.data_transfer import gzip_stream

router = APIRouter(prefix="/api/v1/data", tags=["collected data"])


@router.get("/export")
async def export_data(
    hub: HubDep,
    admin: AdminDep,
    account_id: Annotated[str | None, Query(max_length=64)] = None,
) -> StreamingResponse:
    """Download collected data as gzip-compressed JSON lines."""
    name = f"zhongshu-items-{account_id or 'all'}.jsonl.gz"
    return StreamingResponse(
        gzip_stream(hub.data_transfer.lines(account_id)),
        media_type="application/gzip",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


@router.post("/import")
async def import_data(request: Request, hub: HubDep, admin: AdminDep) -> dict[str, Any]:
    """Merge an export (gzip or plain JSON lines in the body); running it twice is harmless."""
    body = await request.body()
    return {"success": True, **await hub.data_transfer.import_bytes(body)}
