"""Backups and restore on real SQLite and PostgreSQL: the admin API with step-up, a backup
taken under concurrent writes, and restores through the real CLI (``python -m zhongshu
restore``) into fresh databases — SQLite to SQLite, PostgreSQL to PostgreSQL and SQLite to
PostgreSQL — that a new hub then serves."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from identity_support import ADMIN, audit_rows, confirm, login, make_user
from matrix_schedules import add_article
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from zhongshu import errors, testing
from zhongshu.config import Settings
from zhongshu.db import backup_store
from zhongshu.db.schema import sources
from zhongshu.services.identity import Principal
from zhongshu.services.tasks import TaskSpec

V1 = "/api/v1/backups"


def _counts(path: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for table, rows in backup_store.open_backup(path).batches(500):
        counts[table] = counts.get(table, 0) + len(rows)
    return counts


def _cli(
    args: list[str], settings: Settings, database_url: str | None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZHONGSHU_")}
    env.update(
        ZHONGSHU_DATA_DIR=str(settings.data_dir),
        ZHONGSHU_SECRET_KEY=settings.secret_key,
        ZHONGSHU_ENCRYPTION_KEYS=json.dumps(settings.fernet_keys()),
        COLUMNS="200",
    )
    if database_url:
        env["ZHONGSHU_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "zhongshu", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@asynccontextmanager
async def _served(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """A hub on an existing (restored) database, with a client logged in as its admin."""
    from zhongshu.app import create_app

    async with testing.running_hub(settings) as hub:
        transport = httpx.ASGITransport(app=create_app(settings, hub=hub))
        async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
            tokens = await login(client, *ADMIN)
            client.headers["authorization"] = f"Bearer {tokens['access_token']}"
            yield hub, client


async def _seed(hub: Any, client: httpx.AsyncClient) -> dict[str, Any]:
    """Users, tasks, a source with sealed credentials and collected items."""
    alice = await make_user(client, role="user", name="alice")
    r = await client.post(
        "/api/v1/tasks/batch",
        json={"tasks": [{"kind": "backup.test", "payload": {"n": i}} for i in range(25)]},
    )
    assert r.status_code in (200, 201), r.text
    r = await client.post(
        "/api/v1/sources",
        json={
            "platform": "demo",
            "name": "feed",
            "credentials": {"cookie": "s3cret-cookie"},
            "user_info": {"nick": "名字"},
        },
        headers=alice.headers,
    )
    assert r.status_code == 201, r.text
    source_id = r.json()["id"]
    for i in range(5):
        await add_article(hub, source_id, f"article {i}")
    return {"alice": alice.id, "source_id": source_id}


async def _same_data(client: httpx.AsyncClient, seeded: dict[str, Any], hub: Any) -> None:
    r = await client.get("/api/v1/users", params={"q": "alice"})
    assert [u["id"] for u in r.json()["items"]] == [seeded["alice"]]
    r = await client.get("/api/v1/tasks", params={"limit": 100})
    assert r.status_code == 200, r.text
    kinds = [t["kind"] for t in r.json()["items"]]
    assert kinds.count("backup.test") == 25
    r = await client.get(f"/api/v1/sources/{seeded['source_id']}")
    assert r.status_code == 200, r.text
    assert r.json()["user_info"] == {"nick": "名字"}
    r = await client.get("/api/im/contents", params={"limit": 100})
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]["contents"]) == 5, r.text
    # The sealed credentials came along and open with the same encryption_keys.
    async with hub.db.read() as conn:
        sealed = await conn.scalar(
            select(sources.c.credentials).where(sources.c.id == seeded["source_id"])
        )
    assert "s3cret" not in sealed
    assert hub.secrets.open_json(sealed) == {"cookie": "s3cret-cookie"}
    # A restored database keeps being usable: new rows get fresh ids (sequences reset).
    r = await client.post("/api/v1/tasks", json={"kind": "backup.after"})
    assert r.status_code == 201, r.text
    rows = await audit_rows(client, action="restore.")
    assert [a["action"] for a in rows] == ["restore.completed"]


async def test_api_create_list_download_delete_need_admin_and_step_up(
    hub: Any, client: httpx.AsyncClient, db_url: str
) -> None:
    admin = dict(client.headers)
    r = await client.post(V1)
    assert r.status_code == 403
    assert "X-Confirm-Token" in r.json()["detail"]
    confirmed = await confirm(client, admin, ADMIN[1])
    r = await client.post(V1, headers=confirmed)
    assert r.status_code == 201, r.text
    body = r.json()
    dialect = "sqlite" if db_url.startswith("sqlite") else "postgresql"
    assert body["dialect"] == dialect
    assert body["name"].startswith("zhongshu-")
    assert body["name"].endswith(".db" if dialect == "sqlite" else ".jsonl.gz")
    path = hub.backups.path_of(body["name"])
    assert body["size_bytes"] == path.stat().st_size > 0
    assert path.stat().st_mode & 0o077 == 0  # the whole database: owner only

    r = await client.post(V1, json={"format": "jsonl"}, headers=confirmed)
    assert r.status_code == 201, r.text
    dump = r.json()["name"]
    assert dump.endswith(".jsonl.gz")
    r = await client.post(V1, json={"format": "tar"}, headers=confirmed)
    assert r.status_code == 422 and "format" in r.json()["detail"]
    if dialect == "postgresql":
        r = await client.post(V1, json={"format": "sqlite"}, headers=confirmed)
        assert r.status_code == 422 and "jsonl" in r.json()["detail"]

    r = await client.get(V1)
    assert r.status_code == 200
    assert {b["name"] for b in r.json()["items"]} == {body["name"], dump}

    r = await client.get(f"{V1}/{body['name']}")
    assert r.status_code == 403 and "X-Confirm-Token" in r.json()["detail"]
    r = await client.get(f"{V1}/{body['name']}", headers=confirmed)
    assert r.status_code == 200
    assert r.content == path.read_bytes()
    r = await client.get(f"{V1}/{dump}", headers=confirmed)
    header = json.loads(gzip.decompress(r.content).split(b"\n", 1)[0])
    assert header["format"] == "zhongshu.backup" and header["dialect"] == dialect

    user = await make_user(client, role="user")
    user_confirmed = await confirm(client, user.headers, user.password)
    for method, url in (("GET", V1), ("POST", V1), ("GET", f"{V1}/{dump}")):
        r = await client.request(method, url, headers={"authorization": "", **user_confirmed})
        assert r.status_code == 403, (method, url, r.text)

    for bad in ("zhongshu.db", "%2E%2E", "..%2Fzhongshu.db", "zhongshu-x.db", f"{dump}.partial"):
        for method in ("GET", "DELETE"):
            r = await client.request(method, f"{V1}/{bad}", headers=confirmed)
            assert r.status_code == 404, (method, bad, r.text)

    r = await client.delete(f"{V1}/{dump}")
    assert r.status_code == 403
    r = await client.delete(f"{V1}/{dump}", headers=confirmed)
    assert r.status_code == 204
    assert [b["name"] for b in (await client.get(V1)).json()["items"]] == [body["name"]]
    actions = [a["action"] for a in await audit_rows(client, action="backup.")]
    assert sorted(actions) == ["backup.created", "backup.created", "backup.deleted"]


async def test_a_backup_taken_during_writes_is_a_consistent_snapshot(hub: Any) -> None:
    owner = Principal("user", "writer", "user")
    stop = asyncio.Event()
    batch = 7

    async def write() -> None:
        while not stop.is_set():
            await hub.tasks.submit_many([TaskSpec(kind="backup.load")] * batch, owner)
            await asyncio.sleep(0)

    async def committed() -> int:
        _, total = await hub.tasks.store.find(kind="backup.load", limit=1)
        return int(total)

    writer = asyncio.create_task(write())
    try:
        await testing.wait_until(lambda: committed(), timeout_s=10)
        taken = []
        for fmt in ("jsonl", None) if hub.db.is_sqlite else ("jsonl",):
            before = await committed()
            info = await hub.backups.create(format=fmt)
            after = await committed()
            taken.append((info.path, before, after))
    finally:
        stop.set()
        await writer
    assert any(before < after for _, before, after in taken), "no write ran during a backup"
    for path, before, after in taken:
        counts = _counts(path)
        tasks = counts["tasks"]
        assert before <= tasks <= after, (path.name, before, tasks, after)
        assert tasks % batch == 0, "a transaction was torn"
        events = [
            r
            for table, rows in backup_store.open_backup(path).batches(500)
            if table == "events"
            for r in rows
            if r["type"] == "task.submitted"
        ]
        assert len(events) == tasks, "tasks and their events come from one snapshot"


async def test_restore_round_trip_through_the_cli(
    hub: Any,
    client: httpx.AsyncClient,
    db_url: str,
    make_settings: Callable[..., Settings],
    tmp_path: Path,
) -> None:
    seeded = await _seed(hub, client)
    confirmed = await confirm(client, dict(client.headers), ADMIN[1])
    r = await client.post(V1, headers=confirmed)
    assert r.status_code == 201, r.text
    backup = hub.backups.path_of(r.json()["name"])

    target_url = None if db_url.startswith("sqlite") else await testing.create_pg_database()
    settings = make_settings(
        data_dir=tmp_path / "restored",
        encryption_keys=hub.settings.fernet_keys(),
        **({"database_url": target_url} if target_url else {}),
    )
    try:
        done = await asyncio.to_thread(_cli, ["restore", str(backup)], settings, target_url)
        assert done.returncode == 0, done.stderr
        assert "restored" in done.stderr
        # Into a database that has users now: refused without --force, clearly.
        again = await asyncio.to_thread(_cli, ["restore", str(backup)], settings, target_url)
        assert again.returncode == 2, again.stderr
        assert "already has" in again.stderr and "--force" in again.stderr
        forced = await asyncio.to_thread(
            _cli, ["restore", str(backup), "--force"], settings, target_url
        )
        assert forced.returncode == 0, forced.stderr
        async with _served(settings) as (restored, restored_client):
            await _same_data(restored_client, seeded, restored)
            assert await restored.db.migrate() is None  # already at head: a no-op
    finally:
        if target_url:
            await testing.drop_pg_database(target_url)


async def test_only_the_newest_backups_are_kept_when_asked(hub: Any) -> None:
    deleted: list[str] = []
    hub.bus.listen("backup.deleted", lambda ev: deleted.append(ev.subject_id))
    hub.backups.keep = 2
    made = [(await hub.backups.create()).name for _ in range(4)]
    assert [b.name for b in hub.backups.list()] == made[:1:-1]  # the two newest, newest first
    assert sorted(deleted) == sorted(made[:2])  # recorded like any deletion (audit log)


async def test_restore_refuses_a_database_a_hub_is_running_on(
    hub: Any, client: httpx.AsyncClient, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    backup = (await hub.backups.create()).path
    url = hub.settings.effective_database_url
    done = await asyncio.to_thread(_cli, ["restore", str(backup), "--force"], hub.settings, url)
    assert done.returncode == 2, done.stderr
    assert "a hub is running on this database" in done.stderr
    r = await client.get("/api/v1/me")
    assert r.status_code == 200, "the running hub's data is untouched"

    # The other way round: no hub starts on a database while a restore holds it.
    from zhongshu.db.engine import Database
    from zhongshu.db.hub_lock import HubLock

    other = make_settings(data_dir=tmp_path / "other")
    db = Database(other.effective_database_url)
    restoring = HubLock(db)
    await restoring.acquire(exclusive=True)
    try:
        with pytest.raises(errors.Conflict, match="a restore is replacing this database"):
            async with testing.running_hub(other):
                pass
    finally:
        await restoring.release()
        await db.dispose()
    async with testing.running_hub(other) as started:
        assert started.in_use is not None and started.in_use.held


@pytest.mark.postgres
async def test_sqlite_to_postgres_through_a_jsonl_dump(
    make_settings: Callable[..., Settings], tmp_path: Path, sqlite_template: Path
) -> None:
    if not testing.postgres_available():
        pytest.skip("PostgreSQL not reachable at 127.0.0.1:5432")
    source = make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'source.db'}")
    from identity_support import hub_client

    async with hub_client(source) as (hub, client):
        seeded = await _seed(hub, client)
        dump = (await hub.backups.create(format="jsonl")).path
        native = (await hub.backups.create()).path
    target_url = await testing.create_pg_database()
    settings = make_settings(
        data_dir=tmp_path / "on-postgres",
        database_url=target_url,
        encryption_keys=source.fernet_keys(),
    )
    try:
        done = await asyncio.to_thread(_cli, ["restore", str(dump)], settings, target_url)
        assert done.returncode == 0, done.stderr
        async with _served(settings) as (restored, restored_client):
            await _same_data(restored_client, seeded, restored)
            # The .db file itself also restores into PostgreSQL (row by row).
            result = await restored.backups.restore(native, force=True)
            assert result["method"] == "rows" and result["dialect"] == "sqlite"
            assert _counts(native)["tasks"] == 25
    finally:
        await testing.drop_pg_database(target_url)


async def test_files_that_are_not_restorable_are_refused_with_the_reason(
    hub: Any, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all")
    with pytest.raises(errors.InvalidBackup, match="neither a SQLite database"):
        hub.backups.inspect(garbage)
    damaged = tmp_path / "damaged.db"
    damaged.write_bytes(backup_store.SQLITE_MAGIC + b"\x00" * 200)
    with pytest.raises(errors.InvalidBackup, match="SQLite"):
        hub.backups.inspect(damaged)
    newer = tmp_path / "newer.jsonl.gz"
    header = {"format": "zhongshu.backup", "version": 1, "revision": "9999", "tables": {}}
    newer.write_bytes(gzip.compress((json.dumps(header) + "\n").encode()))
    with pytest.raises(errors.InvalidBackup, match="does not know"):
        hub.backups.inspect(newer)
    other = tmp_path / "items.jsonl.gz"
    other.write_bytes(gzip.compress(b'{"format": "zhongshu.items", "version": 1}\n'))
    with pytest.raises(errors.InvalidBackup, match=r"not a zhongshu\.backup dump"):
        hub.backups.inspect(other)
    # Refused before anything is touched: the hub's own database has users.
    good = (await hub.backups.create(format="jsonl")).path
    with pytest.raises(errors.RestoreRefused, match="--force"):
        await hub.backups.restore(good)


async def test_a_dump_loads_into_sqlite_and_the_audit_log_stays_append_only(
    hub: Any, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    from sqlalchemy import text

    from zhongshu.hub import Hub

    await hub.tasks.submit_many([TaskSpec(kind="backup.test")] * 3, Principal("user", "u", "user"))
    await hub.audit.flush()
    dump = (await hub.backups.create(format="jsonl")).path
    want = _counts(dump)
    target = Hub.build(make_settings(data_dir=tmp_path / "target"))
    try:
        loaded: list[int] = []
        result = await target.backups.restore(dump, progress=loaded.append)
        assert result["method"] == "rows" and sum(loaded) == sum(want.values())
        async with target.db.read() as conn:
            assert await conn.scalar(text("SELECT count(*) FROM tasks")) == want["tasks"]
        with pytest.raises(IntegrityError, match="append-only"):
            async with target.db.write() as conn:
                await conn.execute(text("DELETE FROM audit_log"))
    finally:
        await target.audit.flush()
        await target.db.dispose()
