"""Notification routing: rules, the digest window (a burst → one message), quiet hours,
digest entries kept in the database, and rate-limited system alerts for admins."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from identity_support import hub_client, make_user
from messages_support import make_channel, receiver, wait_for

from zhongshu.services.events import Event
from zhongshu.services.routing import quiet_until


@pytest.fixture
def routing_settings(db_url: str, make_settings: Any) -> Any:
    return make_settings(database_url=db_url, routing_tick_s=0.05, alerts_min_interval_s=60)


def _comment_event(source_id: str, owner_id: str, n: int) -> Event:
    return Event(
        "item.created",
        "source",
        source_id,
        "node:n1",
        {
            "source_id": source_id,
            "owner_id": owner_id,
            "kind": "comment",
            "ids": [f"c{n}"],
            "count": 1,
        },
    )


async def test_a_burst_of_twenty_comments_becomes_one_message(routing_settings: Any) -> None:
    async with hub_client(routing_settings) as (hub, client):
        alice = await make_user(client)
        with receiver() as rec:
            ch = await make_channel(
                client, alice.headers, url=f"json://{rec.url.removeprefix('http://')}/n"
            )
            r = await client.post(
                "/api/v1/notification-rules",
                json={
                    "name": "my comments",
                    "events": ["item.created"],
                    "item_kinds": ["comment"],
                    "channel_ids": [ch["id"]],
                    "digest_window_s": 1,
                },
                headers=alice.headers,
            )
            assert r.status_code == 201, r.text
            rule = r.json()
            for n in range(20):
                hub.bus.publish([_comment_event("src-1", alice.id, n)])
            # Other people's items and other kinds do not match.
            hub.bus.publish([_comment_event("src-9", "someone-else", 99)])
            ev = _comment_event("src-1", alice.id, 100)
            hub.bus.publish(
                [
                    Event(
                        ev.type,
                        ev.subject_type,
                        ev.subject_id,
                        ev.actor,
                        {**ev.data, "kind": "content"},
                    )
                ]
            )

            async def pending() -> bool:
                got = await client.get(
                    f"/api/v1/notification-rules/{rule['id']}", headers=alice.headers
                )
                return got.json()["pending"] == 20

            await wait_for(pending, timeout_s=10)

            async def one_message() -> list[Any]:
                return rec.at("/n")

            hits = await wait_for(one_message, timeout_s=10)
            await wait_for(lambda: _count_zero(client, rule["id"], alice.headers), timeout_s=10)
            await asyncio.sleep(0.3)
            assert len(rec.at("/n")) == 1
            sent = hits[0].json()
            assert sent["title"] == "my comments: 20 new events"
            assert sent["message"].count("1 new comment on source src-1") == 20
            msgs = (await client.get("/api/v1/messages", headers=alice.headers)).json()
            assert msgs["total"] == 1 and msgs["items"][0]["origin"] == "routing"


async def _count_zero(client: httpx.AsyncClient, rule_id: str, headers: dict[str, str]) -> bool:
    got = await client.get(f"/api/v1/notification-rules/{rule_id}", headers=headers)
    return got.json()["pending"] == 0  # type: ignore[no-any-return]


async def test_digest_entries_wait_in_the_database_during_quiet_hours(
    routing_settings: Any,
) -> None:
    async with hub_client(routing_settings) as (hub, client):
        with receiver() as rec:
            ch = await make_channel(client, url=f"json://{rec.url.removeprefix('http://')}/q")
            now = time.gmtime()
            start = f"{now.tm_hour:02d}:00"
            end = f"{(now.tm_hour + 2) % 24:02d}:00"
            r = await client.post(
                "/api/v1/notification-rules",
                json={
                    "name": "quiet",
                    "events": ["node.offline"],
                    "channel_ids": [ch["id"]],
                    "quiet_start": start,
                    "quiet_end": end,
                },
            )
            assert r.status_code == 201, r.text
            rule = r.json()
            hub.bus.publish([Event("node.offline", "node", "n-1", "system", {"name": "box-1"})])
            await wait_for(lambda: _pending_is(client, rule["id"], 1), timeout_s=10)
            await hub.routing.flush_due()
            assert rec.at("/q") == []  # held: it is quiet time
            entries = await hub.routing.store.entries(rule["id"])
            assert entries[0]["due_at"] > time.time() + 60
            # After the quiet period the held entry goes out as one message.
            await hub.routing.flush_due(now=entries[0]["due_at"] + 1)
            await wait_for(lambda: _hits(rec, "/q"), timeout_s=10)
            assert "box-1" in rec.at("/q")[0].json()["message"]


async def _pending_is(client: httpx.AsyncClient, rule_id: str, n: int) -> bool:
    got = await client.get(f"/api/v1/notification-rules/{rule_id}")
    return got.json()["pending"] == n  # type: ignore[no-any-return]


async def _hits(rec: Any, path: str) -> bool:
    return bool(rec.at(path))


def test_quiet_hours_across_midnight() -> None:
    rule = {"quiet_start": "22:00", "quiet_end": "07:00", "timezone": "UTC"}
    at_23 = 1_700_000_000 - (1_700_000_000 % 86400) + 23 * 3600
    until = quiet_until(rule, at_23)
    assert until == at_23 + 8 * 3600
    assert quiet_until(rule, at_23 - 12 * 3600) is None


async def test_rules_are_checked_and_owned(routing_settings: Any) -> None:
    async with hub_client(routing_settings) as (_hub, client):
        alice = await make_user(client)
        bob = await make_user(client)
        mine = await make_channel(client, alice.headers, url="json://127.0.0.1:9/x")
        theirs = await make_channel(client, bob.headers, url="json://127.0.0.1:9/x")
        base = {"name": "r", "events": ["item.created"], "channel_ids": [mine["id"]]}
        for change in (
            {"events": ["nope"]},
            {"events": ["node.offline"]},  # admins only
            {"channel_ids": [theirs["id"]]},
            {"channel_ids": []},
            {"quiet_start": "22:00"},
            {"quiet_start": "25:00", "quiet_end": "07:00"},
            {"timezone": "Mars/Olympus"},
            {"digest_window_s": -1},
        ):
            r = await client.post(
                "/api/v1/notification-rules", json={**base, **change}, headers=alice.headers
            )
            assert r.status_code == 422, (change, r.text)
        r = await client.post("/api/v1/notification-rules", json=base, headers=alice.headers)
        rule = r.json()
        r = await client.get(f"/api/v1/notification-rules/{rule['id']}", headers=bob.headers)
        assert r.status_code == 404
        r = await client.patch(
            f"/api/v1/notification-rules/{rule['id']}",
            json={"digest_window_s": 60, "quiet_start": "01:00", "quiet_end": "02:00"},
            headers=alice.headers,
        )
        assert r.status_code == 200 and r.json()["digest_window_s"] == 60


async def test_system_alerts_are_rate_limited_and_routed_to_admins(routing_settings: Any) -> None:
    async with hub_client(routing_settings) as (hub, client):
        with receiver() as rec:
            ch = await make_channel(client, url=f"json://{rec.url.removeprefix('http://')}/a")
            r = await client.post(
                "/api/v1/notification-rules",
                json={"name": "alerts", "events": ["system.alert"], "channel_ids": [ch["id"]]},
            )
            assert r.status_code == 201, r.text
            assert await hub.alerts.alert("disk", "error", "disk nearly full") is True
            assert await hub.alerts.alert("disk", "error", "disk nearly full") is False
            assert hub.alerts.suppressed["disk"] == 1
            await wait_for(lambda: _hits(rec, "/a"), timeout_s=10)
            assert "disk nearly full" in rec.at("/a")[0].json()["message"]
            stored = (await client.get("/api/v1/events", params={"type": "system.alert"})).json()
            assert any(e["subject_id"] == "disk" for e in stored["items"])
            # A burst of node.offline events: one alert per node, not one per event.
            for _ in range(3):
                hub.bus.publish([Event("node.offline", "node", "n-7", "system", {"name": "n7"})])
            await wait_for(lambda: _alerts_for(hub, "node_offline:n-7"), timeout_s=10)
            assert hub.alerts.suppressed["node_offline:n-7"] == 2


async def _alerts_for(hub: Any, key: str) -> bool:
    return key in hub.alerts._last


async def test_dead_task_spike_repeated_errors_and_a_full_disk_raise_alerts(
    db_url: str, make_settings: Any
) -> None:
    """Real triggers, no hand-made events: hub tasks that fail and die, and the disk check
    with a threshold every disk is below."""
    from zhongshu.services.executor import PermanentFailure, TaskContext

    settings = make_settings(
        database_url=db_url,
        alerts_min_interval_s=60,
        alerts_dead_task_threshold=3,
        alerts_error_threshold=4,
        alerts_disk_free_ratio=1.0,
    )
    async with hub_client(settings) as (hub, _client):
        seen: list[Event] = []
        hub.bus.listen("system.alert", seen.append)

        async def broken(ctx: TaskContext) -> None:
            raise PermanentFailure("the remote refused the payload")

        hub.executor.register("test.broken", broken)
        for i in range(3):
            await hub.executor.submit("test.broken", {"i": i}, max_attempts=1)

        async def published(key: str) -> bool:
            return any(e.subject_id == key for e in seen)

        await wait_for(lambda: published("dead_tasks"), timeout_s=10)
        dead = next(e for e in seen if e.subject_id == "dead_tasks")
        assert dead.data["level"] == "error" and "3 tasks died" in dead.data["message"]
        assert "the remote refused the payload" in dead.data["message"]

        async def flaky(ctx: TaskContext) -> None:
            raise ConnectionError("receiver down")

        hub.executor.register("test.flaky", flaky)
        await hub.executor.submit("test.flaky", {}, max_attempts=5)
        await wait_for(lambda: published("repeated_errors"), timeout_s=10)
        errors_alert = next(e for e in seen if e.subject_id == "repeated_errors")
        assert "receiver down" in errors_alert.data["message"]

        # The disk check ran when the hub started (every disk is under a 100 % ratio).
        await wait_for(lambda: _alerts_for(hub, "disk"), timeout_s=10)
        rows, _ = await hub.events.query(type_prefix="system.alert", subject_id="disk")
        assert rows and "nearly full" in rows[0]["data"]["message"]
        assert str(settings.data_dir) in rows[0]["data"]["message"]
        # Rate limited: the next check inside the interval stays quiet.
        assert await hub.alerts.check_disk() is False
        assert hub.alerts.suppressed["disk"] == 1


async def test_two_hubs_flushing_one_rule_send_every_entry_exactly_once(
    db_url: str, make_settings: Any
) -> None:
    """Replicas race to flush the same rule while events keep arriving on both: every
    entry lands in exactly one digest message — none dropped, none repeated."""
    from sqlalchemy import select

    from zhongshu import testing
    from zhongshu.db.schema import messages

    settings = make_settings(database_url=db_url, routing_tick_s=0.01)
    other = make_settings(
        database_url=db_url, routing_tick_s=0.01, data_dir=settings.data_dir / "b"
    )
    async with hub_client(settings) as (hub_a, client), testing.running_hub(other) as hub_b:
        with receiver() as rec:
            ch = await make_channel(client, url=f"json://{rec.url.removeprefix('http://')}/d")
            r = await client.post(
                "/api/v1/notification-rules",
                json={
                    "name": "race",
                    "events": ["item.created"],
                    "channel_ids": [ch["id"]],
                    "digest_window_s": 1,
                },
            )
            assert r.status_code == 201, r.text
            admin_id = (await client.get("/api/v1/me")).json()["id"]
            n_events = 60
            for n in range(n_events):
                target = hub_a if n % 2 else hub_b
                target.bus.publish([_comment_event(f"src-{n:03d}", admin_id, n)])
                await asyncio.sleep(0.03)
            await wait_for(lambda: _count_zero(client, r.json()["id"], {}), timeout_s=15)
            rows = await hub_a.db.run_read(
                lambda c: [dict(m._mapping) for m in c.execute(select(messages))]
            )
    digests = [m for m in rows if m["origin"] == "routing"]
    assert len(digests) > 1  # the race really happened over several batches
    text = "\n".join(m["content"] for m in digests)
    for n in range(n_events):
        assert text.count(f"on source src-{n:03d}") == 1, (n, text)


async def test_a_batch_left_by_a_dead_hub_is_sent_once_by_another(routing_settings: Any) -> None:
    async with hub_client(routing_settings) as (hub, client):
        with receiver() as rec:
            ch = await make_channel(client, url=f"json://{rec.url.removeprefix('http://')}/z")
            rule = (
                await client.post(
                    "/api/v1/notification-rules",
                    json={
                        "name": "orphan",
                        "events": ["item.created"],
                        "channel_ids": [ch["id"]],
                        "digest_window_s": 3600,
                    },
                )
            ).json()
            admin_id = (await client.get("/api/v1/me")).json()["id"]
            for n in range(3):
                hub.bus.publish([_comment_event(f"orphan-{n}", admin_id, n)])
            await wait_for(lambda: _pending(hub, rule["id"], 3), timeout_s=10)
            # A hub claims the due batch and dies before sending it.
            later = time.time() + 3601
            claimed = await hub.routing.store.claim(rule["id"], "deadhub0batch", later, 0.0)
            assert len(claimed) == 3
            assert await hub.routing.flush_due(later) == 0  # claimed: not sent again yet
            # Long after, another hub takes the batch over and sends it — once.
            much_later = later + 600
            assert await hub.routing.flush_due(much_later) == 1
            assert await hub.routing.flush_due(much_later) == 0

            async def delivered() -> bool:
                return bool(rec.at("/z"))

            await wait_for(delivered, timeout_s=10)
            msg = await hub.messages.get("dg-deadhub0batch")
            assert msg["content"].count("orphan-") == 3
            assert await hub.routing.store.pending_count(rule["id"]) == 0


async def _pending(hub: Any, rule_id: str, n: int) -> bool:
    return bool(await hub.routing.store.pending_count(rule_id) == n)
