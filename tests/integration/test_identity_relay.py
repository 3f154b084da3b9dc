"""The relay key (X-Relay-API-Key or ?api_key=) and its settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from zhongshu import errors
from zhongshu.api import errors as api_errors
from zhongshu.api.deps import RelayKeyDep
from zhongshu.config import Settings, load_settings
from zhongshu.hub import Hub
from zhongshu.testing import running_hub

RELAY_KEY = "relay-key-0123456789abcdef"


def _relay_app(hub: Any) -> FastAPI:
    app = FastAPI()
    app.state.hub = hub
    api_errors.install(app)

    @app.get("/relay-probe")
    async def probe(p: RelayKeyDep) -> dict[str, str]:
        return {"kind": p.kind}

    return app


async def _client(hub: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=_relay_app(hub))
    return httpx.AsyncClient(transport=transport, base_url="http://hub")


async def test_relay_key_from_header_or_query(
    db_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(database_url=db_url, relay_enabled=True, relay_api_keys=[RELAY_KEY])
    async with running_hub(settings) as hub, await _client(hub) as c:
        r = await c.get("/relay-probe", headers={"X-Relay-API-Key": RELAY_KEY})
        assert r.status_code == 200 and r.json() == {"kind": "relay"}
        r = await c.get("/relay-probe", params={"api_key": RELAY_KEY})
        assert r.status_code == 200
        r = await c.get("/relay-probe")
        assert r.status_code == 401 and "X-Relay-API-Key" in r.json()["detail"]
        r = await c.get("/relay-probe", headers={"X-Relay-API-Key": RELAY_KEY + "x"})
        assert r.status_code == 401 and r.json()["detail"] == "invalid relay key"
        # A user's bearer token is not a relay key.
        r = await c.get("/relay-probe", headers={"authorization": "Bearer x"})
        assert r.status_code == 401


async def test_relay_disabled_answers_404(
    db_url: str, make_settings: Callable[..., Settings]
) -> None:
    async with running_hub(make_settings(database_url=db_url)) as hub, await _client(hub) as c:
        r = await c.get("/relay-probe", headers={"X-Relay-API-Key": RELAY_KEY})
        assert r.status_code == 404 and "relay is disabled" in r.json()["detail"]


def test_local_mode_generates_a_relay_key_once(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(relay_enabled=True)
    first = settings.relay_keys()
    assert len(first) == 1 and len(first[0]) >= 32
    assert make_settings(relay_enabled=True).relay_keys() == first


def test_production_refuses_to_start_a_relay_without_a_key(tmp_path: Any) -> None:
    with pytest.raises(errors.ConfigError) as info:
        load_settings(
            env="production",
            secret_key="k" * 48,
            relay_enabled=True,
            data_dir=tmp_path,
        )
    assert "relay_api_keys is empty" in info.value.message
    ok = load_settings(
        env="production",
        secret_key="k" * 48,
        relay_enabled=True,
        relay_api_keys=[RELAY_KEY],
        encryption_keys=["k" * 43 + "="],
        data_dir=tmp_path,
    )
    assert ok.relay_keys() == [RELAY_KEY]
    Hub.build(ok)


def test_short_relay_keys_are_refused(tmp_path: Any) -> None:
    with pytest.raises(errors.ConfigError) as info:
        load_settings(relay_api_keys=["short"], data_dir=tmp_path)
    assert "at least 16" in info.value.message
