"""The role × route matrix, generated from the app's routes.

Every API route must have a policy in ``services/policy.py`` (a new route without one
fails here). For each route and each kind of caller — anonymous, viewer, user (the owner
of the objects in the path), another user, admin, a node key, and user API keys with each
scope — the status code must be the one the policy predicts: 401 without credentials,
403 for the wrong kind of caller, role, key scope or a missing step-up confirmation, 404
for someone else's object, and otherwise anything but 401/403/404 (and never a 5xx).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import routing as fastapi_routing
from fastapi.routing import APIRoute
from identity_support import ADMIN, PASSWORD, confirm, make_key, make_user

from zhongshu.services import policy as policy_mod
from zhongshu.services.identity import Principal
from zhongshu.services.policy import Policy

SKIP_PATHS = {"/docs", "/openapi.json", "/redoc", "/docs/oauth2-redirect"}
# Bodies that keep an allowed call quick (the lease long-poll would otherwise wait 20 s).
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/v1/agent/lease"): {"max_tasks": 1, "wait_s": 0},
}
# Each area adds its objects and bodies in a ``matrix_<area>.py`` module beside this file:
# ``async def build_objects(client, owner, hub) -> dict[str, str]`` (path parameter name →
# id of an object owned by ``owner``) and optionally ``BODIES`` like the dict above.
ObjectBuilder = Callable[[httpx.AsyncClient, Any, Any], Awaitable[dict[str, str]]]
AREA_BUILDERS: list[ObjectBuilder] = []
for _module_path in sorted(Path(__file__).parent.glob("matrix_*.py")):
    _area = importlib.import_module(_module_path.stem)
    AREA_BUILDERS.append(_area.build_objects)
    BODIES.update(getattr(_area, "BODIES", {}))
# Calls that end the caller's session go last, so the other checks keep their tokens.
LAST = {("POST", "/api/v1/auth/logout")}
OK = "ok"


@dataclass
class Caller:
    name: str
    headers: dict[str, str]
    kind: str = "user"  # anonymous | user | node
    role: str = ""
    via: str = "token"  # token | key | node
    scopes: frozenset[str] = frozenset()
    owner: bool = False  # owns the objects in the path (or is acting on behalf of who does)
    confirm_headers: dict[str, str] = field(default_factory=dict)


def _flat_routes(app: Any) -> list[tuple[str, APIRoute]]:
    """(full path, route) of every API route, also inside included routers (FastAPI ≥ 0.13x
    keeps included routers lazily as ``_IncludedRouter`` entries in ``app.routes``)."""
    iter_contexts = getattr(fastapi_routing, "iter_route_contexts", None)
    if iter_contexts is None:  # older FastAPI: routes are flattened at include time
        return [(r.path, r) for r in app.routes if isinstance(r, APIRoute)]
    out = []
    for ctx in iter_contexts(app.routes):
        if isinstance(ctx.original_route, APIRoute):
            out.append((ctx.path, ctx.original_route))
    return out


def api_routes(app: Any) -> list[tuple[str, str, APIRoute]]:
    out = []
    for path, route in _flat_routes(app):
        if path in SKIP_PATHS:
            continue
        for method in sorted(route.methods):
            out.append((method, path, route))
    return sorted(out, key=lambda r: ((r[0], r[1]) in LAST, r[1], r[0]))


def undeclared(app: Any) -> list[str]:
    return [f"{m} {p}" for m, p, _ in api_routes(app) if policy_mod.lookup(m, p) is None]


def expected(policy: Policy, c: Caller, path_has_owned_id: bool, confirmed: bool) -> str | int:
    """What the policy predicts for this caller: a status code, or OK."""
    if policy.who == "public":
        return OK
    if c.kind == "anonymous":
        return 401
    if policy.who == "node":
        return OK if c.kind == "node" else 403
    if policy.who == "relay":
        return 401
    if c.kind != "user":
        return 403
    if c.via == "key" and (policy.scope is None or policy.scope not in c.scopes):
        return 403
    if not policy.role_allows(c.role):
        return 403
    if policy.step_up == "always" and not confirmed:
        return 403
    if policy.owner == "own" and path_has_owned_id:
        if not (c.owner or c.role == "admin"):
            return 404
        if policy.step_up == "others" and not c.owner and not confirmed:
            return 403
    return OK


class World:
    """The callers and the objects (owned by ``user``) that path parameters point at."""

    def __init__(self, hub: Any, client: httpx.AsyncClient) -> None:
        self.hub = hub
        self.client = client
        self.ids: dict[str, str] = {}
        self.callers: list[Caller] = []
        self.owner: Any = None

    async def build(self) -> None:
        c = self.client
        admin_headers = dict(c.headers)
        viewer = await make_user(c, role="viewer")
        self.owner = await make_user(c, role="user")
        other = await make_user(c, role="user")
        r = await c.post("/api/v1/nodes", json={"name": "matrix-node"})
        assert r.status_code == 201, r.text
        node_headers = {"authorization": r.json()["credentials"]["authorization"]}
        self.callers = [
            Caller("anonymous", {}, kind="anonymous"),
            Caller("viewer", viewer.headers, role="viewer"),
            Caller("user", self.owner.headers, role="user", owner=True),
            Caller("other user", other.headers, role="user"),
            Caller("admin", admin_headers, role="admin"),
            Caller("node key", node_headers, kind="node", via="node"),
        ]
        for scope in policy_mod.SCOPES:
            _, headers = await make_key(c, self.owner.headers, [scope], name=f"matrix-{scope}")
            self.callers.append(
                Caller(
                    f"user key [{scope}]",
                    headers,
                    role="user",
                    via="key",
                    scopes=frozenset({scope}),
                    owner=True,
                )
            )
        for caller, password in (
            (self.callers[1], PASSWORD),
            (self.callers[2], PASSWORD),
            (self.callers[3], PASSWORD),
            (self.callers[4], ADMIN[1]),
        ):
            caller.confirm_headers = await confirm(c, caller.headers, password)
        await self.objects()

    async def objects(self) -> None:
        """(Re)create the objects the path parameters name, all owned by ``user``."""
        c = self.client
        owner = self.owner
        r = await c.post("/api/v1/tasks", json={"kind": "echo"}, headers=owner.headers)
        assert r.status_code == 201, r.text
        self.ids["task_id"] = r.json()["id"]
        key, _ = await make_key(c, owner.headers, ["read"], name="matrix-target")
        self.ids["key_id"] = key["id"]
        node, _ = await self.hub.nodes.create(
            "owned-node", actor=Principal("user", owner.id, "user", name=owner.username)
        )
        self.ids["node_id"] = node["id"]
        victim = await make_user(c, role="user")
        self.ids["user_id"] = victim.id
        for build in AREA_BUILDERS:
            self.ids.update(await build(c, owner, self.hub))


def fill(path: str, ids: dict[str, str]) -> tuple[str, bool]:
    """The path with ids substituted; True when every parameter names an owned object."""
    known = True

    def sub(m: re.Match[str]) -> str:
        nonlocal known
        name = m.group(1).split(":")[0]
        if name not in ids:
            known = False
            return "zz-unknown-id"
        return ids[name]

    filled = re.sub(r"\{([^}]+)\}", sub, path)
    return filled, known and "{" in path


def check(status: int, want: str | int) -> bool:
    if status >= 500:
        return False
    if want == OK:
        return status not in (401, 403, 404)
    return status == want


async def _run_matrix(hub: Any, client: httpx.AsyncClient) -> tuple[int, int, list[str]]:
    from zhongshu.app import create_app

    app = create_app(hub.settings, hub=hub).fastapi
    assert not undeclared(app), f"routes without a policy in services/policy.py: {undeclared(app)}"
    world = World(hub, client)
    await world.build()
    failures: list[str] = []
    checks = 0
    routes = api_routes(app)
    for method, template, _ in routes:
        policy = policy_mod.lookup(method, template)
        assert policy is not None
        passes = [False, True] if policy.step_up != "never" else [False]
        for confirmed in passes:
            for caller in world.callers:
                if confirmed and not caller.confirm_headers:
                    continue
                path, owned = fill(template, world.ids)
                # user_id is "owned" by nobody: only the policy's role decides there.
                owned = owned and "{user_id}" not in template
                headers = caller.confirm_headers if confirmed else caller.headers
                body = BODIES.get((method, template), {})
                r = await client.request(
                    method,
                    path,
                    headers={"authorization": "", **headers},
                    json=body if method in ("POST", "PUT", "PATCH") else None,
                )
                checks += 1
                want = expected(policy, caller, owned, confirmed)
                if want == OK and "{" in template and not owned and r.status_code == 404:
                    want = 404  # an id of nobody in particular (a user id): 404 is fine
                if not check(r.status_code, want):
                    failures.append(
                        f"{method} {template} as {caller.name}{' +confirm' if confirmed else ''}: "
                        f"expected {want}, got {r.status_code} {r.text[:160]}"
                    )
                if method == "DELETE" and r.status_code < 300:
                    await world.objects()
    return len(routes), checks, failures


# ~1,400 real requests: minutes on PostgreSQL when the machine is busy.
@pytest.mark.timeout(900)
async def test_every_route_has_a_policy_and_every_caller_gets_what_it_predicts(
    hub: Any, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
) -> None:
    n_routes, checks, failures = await _run_matrix(hub, client)
    with capsys.disabled():
        print(f"\npolicy matrix: {n_routes} routes covered, {checks} checks")
    assert n_routes >= 40
    assert not failures, "\n".join(failures)


async def test_a_route_without_a_policy_fails_the_matrix_and_is_refused(hub: Any) -> None:
    from zhongshu.app import create_app

    asgi = create_app(hub.settings, hub=hub)
    app = asgi.fastapi

    @app.get("/api/v1/zz-undeclared")
    async def undeclared_route() -> dict[str, str]:
        return {"leak": "yes"}

    assert undeclared(app) == ["GET /api/v1/zz-undeclared"]
    transport = httpx.ASGITransport(app=asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as c:
        r = await c.get("/api/v1/zz-undeclared")
    assert r.status_code == 403
    assert "no declared access policy" in r.json()["detail"]


def test_no_policy_is_left_for_a_route_that_does_not_exist(make_settings: Any) -> None:
    from zhongshu.app import create_app

    app = create_app(make_settings()).fastapi
    declared = {(m, p) for m, p, _ in api_routes(app)}
    stale = sorted(set(policy_mod.POLICIES) - declared)
    assert not stale, f"policies for routes that no longer exist: {stale}"
