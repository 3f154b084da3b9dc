"""IM benchmark: collected data at scale (``python bench/im.py [--items N]``).

Generates ``--items`` items (default 1,000,000) over ``--accounts`` sources (100) through
the real sync path, then reports, per database:

- one page (50) of a filtered conversation list (one account, unread only) and of one
  conversation's messages: p50/p99 in-process (``ImService``) and over HTTP (a hub served
  by uvicorn on loopback, JWT of the sources' owner);
- a snapshot ingest of ``--snapshot`` items (100,000) into a fresh account (``--snapshots``
  of them, each into a new account: their median);
- a delta of ``--delta`` items (1,000);
- the process RSS with everything loaded (the bench process is the hub).

Targets (DESIGN.md): page p50 < 1 ms in-process, < 5 ms over HTTP; snapshot < 2 s;
delta < 50 ms. Benchmarks are not tests; numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

# The script's own directory holds bench/queue.py, which would shadow the stdlib's queue.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent / "src"))

from zhongshu import testing  # noqa: E402
from zhongshu.config import Settings  # noqa: E402
from zhongshu.db.schema import sources  # noqa: E402
from zhongshu.services.identity import Principal  # noqa: E402
from zhongshu.services.im import Filters  # noqa: E402

PASSWORD = "Bench-pass-1"
# Of each account's items: conversations, messages, comments, contents.
MIX = (("conversations", 0.2), ("messages", 0.5), ("comments", 0.2), ("contents", 0.1))


def account_data(tag: str, n: int, t0: float) -> dict[str, list[dict[str, Any]]]:
    """``n`` items of one account: conversations with their messages, contents with comments."""
    counts = {k: max(1, int(n * share)) for k, share in MIX}
    n_conv, n_content = counts["conversations"], counts["contents"]
    rnd = random.Random(tag)
    return {
        "conversations": [
            {
                "id": f"{tag}-c{i}",
                "platform_user_name": f"peer {i}",
                "last_message_content": f"hello from peer {i}",
                "last_message_time": t0 - i * 7.0,
                "unread_count": i % 4,
                "is_read": i % 4 == 0,
            }
            for i in range(n_conv)
        ],
        "messages": [
            {
                "id": f"{tag}-m{i}",
                "conversation_id": f"{tag}-c{rnd.randrange(min(n_conv, 50))}",
                "content": f"message {i} lorem ipsum dolor sit amet",
                "sender_name": "peer",
                "direction": "inbound" if i % 3 else "outbound",
                "create_time": t0 - i * 3.0,
            }
            for i in range(counts["messages"])
        ],
        "comments": [
            {
                "id": f"{tag}-k{i}",
                "content_id": f"{tag}-v{i % n_content}",
                "content": f"comment {i} nice video",
                "author_name": f"fan {i % 97}",
                "create_time": t0 - i * 5.0,
            }
            for i in range(counts["comments"])
        ],
        "contents": [
            {"id": f"{tag}-v{i}", "title": f"video {i}", "publish_time": t0 - i * 3600.0}
            for i in range(n_content)
        ],
    }


def pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def fmt(samples: list[float]) -> str:
    return f"p50 {pct(samples, 0.5) * 1000:.3f} ms, p99 {pct(samples, 0.99) * 1000:.3f} ms"


async def insert_sources(hub: Any, owner: str, n: int, prefix: str) -> list[str]:
    now = time.time()
    ids = [f"{prefix}{i:04d}" for i in range(n)]
    async with hub.db.write() as conn:
        await conn.execute(
            sources.insert(),
            [
                {
                    "id": sid,
                    "owner_id": owner,
                    "platform": "bench",
                    "name": sid,
                    "status": "inactive",  # the monitor and assignment loops leave it alone
                    "created_at": now,
                    "updated_at": now,
                }
                for sid in ids
            ],
        )
    return ids


async def run(db_url: str, args: argparse.Namespace, label: str) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="zhongshu-im-bench-"))
    settings = Settings(
        database_url=db_url,
        data_dir=data_dir,
        port=testing.free_port(),
        secret_key="bench-secret-key-0123456789abcdef0123456789",
        im_sync_max_items=max(args.snapshot, args.items // args.accounts) + 10,
        max_body_bytes=64 * 1024 * 1024,
    )
    out: dict[str, Any] = {"db": label}
    proc = psutil.Process()
    async with testing.running_hub(settings) as hub:
        user = await hub.identity.create_user("bench", PASSWORD, "user")
        me = Principal("user", user["id"], "user")
        accounts = await insert_sources(hub, user["id"], args.accounts, "acct")
        per = args.items // args.accounts
        t0 = time.time()
        started = time.perf_counter()
        for i, sid in enumerate(accounts):
            await hub.sync.sync(
                None, {"accountId": sid, "snapshot": {"data": account_data(sid, per, t0)}}
            )
            if (i + 1) % 10 == 0:
                print(f"  [{label}] loaded {(i + 1) * per:,} items", file=sys.stderr)
        load_s = time.perf_counter() - started
        if not hub.db.is_sqlite:
            # Steady state: what autovacuum does on its own shortly after a bulk load
            # (statistics, visibility map); measured without it, autovacuum runs during
            # the page samples and the p50 moves by ~0.5 ms.
            async with hub.db.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("VACUUM ANALYZE items")
        counts, _ = await hub.items.stats(None)
        total = sum(int(c["n"]) for c in counts)
        out["items"] = total
        out["load"] = f"{total:,} items in {load_s:.1f} s ({total / load_s:,.0f}/s)"

        # One page, in-process.
        rnd = random.Random(1)
        conv_s: list[float] = []
        msg_s: list[float] = []
        for _ in range(args.samples):
            sid = rnd.choice(accounts)
            f = Filters(account_id=sid, is_read=False, limit=50)
            t = time.perf_counter()
            page = await hub.im.page(me, ("conversation",), f)
            conv_s.append(time.perf_counter() - t)
            assert len(page.rows) == 50, len(page.rows)
            f = Filters(account_id=sid, parent_id=f"{sid}-c{rnd.randrange(10)}", limit=50)
            t = time.perf_counter()
            page = await hub.im.page(me, ("message",), f)
            msg_s.append(time.perf_counter() - t)
            assert page.rows
        out["conversations page, in-process"] = fmt(conv_s)
        out["messages page, in-process"] = fmt(msg_s)
        out["rss_mb"] = f"{proc.memory_info().rss / 2**20:.0f} MB"

        # Snapshot (each into a new account) and delta.
        (*fresh_ids, delta_src) = await insert_sources(hub, user["id"], args.snapshots + 1, "fresh")
        snap_s: list[float] = []
        for fresh in fresh_ids:
            big = account_data(fresh, args.snapshot, time.time())
            t = time.perf_counter()
            ack = await hub.sync.sync(None, {"accountId": fresh, "snapshot": {"data": big}})
            snap_s.append(time.perf_counter() - t)
            assert sum(ack["created"].values()) >= args.snapshot * 0.99
        out[f"snapshot of {args.snapshot:,} items"] = (
            f"{snap_s[0]:.2f} s"
            if len(snap_s) == 1
            else f"median {statistics.median(snap_s):.2f} s of {len(snap_s)} "
            f"({', '.join(f'{x:.2f}' for x in snap_s)})"
        )
        delta_s = []
        for seq in range(1, 6):
            items = [
                {"id": f"d{seq}-{i}", "conversation_id": f"{delta_src}-c{i % 20}", "content": "hi"}
                for i in range(args.delta)
            ]
            body = {
                "accountId": delta_src,
                "mode": "delta",
                "seq": seq,
                "snapshot": {"data": {"messages": items}},
            }
            t = time.perf_counter()
            await hub.sync.sync(None, body)
            delta_s.append(time.perf_counter() - t)
        out[f"delta of {args.delta:,} items"] = (
            f"median {statistics.median(delta_s) * 1000:.1f} ms (5 runs)"
        )

    # Over HTTP: a hub served by uvicorn on loopback (its own Hub on the same database).
    with testing.served_hub(settings) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=30) as client:
            r = await client.post(
                "/api/v1/auth/login", json={"username": "bench", "password": PASSWORD}
            )
            r.raise_for_status()
            client.headers["authorization"] = f"Bearer {r.json()['access_token']}"
            conv_h: list[float] = []
            msg_h: list[float] = []
            for i in range(args.samples + 20):
                sid = rnd.choice(accounts)
                t = time.perf_counter()
                r = await client.get(
                    "/api/im/conversations",
                    params={"account_id": sid, "is_read": "false", "limit": 50},
                )
                el = time.perf_counter() - t
                assert r.status_code == 200 and len(r.json()["data"]["conversations"]) == 50
                t = time.perf_counter()
                r = await client.get(
                    "/api/im/messages",
                    params={"account_id": sid, "conversation_id": f"{sid}-c3", "limit": 50},
                )
                el2 = time.perf_counter() - t
                assert r.status_code == 200
                if i >= 20:  # warm-up
                    conv_h.append(el)
                    msg_h.append(el2)
            out["conversations page, HTTP"] = fmt(conv_h)
            out["messages page, HTTP"] = fmt(msg_h)
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=100)
    parser.add_argument("--snapshot", type=int, default=100_000)
    parser.add_argument(
        "--snapshots",
        type=int,
        default=1,
        help="snapshots to time, each into a new account (the median is reported)",
    )
    parser.add_argument("--delta", type=int, default=1_000)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    args = parser.parse_args()
    results = []
    if args.db in ("sqlite", "both"):
        path = Path(tempfile.mkdtemp(prefix="zhongshu-im-bench-")) / "bench.db"
        results.append(await run(f"sqlite+aiosqlite:///{path}", args, "SQLite"))
    if args.db in ("postgres", "both"):
        if not testing.postgres_available():
            print("PostgreSQL not reachable at 127.0.0.1:5432: skipped", file=sys.stderr)
        else:
            url = await testing.create_pg_database()
            try:
                results.append(await run(url, args, "PostgreSQL"))
            finally:
                await testing.drop_pg_database(url)
    for res in results:
        print(f"\n## {res.pop('db')}")
        for key, value in res.items():
            print(f"- {key}: {value}")


if __name__ == "__main__":
    asyncio.run(main())
