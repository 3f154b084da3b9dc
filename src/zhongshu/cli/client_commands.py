"""Commands that talk to a running hub over HTTP: ``login``, ``logout``, ``whoami``,
``node …`` and ``task …``.

They are thin on purpose: parse options, call one REST endpoint through ``HubClient``, and
render the reply with Rich. Data (tables, JSON) goes to stdout so it can be piped; errors,
warnings and progress bars go to stderr. Exit codes: 0 ok, 1 the hub said no (or could not
be reached), 2 a usage mistake.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from zhongshu.cli import credentials

if TYPE_CHECKING:
    from rich.progress import Progress
from zhongshu.cli.hubclient import (
    DEFAULT_HUB,
    HubClient,
    HubError,
    authorization,
    exit_on_error,
    fail,
    normalize_hub_url,
    stderr,
)


def _stdout_console() -> Console:
    """Rich assumes 80 columns when stdout is not a terminal; piped tables would be cut, so
    give them room unless COLUMNS says otherwise."""
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(highlight=False, soft_wrap=True, width=200 if piped else None)


out = _stdout_console()

BATCH_SIZE = 1000  # the hub's limit for POST /api/v1/tasks/batch
TERMINAL = frozenset({"succeeded", "dead", "cancelled"})
TABLE_ROWS_MAX = 100  # above this, --wait prints counts instead of one row per task

node_app = typer.Typer(help="Manage worker nodes and child hubs.", no_args_is_help=True)
task_app = typer.Typer(help="Submit, inspect, retry and cancel tasks.", no_args_is_help=True)


class NodeKind(StrEnum):
    worker = "worker"
    hub = "hub"


class TaskStatus(StrEnum):
    pending = "pending"
    leased = "leased"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    dead = "dead"
    cancelled = "cancelled"


HubOpt = Annotated[
    str | None,
    typer.Option(
        "--hub",
        envvar="ZHONGSHU_HUB",
        show_default=False,
        help=f"Hub URL \\[default: the hub you logged in to, else {DEFAULT_HUB}].",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="ZHONGSHU_TOKEN",
        show_default=False,
        help="Bearer token \\[default: the one `zhongshu login` stored for this hub].",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
ConfirmOpt = Annotated[
    str | None,
    typer.Option(
        "--password",
        envvar="ZHONGSHU_PASSWORD",
        show_default=False,
        help="Your password: the hub wants it again for this operation (prompted on a terminal).",
    ),
]
NodeIdArg = Annotated[str, typer.Argument(help="Node id.", show_default=False)]
TaskIdArg = Annotated[str, typer.Argument(help="Task id.", show_default=False)]


def register(app: typer.Typer) -> None:
    """Add the client commands to the main ``zhongshu`` app."""
    app.command()(login)
    app.command()(logout)
    app.command()(whoami)
    app.add_typer(node_app, name="node")
    app.add_typer(task_app, name="task")


# --- connecting ---------------------------------------------------------------------------


def _stored() -> credentials.Credentials | None:
    """The saved login; a damaged file is reported and treated as no login."""
    try:
        return credentials.load()
    except credentials.CredentialsError as exc:
        stderr.print(f"[yellow]warning:[/yellow] {escape(str(exc))}")
        return None


def _hub_url(hub: str | None, stored: credentials.Credentials | None) -> str:
    try:
        return normalize_hub_url(hub or (stored.hub if stored else DEFAULT_HUB))
    except ValueError as exc:
        raise fail(str(exc), 2) from exc


def connect(hub: str | None, token: str | None) -> HubClient:
    """A client for the chosen hub with a token.

    The stored token is sent only to the hub it was issued by, so ``--hub other`` never
    leaks it to a different server.
    """
    stored = _stored()
    url = _hub_url(hub, stored)
    if token is None and stored is not None and _same_hub(stored.hub, url):
        token = _fresh_token(url, stored)
    if not token:
        raise fail(f"not logged in to {url}: run `zhongshu login --hub {url}` or pass --token")
    return HubClient(url, token)


def _fresh_token(url: str, stored: credentials.Credentials) -> str:
    """The stored access token, renewed with the refresh token once it has expired.

    Renewal happens under a file lock and re-reads the file first: the hub rotates refresh
    tokens, so two commands renewing with the same one at once would end the session.
    """
    if not stored.expired():
        return stored.token
    with credentials.locked():
        current = _stored() or stored
        if not current.expired():
            return current.token
        if not current.renewable():
            raise fail(f"your login to {url} has expired: run `zhongshu login`")
        try:
            with HubClient(url) as client:
                reply = client.post(
                    "/api/v1/auth/refresh", json={"refresh_token": current.refresh_token}
                )
        except HubError as exc:
            if exc.status_code not in (401, 403):
                raise fail(exc.message) from exc
            raise fail(
                f"your login to {url} has ended ({exc.message}): run `zhongshu login`"
            ) from exc
        renewed = _credentials_from(url, current.username, reply)
        credentials.save(renewed)
    return renewed.token


def _credentials_from(
    url: str, username: str | None, reply: dict[str, Any]
) -> credentials.Credentials:
    """Credentials from a login or refresh reply (expiries turned into Unix times)."""
    now = time.time()
    expires_in = reply.get("expires_in")
    refresh_in = reply.get("refresh_expires_in")
    return credentials.Credentials(
        hub=url,
        token=reply["access_token"],
        username=username,
        expires_at=now + float(expires_in) if expires_in else None,
        refresh_token=reply.get("refresh_token"),
        refresh_expires_at=now + float(refresh_in) if refresh_in else None,
    )


def _same_hub(a: str, b: str) -> bool:
    try:
        return normalize_hub_url(a) == normalize_hub_url(b)
    except ValueError:
        return False


def _print_json(value: Any) -> None:
    out.print_json(json.dumps(value, ensure_ascii=False))


# --- login --------------------------------------------------------------------------------


def login(
    hub: HubOpt = None,
    username: Annotated[
        str | None,
        typer.Option("--username", "-u", envvar="ZHONGSHU_USERNAME", show_default=False),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            envvar="ZHONGSHU_PASSWORD",
            show_default=False,
            help="Prompted on a terminal; prefer the prompt or the env var, since other "
            "users can read command lines.",
        ),
    ] = None,
) -> None:
    """Log in to a hub and keep the token for the other commands."""
    url = _hub_url(hub, _stored())
    username = username or _prompt("username", "--username", secret=False)
    password = password or _prompt(f"password for {username}", "--password", secret=True)
    with exit_on_error(), HubClient(url) as client:
        reply = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    creds = _credentials_from(url, username, reply)
    path = credentials.save(creds)
    lasts = reply.get("refresh_expires_in") or reply.get("expires_in")
    valid = f"; the login lasts {_duration(float(lasts))}" if lasts else ""
    out.print(f"logged in to {escape(url)} as [bold]{escape(username)}[/bold]{valid}")
    stderr.print(f"credentials saved to {escape(str(path))}")


def _prompt(label: str, option: str, *, secret: bool) -> str:
    """Ask on a terminal; elsewhere a missing value is a usage error, not a hang."""
    if not sys.stdin.isatty():
        raise fail(f"{option} is required when not on a terminal", 2)
    value: str = typer.prompt(label, hide_input=secret)
    return value


def logout(
    everywhere: Annotated[
        bool, typer.Option("--everywhere", help="End every session of yours, on all machines.")
    ] = False,
) -> None:
    """End the session on the hub and forget the stored token."""
    path = credentials.credentials_path()
    stored = _stored()
    if stored is not None:
        _end_session(stored, everywhere)
    if credentials.delete(path):
        out.print(f"logged out (removed {escape(str(path))})")
    else:
        out.print("not logged in")


def _end_session(stored: credentials.Credentials, everywhere: bool) -> None:
    """Revoke the session on the hub; forgetting the file locally happens regardless, so a
    hub that is down or a token already expired only earns a warning."""
    try:
        with HubClient(stored.hub, timeout_s=5.0) as client:
            token = stored.token
            if stored.expired() and stored.renewable():
                # an expired access token cannot log out; the refresh token buys a fresh one
                renewed = client.post(
                    "/api/v1/auth/refresh", json={"refresh_token": stored.refresh_token}
                )
                token = renewed["access_token"]
            client.post(
                "/api/v1/auth/logout",
                json={"everywhere": everywhere},
                headers={"authorization": authorization(token)},
            )
    except (HubError, ValueError) as exc:
        stderr.print(
            f"[yellow]warning:[/yellow] the hub did not end the session: {escape(str(exc))}"
        )


def whoami(hub: HubOpt = None, token: TokenOpt = None) -> None:
    """Show who the token belongs to."""
    with exit_on_error(), connect(hub, token) as client:
        me = client.get("/api/v1/auth/whoami")
        out.print(f"{escape(me['username'])} ({me['role']}) at {escape(client.base_url)}")


# --- nodes --------------------------------------------------------------------------------


@node_app.command("create")
def node_create(
    name: Annotated[str, typer.Argument(help="Node name.", show_default=False)],
    kind: Annotated[NodeKind, typer.Option(help="What the node is.")] = NodeKind.worker,
    capability: Annotated[
        list[str] | None,
        typer.Option(
            "--capability",
            "-c",
            help="Capability the node may be given (repeatable).",
            show_default=False,
        ),
    ] = None,
    capacity: Annotated[int, typer.Option(min=1, help="Max tasks at once.")] = 8,
    max_accounts: Annotated[int, typer.Option(min=0, help="Max sources assigned.")] = 10,
    hub: HubOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a node and print its key pair (the secret is shown only once)."""
    body = {
        "name": name,
        "kind": kind.value,
        "capabilities": capability or [],
        "capacity": capacity,
        "max_accounts": max_accounts,
    }
    with exit_on_error(), connect(hub, token) as client:
        node = client.post("/api/v1/nodes", json=body)
    _print_credentials(node, as_json, verb="created")


@node_app.command("rotate")
def node_rotate(
    node_id: NodeIdArg,
    password: ConfirmOpt = None,
    hub: HubOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace a node's key pair; the old one stops working at once."""
    password = password or _prompt("your password, to confirm", "--password", secret=True)
    with exit_on_error(), connect(hub, token) as client:
        node = client.post(
            f"/api/v1/nodes/{node_id}/credentials", headers=_confirmation(client, password)
        )
    _print_credentials(node, as_json, verb="new key pair for")


def _confirmation(client: HubClient, password: str) -> dict[str, str]:
    """Headers carrying a fresh password confirmation, which the hub demands before
    operations that lock a node out (rotate, delete)."""
    reply = client.post("/api/v1/auth/confirm", json={"password": password})
    return {reply.get("header") or "X-Confirm-Token": reply["confirm_token"]}


def _print_credentials(node: dict[str, Any], as_json: bool, verb: str) -> None:
    creds = node["credentials"]
    if as_json:
        _print_json(
            {"id": node["id"], "access_key": creds["access_key"], "secret_key": creds["secret_key"]}
        )
        return
    out.print(f"{verb} node [bold]{escape(node['name'])}[/bold] ({node['id']})")
    # Plain lines, not a table: a table would wrap or truncate the keys people copy.
    out.print(f"access key  {creds['access_key']}")
    out.print(f"secret key  {creds['secret_key']}")
    out.print(f"header      Authorization: {creds['authorization']}")
    stderr.print(
        "[yellow]warning:[/yellow] the secret key is shown only once: store it now "
        f"(`zhongshu node rotate {node['id']}` makes a new pair)."
    )


@node_app.command("list")
def node_list(hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """List nodes with their status and last heartbeat."""
    with exit_on_error(), connect(hub, token) as client:
        reply = client.get("/api/v1/nodes")
    if as_json:
        _print_json(reply)
        return
    table = Table("NAME", "STATUS", "CAPABILITIES", "CAPACITY", "LAST HEARTBEAT")
    _id_column(table, [n["id"] for n in reply["items"]])
    for n in reply["items"]:
        table.add_row(
            n["id"],
            Text(n["name"]),
            _status(n["status"]),
            Text(", ".join(n["effective_capabilities"]) or "-"),
            _capacity(n),
            _ago(n["last_heartbeat_at"]),
        )
    table.caption = f"{reply['total']} node(s)"
    out.print(table)


@node_app.command("show")
def node_show(
    node_id: NodeIdArg, hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one node: settings, what it advertised, live stats and the tasks it holds."""
    with exit_on_error(), connect(hub, token) as client:
        node = client.get(f"/api/v1/nodes/{node_id}")
    if as_json:
        _print_json(node)
        return
    fields: list[tuple[str, Any]] = [
        ("id", node["id"]),
        ("name", Text(node["name"])),
        ("kind", node["kind"]),
        ("status", _status(node["status"])),
        ("access key", node["access_key"]),
        ("capabilities", _join(node["capabilities"]) or "any it advertises"),
        ("advertised", _join(node["advertised_capabilities"]) or "-"),
        ("effective", _join(node["effective_capabilities"]) or "-"),
        ("capacity", _capacity(node)),
        ("max accounts", str(node["max_accounts"])),
        ("version", Text(node["version"] or "-")),
        ("host", Text(f"{node['host'] or '-'} (pid {node['pid'] or '-'})")),
        ("last heartbeat", _ago(node["last_heartbeat_at"])),
        ("registered", node["registered_at"] or "never"),
        ("created", node["created_at"]),
        ("stats", Text(json.dumps(node["stats"])) if node["stats"] else "-"),
    ]
    out.print(_fields(fields))
    if node.get("tasks"):
        table = Table("TASK", "KIND", "STATUS", title="tasks held")
        for t in node["tasks"]:
            table.add_row(t["id"], Text(t["kind"]), _status(t["status"]))
        out.print(table)


@node_app.command("disable")
def node_disable(node_id: NodeIdArg, hub: HubOpt = None, token: TokenOpt = None) -> None:
    """Stop giving the node work and refuse its key pair until enabled again."""
    _set_disabled(node_id, True, hub, token)


@node_app.command("enable")
def node_enable(node_id: NodeIdArg, hub: HubOpt = None, token: TokenOpt = None) -> None:
    """Let a disabled node work again."""
    _set_disabled(node_id, False, hub, token)


def _set_disabled(node_id: str, disabled: bool, hub: str | None, token: str | None) -> None:
    with exit_on_error(), connect(hub, token) as client:
        node = client.patch(f"/api/v1/nodes/{node_id}", json={"disabled": disabled})
    out.print(
        f"node {escape(node['name'])} ({node['id']}) is now ", _status(node["status"]), sep=""
    )


@node_app.command("delete")
def node_delete(
    node_id: NodeIdArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    password: ConfirmOpt = None,
    hub: HubOpt = None,
    token: TokenOpt = None,
) -> None:
    """Delete a node; its key pair stops working at once."""
    if not yes:
        if not sys.stdin.isatty():
            raise fail("deleting a node cannot be undone: pass --yes to confirm", 2)
        typer.confirm(f"delete node {node_id}?", abort=True)
    password = password or _prompt("your password, to confirm", "--password", secret=True)
    with exit_on_error(), connect(hub, token) as client:
        client.delete(f"/api/v1/nodes/{node_id}", headers=_confirmation(client, password))
    out.print(f"node {node_id} deleted")


# --- tasks --------------------------------------------------------------------------------


@task_app.command("submit")
def task_submit(
    kind: Annotated[str, typer.Argument(help="Task kind, e.g. http.fetch.", show_default=False)],
    payload: Annotated[
        str | None, typer.Option("--payload", "-p", help="JSON payload.", show_default=False)
    ] = None,
    payload_file: Annotated[
        Path | None,
        typer.Option(help="File holding the JSON payload ('-' for stdin).", show_default=False),
    ] = None,
    capability: Annotated[
        str | None,
        typer.Option(
            "--capability", "-c", help="Capability a node needs to run it.", show_default=False
        ),
    ] = None,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    max_attempts: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Attempts before the task is dead \\[default: the hub's].",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            min=0, help="Seconds one attempt may run \\[default: the hub's].", show_default=False
        ),
    ] = None,
    delay: Annotated[
        float | None,
        typer.Option(min=0, help="Seconds to wait before the first attempt.", show_default=False),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="Submitting the same key again returns the first task. With --count, "
            "task i gets KEY-i, so re-running the same batch creates nothing new.",
            show_default=False,
        ),
    ] = None,
    callback_url: Annotated[
        str | None, typer.Option(help="URL the hub POSTs the result to.", show_default=False)
    ] = None,
    count: Annotated[int, typer.Option(min=1, help="Submit this many identical tasks.")] = 1,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until the task(s) finish; print the result(s).")
    ] = False,
    wait_timeout: Annotated[
        float | None,
        typer.Option(
            min=0,
            help="Give up waiting after this many seconds \\[default: never].",
            show_default=False,
        ),
    ] = None,
    hub: HubOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Submit a task (or --count of them, in batches of 1000) and optionally --wait for it.

    With --wait the exit code is 1 unless every task succeeded.
    """
    spec = {
        "kind": kind,
        "payload": _payload(payload, payload_file),
        "capability": capability,
        "priority": priority,
        "max_attempts": max_attempts,
        "timeout_s": timeout,
        "delay_s": delay,
        "callback_url": callback_url,
    }
    spec = {k: v for k, v in spec.items() if v is not None}
    with exit_on_error(), connect(hub, token) as client:
        if count == 1:
            submitted = _submit_one(client, spec, idempotency_key)
        else:
            submitted = _submit_many(client, spec, idempotency_key, count)
        if wait:
            _say_waiting(submitted["items"])
            _wait_and_report(client, [t["id"] for t in submitted["items"]], wait_timeout, as_json)
            return
    _report_submitted(submitted, count, as_json)


def _payload(payload: str | None, payload_file: Path | None) -> Any:
    if payload is not None and payload_file is not None:
        raise fail("give --payload or --payload-file, not both", 2)
    if payload_file is not None:
        try:
            text = sys.stdin.read() if str(payload_file) == "-" else payload_file.read_text()
        except OSError as exc:
            raise fail(f"cannot read --payload-file {payload_file}: {exc.strerror}", 2) from exc
        source = f"--payload-file {payload_file}"
    elif payload is not None:
        text, source = payload, "--payload"
    else:
        return {}
    try:
        return json.loads(text)
    except ValueError as exc:
        raise fail(f"{source} is not valid JSON: {exc}", 2) from exc


def _submit_one(client: HubClient, spec: dict[str, Any], key: str | None) -> dict[str, Any]:
    body = {**spec, "idempotency_key": key} if key else spec
    task = client.post("/api/v1/tasks", json=body)
    return {"items": [task], "created": int(task.get("created", True))}


def _submit_many(
    client: HubClient, spec: dict[str, Any], key: str | None, count: int
) -> dict[str, Any]:
    """POST /tasks/batch in chunks, with a progress bar on stderr."""
    items: list[dict[str, Any]] = []
    created = 0
    with _progress() as progress:
        bar = progress.add_task("submitting", total=count)
        for start in range(0, count, BATCH_SIZE):
            batch = [
                {**spec, "idempotency_key": f"{key}-{i}"} if key else spec
                for i in range(start, min(start + BATCH_SIZE, count))
            ]
            try:
                reply = client.post("/api/v1/tasks/batch", json={"tasks": batch})
            except HubError as exc:
                raise HubError(
                    f"submitted {len(items)} of {count} tasks, then: {exc.message}",
                    exc.status_code,
                ) from exc
            items.extend(reply["items"])
            created += reply["created"]
            progress.advance(bar, len(batch))
    return {"items": items, "created": created}


def _report_submitted(submitted: dict[str, Any], count: int, as_json: bool) -> None:
    items = submitted["items"]
    if as_json:
        _print_json(items[0] if count == 1 else submitted)
        return
    if count == 1:
        t = items[0]
        what = "submitted task" if t.get("created", True) else "already submitted: task"
        out.print(f"{what} {t['id']} ({escape(t['kind'])}, ", _status(t["status"]), ")", sep="")
        return
    new = submitted["created"]
    old = f", {count - new} already existed" if new < count else ""
    out.print(f"submitted {count} tasks ({new} new{old}): {items[0]['id']} … {items[-1]['id']}")


def _say_waiting(items: list[dict[str, Any]]) -> None:
    """Name what was submitted before waiting, so an interrupted wait still leaves ids."""
    if len(items) == 1:
        stderr.print(f"submitted task {items[0]['id']}; waiting for it to finish")
    else:
        stderr.print(
            f"submitted {len(items)} tasks ({items[0]['id']} … {items[-1]['id']}); "
            "waiting for them to finish"
        )


def _wait_and_report(
    client: HubClient, ids: list[str], timeout_s: float | None, as_json: bool
) -> None:
    tasks = _wait_for(client, ids, timeout_s)
    if as_json:
        _print_json(tasks[0] if len(ids) == 1 else {"items": tasks})
    elif len(ids) == 1:
        _print_outcome(tasks[0])
    else:
        _print_outcomes(tasks)
    unhappy = sum(1 for t in tasks if t["status"] != "succeeded")
    if unhappy:
        raise fail(f"{unhappy} of {len(tasks)} task(s) did not succeed")


def _wait_for(client: HubClient, ids: list[str], timeout_s: float | None) -> list[dict[str, Any]]:
    """Poll until every task is finished; returns them in submission order.

    Tasks finish roughly in submission order, so each round stops at the first unfinished
    task: waiting for N tasks costs about N requests, not N per round.
    """
    done: dict[str, dict[str, Any]] = {}
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    pause_s = 0.05
    with _progress(len(ids) > 1) as progress:
        bar = progress.add_task("waiting", total=len(ids))
        while True:
            for task in _finished_prefix(client, [i for i in ids if i not in done]):
                done[task["id"]] = task
                progress.advance(bar)
            if len(done) == len(ids):
                return [done[i] for i in ids]
            if deadline is not None and time.monotonic() >= deadline:
                raise HubError(
                    f"gave up waiting after {timeout_s:g}s: {len(ids) - len(done)} of "
                    f"{len(ids)} task(s) not finished"
                )
            time.sleep(pause_s)
            pause_s = min(pause_s * 1.5, 1.0)


def _finished_prefix(client: HubClient, ids: list[str]) -> Iterator[dict[str, Any]]:
    for task_id in ids:
        task = client.get(f"/api/v1/tasks/{task_id}")
        if task["status"] not in TERMINAL:
            return
        yield task


def _print_outcome(task: dict[str, Any]) -> None:
    out.print(
        f"task {task['id']} ",
        _status(task["status"]),
        f" after {task['attempts']} attempt(s)",
        sep="",
    )
    if task["status"] == "succeeded":
        _print_json(task["result"])
    elif task.get("error"):
        stderr.print(Text(task["error"]), soft_wrap=True)


def _print_outcomes(tasks: list[dict[str, Any]]) -> None:
    counts = Counter(t["status"] for t in tasks)
    if len(tasks) <= TABLE_ROWS_MAX:
        table = Table("STATUS", "ATTEMPTS", "RESULT / ERROR")
        _id_column(table, [t["id"] for t in tasks])
        for t in tasks:
            shown = t["result"] if t["status"] == "succeeded" else t.get("error")
            table.add_row(t["id"], _status(t["status"]), str(t["attempts"]), _short(shown))
        out.print(table)
    out.print(", ".join(f"{n} {status}" for status, n in sorted(counts.items())))


@task_app.command("list")
def task_list(
    status: Annotated[
        TaskStatus | None, typer.Option(help="Only tasks in this state.", show_default=False)
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only this kind.", show_default=False)] = None,
    capability: Annotated[
        str | None, typer.Option(help="Only tasks needing this capability.", show_default=False)
    ] = None,
    node: Annotated[
        str | None, typer.Option(help="Only tasks held by this node id.", show_default=False)
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many (newest first).")] = 0,
    hub: HubOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List tasks, newest first (yours; admins see all)."""
    params = {
        "status": status.value if status else None,
        "kind": kind,
        "capability": capability,
        "node": node,
        "limit": limit,
        "offset": offset,
    }
    with exit_on_error(), connect(hub, token) as client:
        reply = client.get("/api/v1/tasks", params=params)
    if as_json:
        _print_json(reply)
        return
    table = Table("KIND", "STATUS", "ATTEMPTS", "PRIORITY", "NODE", "CREATED")
    _id_column(table, [t["id"] for t in reply["items"]])
    for t in reply["items"]:
        table.add_row(
            t["id"],
            Text(t["kind"]),
            _status(t["status"]),
            f"{t['attempts']}/{t['max_attempts']}",
            str(t["priority"]),
            t["node_id"] or "-",
            _ago(t["created_at"]),
        )
    shown = len(reply["items"])
    table.caption = f"{shown} of {reply['total']} task(s)"
    if reply["total"] > offset + shown:
        table.caption += f"; more with --offset {offset + shown}"
    out.print(table)


@task_app.command("show")
def task_show(
    task_id: TaskIdArg, hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Show a task with its attempts and callback deliveries."""
    with exit_on_error(), connect(hub, token) as client:
        task = client.get(f"/api/v1/tasks/{task_id}")
    if as_json:
        _print_json(task)
        return
    out.print(_fields(_task_fields(task)))
    _print_attempts(task["attempts_history"])
    _print_deliveries(task["callback_deliveries"])


def _task_fields(t: dict[str, Any]) -> list[tuple[str, Any]]:
    fields: list[tuple[str, Any]] = [
        ("id", t["id"]),
        ("kind", Text(t["kind"])),
        ("status", _status(t["status"])),
        ("capability", Text(t["capability"] or "-")),
        ("priority", str(t["priority"])),
        ("attempts", f"{t['attempts']}/{t['max_attempts']} (timeout {t['timeout_s']:g}s)"),
        ("node", t["node_id"] or "-"),
        ("run at", t["run_at"] or "-"),
        ("created", t["created_at"]),
        ("started", t["started_at"] or "-"),
        ("finished", t["finished_at"] or "-"),
        ("idempotency key", Text(t["idempotency_key"] or "-")),
        ("payload", Text(json.dumps(t["payload"], ensure_ascii=False))),
    ]
    if t["result"] is not None:
        fields.append(("result", Text(json.dumps(t["result"], ensure_ascii=False))))
    if t["error"]:
        fields.append(("error", Text(t["error"], style="red")))
    if t["callback_url"]:
        fields.append(("callback", Text(f"{t['callback_url']} ({t['callback_status']})")))
    return fields


def _print_attempts(attempts: list[dict[str, Any]]) -> None:
    if not attempts:
        out.print("no attempts yet")
        return
    table = Table(
        "#", "NODE", "OUTCOME", "LEASED", "STARTED", "FINISHED", "ERROR", title="attempts"
    )
    for a in attempts:
        table.add_row(
            str(a["attempt"]),
            a["node_id"] or "-",
            _status(a["outcome"] or "running"),
            a["leased_at"] or "-",
            a["started_at"] or "-",
            a["finished_at"] or "-",
            _short(a["error"]),
        )
    out.print(table)


def _print_deliveries(deliveries: list[dict[str, Any]]) -> None:
    if not deliveries:
        return
    table = Table("#", "AT", "HTTP", "OK", "MS", "ERROR", title="callback deliveries")
    for d in deliveries:
        table.add_row(
            str(d["attempt"]),
            d["at"],
            str(d["status_code"] or "-"),
            "yes" if d["ok"] else "no",
            f"{d['duration_ms']:g}",
            _short(d["error"]),
        )
    out.print(table)


@task_app.command("retry")
def task_retry(
    task_id: TaskIdArg, hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Run a failed or dead task again now."""
    _task_action(task_id, "retry", hub, token, as_json)


@task_app.command("cancel")
def task_cancel(
    task_id: TaskIdArg, hub: HubOpt = None, token: TokenOpt = None, as_json: JsonOpt = False
) -> None:
    """Cancel an unfinished task; a node running it is told to stop."""
    _task_action(task_id, "cancel", hub, token, as_json)


def _task_action(
    task_id: str, action: str, hub: str | None, token: str | None, as_json: bool
) -> None:
    with exit_on_error(), connect(hub, token) as client:
        task = client.post(f"/api/v1/tasks/{task_id}/{action}")
    if as_json:
        _print_json(task)
    else:
        out.print(f"task {task['id']} is now ", _status(task["status"]), sep="")


# --- rendering ----------------------------------------------------------------------------

_STATUS_STYLE = {
    "online": "green",
    "offline": "yellow",
    "disabled": "red",
    "pending": "cyan",
    "leased": "blue",
    "running": "blue",
    "succeeded": "green",
    "failed": "yellow",
    "dead": "red",
    "cancelled": "magenta",
    "lost": "yellow",
    "timeout": "yellow",
}


def _status(status: str) -> Text:
    return Text(status, style=_STATUS_STYLE.get(status, ""))


def _fields(rows: list[tuple[str, Any]]) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for label, value in rows:
        grid.add_row(label, value if isinstance(value, Text) else Text(str(value)))
    return grid


def _id_column(table: Table, ids: list[str]) -> None:
    """Put an ID column first that is never cut: people copy ids out of tables."""
    table.add_column("ID", no_wrap=True, min_width=max((len(i) for i in ids), default=2))
    table.columns.insert(0, table.columns.pop())


def _capacity(node: dict[str, Any]) -> str:
    running = node.get("running_tasks")
    cap = f"{node['effective_capacity']}"
    if node["effective_capacity"] != node["capacity"]:
        cap += f" (of {node['capacity']})"
    return f"{running}/{cap}" if running is not None else cap


def _join(values: list[str]) -> str:
    return ", ".join(values)


def _short(value: Any, limit: int = 60) -> Text:
    if value is None:
        return Text("-")
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = " ".join(text.split())
    return Text(text if len(text) <= limit else text[: limit - 1] + "…")


def _ago(iso: str | None) -> str:
    """'12s ago' reads faster than a timestamp when scanning a table."""
    if not iso:
        return "never"
    then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    seconds = (datetime.now(UTC) - then).total_seconds()
    if seconds < 0:
        return iso
    return f"{_duration(seconds)} ago"


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def _progress(visible: bool = True) -> Progress:
    # imported here: only --count and --wait need it, and every command pays for imports
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        disable=not (visible and stderr.is_terminal),
        transient=True,
    )
