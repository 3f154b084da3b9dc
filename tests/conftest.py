"""Shared fixtures.

``db_url`` is parametrized over SQLite (a temp file) and PostgreSQL (a database created for
this test run and dropped after). PostgreSQL tests skip with a reason when the server is
absent, except under ``ZHONGSHU_REQUIRE_SERVICES=1`` (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import ADMIN, create_admin
from zhongshu import testing
from zhongshu.config import Settings

# Settings come from fixtures only: never from the developer's environment or a config.yaml.
for _key in list(os.environ):
    if _key.startswith("ZHONGSHU_") and _key not in (
        "ZHONGSHU_REQUIRE_SERVICES",
        "ZHONGSHU_TEST_POSTGRES_URL",
    ):
        del os.environ[_key]

REQUIRE_SERVICES = os.environ.get("ZHONGSHU_REQUIRE_SERVICES") == "1"


@pytest.fixture(autouse=True)
def _cheap_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real argon2 with the cheapest parameters in-process: the production costs take
    0.1-0.8 s per hash on this machine, and most tests create and log in users. (Hubs run as
    subprocesses by the acceptance tests keep the real parameters.)"""
    from argon2 import PasswordHasher

    from zhongshu.services import identity

    monkeypatch.setattr(
        identity, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


def _require_postgres() -> None:
    if not testing.postgres_available():
        if REQUIRE_SERVICES:
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required (ZHONGSHU_REQUIRE_SERVICES=1)")
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432")


REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_settings() -> Iterator[dict[str, str]]:
    """``redis_url`` and a fresh key prefix for this test; its keys are deleted after."""
    import socket
    import uuid

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            pass
    except OSError:
        if REQUIRE_SERVICES:
            pytest.fail("Redis at 127.0.0.1:6379 is required (ZHONGSHU_REQUIRE_SERVICES=1)")
        pytest.skip("Redis not reachable at 127.0.0.1:6379")
    prefix = f"zhongshu-test:{uuid.uuid4().hex[:10]}:"
    yield {"redis_url": REDIS_URL, "redis_prefix": prefix}

    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """One PostgreSQL database for the whole run; tests clean their tables (see db_url)."""
    _require_postgres()
    url = asyncio.run(testing.create_pg_database())
    yield url
    asyncio.run(testing.drop_pg_database(url))


async def _truncate_all(url: str) -> None:
    from sqlalchemy import text

    from zhongshu.db.engine import null_pool_engine
    from zhongshu.db.schema import metadata

    engine = null_pool_engine(url)
    async with engine.connect() as conn:
        exists = await conn.scalar(text("SELECT to_regclass('public.tasks') IS NOT NULL"))
        if exists:
            names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    await engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database, built once; each test gets a copy (migrating per test
    cost most of a test's set-up)."""
    from zhongshu.db.engine import Database

    path = tmp_path_factory.mktemp("template") / "zhongshu.db"

    async def build() -> None:
        db = Database(f"sqlite+aiosqlite:///{path}")
        await db.migrate()
        await db.dispose()

    asyncio.run(build())
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        target = tmp_path / "zhongshu.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
        return f"sqlite+aiosqlite:///{target}"
    url = request.getfixturevalue("pg_database")
    asyncio.run(_truncate_all(url))
    return url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'zhongshu.db'}"


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for tests: fast timers, a temp data dir, a free port."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "data_dir": tmp_path / "data",
            "port": testing.free_port(),
            "secret_key": "test-secret-key-0123456789abcdef0123456789",
            "heartbeat_interval_s": 0.5,
            "offline_after_s": 2.0,
            "reaper_interval_s": 0.2,
            "retry_base_s": 0.05,
            "retry_cap_s": 0.5,
            "callback_retry_base_s": 0.05,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
async def hub(db_url: str, make_settings: Callable[..., Settings]) -> AsyncIterator[Any]:
    """A started hub (no HTTP server) on each database."""
    async with testing.running_hub(make_settings(database_url=db_url)) as h:
        await h.identity.create_user(*ADMIN, role="admin")
        yield h


@pytest.fixture
async def client(hub: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the hub's ASGI app in-process, logged in as admin."""
    from zhongshu.app import create_app

    app = create_app(hub.settings, hub=hub)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as c:
        r = await c.post("/api/v1/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        r.raise_for_status()
        c.headers["authorization"] = f"Bearer {r.json()['access_token']}"
        yield c


@pytest.fixture
def served(make_settings: Callable[..., Settings], tmp_path: Path) -> Iterator[testing.ServedHub]:
    """A hub on SQLite with an admin, served on a free loopback port (a real socket)."""
    settings = make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}")
    asyncio.run(create_admin(settings))
    with testing.served_hub(settings) as hub:
        yield hub
