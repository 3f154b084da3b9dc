"""Policy-matrix objects for backups: one backup file, made through the service.

The backup routes are admin-only, so the owner does not matter. A successful DELETE in the
matrix removes that file, and the matrix then rebuilds the objects: a fresh backup (a
``VACUUM INTO`` or a small dump of the test database) takes milliseconds.
"""

from __future__ import annotations

from typing import Any

import httpx

BODIES: dict[tuple[str, str], dict[str, Any]] = {}


async def build_objects(client: httpx.AsyncClient, owner: Any, hub: Any) -> dict[str, str]:
    info = await hub.backups.create()
    return {"backup_name": info.name}
