"""Runtime settings: the effective configuration (secrets hidden) and live knobs that an
admin changes with a step-up confirmation — validated by config.py's rules, applied at
once, audited, and kept across a restart."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import httpx
from identity_support import ADMIN, audit_rows, confirm, hub_client, make_user

from zhongshu.config import Settings


async def test_admins_see_the_effective_configuration_without_secrets(
    client: httpx.AsyncClient, hub: Any
) -> None:
    r = await client.get("/api/v1/settings")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["effective"]["port"] == hub.settings.port
    assert body["effective"]["secret_key"] == "***"
    assert hub.settings.secret_key not in r.text
    assert body["runtime"]["monitor_tick_s"]["value"] == hub.settings.monitor_tick_s
    user = await make_user(client)
    assert (await client.get("/api/v1/settings", headers=user.headers)).status_code == 403


async def test_live_changes_need_a_confirmation_are_all_or_nothing_and_audited(
    client: httpx.AsyncClient, hub: Any
) -> None:
    admin = dict(client.headers)
    r = await client.patch("/api/v1/settings", json={"monitor_tick_s": 5})
    assert r.status_code == 403 and "confirm" in r.text.lower()
    confirmed = await confirm(client, admin, ADMIN[1])

    for body, needle in (
        ({"port": 9000}, "not changeable while the hub runs"),
        ({"monitor_tick_s": 0}, "monitor_tick_s"),
        ({"log_level": "LOUD"}, "log_level"),
        ({"monitor_tick_s": 3, "routing_tick_s": -1}, "routing_tick_s"),
        ({}, "at least one"),
    ):
        r = await client.patch("/api/v1/settings", json=body, headers=confirmed)
        assert r.status_code == 422, (body, r.text)
        assert needle in r.json()["detail"], (body, r.text)
    assert hub.monitor.tick_s == hub.settings.monitor_tick_s  # nothing half-applied

    r = await client.patch(
        "/api/v1/settings",
        json={"monitor_tick_s": 5, "routing_tick_s": 0.5, "log_level": "DEBUG"},
        headers=confirmed,
    )
    assert r.status_code == 200, r.text
    assert hub.monitor.tick_s == 5 and hub.routing.tick_s == 0.5
    assert logging.getLogger("zhongshu").getEffectiveLevel() == logging.DEBUG
    runtime = r.json()["runtime"]
    assert runtime["monitor_tick_s"]["value"] == 5
    assert (
        runtime["monitor_tick_s"]["changed_by"].endswith(ADMIN[0])
        or runtime["monitor_tick_s"]["changed_by"]
    )
    rows = await audit_rows(client, action="settings.changed")
    assert rows and rows[0]["outcome"] in ("success", "ok")
    logging.getLogger("zhongshu").setLevel(logging.NOTSET)


async def test_changes_survive_a_restart(
    db_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_url=db_url)
    async with hub_client(settings) as (_, client):
        confirmed = await confirm(client, dict(client.headers), ADMIN[1])
        r = await client.patch(
            "/api/v1/settings", json={"assignment_tick_s": 7.5}, headers=confirmed
        )
        assert r.status_code == 200, r.text
    from zhongshu import testing

    async with testing.running_hub(settings) as again:
        assert again.assignment.tick_s == 7.5
