"""Helpers for every test folder (``tests/`` is on ``sys.path`` through the root
``conftest.py``): the admin user and a database that has it."""

from __future__ import annotations

from zhongshu.config import Settings

ADMIN = ("admin", "Admin-pass-1")


async def create_admin(settings: Settings) -> None:
    """Migrate the settings' database and create the ``ADMIN`` user in it."""
    from zhongshu.hub import Hub

    hub = Hub.build(settings)
    try:
        await hub.db.migrate()
        await hub.identity.create_user(*ADMIN, "admin")
    finally:
        await hub.db.dispose()
