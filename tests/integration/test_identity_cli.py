"""``zhongshu user …`` and ``zhongshu key …`` against a real hub served on a free port."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from zhongshu import testing
from zhongshu.cli import app as cli_app

ADMIN = ("admin", "Admin-pass-1")


@pytest.fixture
def run(served: testing.ServedHub, tmp_path: Path) -> Callable[..., dict[str, object]]:
    from zhongshu.cli import _register_subcommands

    if not any(g.name == "user" for g in cli_app.registered_groups):
        _register_subcommands()
    with httpx.Client(base_url=served.url) as c:
        token = c.post(
            "/api/v1/auth/login", json=dict(zip(("username", "password"), ADMIN, strict=True))
        ).json()["access_token"]
    env = {
        "ZHONGSHU_HUB": served.url,
        "ZHONGSHU_TOKEN": token,
        "ZHONGSHU_PASSWORD": ADMIN[1],
        "ZHONGSHU_CREDENTIALS_FILE": str(tmp_path / "creds.json"),
    }
    runner = CliRunner()

    def invoke(*args: str, code: int = 0, **extra_env: str) -> dict[str, object]:
        result = runner.invoke(cli_app, list(args), env={**env, **extra_env})
        assert result.exit_code == code, (args, result.exit_code, result.output)
        return {"out": result.output, "result": result}

    return invoke


def test_user_commands(run: Callable[..., dict[str, object]]) -> None:
    out = run(
        "user", "create", "dora", "--role", "viewer", "--json", ZHONGSHU_NEW_PASSWORD="Dora-pass-1"
    )
    dora = json.loads(str(out["out"]))
    assert dora["role"] == "viewer"
    listed = json.loads(str(run("user", "list", "--json")["out"]))
    assert {u["username"] for u in listed["items"]} == {"admin", "dora"}
    assert "dora" in str(run("user", "list")["out"])
    assert "role user" in str(run("user", "set-role", "dora", "user")["out"])
    assert "disabled" in str(run("user", "disable", "dora")["out"])
    assert "enabled" in str(run("user", "enable", dora["id"])["out"])
    run("user", "reset-password", "dora", ZHONGSHU_NEW_PASSWORD="Dora-pass-2")
    # A weak password and an unknown user are clear errors (exit 1), an unknown role a usage error.
    out = run("user", "create", "eve", code=1, ZHONGSHU_NEW_PASSWORD="weak")
    assert "at least 8" in str(out["out"])
    assert "no user named" in str(run("user", "disable", "nobody", code=1)["out"])
    run("user", "create", "eve", "--role", "root", code=2, ZHONGSHU_NEW_PASSWORD="Eve-pass-12")
    # A wrong confirmation password is refused.
    out = run("user", "set-role", "dora", "viewer", code=1, ZHONGSHU_PASSWORD="Wrong-pass-1")
    assert "wrong password" in str(out["out"])
    run("user", "delete", "dora", "--yes")
    assert "dora" not in str(run("user", "list")["out"])


def test_key_commands(run: Callable[..., dict[str, object]], served: testing.ServedHub) -> None:
    out = run("key", "create", "ci", "--scope", "read", "--scope", "write", "--json")
    key = json.loads(str(out["out"]))
    assert key["secret_key"].startswith("SK") and key["scopes"] == ["read", "write"]
    with httpx.Client(base_url=served.url) as c:
        auth = {"authorization": f"AK-SK {key['access_key']}:{key['secret_key']}"}
        assert c.get("/api/v1/tasks", headers=auth).status_code == 200
        listed = str(run("key", "list")["out"])
        assert key["id"] in listed and key["secret_key"] not in listed
        run("key", "disable", key["id"])
        assert c.get("/api/v1/tasks", headers=auth).status_code == 401
        run("key", "enable", key["id"])
        assert c.get("/api/v1/tasks", headers=auth).status_code == 200
        run("key", "delete", key["id"])
        assert c.get("/api/v1/tasks", headers=auth).status_code == 401
    run("key", "create", "bad", "--scope", "admin", code=2)
    assert "not found" in str(run("key", "disable", "key_nope", code=1)["out"])
