"""Assignment of sources to nodes, the monitoring scheduler and login expiry, on a real
database (and two hubs sharing one database for the concurrency test)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, update

from zhongshu import testing
from zhongshu.db.schema import events, sources
from zhongshu.services.events import Event
from zhongshu.services.identity import SYSTEM, Principal
from zhongshu.services.sources import assigned_event
from zhongshu.testing import wait_until

pytestmark = pytest.mark.timeout(90)
OWNER = Principal("user", "owner1", "user", name="owner1")
Row = dict[str, Any]


@contextlib.asynccontextmanager
async def started(settings: Any) -> AsyncIterator[Any]:
    async with testing.running_hub(settings) as h:
        yield h


@pytest.fixture
def settings(db_url: str, make_settings: Any) -> Any:
    # Loops that would race the test's own calls are slowed down; the test drives them.
    return make_settings(
        database_url=db_url,
        offline_after_s=60,
        monitor_tick_s=3600,
        assignment_tick_s=3600,
        login_watch_interval_s=3600,
    )


@pytest.fixture
async def hub(settings: Any) -> AsyncIterator[Any]:
    async with started(settings) as h:
        yield h


async def add_node(hub: Any, caps: list[str], max_accounts: int = 10, online: bool = True) -> Row:
    node, _ = await hub.nodes.create(f"n-{random.random():.6f}", max_accounts=max_accounts)
    if online:
        await hub.nodes.register(node, {"capabilities": caps, "host": "t"})
    return await hub.nodes.get(node["id"])


async def go_offline(hub: Any, node_id: str) -> None:
    """What the reaper does for a silent node (store update + event), without the wait."""
    ev = Event("node.offline", "node", node_id, "system", {})
    await hub.nodes.store.update(node_id, {"status": "offline"}, [ev])
    hub.bus.publish([ev])


async def add_sources(hub: Any, n: int, platform: str = "demo") -> list[Row]:
    return [
        await hub.sources.create(OWNER, {"platform": platform, "name": f"s{i}"}) for i in range(n)
    ]


async def placement(hub: Any) -> dict[str, str | None]:
    rows, _ = await hub.sources.store.find(limit=10_000)
    return {r["id"]: r["assigned_node_id"] for r in rows}


async def test_least_loaded_capable_node_and_capacity(hub: Any) -> None:
    a = await add_node(hub, ["demo"], max_accounts=2)
    await add_node(hub, ["douyin"], max_accounts=10)  # not capable
    srcs = await add_sources(hub, 2)
    assert all(s["assigned_node_id"] == a["id"] for s in srcs)
    b = await add_node(hub, ["demo", "weibo"], max_accounts=3)
    await hub.assignment.reconcile()
    more = await add_sources(hub, 4)
    got = Counter((await placement(hub)).values())
    # a is full at 2; b takes 3; the last waits for room.
    assert got[a["id"]] == 2
    assert got[b["id"]] == 3
    assert got[None] == 1
    waiting = [
        s["id"] for s in more if (await hub.sources.get(s["id"]))["assigned_node_id"] is None
    ]
    c = await add_node(hub, ["demo"], max_accounts=5)  # a node joins: it gets the waiting one
    await hub.assignment.reconcile()
    assert (await hub.sources.get(waiting[0]))["assigned_node_id"] == c["id"]
    # A new source goes to the least loaded node (c: 1, b: 3, a: 2 full).
    (s,) = await add_sources(hub, 1)
    assert s["assigned_node_id"] == c["id"]


async def test_offline_node_sources_go_to_another_capable_node(hub: Any) -> None:
    a = await add_node(hub, ["demo"])
    srcs = await add_sources(hub, 3)
    assert {s["assigned_node_id"] for s in srcs} == {a["id"]}
    b = await add_node(hub, ["demo"])
    await add_node(hub, ["weibo"])
    seen: list[Event] = []
    hub.bus.listen("source.", seen.append)
    await go_offline(hub, a["id"])
    # The loop wakes on node.offline too: whichever round runs first does the work.
    await hub.assignment.reconcile()
    await wait_until(lambda: _all_on(hub, b["id"]), timeout_s=10)
    kinds = [(e.type, e.data["node_id"]) for e in seen if e.type.startswith("source.")]
    assert kinds[:3] == [("source.revoked", a["id"])] * 3
    assert kinds[3:] == [("source.assigned", b["id"])] * 3
    assigned_ev = next(e for e in seen if e.type == "source.assigned")
    assert assigned_ev.data["account"]["platform"] == "demo"
    # Disabled and deleted nodes lose their sources the same way.
    await hub.nodes.update(b["id"], {"disabled": True}, SYSTEM)
    await hub.assignment.reconcile()
    assert set((await placement(hub)).values()) == {None}  # no capable node left


async def test_the_loop_reacts_to_node_events(settings: Any) -> None:
    settings = settings.model_copy(update={"assignment_tick_s": 3600})
    async with started(settings) as hub:
        srcs = await add_sources(hub, 2)
        assert srcs[0]["assigned_node_id"] is None
        a = await add_node(hub, ["demo"])  # node.online wakes the loop
        await wait_until(
            lambda: _all_on(hub, a["id"]),
            timeout_s=5,
        )
        b = await add_node(hub, ["demo"])
        await go_offline(hub, a["id"])
        await wait_until(lambda: _all_on(hub, b["id"]), timeout_s=10)


async def _all_on(hub: Any, node_id: str) -> bool:
    return set((await placement(hub)).values()) == {node_id}


async def test_inactive_or_replatformed_sources_leave_their_node(hub: Any) -> None:
    a = await add_node(hub, ["demo"])
    (s,) = await add_sources(hub, 1)
    seen: list[Event] = []
    hub.bus.listen("source.revoked", seen.append)
    row = await hub.sources.update(s["id"], {"status": "inactive"}, OWNER)
    assert row["assigned_node_id"] is None
    assert [e.data["node_id"] for e in seen] == [a["id"]]
    row = await hub.sources.update(s["id"], {"status": "active"}, OWNER)
    assert row["assigned_node_id"] == a["id"]
    row = await hub.sources.update(s["id"], {"platform": "weibo"}, OWNER)
    assert row["assigned_node_id"] is None  # a does not serve weibo


async def test_a_round_that_read_the_old_platform_cannot_assign_the_new_one(hub: Any) -> None:
    """The loop reads pending sources, then picks nodes: a platform changed in between
    must not land the source on a node that does not serve the new platform."""
    a = await add_node(hub, ["demo"])
    (s,) = await add_sources(hub, 1)
    await hub.sources.update(s["id"], {"status": "inactive"}, OWNER)
    stale = (await hub.sources.get(s["id"]))["platform"]  # what a round read: "demo"
    await hub.sources.update(s["id"], {"platform": "weibo", "status": "active"}, OWNER)
    outcome, row = await hub.sources.store.assign(
        s["id"], stale, a["id"], time.time(), assigned_event
    )
    assert (outcome, row) == ("taken", None)
    assert (await hub.sources.get(s["id"]))["assigned_node_id"] is None


def _check_history(rows: list[Row], max_of: dict[str, int]) -> None:
    """Replay source.assigned/source.revoked in commit order: a source is never assigned
    while it is on a node, only revoked from the node it is on, and no node ever serves
    more than its max_accounts."""
    holder: dict[str, str | None] = {}
    load: Counter[str] = Counter()
    for e in rows:
        sid, node = e["subject_id"], e["data"]["node_id"]
        if e["type"] == "source.assigned":
            assert holder.get(sid) is None, f"{sid} assigned to {node} while on {holder[sid]}"
            holder[sid] = node
            load[node] += 1
            assert load[node] <= max_of[node], f"{node} over max_accounts"
        else:
            assert holder.get(sid) == node, f"{sid} revoked from {node} but on {holder.get(sid)}"
            holder[sid] = None
            load[node] -= 1


async def test_no_double_assignment_under_concurrent_joins_and_leaves(
    settings: Any, make_settings: Any, tmp_path: Any
) -> None:
    """Two hubs on one database, eight nodes joining and leaving at random through both,
    and both hubs assigning at once: every source has at most one node at every moment."""
    key = Fernet.generate_key().decode()
    s1 = settings.model_copy(update={"encryption_keys": [key], "assignment_tick_s": 0.05})
    s2 = make_settings(
        database_url=settings.database_url,
        data_dir=tmp_path / "hub2",
        encryption_keys=[key],
        offline_after_s=60,
        monitor_tick_s=3600,
        assignment_tick_s=0.05,
        login_watch_interval_s=3600,
    )
    rng = random.Random(7)
    async with started(s1) as h1, started(s2) as h2:
        hubs = [h1, h2]
        nodes = [await add_node(h1, ["demo"], max_accounts=rng.choice([3, 5, 8])) for _ in range(8)]
        max_of = {n["id"]: n["max_accounts"] for n in nodes}
        await add_sources(h1, 30)

        async def churn(seed: int) -> None:
            r = random.Random(seed)
            for _ in range(25):
                h = r.choice(hubs)
                n = r.choice(nodes)
                if r.random() < 0.5:
                    await go_offline(h, n["id"])
                else:
                    await h.nodes.register(n, {"capabilities": ["demo"], "host": "t"})
                await asyncio.sleep(r.random() * 0.01)

        async def assign(h: Any, seed: int) -> None:
            r = random.Random(seed)
            for _ in range(25):
                await (
                    h.assignment.assign_pending()
                    if r.random() < 0.6
                    else h.assignment.revoke_stray()
                )

        await asyncio.gather(
            churn(1), churn(2), churn(3), assign(h1, 4), assign(h2, 5), assign(h1, 6)
        )
        # Everyone back online: every source ends on exactly one node, within capacity.
        for n in nodes:
            await h2.nodes.register(n, {"capabilities": ["demo"], "host": "t"})
        await h1.assignment.reconcile()
        await h2.assignment.reconcile()
        final = await placement(h1)
        assert None not in final.values()
        counts = Counter(final.values())
        assert all(counts[n] <= max_of[n] for n in counts)

        rows = await h1.db.run_read(
            lambda c: [
                dict(r._mapping)
                for r in c.execute(
                    select(events)
                    .where(events.c.type.in_(["source.assigned", "source.revoked"]))
                    .order_by(events.c.id)
                )
            ]
        )
        assert sum(r["type"] == "source.revoked" for r in rows) > 0  # there was churn
        _check_history(rows, max_of)


async def _logged_in(hub: Any, source_id: str, **values: Any) -> None:
    await hub.db.run_write(
        lambda c: c.execute(
            update(sources)
            .where(sources.c.id == source_id)
            .values(login_status="logged_in", **values)
        )
    )


async def test_monitor_tasks_respect_interval_and_are_never_two_open(hub: Any) -> None:
    node = await add_node(hub, ["demo"])
    p = await hub.proxies.create(OWNER, "p", {"url": "http://bob:pw-secret-9@10.1.1.1:8080"})
    s = await hub.sources.create(
        OWNER,
        {
            "platform": "demo",
            "name": "watched",
            "monitor_interval_s": 1,
            "proxy_id": p["id"],
            "credentials": {"cookies": ["cookie-zz-123"]},
        },
    )
    (idle,) = await add_sources(hub, 1)  # not logged in: never monitored
    await _logged_in(hub, s["id"])
    (task,) = await hub.monitor.tick()
    assert task["kind"] == "demo.monitor"
    assert task["capability"] == f"node:{node['id']}"
    assert task["payload"]["account_id"] == s["id"]
    assert task["payload"]["proxy"] == "http://bob@10.1.1.1:8080"
    assert "pw-secret-9" not in str(task["payload"])
    assert "cookie-zz-123" not in str(task["payload"])
    assert task["owner_id"] == OWNER.id
    assert await hub.monitor.tick() == []  # interval not passed
    await asyncio.sleep(1.05)
    assert await hub.monitor.tick() == []  # interval passed, but one is still open
    await hub.tasks.cancel(task["id"], SYSTEM)
    (again,) = await hub.monitor.tick()
    assert again["id"] != task["id"]
    # Two ticks at once (two hub processes): still one open task.
    await hub.tasks.cancel(again["id"], SYSTEM)
    await asyncio.sleep(1.05)
    both = await asyncio.gather(hub.monitor.tick(), hub.monitor.tick())
    assert sum(len(b) for b in both) == 1
    # Expired sources are not monitored.
    await hub.db.run_write(
        lambda c: c.execute(
            update(sources).where(sources.c.id == s["id"]).values(login_status="expired")
        )
    )
    open_ = next(t for b in both for t in b)
    await hub.tasks.cancel(open_["id"], SYSTEM)
    await asyncio.sleep(1.05)
    assert await hub.monitor.tick() == []
    assert idle["id"] not in str(await hub.tasks.find(SYSTEM, limit=100))


async def test_monitor_task_follows_the_source_to_its_new_node(hub: Any) -> None:
    a = await add_node(hub, ["demo"])
    s = await hub.sources.create(OWNER, {"platform": "demo", "name": "s", "monitor_interval_s": 1})
    await _logged_in(hub, s["id"])
    (t1,) = await hub.monitor.tick()
    b = await add_node(hub, ["demo"])
    await go_offline(hub, a["id"])
    await hub.assignment.reconcile()
    await asyncio.sleep(1.05)
    (t2,) = await hub.monitor.tick()
    assert t2["capability"] == f"node:{b['id']}"
    assert (await hub.tasks.get(t1["id"]))["status"] == "cancelled"  # the stranded one


async def test_login_expiry_raises_one_event_per_expiry(hub: Any) -> None:
    await add_node(hub, ["demo"])
    s = await hub.sources.create(OWNER, {"platform": "demo", "name": "s"})
    await _logged_in(hub, s["id"], cookies_valid_until=time.time() - 1)
    seen: list[Event] = []
    hub.bus.listen("source.login_expired", seen.append)
    for _ in range(3):
        await hub.logins.watch_once()
    assert len(seen) == 1
    assert seen[0].data == {
        "source_id": s["id"],
        "owner_id": OWNER.id,
        "platform": "demo",
        "name": "s",
        "reason": "credentials_expired",
        "node_id": s["assigned_node_id"],
    }
    assert (await hub.sources.get(s["id"]))["login_status"] == "expired"
    # Logged in again and expiring again is a new expiry: one more event.
    await _logged_in(hub, s["id"], cookies_valid_until=time.time() - 1)
    await hub.logins.watch_once()
    await hub.logins.watch_once()
    assert len(seen) == 2
    stored = await hub.db.run_read(
        lambda c: c.scalar(
            select(events.c.id).where(events.c.type == "source.login_expired").limit(1)
        )
    )
    assert stored is not None
