"""Collected data in-process on each database: merge semantics (flags survive, prune),
delta sequences, the HTTP sync door, paging and filters, user isolation on every IM
route, integrity, export → wipe → import, retention."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from identity_support import make_user
from matrix_im import documented_data, envelope, insert_source, payload

from zhongshu import errors

pytestmark = pytest.mark.timeout(60)
Json = dict[str, Any]


async def _node(hub: Any) -> tuple[Json, dict[str, str]]:
    node, secret = await hub.nodes.create("collector", capabilities=["douyin"])
    return node, {"authorization": f"AK-SK {node['access_key']}:{secret}"}


async def _conversations(
    client: httpx.AsyncClient, headers: Json | None = None, **params: Any
) -> list[Json]:
    r = await client.get("/api/im/conversations", params={"limit": 500, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]["conversations"]  # type: ignore[no-any-return]


async def test_flags_survive_resync_and_prune_drops_only_when_asked(
    hub: Any, client: httpx.AsyncClient
) -> None:
    src = await insert_source(hub, "owner-x")
    await hub.sync.sync(None, payload(src))
    convs = {c["conversation_id"]: c for c in await _conversations(client, account_id=src)}
    target = convs["conv-0"]["id"]
    for path in ("read", "pin", "mute"):
        r = await client.put(f"/api/im/conversations/{target}/{path}")
        assert r.status_code == 200, r.text
    after = r.json()["data"]
    assert after["is_read"] and after["is_pinned"] and after["is_muted"]
    assert after["unread_count"] == 0
    # Marking the conversation read marked its messages read.
    r = await client.get("/api/im/messages", params={"conversation_id": "conv-0", "is_read": False})
    assert r.json()["data"]["messages"] == []

    # A re-sync with changed content keeps the flags and updates the content.
    data = documented_data()
    data["conversations"][0]["last_message_content"] = "changed"
    data["conversations"][0]["is_pinned"] = False
    ack = await hub.sync.sync(None, payload(src, data))
    assert ack["updated"] == 1 and ack["created"] == {}
    r = await client.get(f"/api/im/conversations/{target}")
    got = r.json()["data"]
    assert got["last_message_content"] == "changed"
    assert got["is_read"] and got["is_pinned"] and got["is_muted"]

    # Missing from a snapshot: kept without prune, dropped with prune (same kind only).
    small = {"conversations": data["conversations"][:5]}
    await hub.sync.sync(None, payload(src, small))
    assert len(await _conversations(client, account_id=src)) == 29
    ack = await hub.sync.sync(None, payload(src, small, prune=True))
    assert ack["pruned"] == 24
    left = await _conversations(client, account_id=src)
    assert len(left) == 5 and next(c for c in left if c["id"] == target)["is_pinned"]
    r = await client.get("/api/im/contents", params={"account_id": src})
    assert len(r.json()["data"]["contents"]) == 5  # other kinds untouched

    r = await client.delete(f"/api/im/conversations/{target}/pin")
    assert r.json()["data"]["is_pinned"] is False
    r = await client.delete(f"/api/im/conversations/{target}/mute")
    assert r.json()["data"]["is_muted"] is False
    r = await client.delete(f"/api/im/conversations/{target}")
    assert r.status_code == 200
    assert (await client.get(f"/api/im/conversations/{target}")).status_code == 404
    r = await client.get("/api/im/messages", params={"conversation_id": "conv-0"})
    assert r.json()["data"]["messages"] == []


async def test_delta_sequences(hub: Any) -> None:
    src = await insert_source(hub, "owner-x")

    def delta(seq: int, ids: list[str]) -> Json:
        return payload(src, {"comments": [{"id": i} for i in ids]}, mode="delta", seq=seq)

    assert (await hub.sync.sync(None, delta(1, ["a", "b"])))["created"] == {"comment": 2}
    dup = await hub.sync.sync(None, delta(1, ["a", "b", "zzz"]))
    assert dup["duplicate"] and dup["created"] == {}
    with pytest.raises(errors.SyncGap) as gap:
        await hub.sync.sync(None, delta(3, ["c"]))
    assert gap.value.expected_seq == 2
    assert (await hub.sync.sync(None, delta(2, ["b", "c"])))["created"] == {"comment": 1}
    # A snapshot restarts the sequence at its own seq.
    await hub.sync.sync(None, payload(src, {"comments": [{"id": "a"}]}, seq=10))
    with pytest.raises(errors.SyncGap):
        await hub.sync.sync(None, delta(12, ["d"]))
    assert (await hub.sync.sync(None, delta(11, ["d"])))["created"] == {"comment": 1}
    # Out-of-order old seq: a duplicate, nothing written.
    assert (await hub.sync.sync(None, delta(5, ["e"])))["duplicate"]
    counts, states = await hub.items.stats(None)
    assert [int(c["n"]) for c in counts] == [4]
    assert states[0]["last_seq"] == 11


async def test_http_sync_door(hub: Any, client: httpx.AsyncClient) -> None:
    node, node_headers = await _node(hub)
    _other, other_headers = await _node(hub)
    src = await insert_source(hub, "owner-x", node["id"])
    # Online, so the assignment loop never takes the source away during the test.
    r = await client.post(
        "/api/v1/agent/register", json={"capabilities": ["douyin"]}, headers=node_headers
    )
    assert r.status_code == 200, r.text
    url = f"/api/v1/sources/{src}/sync"
    r = await client.post(url, json=payload(src), headers=node_headers)
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "WORKER_DATA_SYNC_ACK" and r.json()["payload"]["success"]
    r = await client.post(url, json=envelope(src), headers=node_headers)  # the envelope too
    assert r.status_code == 200 and r.json()["payload"]["created"] == {}
    r = await client.post(
        url, json=payload(src, {"messages": []}, mode="delta", seq=5), headers=node_headers
    )
    assert r.status_code == 409 and r.json()["expected_seq"] == 1 and r.json()["resync"]
    r = await client.post(url, json=payload(src), headers=other_headers)
    assert r.status_code == 403 and "not assigned" in r.json()["detail"]
    r = await client.post(url, json=payload("another"), headers=node_headers)
    assert r.status_code == 422 and "does not match" in r.json()["detail"]
    r = await client.post(
        url, json={"accountId": src, "snapshot": {"data": {"x": []}}}, headers=node_headers
    )
    assert r.status_code == 422 and "unknown kind" in r.json()["detail"]
    r = await client.post(url, json=payload(src), headers=client.headers)  # a user, not a node
    assert r.status_code == 403
    hub.sync.max_items = 10
    r = await client.post(url, json=payload(src), headers=node_headers)
    assert r.status_code == 413 and "im_sync_max_items" in r.json()["detail"]
    r = await client.post(
        "/api/v1/sources/nope/sync", json=payload("nope", {"comments": []}), headers=node_headers
    )
    assert r.status_code == 404


async def test_paging_filters_and_cursor(hub: Any, client: httpx.AsyncClient) -> None:
    src = await insert_source(hub, "owner-x")
    await hub.sync.sync(None, payload(src))
    everything = await _conversations(client, account_id=src)
    seen: list[str] = []
    cursor = None
    while True:
        params: Json = {"account_id": src, "limit": 7}
        if cursor:
            params["cursor"] = cursor
        r = await client.get("/api/im/conversations", params=params)
        data = r.json()["data"]
        seen += [c["id"] for c in data["conversations"]]
        cursor = data["next_cursor"]
        if not data["has_more"]:
            break
    assert seen == [c["id"] for c in everything]
    r = await client.get("/api/im/conversations", params={"limit": 5, "offset": 5})
    assert [c["id"] for c in r.json()["data"]["conversations"]] == seen[5:10]
    r = await client.get("/api/im/conversations", params={"order": "asc", "limit": 3})
    assert [c["conversation_id"] for c in r.json()["data"]["conversations"]] == [
        "conv-28",
        "conv-27",
        "conv-26",
    ]
    r = await client.get(
        "/api/im/conversations", params={"keyword": "hello 1", "include_total": True}
    )
    assert r.json()["data"]["total"] == 11  # hello 1, hello 10..19
    base_s = 1_761_804_248.025
    r = await client.get(
        "/api/im/conversations",
        params={"since": (base_s - 4.5) * 1000, "until": base_s * 1000, "include_total": True},
    )
    assert r.json()["data"]["total"] == 4  # conv-1..conv-4 (until is exclusive)
    r = await client.get("/api/im/conversations", params={"since": base_s - 2.5})
    assert len(r.json()["data"]["conversations"]) == 3
    r = await client.get("/api/im/conversations", params={"cursor": "garbage!"})
    assert r.status_code == 422 and "cursor" in r.json()["detail"]
    r = await client.get("/api/im/conversations", params={"limit": 0})
    assert r.status_code == 422
    r = await client.get("/api/im/unified-messages", params={"limit": 3})
    uni = r.json()["data"]
    assert {m["type"] for m in uni["messages"]} <= {"comment", "direct_message"}
    assert uni["has_more"] and uni["unread"]["total"] == 20


async def test_every_im_route_is_isolated_per_user(hub: Any, client: httpx.AsyncClient) -> None:
    alice = await make_user(client)
    bob = await make_user(client)
    a_src = await insert_source(hub, alice.id)
    b_src = await insert_source(hub, bob.id)
    await hub.sync.sync(None, payload(a_src, documented_data("a-")))
    await hub.sync.sync(None, payload(b_src, documented_data("b-")))
    a_conv = (await _conversations(client, alice.headers))[0]["id"]
    note = await hub.notifications.create("system", "for alice", owner_id=alice.id)

    lists = {
        "/api/im/conversations": "conversations",
        "/api/im/messages": "messages",
        "/api/im/contents": "contents",
        "/api/im/discussions": "discussions",
        "/api/im/unified-messages": "messages",
    }
    for path, key in lists.items():
        for who, src, prefix in ((alice, a_src, "a-"), (bob, b_src, "b-")):
            r = await client.get(path, params={"limit": 500}, headers=who.headers)
            rows = r.json()["data"][key]
            assert rows and all(row["account_id"] == src for row in rows), path
            assert all(
                str(
                    row.get("conversation_id")
                    or row.get("content_id")
                    or row.get("message_id")
                    or ""
                ).startswith(prefix)
                for row in rows
            ), path
        # Asking for someone else's account gives nothing, not their data.
        r = await client.get(path, params={"account_id": a_src}, headers=bob.headers)
        assert r.json()["data"][key] == [], path
    r = await client.get("/api/im/accounts", headers=bob.headers)
    assert [a["id"] for a in r.json()["data"]["accounts"]] == [b_src]
    for path in ("/api/im/stats", "/api/v1/status"):
        r = await client.get(path, headers=bob.headers)
        stats = r.json().get("data") or r.json()["data_store"]
        assert [a["account_id"] for a in stats["accounts"]] == [b_src]
    r = await client.get("/api/im/integrity", headers=bob.headers)
    assert all(i["account_id"] == b_src for i in r.json()["data"]["orphan_comments"]["items"])
    for path, key in (
        ("/api/v1/comments", "comments"),
        ("/api/v1/direct-messages", "direct_messages"),
    ):
        r = await client.get(path, headers=bob.headers)
        assert r.json()[key] and all(x["account_id"] == b_src for x in r.json()[key])
    r = await client.get("/api/v1/notifications", headers=bob.headers)
    assert note["id"] not in [n["id"] for n in r.json()["notifications"]]

    # Someone else's object is 404 on every route that names one.
    for method, path in (
        ("GET", f"/api/im/conversations/{a_conv}"),
        ("PUT", f"/api/im/conversations/{a_conv}/read"),
        ("PUT", f"/api/im/conversations/{a_conv}/pin"),
        ("DELETE", f"/api/im/conversations/{a_conv}/pin"),
        ("PUT", f"/api/im/conversations/{a_conv}/mute"),
        ("DELETE", f"/api/im/conversations/{a_conv}/mute"),
        ("DELETE", f"/api/im/conversations/{a_conv}"),
        ("PUT", f"/api/v1/notifications/{note['id']}/read"),
    ):
        r = await client.request(method, path, headers=bob.headers)
        assert r.status_code == 404, (method, path, r.text)
    r = await client.post(
        "/api/im/conversations",
        json={"account_id": a_src, "conversation_id": "x"},
        headers=bob.headers,
    )
    assert r.status_code == 404
    r = await client.get(f"/api/im/conversations/{a_conv}", headers=alice.headers)
    assert r.status_code == 200 and not r.json()["data"]["is_pinned"]
    # The owner may create a conversation; a duplicate platform id conflicts.
    body = {"account_id": a_src, "conversation_id": "new-1", "platform_user_name": "new peer"}
    r = await client.post("/api/im/conversations", json=body, headers=alice.headers)
    assert r.status_code == 201 and r.json()["data"]["platform_user_name"] == "new peer"
    r = await client.post("/api/im/conversations", json=body, headers=alice.headers)
    assert r.status_code == 409


async def test_integrity_finds_planted_orphans(hub: Any, client: httpx.AsyncClient) -> None:
    src = await insert_source(hub, "owner-x")
    data = {
        "contents": [{"id": "v1"}],
        "comments": [{"id": "ok", "content_id": "v1"}, {"id": "lost", "content_id": "v404"}],
        "conversations": [{"id": "c1"}],
        "messages": [
            {"id": "m-ok", "conversation_id": "c1"},
            {"id": "m-lost", "conversation_id": "c404"},
            {"id": "m-lost2", "conversation_id": "c405"},
        ],
    }
    await hub.sync.sync(None, payload(src, data))
    r = await client.get("/api/im/integrity")
    report = r.json()["data"]
    assert report["ok"] is False
    assert report["orphan_comments"]["count"] == 1
    assert [i["platform_id"] for i in report["orphan_comments"]["items"]] == ["lost"]
    assert report["orphan_messages"]["count"] == 2
    assert sorted(i["parent_id"] for i in report["orphan_messages"]["items"]) == ["c404", "c405"]
    await hub.sync.sync(None, payload(src, {"conversations": [{"id": "c404"}, {"id": "c405"}]}))
    r = await client.get("/api/im/integrity")
    assert r.json()["data"]["orphan_messages"]["count"] == 0


async def _snapshot(client: httpx.AsyncClient) -> list[Any]:
    views = []
    for path in (
        "/api/im/conversations",
        "/api/im/messages",
        "/api/im/contents",
        "/api/im/discussions",
        "/api/im/unified-messages",
    ):
        r = await client.get(path, params={"limit": 500, "include_total": True})
        views.append(r.json())
    r = await client.get("/api/v1/comments", params={"limit": 500})
    views.append(r.json())
    r = await client.get("/api/im/stats")
    stats = r.json()
    for a in stats["data"]["accounts"]:
        a.pop("last_sync_at")  # syncs are not replayed
    views.append(stats)
    return views


async def test_export_wipe_import_gives_identical_results(
    hub: Any, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    a = await insert_source(hub, "owner-a")
    b = await insert_source(hub, "owner-b")
    await hub.sync.sync(None, payload(a, documented_data("a-")))
    await hub.sync.sync(None, payload(b, documented_data("b-")))
    conv = (await _conversations(client, account_id=a))[3]["id"]
    await client.put(f"/api/im/conversations/{conv}/pin")
    await client.put(f"/api/im/conversations/{conv}/read")
    before = await _snapshot(client)

    file = tmp_path / "all.jsonl.gz"
    assert await hub.data_transfer.export_file(file) == 108
    lines = gzip.decompress(file.read_bytes()).decode().splitlines()
    assert json.loads(lines[0])["format"] == "zhongshu.items"
    await hub.items.wipe()
    assert (await _conversations(client)) == []
    totals = await hub.data_transfer.import_file(file)
    assert totals["inserted"] == 108
    assert await _snapshot(client) == before
    again = await hub.data_transfer.import_file(file)  # idempotent
    assert again["inserted"] == 0 and again["updated"] == 108
    assert await _snapshot(client) == before
    # New syncs after an import do not collide with imported ids.
    await hub.sync.sync(None, payload(a, {"comments": [{"id": "after-import"}]}))

    # One account only, through the admin API (export streams gzip; import takes it back).
    r = await client.get("/api/v1/data/export", params={"account_id": b})
    assert r.status_code == 200 and r.headers["content-type"] == "application/gzip"
    body = r.content
    assert sum(1 for line in gzip.decompress(body).splitlines() if b'"type":"item"' in line) == 54
    await hub.items.wipe(b)
    r = await client.post("/api/v1/data/import", content=body)
    assert r.status_code == 200 and r.json()["inserted"] == 54
    r = await client.post("/api/v1/data/import", content=b'{"format": "other"}\n')
    assert r.status_code == 422 and "not a zhongshu items export" in r.json()["detail"]
    bad = b'{"format":"zhongshu.items","version":1}\n{"type":"item","kind":"x"}\n'
    r = await client.post("/api/v1/data/import", content=bad)
    assert r.status_code == 422 and "line 2" in r.json()["detail"]


def test_cli_export_and_import(make_settings: Any, tmp_path: Path) -> None:
    import asyncio

    import yaml
    from typer.testing import CliRunner

    from zhongshu import testing
    from zhongshu.cli import _register_subcommands
    from zhongshu.cli import app as cli_app

    db_url = f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}"
    settings = make_settings(database_url=db_url)
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {"database_url": db_url, "secret_key": settings.secret_key, "data_dir": str(tmp_path)}
        )
    )

    async def seed() -> str:
        async with testing.running_hub(settings) as h:
            src = await insert_source(h, "owner")
            await h.sync.sync(None, payload(src))
            return src

    src = asyncio.run(seed())
    _register_subcommands()
    runner = CliRunner()
    out = tmp_path / "one.jsonl.gz"
    r = runner.invoke(cli_app, ["data", "export", "--account", src, str(out), "-C", str(config)])
    assert r.exit_code == 0, r.output
    assert "exported 54 items" in r.output

    async def wipe() -> None:
        async with testing.running_hub(settings) as h:
            await h.items.wipe()

    asyncio.run(wipe())
    r = runner.invoke(cli_app, ["data", "import", str(out), "-C", str(config)])
    assert r.exit_code == 0, r.output
    assert "imported 54 items" in r.output and "54 new" in r.output
    r = runner.invoke(cli_app, ["data", "import", str(out), "-C", str(config)])
    assert "0 new, 54 merged" in r.output
    r = runner.invoke(cli_app, ["data", "import", str(tmp_path / "missing"), "-C", str(config)])
    assert r.exit_code == 2


async def test_retention_deletes_old_items_per_kind(hub: Any) -> None:
    from zhongshu.services.retention import RetentionService

    src = await insert_source(hub, "owner-x")
    now = time.time()
    old = now - 10 * 86400
    data = {
        "messages": [{"id": "old", "create_time": old}, {"id": "new", "create_time": now}],
        "comments": [{"id": "old-c", "create_time": old}],
    }
    await hub.sync.sync(None, payload(src, data))
    keeper = RetentionService(hub.items, {"message": 5}, interval_s=1, batch=1)
    assert await keeper.apply_once() == {"message": 1}
    counts, _ = await hub.items.stats(None)
    assert {c["kind"]: int(c["n"]) for c in counts} == {"message": 1, "comment": 1}
    with pytest.raises(errors.ConfigError):
        RetentionService(hub.items, {"likes": 1}, interval_s=1)


async def test_bad_items_refuse_the_whole_batch(hub: Any) -> None:
    src = await insert_source(hub, "owner-x")
    good = [{"id": f"g{i}"} for i in range(5)]
    for bad_item, needle in (
        ({"content": "no id"}, "missing id"),
        ({"id": {"nested": 1}}, "missing id"),
        ("a string", "must be an object"),
        ({"id": "x" * 300}, "longer than"),
        ({"id": "t", "create_time": "yesterday"}, "not a time"),
        ({"id": "big", "content": "x" * 300_000}, "im_sync_max_item_bytes"),
    ):
        with pytest.raises(errors.InvalidInput) as exc:
            await hub.sync.sync(None, payload(src, {"comments": [*good, bad_item]}))
        assert needle in exc.value.message
    counts, states = await hub.items.stats(None)
    assert counts == [] and states == []


async def test_a_bad_item_deep_in_a_large_snapshot_refuses_all_of_it(hub: Any) -> None:
    """On PostgreSQL a large snapshot is normalized while it streams into COPY: an item
    that fails late must still roll back everything, the rows already copied included."""
    src = await insert_source(hub, "owner-late")
    good = [
        {"id": f"late-{i}", "text": f"ok {i}", "create_time": 1_700_000_000 + i}
        for i in range(6000)
    ]
    for bad_item, needle in (
        ({"id": "late-bad", "create_time": "yesterday"}, "not a time"),
        ({"id": "x" * 300}, "longer than"),
        ({"id": "late-big", "content": "x" * 300_000}, "im_sync_max_item_bytes"),
    ):
        comments = [*good[:5500], bad_item, *good[5500:]]
        with pytest.raises(errors.InvalidInput) as exc:
            await hub.sync.sync(
                None, payload(src, {"comments": comments, "contents": [{"id": "p"}]})
            )
        assert needle in exc.value.message
    counts, _ = await hub.items.stats(None)
    assert counts == []
    # The same batch without the bad item goes in whole.
    done = await hub.sync.sync(None, payload(src, {"comments": good}))
    assert done["created"] == {"comment": 6000}


async def test_a_large_snapshot_takes_the_bulk_path_and_stays_idempotent(
    hub: Any, client: httpx.AsyncClient
) -> None:
    """6,000 comments in one sync: above the bulk threshold (binary COPY on PostgreSQL),
    every item stored once with its fields, one ``item.created`` event, and a re-send
    changes nothing."""
    src = await insert_source(hub, "owner-bulk")
    n = 6000
    base = 1_700_000_000
    data: dict[str, list[Json]] = {
        "contents": [{"id": "post-1", "title": "Bulk post", "publish_time": base}],
        "comments": [
            {
                "id": f"bulk-{i}",
                "content_id": "post-1",
                "author_name": f"fan {i % 97}",
                "text": f"comment number {i} ✓",
                "create_time": base + i,
            }
            for i in range(n)
        ],
    }
    seen: list[Any] = []
    hub.bus.listen("item.created", seen.append)
    first = await hub.sync.sync(None, payload(src, data))
    assert first["created"] == {"comment": n, "content": 1}, first
    created = [e for e in seen if e.data["kind"] == "comment"]
    assert len(created) == 1 and created[0].data["count"] == n
    assert len(set(created[0].data["ids"])) == n

    again = await hub.sync.sync(None, payload(src, data))
    assert again["created"] == {} and again["updated"] == 0, again
    r = await client.get(
        "/api/im/discussions",
        params={"account_id": src, "content_id": "post-1", "limit": 1, "include_total": True},
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["total"] == n
    stats = (await client.get("/api/im/stats")).json()["data"]
    account = next(a for a in stats["accounts"] if a["account_id"] == src)
    assert account["items"]["comments"] == n and account["items"]["contents"] == 1
    # Fields survive the bulk path intact (non-ASCII text, times, parent, author).
    r = await client.get("/api/v1/comments", params={"account_id": src, "limit": 100})
    body = r.json()
    assert body["total"] == n
    for c in body["comments"]:
        i = int(c["platform_comment_id"].removeprefix("bulk-"))
        assert c["content"] == f"comment number {i} ✓"
        assert c["post_id"] == "post-1" and c["post_title"] == "Bulk post"
        assert c["author_name"] == f"fan {i % 97}"
        assert c["created_at"] == (base + i) * 1000
