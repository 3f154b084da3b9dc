"""Bad input never gets a 500: every route, generated from the app, with malformed bodies
and query parameters, called as an admin with a step-up confirmation (so the request gets
past authorization and reaches parsing and the services)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from identity_support import ADMIN, confirm
from test_policy_matrix import LAST, World, api_routes, fill

pytestmark = pytest.mark.timeout(300)

BODIES: list[Any] = [
    [],
    "text",
    12,
    None,
    {"name": None, "id": {"nested": [1, 2]}, "limit": -1},
    {"name": "x" * 70_000},
    {"payload": {"deep": [[[[[[[[[[]]]]]]]]]]}, "priority": 10**30},
    {"channels": "1|two|", "cron": "not a cron", "interval_s": -5, "platform": "../../etc"},
]
QUERIES: list[dict[str, str]] = [
    {"limit": "-1", "offset": "-5"},
    {"limit": "abc", "since": "yesterday", "cursor": "%%%", "is_read": "maybe"},
    {"limit": "99999999999999999999", "order": "sideways", "status": "nonsense"},
]
RAW = [b"{not json", b"\xff\xfe\x00", b'{"a": 1}' * 10]


async def test_no_route_answers_bad_input_with_a_500(
    hub: Any, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    from zhongshu.app import create_app

    app = create_app(hub.settings, hub=hub).fastapi
    world = World(hub, client)
    await world.build()
    headers = await confirm(client, dict(client.headers), ADMIN[1])
    failures: list[str] = []
    statuses: dict[int, int] = {}
    calls = 0
    for method, template, _ in api_routes(app):
        if (method, template) in LAST or method == "DELETE":
            continue
        path, _ = fill(template, world.ids)
        attempts: list[dict[str, Any]] = [{"params": q} for q in QUERIES]
        if method in ("POST", "PUT", "PATCH"):
            attempts += [{"json": b} for b in BODIES]
            attempts += [
                {"content": raw, "headers": {"content-type": "application/json"}} for raw in RAW
            ]
        for kwargs in attempts:
            extra = kwargs.pop("headers", {})
            r = await client.request(method, path, headers={**headers, **extra}, **kwargs)
            calls += 1
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
            if r.status_code >= 500:
                failures.append(
                    f"{method} {template} {kwargs!r:.120}: {r.status_code} {r.text[:200]}"
                )
    with capsys.disabled():
        print(f"\nbad-input sweep: {calls} calls, statuses {sorted(statuses.items())}")
    assert calls > 500
    assert not failures, "\n".join(failures)
