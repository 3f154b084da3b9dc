"""The HTTP client commands (``login``, ``node …``, ``task …``) run as real subprocesses
against a real hub served in-process on a free port.

Each CLI run costs an interpreter start (~0.5 s), so tests batch what they check per run and
set up data they do not test (tasks to show, a node to lease with) over HTTP directly.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from zhongshu import testing

ADMIN = ("admin", "Admin-pass-1")
Result = subprocess.CompletedProcess[str]


class Cli:
    """Runs ``python -m zhongshu ARGS`` with a private credentials file and no terminal.

    ``many`` starts independent runs at once: interpreter start-up dominates these tests.
    """

    def __init__(self, creds_file: Path, env: dict[str, str] | None = None) -> None:
        self.env = {**os.environ, "ZHONGSHU_CREDENTIALS_FILE": str(creds_file), **(env or {})}

    def with_env(self, **env: str) -> Cli:
        clone = Cli.__new__(Cli)
        clone.env = {**self.env, **env}
        return clone

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "zhongshu", *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __call__(self, *args: str) -> Result:
        return self.many(args)[0]

    def many(self, *commands: tuple[str, ...]) -> list[Result]:
        procs = [self.start(*args) for args in commands]
        results = []
        try:
            for args, proc in zip(commands, procs, strict=True):
                stdout, stderr = proc.communicate(timeout=60)
                results.append(subprocess.CompletedProcess(args, proc.returncode, stdout, stderr))
        finally:
            for proc in procs:  # only still running when a run hung or an assertion broke
                proc.kill()
        return results


@pytest.fixture
def creds_file(tmp_path: Path) -> Path:
    return tmp_path / "config" / "zhongshu" / "credentials.json"


@pytest.fixture
def cli(creds_file: Path) -> Cli:
    return Cli(creds_file)


@pytest.fixture
def admin_http(served: testing.ServedHub) -> Iterator[httpx.Client]:
    """An admin's HTTP client, for setting up data the test is not about."""
    with httpx.Client(base_url=served.url, timeout=30) as c:
        r = c.post("/api/v1/auth/login", json={"username": ADMIN[0], "password": ADMIN[1]})
        r.raise_for_status()
        c.headers["authorization"] = f"Bearer {r.json()['access_token']}"
        yield c


@pytest.fixture
def as_admin(cli: Cli, served: testing.ServedHub, admin_http: httpx.Client) -> Cli:
    """``cli`` with the hub and an admin token in the environment (no login run needed)."""
    token = admin_http.headers["authorization"].removeprefix("Bearer ")
    # the password is for the step-up confirmation that node rotate/delete ask for
    return cli.with_env(ZHONGSHU_HUB=served.url, ZHONGSHU_TOKEN=token, ZHONGSHU_PASSWORD=ADMIN[1])


def ok(result: Result) -> Result:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def one_error_line(stderr: str) -> str:
    """The single ``error: …`` line a refused command prints, without its newline."""
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    return stderr.rstrip("\n")


def agent(served: testing.ServedHub, key: str, secret: str) -> httpx.Client:
    return httpx.Client(
        base_url=served.url, headers={"authorization": f"AK-SK {key}:{secret}"}, timeout=30
    )


def make_dead_task(admin_http: httpx.Client, served: testing.ServedHub, kind: str) -> str:
    """A task whose only attempt failed, settled through the real agent endpoints."""
    task = admin_http.post("/api/v1/tasks", json={"kind": kind, "max_attempts": 1}).json()
    node = admin_http.post("/api/v1/nodes", json={"name": f"w-{kind}", "capabilities": [kind]})
    creds = node.json()["credentials"]
    with agent(served, creds["access_key"], creds["secret_key"]) as a:
        a.post("/api/v1/agent/register", json={"capabilities": [kind]}).raise_for_status()
        lease = a.post("/api/v1/agent/lease", json={"wait_s": 5}).json()["tasks"][0]
        a.post(
            f"/api/v1/agent/tasks/{lease['id']}/result",
            json={"lease_token": lease["lease_token"], "status": "failed", "error": "boom"},
        ).raise_for_status()
    assert admin_http.get(f"/api/v1/tasks/{task['id']}").json()["status"] == "dead"
    return str(task["id"])


# --- login --------------------------------------------------------------------------------


def test_login_stores_a_private_token_that_later_commands_use(
    cli: Cli, served: testing.ServedHub, creds_file: Path
) -> None:
    login = cli.with_env(ZHONGSHU_PASSWORD=ADMIN[1])
    ok(login("login", "--hub", served.url + "/", "--username", ADMIN[0]))

    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(creds_file.parent.stat().st_mode) == 0o700
    stored = json.loads(creds_file.read_text())
    assert stored["hub"] == served.url
    assert stored["token"] and stored["refresh_token"]

    # no --hub and no --token: both come from the file; and an expired access token is
    # renewed with the refresh token, without asking for the password
    creds_file.write_text(json.dumps({**stored, "expires_at": 0}))
    assert "admin (admin)" in ok(cli("whoami")).stdout
    renewed = json.loads(creds_file.read_text())
    assert renewed["token"] != stored["token"]
    assert renewed["refresh_token"] != stored["refresh_token"]
    assert renewed["expires_at"] > 0

    assert "logged out" in ok(cli("logout")).stdout
    assert not creds_file.exists()
    # logout ended the session on the hub too
    with httpx.Client(base_url=served.url) as anonymous:
        again = anonymous.post(
            "/api/v1/auth/refresh", json={"refresh_token": renewed["refresh_token"]}
        )
        assert again.status_code == 401


def test_failures_are_one_line_on_stderr_with_the_right_exit_code(
    cli: Cli, served: testing.ServedHub, creds_file: Path
) -> None:
    down = f"http://127.0.0.1:{testing.free_port()}"
    wrong, no_password, unreachable, no_login = cli.many(
        ("login", "--hub", served.url, "-u", ADMIN[0], "--password", "nope-nope-1"),
        ("login", "--hub", served.url, "-u", ADMIN[0]),
        ("task", "list", "--hub", down, "--token", "t"),
        ("node", "list", "--hub", served.url),
    )

    assert wrong.returncode == 1
    assert "wrong username or password (HTTP 401)" in one_error_line(wrong.stderr)
    assert not creds_file.exists()
    assert no_password.returncode == 2
    assert "--password is required when not on a terminal" in no_password.stderr
    assert unreachable.returncode == 1
    assert unreachable.stderr == (
        f"error: cannot reach the hub at {down}: is `zhongshu serve` running?\n"
    )
    assert unreachable.stdout == ""
    assert no_login.returncode == 1
    assert f"not logged in to {served.url}" in no_login.stderr


# --- nodes --------------------------------------------------------------------------------


def test_node_commands(as_admin: Cli, admin_http: httpx.Client, served: testing.ServedHub) -> None:
    def node(name: str, **fields: Any) -> dict[str, Any]:
        reply = admin_http.post("/api/v1/nodes", json={"name": name, **fields})
        return reply.json()

    shown, doomed, rotating = node("crawler-7", capabilities=["rss"]), node("doomed"), node("r")

    created, listed, show, disabled, unconfirmed, deleted, rotated, human = as_admin.many(
        ("node", "create", "w1", "-c", "echo", "--capacity", "4", "--json"),
        ("node", "list"),
        ("node", "show", shown["id"]),
        ("node", "disable", shown["id"]),
        ("node", "delete", doomed["id"]),
        ("node", "delete", doomed["id"], "--yes"),
        ("node", "rotate", rotating["id"], "--json"),
        ("node", "create", "w2"),
    )

    # --json is exactly the key pair, and it works on the agent endpoints
    pair = as_json(created)
    assert set(pair) == {"id", "access_key", "secret_key"}
    with agent(served, pair["access_key"], pair["secret_key"]) as a:
        r = a.post("/api/v1/agent/heartbeat", json={})
        assert r.status_code == 200, r.text

    assert shown["id"] in ok(listed).stdout
    assert "crawler-7" in listed.stdout and "rss" in listed.stdout
    assert "crawler-7" in ok(show).stdout and "rss" in show.stdout
    assert "now disabled" in ok(disabled).stdout
    assert admin_http.get(f"/api/v1/nodes/{shown['id']}").json()["disabled"] is True

    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    assert f"node {doomed['id']} deleted" in ok(deleted).stdout
    assert admin_http.get(f"/api/v1/nodes/{doomed['id']}").status_code == 404

    old, new = rotating["credentials"], as_json(rotated)
    with agent(served, old["access_key"], old["secret_key"]) as a:
        assert a.post("/api/v1/agent/heartbeat", json={}).status_code == 401
    with agent(served, new["access_key"], new["secret_key"]) as a:
        assert a.post("/api/v1/agent/heartbeat", json={}).status_code == 200

    # without --json the key pair is printed for people, with a warning
    assert "secret key  CS" in ok(human).stdout
    assert "Authorization: AK-SK CN" in human.stdout
    assert "shown only once" in human.stderr


# --- tasks --------------------------------------------------------------------------------


def test_submit_count_creates_that_many_tasks(as_admin: Cli, admin_http: httpx.Client) -> None:
    args = ("task", "submit", "noop", "--count", "50", "-p", '{"n": 1}', "--idempotency-key", "b")

    summary = as_json(as_admin(*args, "--json"))
    again = as_json(as_admin(*args, "--json"))

    assert summary["created"] == 50 and len(summary["items"]) == 50
    assert again["created"] == 0  # task i has key b-i, so a re-run adds nothing
    listed = admin_http.get("/api/v1/tasks", params={"kind": "noop", "limit": 1000}).json()
    assert listed["total"] == 50
    assert {t["payload"]["n"] for t in listed["items"]} == {1}


def test_task_list_show_cancel_retry(
    as_admin: Cli, admin_http: httpx.Client, served: testing.ServedHub
) -> None:
    pending = admin_http.post("/api/v1/tasks", json={"kind": "echo", "payload": {"x": 1}}).json()
    done = admin_http.post("/api/v1/tasks", json={"kind": "echo"}).json()
    admin_http.post(f"/api/v1/tasks/{done['id']}/cancel").raise_for_status()
    dead_shown = make_dead_task(admin_http, served, "flaky")
    dead_retried = make_dead_task(admin_http, served, "flaky2")

    table, listed, shown, dead_table, cancelled, twice, retried = as_admin.many(
        ("task", "list", "--status", "dead"),  # the other runs change pending tasks
        ("task", "list", "--kind", "echo", "--json"),
        ("task", "show", pending["id"], "--json"),
        ("task", "show", dead_shown),
        ("task", "cancel", pending["id"]),
        ("task", "cancel", done["id"]),
        ("task", "retry", dead_retried),
    )

    assert dead_shown in ok(table).stdout
    assert {t["id"] for t in as_json(listed)["items"]} == {pending["id"], done["id"]}
    assert as_json(shown)["payload"] == {"x": 1}
    assert as_json(shown)["attempts_history"] == []
    assert "dead" in ok(dead_table).stdout and "boom" in dead_table.stdout
    assert "attempts" in dead_table.stdout
    assert "now cancelled" in ok(cancelled).stdout
    assert twice.returncode == 1
    assert one_error_line(twice.stderr).endswith("(HTTP 409)")
    assert "now pending" in ok(retried).stdout


def test_submit_wait_prints_the_result(
    as_admin: Cli, admin_http: httpx.Client, served: testing.ServedHub
) -> None:
    node = admin_http.post("/api/v1/nodes", json={"name": "w", "capabilities": ["echo"]}).json()
    creds = node["credentials"]
    proc = as_admin.start(
        "task", "submit", "echo", "-p", '{"say": "hi"}', "--wait", "--wait-timeout", "30", "--json"
    )
    try:
        with agent(served, creds["access_key"], creds["secret_key"]) as a:
            a.post("/api/v1/agent/register", json={"capabilities": ["echo"]}).raise_for_status()
            lease = a.post("/api/v1/agent/lease", json={"wait_s": 20}).json()["tasks"][0]
            a.post(
                f"/api/v1/agent/tasks/{lease['id']}/result",
                json={
                    "lease_token": lease["lease_token"],
                    "status": "succeeded",
                    "result": {"echo": lease["payload"]},
                },
            ).raise_for_status()
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()

    assert proc.returncode == 0, stderr
    finished = json.loads(stdout)
    assert finished["status"] == "succeeded"
    assert finished["result"] == {"echo": {"say": "hi"}}
