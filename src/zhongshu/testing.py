"""Helpers for tests of zhongshu and of projects built on it: throwaway databases and an
in-process hub served on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from zhongshu.config import Settings

PG_ADMIN_URL = os.environ.get(
    "ZHONGSHU_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def postgres_available(timeout_s: float = 1.0) -> bool:
    host_port = PG_ADMIN_URL.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    try:
        with socket.create_connection((host, int(port or 5432)), timeout=timeout_s):
            return True
    except OSError:
        return False


async def create_pg_database() -> str:
    """Create an empty PostgreSQL database; returns its URL."""
    from zhongshu.db.engine import null_pool_engine

    name = f"zhongshu_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    engine = null_pool_engine(PG_ADMIN_URL)
    async with engine.connect() as conn:
        await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    await engine.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def drop_pg_database(url: str) -> None:
    from zhongshu.db.engine import null_pool_engine

    name = url.rsplit("/", 1)[1]
    engine = null_pool_engine(PG_ADMIN_URL)
    async with engine.connect() as conn:
        await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await engine.dispose()


class ServedHub:
    """A hub app served by uvicorn in a background thread on 127.0.0.1 (a real socket, so
    real Socket.IO and HTTP clients can talk to it)."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from zhongshu.app import create_app

        self.settings = settings
        self.app = create_app(settings)
        self.hub = self.app.hub
        self.port = settings.port
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout_s: float = 20.0) -> ServedHub:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("hub did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextlib.contextmanager
def served_hub(settings: Settings) -> Iterator[ServedHub]:
    hub = ServedHub(settings).start()
    try:
        yield hub
    finally:
        hub.stop()


@contextlib.asynccontextmanager
async def running_hub(settings: Settings) -> AsyncIterator[Any]:
    """A started ``Hub`` (migrated, loops running) in the current event loop, no server."""
    from zhongshu.hub import Hub

    hub = Hub.build(settings)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()


async def wait_until(predicate: Any, timeout_s: float = 10.0, interval_s: float = 0.02) -> Any:
    """Poll an (async or sync) predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(interval_s)
