"""Backups of the whole database (admin; creating, downloading and deleting need
X-Confirm-Token). Restoring is offline only: ``zhongshu restore FILE`` (docs/backup.md)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, status
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from zhongshu.api.deps import AdminDep, HubDep
from zhongshu.api.shapes import iso
from zhongshu.services.backup import BackupInfo

router = APIRouter(prefix="/api/v1/backups", tags=["backups"])

BackupName = Annotated[str, Path(max_length=128, description="a name GET /api/v1/backups lists")]


def backup_public(b: BackupInfo) -> dict[str, Any]:
    return {
        "name": b.name,
        "size_bytes": b.size_bytes,
        "created_at": iso(b.created_at),
        "dialect": b.dialect,
        "format": b.format,
    }


class BackupCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["sqlite", "jsonl"] | None = Field(
        None,
        description="sqlite (a .db copy, SQLite hubs only) or jsonl (a portable .jsonl.gz "
        "dump); default: sqlite on SQLite, jsonl on PostgreSQL",
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_backup(
    hub: HubDep, admin: AdminDep, body: BackupCreate | None = None
) -> dict[str, Any]:
    """Write a consistent backup of the whole database into the data dir (needs X-Confirm-Token)."""
    info = await hub.backups.create(admin, body.format if body else None)
    return backup_public(info)


@router.get("")
async def list_backups(hub: HubDep, _: AdminDep) -> dict[str, Any]:
    """List backups, newest first."""
    items = [backup_public(b) for b in hub.backups.list()]
    return {"items": items, "total": len(items)}


@router.get("/{backup_name}")
async def download_backup(backup_name: BackupName, hub: HubDep, _: AdminDep) -> FileResponse:
    """Download a backup file (needs X-Confirm-Token: it is all the data)."""
    path = hub.backups.path_of(backup_name)
    media = "application/gzip" if path.name.endswith(".gz") else "application/vnd.sqlite3"
    return FileResponse(path, media_type=media, filename=path.name)


@router.delete("/{backup_name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_backup(backup_name: BackupName, hub: HubDep, admin: AdminDep) -> None:
    """Delete a backup file (needs X-Confirm-Token)."""
    await hub.backups.delete(backup_name, admin)
