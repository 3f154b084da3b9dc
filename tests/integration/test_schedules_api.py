"""Schedules over HTTP and through the service: CRUD, bad input, run now, firing, misfire
coalescing, and the loop waking at the due time."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from identity_support import make_user
from sqlalchemy import select, update

from zhongshu import testing
from zhongshu.db.schema import schedules, tasks


async def _create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body = {"kind": "report.build", **body}
    r = await client.post("/api/v1/schedules", json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


async def _tasks_of(hub: Any, schedule_id: str) -> list[dict[str, Any]]:
    prefix = f"schedule:{schedule_id}:"
    stmt = select(tasks).where(tasks.c.idempotency_key.startswith(prefix))
    return await hub.db.run_read(lambda c: [dict(r._mapping) for r in c.execute(stmt)])


async def _set_next(hub: Any, schedule_id: str, next_run_at: float) -> None:
    stmt = update(schedules).where(schedules.c.id == schedule_id).values(next_run_at=next_run_at)
    await hub.db.run_write(lambda c: c.execute(stmt))


async def test_crud_and_shape(client: httpx.AsyncClient) -> None:
    s = await _create(
        client,
        name="nightly",
        cron="30 2 * * *",
        timezone="Asia/Shanghai",
        payload={"x": 1},
        capability="reports",
        priority=5,
    )
    assert s["cron"] == "30 2 * * *" and s["interval_s"] is None
    assert s["template"] == {
        "kind": "report.build",
        "payload": {"x": 1},
        "capability": "reports",
        "priority": 5,
        "max_attempts": None,
    }
    assert s["enabled"] is True and s["next_run_at"].endswith("Z")
    # 02:30 in Shanghai is 18:30 UTC.
    assert s["next_run_at"][11:19] == "18:30:00"

    r = await client.get(f"/api/v1/schedules/{s['id']}")
    assert r.status_code == 200 and r.json()["id"] == s["id"]
    r = await client.get("/api/v1/schedules")
    assert r.json()["total"] == 1

    r = await client.patch(f"/api/v1/schedules/{s['id']}", json={"interval_s": 60})
    assert r.status_code == 200, r.text
    assert r.json()["cron"] is None and r.json()["interval_s"] == 60
    r = await client.patch(f"/api/v1/schedules/{s['id']}", json={"enabled": False})
    assert r.json()["enabled"] is False
    r = await client.get("/api/v1/schedules", params={"enabled": "true"})
    assert r.json()["total"] == 0

    r = await client.delete(f"/api/v1/schedules/{s['id']}")
    assert r.status_code == 204
    r = await client.get(f"/api/v1/schedules/{s['id']}")
    assert r.status_code == 404


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * *"}, "5 fields"),
        ({"cron": "not a cron at all"}, "cron"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"interval_s": 0}, "interval_s"),
        ({"interval_s": -5}, "interval_s"),
        ({"interval_s": 60, "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"interval_s": 60, "timezone": "../../etc/passwd"}, "timezone"),
        ({"interval_s": 60, "cron": "* * * * *"}, "exactly one"),
        ({}, "exactly one"),
    ],
)
async def test_bad_triggers_are_422_with_the_reason(
    client: httpx.AsyncClient, body: dict[str, Any], needle: str
) -> None:
    r = await client.post("/api/v1/schedules", json={"kind": "k", **body})
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"]


async def test_bad_updates_are_422_and_change_nothing(client: httpx.AsyncClient) -> None:
    s = await _create(client, interval_s=60)
    for body in ({"cron": "99 * * * *"}, {"interval_s": 0}, {"timezone": "Nowhere/Land"}):
        r = await client.patch(f"/api/v1/schedules/{s['id']}", json=body)
        assert r.status_code == 422, r.text
    r = await client.get(f"/api/v1/schedules/{s['id']}")
    assert r.json()["interval_s"] == 60 and r.json()["timezone"] == "UTC"


async def test_others_cannot_see_or_run_it(client: httpx.AsyncClient) -> None:
    alice = await make_user(client)
    bob = await make_user(client)
    r = await client.post(
        "/api/v1/schedules", json={"kind": "k", "interval_s": 60}, headers=alice.headers
    )
    sid = r.json()["id"]
    for method, path in (
        ("GET", f"/api/v1/schedules/{sid}"),
        ("PATCH", f"/api/v1/schedules/{sid}"),
        ("DELETE", f"/api/v1/schedules/{sid}"),
        ("POST", f"/api/v1/schedules/{sid}/run"),
    ):
        r = await client.request(method, path, headers=bob.headers, json={})
        assert r.status_code == 404, (method, path, r.text)
    r = await client.get("/api/v1/schedules", headers=bob.headers)
    assert r.json()["total"] == 0
    # The admin sees everyone's.
    r = await client.get("/api/v1/schedules")
    assert r.json()["total"] == 1


async def test_run_now_submits_the_template_task(client: httpx.AsyncClient) -> None:
    s = await _create(client, interval_s=3600, payload={"a": 1}, capability="cap-x", enabled=False)
    r = await client.post(f"/api/v1/schedules/{s['id']}/run")
    assert r.status_code == 202, r.text
    task = r.json()["task"]
    assert task["kind"] == "report.build" and task["payload"] == {"a": 1}
    assert task["capability"] == "cap-x" and task["status"] == "pending"
    after = r.json()["schedule"]
    assert after["last_task_id"] == task["id"] and after["run_count"] == 1
    # The due times are untouched.
    assert after["next_run_at"] == s["next_run_at"]
    r = await client.get(f"/api/v1/tasks/{task['id']}")
    assert r.status_code == 200


async def test_a_due_time_fires_once_however_often_it_is_looked_at(
    hub: Any, client: httpx.AsyncClient
) -> None:
    s = await _create(client, interval_s=3600)
    due = time.time() - 1
    await _set_next(hub, s["id"], due)
    # The hub's own loop may get there first: either way the due time fires once.
    await hub.schedules.fire_due()
    assert await hub.schedules.fire_due() == 0
    # A stale reader that still holds the old row cannot fire it again.
    stale = {**(await hub.schedules.store.get(s["id"])), "next_run_at": due}
    assert await hub.schedules.fire(stale, time.time()) is False
    fired = await _tasks_of(hub, s["id"])
    assert len(fired) == 1
    assert fired[0]["idempotency_key"] == f"schedule:{s['id']}:{due!r}"
    row = await hub.schedules.store.get(s["id"])
    assert row["last_due_at"] == due and row["last_task_id"] == fired[0]["id"]
    assert row["run_count"] == 1
    events, _ = await hub.events.query(type_prefix="schedule.fired", subject_id=s["id"])
    assert len(events) == 1 and events[0]["data"]["task_id"] == fired[0]["id"]


async def test_misfires_coalesce_into_one_run_then_resume_on_the_grid(
    hub: Any, client: httpx.AsyncClient
) -> None:
    s = await _create(client, interval_s=10)
    row = await hub.schedules.store.get(s["id"])
    anchor = row["anchor_at"]
    # The hub was "down" for ten intervals: the missed due time is 100 s ago.
    missed = anchor - 100
    await _set_next(hub, s["id"], missed)
    now = time.time()
    await hub.schedules.fire_due(now)  # (or the hub's loop did, just before)
    assert len(await _tasks_of(hub, s["id"])) == 1
    row = await hub.schedules.store.get(s["id"])
    assert row["run_count"] == 1
    # Next: the first grid point after now, on the grid anchored at creation.
    assert now < row["next_run_at"] <= now + 10.5
    steps = (row["next_run_at"] - anchor) / 10
    assert abs(steps - round(steps)) < 1e-6
    assert await hub.schedules.fire_due(now + 0.001) == 0


async def test_cron_misfire_coalesces_too(hub: Any, client: httpx.AsyncClient) -> None:
    s = await _create(client, cron="* * * * *")
    await _set_next(hub, s["id"], time.time() - 3600)  # sixty missed minutes
    await hub.schedules.fire_due()
    row = await hub.schedules.store.get(s["id"])
    assert row["next_run_at"] > time.time() and row["next_run_at"] % 60 == 0
    assert len(await _tasks_of(hub, s["id"])) == 1


async def test_the_loop_fires_on_time_and_wakes_for_a_new_schedule(
    hub: Any, client: httpx.AsyncClient
) -> None:
    s = await _create(client, interval_s=0.3)

    async def fired() -> list[dict[str, Any]] | None:
        got = await _tasks_of(hub, s["id"])
        return got if len(got) >= 3 else None

    got = await testing.wait_until(fired, timeout_s=10)
    dues = sorted(float(t["idempotency_key"].rsplit(":", 1)[1]) for t in got)
    assert len(set(dues)) == len(dues)
    # Fired soon after each due time (the loop sleeps until the due time, not a whole tick).
    for t in got:
        due = float(t["idempotency_key"].rsplit(":", 1)[1])
        assert t["created_at"] - due < 0.9, t["created_at"] - due


async def test_disabled_schedules_do_not_fire_and_reenabling_skips_the_backlog(
    hub: Any, client: httpx.AsyncClient
) -> None:
    s = await _create(client, interval_s=3600, enabled=False)
    await _set_next(hub, s["id"], time.time() - 10)
    assert await hub.schedules.fire_due() == 0
    r = await client.patch(f"/api/v1/schedules/{s['id']}", json={"enabled": True})
    assert r.status_code == 200
    row = await hub.schedules.store.get(s["id"])
    assert row["next_run_at"] > time.time()
    assert await hub.schedules.fire_due() == 0
    assert await _tasks_of(hub, s["id"]) == []


async def test_viewer_cannot_create(client: httpx.AsyncClient) -> None:
    viewer = await make_user(client, role="viewer")
    r = await client.post(
        "/api/v1/schedules", json={"kind": "k", "interval_s": 1}, headers=viewer.headers
    )
    assert r.status_code == 403
