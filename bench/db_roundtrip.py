"""Cost of one small transaction through each storage path (SQLite in a temp dir).

    python bench/db_roundtrip.py

Prints milliseconds per transaction for: ``Database.run_read`` (thread hop + synchronous
SQLAlchemy), the synchronous transaction alone, ``run_write``, and the aiosqlite path
(``Database.read``), each selecting one row by primary key.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py would shadow the stdlib ``queue`` (aiosqlite needs it): drop bench/ from
# the path before anything imports it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import asyncio  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

from sqlalchemy import select  # noqa: E402

from zhongshu.db.engine import Database  # noqa: E402
from zhongshu.db.schema import users  # noqa: E402

N = 1000


def _query(conn: Any) -> Any:
    return conn.execute(select(users).where(users.c.id == "x")).first()


async def main() -> None:
    db = Database(f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}")
    await db.migrate()
    for _ in range(100):
        await db.run_read(_query)

    async def aiosqlite_read() -> None:
        async with db.read() as conn:
            (await conn.execute(select(users).where(users.c.id == "x"))).first()

    timings = {}
    t = time.perf_counter()
    for _ in range(N):
        await db.run_read(_query)
    timings["run_read"] = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(N):
        db._sync_tx("DEFERRED", _query, ())
    timings["synchronous transaction alone"] = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(N):
        await db.run_write(_query)
    timings["run_write"] = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(N):
        await aiosqlite_read()
    timings["aiosqlite read()"] = time.perf_counter() - t
    await db.dispose()
    for name, seconds in timings.items():
        print(f"{name:32s} {seconds / N * 1000:.3f} ms")


if __name__ == "__main__":
    asyncio.run(main())
