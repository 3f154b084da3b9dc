"""``zhongshu user …`` and ``zhongshu key …``: users and API keys, over HTTP.

Built on the client commands' plumbing (``connect``, the stored login, one red error line,
exit codes 0/1/2). Operations the hub treats as sensitive (role change, password reset,
deleting a user or someone else's key) ask for your password again and send the step-up
confirmation the hub wants.
"""

from __future__ import annotations

import re
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from zhongshu.cli import client_commands as cc
from zhongshu.cli.hubclient import HubClient, HubError, exit_on_error, fail, stderr

user_app = typer.Typer(help="Manage users (admins).", no_args_is_help=True)
key_app = typer.Typer(help="Manage your API keys (AK-SK WK…:SK…).", no_args_is_help=True)

_USER_ID = re.compile(r"^[0-9a-f]{32}$")


class Role(StrEnum):
    admin = "admin"
    user = "user"
    viewer = "viewer"


class Scope(StrEnum):
    read = "read"
    write = "write"
    push = "push"


UserArg = Annotated[str, typer.Argument(help="Username or user id.", show_default=False)]
KeyIdArg = Annotated[str, typer.Argument(help="API key id (key_…).", show_default=False)]
NewPasswordOpt = Annotated[
    str | None,
    typer.Option(
        "--new-password",
        envvar="ZHONGSHU_NEW_PASSWORD",
        show_default=False,
        help="The user's new password (prompted twice on a terminal).",
    ),
]


def register(app: typer.Typer) -> None:
    """Add ``user`` and ``key`` to the main ``zhongshu`` app."""
    app.add_typer(user_app, name="user")
    app.add_typer(key_app, name="key")


def _new_password(value: str | None) -> str:
    if value:
        return value
    if not sys.stdin.isatty():
        raise fail(
            "--new-password (or ZHONGSHU_NEW_PASSWORD) is required when not on a terminal", 2
        )
    entered: str = typer.prompt("new password", hide_input=True, confirmation_prompt=True)
    return entered


def _confirm_password(value: str | None) -> str:
    return value or cc._prompt("your password, to confirm", "--password", secret=True)


def _user_id(client: HubClient, user: str) -> str:
    if _USER_ID.match(user):
        return user
    reply = client.get("/api/v1/users", params={"q": user, "limit": 1000})
    for u in reply["items"]:
        if u["username"] == user:
            return str(u["id"])
    raise HubError(f"no user named {user!r}: see `zhongshu user list`", 404)


def _print_user(u: dict[str, Any], verb: str) -> None:
    state = "disabled" if u["disabled"] else "active"
    cc.out.print(
        f"{verb} user [bold]{escape(u['username'])}[/bold] ({u['id']}), role {u['role']}, {state}"
    )


# --- users --------------------------------------------------------------------------------


@user_app.command("create")
def user_create(
    username: Annotated[str, typer.Argument(help="Login name.", show_default=False)],
    role: Annotated[Role, typer.Option("--role", help="admin, user or viewer.")] = Role.user,
    new_password: NewPasswordOpt = None,
    display_name: Annotated[str, typer.Option("--display-name")] = "",
    email: Annotated[str, typer.Option("--email")] = "",
    hub: cc.HubOpt = None,
    token: cc.TokenOpt = None,
    as_json: cc.JsonOpt = False,
) -> None:
    """Create a user."""
    password = _new_password(new_password)
    body = {
        "username": username,
        "password": password,
        "role": role.value,
        "display_name": display_name,
        "email": email,
    }
    with exit_on_error(), cc.connect(hub, token) as client:
        u = client.post("/api/v1/users", json=body)
    if as_json:
        cc._print_json(u)
    else:
        _print_user(u, "created")


@user_app.command("list")
def user_list(
    role: Annotated[Role | None, typer.Option("--role", help="Only this role.")] = None,
    hub: cc.HubOpt = None,
    token: cc.TokenOpt = None,
    as_json: cc.JsonOpt = False,
) -> None:
    """List users."""
    with exit_on_error(), cc.connect(hub, token) as client:
        reply = client.get(
            "/api/v1/users", params={"role": role.value if role else None, "limit": 1000}
        )
    if as_json:
        cc._print_json(reply)
        return
    table = Table("id", "username", "role", "status", "display name", "e-mail")
    for u in reply["items"]:
        table.add_row(
            u["id"],
            escape(u["username"]),
            u["role"],
            "disabled" if u["disabled"] else "active",
            escape(u["display_name"]),
            escape(u["email"]),
        )
    cc.out.print(table)


@user_app.command("disable")
def user_disable(user: UserArg, hub: cc.HubOpt = None, token: cc.TokenOpt = None) -> None:
    """Disable a user: their tokens and logins stop working at once."""
    _set_disabled(user, True, hub, token)


@user_app.command("enable")
def user_enable(user: UserArg, hub: cc.HubOpt = None, token: cc.TokenOpt = None) -> None:
    """Enable a disabled user."""
    _set_disabled(user, False, hub, token)


def _set_disabled(user: str, disabled: bool, hub: str | None, token: str | None) -> None:
    with exit_on_error(), cc.connect(hub, token) as client:
        u = client.patch(f"/api/v1/users/{_user_id(client, user)}", json={"disabled": disabled})
    _print_user(u, "disabled" if disabled else "enabled")


@user_app.command("set-role")
def user_set_role(
    user: UserArg,
    role: Annotated[Role, typer.Argument(help="admin, user or viewer.", show_default=False)],
    password: cc.ConfirmOpt = None,
    hub: cc.HubOpt = None,
    token: cc.TokenOpt = None,
) -> None:
    """Change a user's role (asks for your password again)."""
    password = _confirm_password(password)
    with exit_on_error(), cc.connect(hub, token) as client:
        uid = _user_id(client, user)
        u = client.request(
            "PUT",
            f"/api/v1/users/{uid}/role",
            json={"role": role.value},
            headers=cc._confirmation(client, password),
        )
    _print_user(u, "updated")


@user_app.command("reset-password")
def user_reset_password(
    user: UserArg,
    new_password: NewPasswordOpt = None,
    password: cc.ConfirmOpt = None,
    hub: cc.HubOpt = None,
    token: cc.TokenOpt = None,
) -> None:
    """Set a new password for a user; their sessions end (asks for your password again)."""
    new = _new_password(new_password)
    password = _confirm_password(password)
    with exit_on_error(), cc.connect(hub, token) as client:
        uid = _user_id(client, user)
        u = client.post(
            f"/api/v1/users/{uid}/password",
            json={"password": new},
            headers=cc._confirmation(client, password),
        )
    _print_user(u, "new password for")


@user_app.command("delete")
def user_delete(
    user: UserArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    password: cc.ConfirmOpt = None,
    hub: cc.HubOpt = None,
    token: cc.TokenOpt = None,
) -> None:
    """Delete a user with their API keys and sessions (asks for your password again)."""
    if not yes:
        if not sys.stdin.isatty():
            raise fail("deleting a user cannot be undone: pass --yes to confirm", 2)
        typer.confirm(f"delete user {user}?", abort=True)
    password = _confirm_password(password)
    with exit_on_error(), cc.connect(hub, token) as client:
        uid = _user_id(client, user)
        client.delete(f"/api/v1/users/{uid}", headers=cc._confirmation(client, password))
    cc.out.print(f"user {escape(user)} deleted")


# --- API keys -----------------------------------------------------------------------------


def _key_row(k: dict[str, Any]) -> list[str]:
    state = "disabled" if k["disabled"] else "active"
    return [
        k["id"],
        escape(k["name"]),
        k["access_key"],
        ",".join(k["scopes"]),
        state,
        k["expires_at"] or "never",
        k["last_used_at"] or "never",
    ]


@key_app.command("create")
def key_create(
    name: Annotated[
        str, typer.Argument(help="A name to recognise the key by.", show_default=False)
    ],
    scope: Annotated[
        list[Scope] | None,
        typer.Option(
            "--scope", "-s", help="read, write or push; repeat for several [default: read]."
        ),
    ] = None,
    expires_in_days: Annotated[
        float | None, typer.Option("--expires-in-days", min=0.001, help="Expire after this long.")
    ] = None,
    hub: cc.HubOpt = None,
    token: cc.TokenOpt = None,
    as_json: cc.JsonOpt = False,
) -> None:
    """Create an API key for yourself; its secret is shown only now."""
    body: dict[str, Any] = {"name": name, "scopes": [s.value for s in scope or [Scope.read]]}
    if expires_in_days is not None:
        body["expires_in_s"] = int(expires_in_days * 86400)
    with exit_on_error(), cc.connect(hub, token) as client:
        k = client.post("/api/v1/api-keys", json=body)
    if as_json:
        cc._print_json(
            {
                "id": k["id"],
                "access_key": k["access_key"],
                "secret_key": k["secret_key"],
                "scopes": k["scopes"],
            }
        )
        return
    scopes = ",".join(k["scopes"])
    cc.out.print(f"created API key [bold]{escape(k['name'])}[/bold] ({k['id']}), scopes {scopes}")
    cc.out.print(f"access key  {k['access_key']}")
    cc.out.print(f"secret key  {k['secret_key']}")
    cc.out.print(f"header      Authorization: {k['authorization']}")
    stderr.print("[yellow]warning:[/yellow] the secret key is shown only once: store it now.")


@key_app.command("list")
def key_list(
    all_users: Annotated[bool, typer.Option("--all", help="Admins: everyone's keys.")] = False,
    hub: cc.HubOpt = None,
    token: cc.TokenOpt = None,
    as_json: cc.JsonOpt = False,
) -> None:
    """List your API keys (never their secrets)."""
    with exit_on_error(), cc.connect(hub, token) as client:
        params: dict[str, Any] = {"limit": 1000}
        if not all_users:
            params["owner_id"] = client.get("/api/v1/auth/whoami")["id"]
        reply = client.get("/api/v1/api-keys", params=params)
    if as_json:
        cc._print_json(reply)
        return
    table = Table("id", "name", "access key", "scopes", "status", "expires", "last used")
    for k in reply["items"]:
        table.add_row(*_key_row(k))
    cc.out.print(table)


@key_app.command("disable")
def key_disable(key_id: KeyIdArg, hub: cc.HubOpt = None, token: cc.TokenOpt = None) -> None:
    """Disable a key: it is refused until enabled again."""
    with exit_on_error(), cc.connect(hub, token) as client:
        k = client.post(f"/api/v1/api-keys/{key_id}/disable")
    cc.out.print(f"API key {escape(k['name'])} ({k['id']}) disabled")


@key_app.command("enable")
def key_enable(key_id: KeyIdArg, hub: cc.HubOpt = None, token: cc.TokenOpt = None) -> None:
    """Enable a disabled key."""
    with exit_on_error(), cc.connect(hub, token) as client:
        k = client.post(f"/api/v1/api-keys/{key_id}/enable")
    cc.out.print(f"API key {escape(k['name'])} ({k['id']}) enabled")


@key_app.command("delete")
def key_delete(
    key_id: KeyIdArg,
    password: cc.ConfirmOpt = None,
    hub: cc.HubOpt = None,
    token: cc.TokenOpt = None,
) -> None:
    """Delete a key (someone else's key: asks for your password again)."""
    with exit_on_error(), cc.connect(hub, token) as client:
        key = client.get(f"/api/v1/api-keys/{key_id}")
        me = client.get("/api/v1/auth/whoami")
        headers = None
        if key["owner_id"] != me["id"]:
            headers = cc._confirmation(client, _confirm_password(password))
        client.delete(f"/api/v1/api-keys/{key_id}", headers=headers)
    cc.out.print(f"API key {escape(key['name'])} ({key_id}) deleted")
