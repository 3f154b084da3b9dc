"""Sources, HisCRM accounts and workers, proxies, secrets at rest and key rotation, over
the real HTTP API of a real hub on each database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from identity_support import make_user
from sqlalchemy import text
from typer.testing import CliRunner

from zhongshu.config import Settings
from zhongshu.db.engine import null_pool_engine

COOKIE = "cookie-value-7f3a9c1e5b"
PROXY_PASSWORD = "proxy-pass-4d2b8e"
Json = dict[str, Any]


async def _stored_text(hub: Any) -> str:
    """Every byte the database holds for the sources and proxies tables (SQLite: the file
    itself, WAL included; PostgreSQL: the rows as text)."""
    if hub.db.is_sqlite:
        path = Path(hub.db.url.split(":///", 1)[1])
        blobs = [p.read_bytes() for p in path.parent.glob(path.name + "*")]
        return b"".join(blobs).decode("latin-1")
    engine = null_pool_engine(hub.db.url)
    async with engine.connect() as conn:
        rows = []
        for table in ("sources", "proxies", "events", "tasks", "login_sessions"):
            result = await conn.execute(text(f"SELECT t::text FROM {table} t"))
            rows.extend(r[0] for r in result)
    await engine.dispose()
    return "\n".join(rows)


async def test_source_crud_and_owner_isolation(client: httpx.AsyncClient) -> None:
    owner = await make_user(client)
    other = await make_user(client)
    r = await client.post(
        "/api/v1/sources",
        json={"platform": "douyin", "name": "My account", "account_id": "dy123"},
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    src = r.json()
    assert src["owner_id"] == owner.id
    assert src["monitor_interval_s"] == 20
    assert src["status"] == "active"
    assert src["login_status"] == "not_logged_in"
    assert src["has_credentials"] is False
    assert src["assigned_node_id"] is None  # no douyin node yet

    r = await client.get(f"/api/v1/sources/{src['id']}", headers=other.headers)
    assert r.status_code == 404
    r = await client.get("/api/v1/sources", headers=other.headers)
    assert r.json()["total"] == 0
    r = await client.get("/api/v1/sources", headers=owner.headers)
    assert [s["id"] for s in r.json()["items"]] == [src["id"]]
    r = await client.get("/api/v1/sources")  # admin sees all
    assert r.json()["total"] == 1

    r = await client.patch(
        f"/api/v1/sources/{src['id']}",
        json={"monitor_interval_s": 60, "status": "inactive"},
        headers=owner.headers,
    )
    assert r.status_code == 200, r.text
    assert (r.json()["monitor_interval_s"], r.json()["status"]) == (60, "inactive")
    r = await client.patch(
        f"/api/v1/sources/{src['id']}", json={"name": "x"}, headers=other.headers
    )
    assert r.status_code == 404
    r = await client.delete(f"/api/v1/sources/{src['id']}", headers=owner.headers)
    assert r.status_code == 204
    r = await client.get(f"/api/v1/sources/{src['id']}", headers=owner.headers)
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"platform": "myspace", "name": "a"}, "unknown platform 'myspace'; allowed: demo"),
        ({"platform": "Douyin!", "name": "a"}, "lowercase token"),
        ({"platform": "demo", "name": "a", "monitor_interval_s": 0}, "monitor_interval_s"),
        ({"platform": "demo", "name": "a", "monitor_interval_s": -5}, "greater than 0"),
        ({"platform": "demo", "name": ""}, "name"),
        ({"platform": "demo", "name": "a", "status": "paused"}, "status"),
        ({"platform": "demo", "name": "a", "proxy_id": "px_nope"}, "proxy_id"),
        ({"platform": "demo", "name": "a", "credentials": "cookie=1"}, "credentials"),
        ({"platform": "demo", "name": "a", "surprise": 1}, "surprise"),
    ],
)
async def test_bad_source_input_is_a_422_naming_the_field(
    client: httpx.AsyncClient, body: Json, needle: str
) -> None:
    r = await client.post("/api/v1/sources", json=body)
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"]


async def test_hiscrm_accounts_use_the_seed_field_names(client: httpx.AsyncClient) -> None:
    owner = await make_user(client)
    r = await client.post(
        "/api/v1/accounts",
        json={
            "platform": "xiaohongshu",
            "account_name": "我的账号",
            "account_id": "xhs-1",
            "monitor_interval": 45,
        },
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["success"] is True
    acc = body["account"]
    for key in (
        "id",
        "platform",
        "account_name",
        "account_id",
        "monitor_interval",
        "login_status",
        "assigned_worker_id",
        "status",
        "cookies_valid_until",
        "created_at",
    ):
        assert key in acc, key
    assert (acc["account_name"], acc["monitor_interval"]) == ("我的账号", 45)
    assert isinstance(acc["created_at"], int)

    r = await client.put(
        f"/api/v1/accounts/{acc['id']}", json={"monitor_interval": 90}, headers=owner.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["account"]["monitor_interval"] == 90
    assert r.json()["account"]["account_name"] == "我的账号"

    r = await client.get("/api/v1/accounts", headers=owner.headers)
    assert r.json()["success"] is True
    assert [a["id"] for a in r.json()["accounts"]] == [acc["id"]]
    # The same object under the zhongshu name.
    r = await client.get(f"/api/v1/sources/{acc['id']}", headers=owner.headers)
    assert r.json()["name"] == "我的账号"

    r = await client.put(
        f"/api/v1/accounts/{acc['id']}", json={"monitor_interval": 0}, headers=owner.headers
    )
    assert r.status_code == 422
    r = await client.delete(f"/api/v1/accounts/{acc['id']}", headers=owner.headers)
    assert r.json() == {"success": True}
    r = await client.get(f"/api/v1/accounts/{acc['id']}", headers=owner.headers)
    assert r.status_code == 404


async def test_workers_in_hiscrm_shape_count_assigned_accounts(
    hub: Any, client: httpx.AsyncClient
) -> None:
    r = await client.post("/api/v1/nodes", json={"name": "w1", "max_accounts": 7})
    node = r.json()
    await hub.nodes.register(node, {"capabilities": ["demo"], "host": "box", "version": "1.2"})
    r = await client.post("/api/v1/accounts", json={"platform": "demo", "account_name": "a"})
    assert r.json()["account"]["assigned_worker_id"] == node["id"]

    r = await client.get("/api/v1/workers")
    assert r.json()["success"] is True
    (w,) = [w for w in r.json()["workers"] if w["id"] == node["id"]]
    assert w["capabilities"] == ["demo"]
    assert (w["max_accounts"], w["assigned_accounts"], w["status"]) == (7, 1, "online")
    assert (w["host"], w["version"]) == ("box", "1.2")
    r = await client.get(f"/api/v1/workers/{node['id']}")
    assert r.status_code == 200
    assert len(r.json()["worker"]["accounts"]) == 1
    r = await client.get("/api/v1/workers/nd_missing")
    assert r.status_code == 404


async def test_proxies_parse_seal_and_never_show_the_password(
    hub: Any, client: httpx.AsyncClient
) -> None:
    owner = await make_user(client)
    r = await client.post(
        "/api/v1/proxies",
        json={"name": "p", "url": f"socks5://alice:{PROXY_PASSWORD}@10.0.0.5:1080"},
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    p = r.json()
    assert (p["protocol"], p["server"], p["username"]) == ("socks5", "10.0.0.5:1080", "alice")
    assert p["has_password"] is True
    assert PROXY_PASSWORD not in r.text
    assert p["url"] == "socks5://alice@10.0.0.5:1080"

    # HisCRM fields work too.
    r = await client.post(
        "/api/v1/proxies",
        json={"server": "proxy.example.com:8080", "protocol": "http"},
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["has_password"] is False

    listing = await client.get("/api/v1/proxies", headers=owner.headers)
    assert listing.json()["total"] == 2
    assert PROXY_PASSWORD not in listing.text
    r = await client.patch(
        f"/api/v1/proxies/{p['id']}", json={"server": "10.0.0.6:1081"}, headers=owner.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["server"] == "10.0.0.6:1081"
    assert r.json()["has_password"] is True  # kept
    other = await make_user(client)
    r = await client.get(f"/api/v1/proxies/{p['id']}", headers=other.headers)
    assert r.status_code == 404
    # Someone else's proxy cannot be put on your source.
    r = await client.post(
        "/api/v1/sources",
        json={"platform": "demo", "name": "s", "proxy_id": p["id"]},
        headers=other.headers,
    )
    assert r.status_code == 422
    assert "proxy_id" in r.json()["detail"]
    # The effective proxy (for a worker's message) has the password in clear.
    src = await client.post(
        "/api/v1/sources",
        json={"platform": "demo", "name": "s", "proxy_id": p["id"]},
        headers=owner.headers,
    )
    row = await hub.sources.get(src.json()["id"])
    eff = await hub.proxies.effective(row, None)
    assert eff["url"] == f"socks5://alice:{PROXY_PASSWORD}@10.0.0.6:1081"
    assert eff["public_url"] == "socks5://alice@10.0.0.6:1081"
    assert PROXY_PASSWORD not in await _stored_text(hub)


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"url": "not a url"}, "url"),
        ({"url": "ftp://host:21"}, "protocol"),
        ({"url": "http://host"}, "port"),
        ({"url": "http://host:99999"}, "port"),
        ({"url": "http://:8080"}, "host"),
        ({"url": "http://host:8080/path"}, "path"),
        ({"server": "host"}, "host:port"),
        ({"server": "host:abc"}, "numeric port"),
        ({"server": "bad host:80"}, "host"),
        ({}, "give url"),
        ({"url": "http://h:1", "server": "h:1"}, "not both"),
        ({"server": "h:1", "protocol": "gopher"}, "protocol"),
    ],
)
async def test_malformed_proxies_are_a_422(
    client: httpx.AsyncClient, body: Json, needle: str
) -> None:
    r = await client.post("/api/v1/proxies", json=body)
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"]


async def test_node_proxy_is_the_fallback_for_sources_without_one(
    hub: Any, client: httpx.AsyncClient
) -> None:
    r = await client.post("/api/v1/nodes", json={"name": "n"})
    node = r.json()
    p = (await client.post("/api/v1/proxies", json={"url": "http://u:pw@1.2.3.4:3128"})).json()
    r = await client.put(f"/api/v1/nodes/{node['id']}/proxy", json={"proxy_id": p["id"]})
    assert r.status_code == 200, r.text
    r = await client.put(f"/api/v1/nodes/{node['id']}/proxy", json={"proxy_id": "px_nope"})
    assert r.status_code == 422
    src = (await client.post("/api/v1/sources", json={"platform": "demo", "name": "s"})).json()
    eff = await hub.proxies.effective(await hub.sources.get(src["id"]), node["id"])
    assert eff["url"] == "http://u:pw@1.2.3.4:3128"
    assert await hub.proxies.effective(await hub.sources.get(src["id"]), None) is None
    # Deleting the proxy: everyone goes direct.
    r = await client.delete(f"/api/v1/proxies/{p['id']}")
    assert r.status_code == 204
    assert await hub.proxies.effective(await hub.sources.get(src["id"]), node["id"]) is None


async def test_credentials_are_sealed_at_rest_and_never_returned(
    hub: Any, client: httpx.AsyncClient
) -> None:
    owner = await make_user(client)
    r = await client.post(
        "/api/v1/sources",
        json={
            "platform": "demo",
            "name": "s",
            "credentials": {"cookies": [{"name": "sid", "value": COOKIE}]},
        },
        headers=owner.headers,
    )
    assert r.status_code == 201, r.text
    assert COOKIE not in r.text
    src = r.json()
    assert src["has_credentials"] is True
    assert src["credentials"] == "****"
    for path in (f"/api/v1/sources/{src['id']}", "/api/v1/sources", "/api/v1/accounts"):
        r = await client.get(path, headers=owner.headers)
        assert r.status_code == 200
        assert COOKIE not in r.text
    r = await client.get(f"/api/v1/accounts/{src['id']}", headers=owner.headers)
    assert COOKIE not in r.text and r.json()["account"]["has_credentials"] is True
    r = await client.get("/api/v1/events", params={"limit": 1000})
    assert COOKIE not in r.text
    assert COOKIE not in await _stored_text(hub)
    # The worker serving it gets them in clear.
    row = await hub.sources.get(src["id"])
    (acc,) = await hub.sources.worker_accounts([row], "nd_x")
    assert acc["credentials"] == {"cookies": [{"name": "sid", "value": COOKIE}]}
    # Clearing them.
    r = await client.patch(
        f"/api/v1/sources/{src['id']}", json={"credentials": None}, headers=owner.headers
    )
    assert r.json()["has_credentials"] is False


async def test_rotate_key_re_encrypts_every_sealed_value(
    db_url: str, make_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from zhongshu import testing
    from zhongshu.cli import app, secrets_commands
    from zhongshu.services.identity import Principal

    old_key, new_key = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings = make_settings(database_url=db_url, encryption_keys=[old_key])
    owner = Principal("user", "u1", "user")
    async with testing.running_hub(settings) as hub:
        src = await hub.sources.create(
            owner, {"platform": "demo", "name": "s", "credentials": {"cookies": [COOKIE]}}
        )
        await hub.proxies.create(owner, "p", {"url": f"http://a:{PROXY_PASSWORD}@h:1"})

    rotated: Settings = make_settings(database_url=db_url, encryption_keys=[new_key, old_key])
    counts = await secrets_commands.rotate(rotated)
    assert counts["sources.credentials"] == 1
    assert counts["proxies.password"] == 1
    # Only the new key is needed now.
    async with testing.running_hub(
        make_settings(database_url=db_url, encryption_keys=[new_key])
    ) as hub:
        row = await hub.sources.get(src["id"])
        (acc,) = await hub.sources.worker_accounts([row], "n")
        assert acc["credentials"] == {"cookies": [COOKIE]}
        (p,), _ = await hub.proxies.find(Principal("user", "u1", "admin"))
        assert PROXY_PASSWORD in (await hub.proxies.effective({"proxy_id": p["id"]}, None))["url"]
    # The command itself is registered and says what it did.
    from zhongshu.cli import _register_subcommands

    _register_subcommands()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"database_url: {db_url}\ndata_dir: {tmp_path / 'd'}\nencryption_keys: [{new_key}]\n"
    )
    monkeypatch.setenv("ZHONGSHU_CONFIG_FILE", str(cfg))  # restored after the test
    result = await asyncio.to_thread(
        CliRunner().invoke, app, ["secrets", "rotate-key", "--config", str(cfg)]
    )
    assert result.exit_code == 0, result.output
    assert "sources.credentials: 1 re-encrypted" in result.output
