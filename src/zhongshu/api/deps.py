"""Dependencies shared by the routers: the hub, who is calling, and whether they may.

``authorize`` runs before every route (it is an app-wide dependency, see ``app.py``): it
looks up the route's policy in ``services/policy.py`` (refusing routes without one),
resolves the caller with the three-tier scheme and checks role, key scope and step-up.
Handlers then read the caller through ``UserDep``/``WriterDep``/``AdminDep``/``NodeDep``,
which reuse the principal resolved once per request.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated, Any

from fastapi import Depends, Request

from zhongshu import errors
from zhongshu.hub import Hub
from zhongshu.services import audit as audit_mod
from zhongshu.services import identity, node_auth
from zhongshu.services import policy as policy_mod
from zhongshu.services.identity import Principal

log = logging.getLogger("zhongshu.api.auth")

MAX_AUTHORIZATION_CHARS = 4096
RELAY_HEADER = "X-Relay-API-Key"
_UNRESOLVED = object()
_SCHEMES = "use 'Authorization: Bearer <token>' or 'Authorization: AK-SK <access key>:<secret>'"


def hub_of(request: Request) -> Hub:
    return request.app.state.hub  # type: ignore[no-any-return]


async def get_hub(request: Request) -> Hub:
    # async on purpose: FastAPI runs plain-def dependencies in a thread pool.
    return hub_of(request)


HubDep = Annotated[Hub, Depends(get_hub)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def _malformed(message: str) -> errors.AuthenticationFailed:
    return errors.AuthenticationFailed(f"malformed Authorization header: {message}; {_SCHEMES}")


async def _resolve(request: Request, hub: Hub) -> Principal | None:
    """Resolve the Authorization header: node key pair, then user key pair, then JWT."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    if len(header) > MAX_AUTHORIZATION_CHARS:
        raise _malformed(f"longer than {MAX_AUTHORIZATION_CHARS} characters")
    if not header.isascii() or not header.isprintable():
        raise _malformed("it must be printable ASCII")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if not scheme:
        raise _malformed("it is empty")
    if not value:
        raise _malformed(f"nothing after {scheme[:20]!r}")
    ip = client_ip(request)
    if scheme.lower() == "bearer":
        return await _bearer(hub, value, ip)
    if scheme.upper() != "AK-SK":
        raise _malformed(f"unknown scheme {scheme[:20]!r}")
    if value.startswith("CN"):
        return await _node(request, hub, value, ip)
    if value.startswith("WK"):
        key, secret = identity.parse_key_pair(value, "WK", "SK")
        return await hub.api_keys.authenticate(key, secret, ip)
    raise _malformed("the access key must start with CN (node key) or WK (user API key)")


async def _bearer(hub: Hub, token: str, ip: str) -> Principal:
    subjects = [f"ip:{ip}"]
    hub.limiter.check(subjects)
    try:
        return await hub.identity.principal_from_token(token)
    except errors.AuthenticationFailed as exc:
        hub.limiter.fail(subjects)
        await hub.audit.record(
            "auth.token", actor="anonymous", outcome="failure", detail={"reason": exc.message}
        )
        raise


async def _node(request: Request, hub: Hub, value: str, ip: str) -> Principal:
    node = await node_auth.authenticate_node(hub.nodes, hub.limiter, hub.audit, value, ip)
    request.state.node = node
    return Principal("node", node["id"], "node", name=node["name"], via="node")


async def resolve_principal(request: Request) -> Principal | None:
    """The caller, resolved once per request (``None``: no Authorization header)."""
    cached = getattr(request.state, "principal", _UNRESOLVED)
    if cached is _UNRESOLVED:
        cached = await _resolve(request, hub_of(request))
        request.state.principal = cached
    return cached  # type: ignore[return-value]


async def check_relay_key(request: Request, hub: Hub) -> Principal:
    """Accept the relay key from ``X-Relay-API-Key`` or ``?api_key=``."""
    if not hub.settings.relay_enabled:
        raise errors.NotFound("the relay is disabled on this hub (relay_enabled: false)")
    given = request.headers.get(RELAY_HEADER) or request.query_params.get("api_key")
    if not given:
        raise errors.AuthenticationFailed(f"relay key required: send the {RELAY_HEADER} header")
    subjects = [f"ip:{client_ip(request)}"]
    hub.limiter.check(subjects)
    candidate = given.encode("utf-8", "replace")[:512]
    matched = False
    for key in hub.settings.relay_keys():
        # Compare against every key so the timing does not say which one nearly matched.
        matched |= hmac.compare_digest(candidate, key.encode())
    if not matched:
        hub.limiter.fail(subjects)
        await hub.audit.record("auth.relay_key", actor="anonymous", outcome="failure")
        raise errors.AuthenticationFailed("invalid relay key")
    principal = Principal("relay", "relay", "relay", via="relay", name="relay")
    request.state.principal = principal
    return principal


async def authorize(request: Request) -> None:
    """Enforce the route's declared policy (services/policy.py) before the handler runs."""
    audit_mod.client_ip.set(client_ip(request))
    route = request.scope.get("route")
    path = getattr(route, "path", "")
    policy = policy_mod.lookup(request.method, path)
    if policy is None:
        log.error("route %s %s has no declared policy: refused", request.method, path)
        raise errors.Forbidden(f"{request.method} {path} has no declared access policy")
    request.state.policy = policy
    if policy.who == "public":
        return
    hub = hub_of(request)
    if policy.who == "relay":
        await check_relay_key(request, hub)
        return
    p = await resolve_principal(request)
    if p is None and policy.push_token and request.query_params.get("token"):
        p = await hub.messages.reader_for_token(request.query_params["token"], client_ip(request))
        request.state.principal = p
    if p is None:
        raise errors.AuthenticationFailed(f"authentication required: {_SCHEMES}")
    try:
        await _check(policy, p, request, hub)
    except errors.Forbidden as exc:
        if request.method != "GET":
            await hub.audit.record(
                "access.denied",
                actor=p.actor,
                outcome="denied",
                detail={"method": request.method, "path": request.url.path, "reason": exc.message},
            )
        raise


async def _check(policy: policy_mod.Policy, p: Principal, request: Request, hub: Hub) -> None:
    if policy.who == "node":
        if p.kind != "node":
            raise errors.Forbidden("this endpoint is for nodes: authenticate with AK-SK CN…:CS…")
        return
    if p.kind != "user":
        raise errors.Forbidden("this endpoint is for users, not nodes")
    if p.via == "key":
        if policy.scope is None:
            raise errors.Forbidden(
                "API keys cannot call this endpoint: log in and use a bearer token"
            )
        if policy.scope not in p.scopes:
            raise errors.Forbidden(f"this API key lacks the {policy.scope!r} scope")
    if not policy.role_allows(p.role):
        raise errors.Forbidden(
            "admin role required" if policy.role == "admin" else "viewers have read-only access"
        )
    if policy.step_up == "always":
        await hub.identity.check_confirm_token(p, request.headers.get(policy_mod.CONFIRM_HEADER))


async def require_step_up(request: Request, hub: Hub, p: Principal) -> None:
    """For ``step_up="others"`` routes: the handler calls this once it knows the owner."""
    await hub.identity.check_confirm_token(p, request.headers.get(policy_mod.CONFIRM_HEADER))


async def optional_principal(request: Request) -> Principal | None:
    return await resolve_principal(request)


async def current_principal(request: Request) -> Principal:
    p = await resolve_principal(request)
    if p is None:
        raise errors.AuthenticationFailed(f"authentication required: {_SCHEMES}")
    return p


async def current_user(p: Annotated[Principal, Depends(current_principal)]) -> Principal:
    if p.kind != "user":
        raise errors.Forbidden("this endpoint is for users, not nodes")
    return p


async def current_writer(p: Annotated[Principal, Depends(current_user)]) -> Principal:
    if p.role == "viewer":
        raise errors.Forbidden("viewers have read-only access")
    return p


async def current_admin(p: Annotated[Principal, Depends(current_user)]) -> Principal:
    if p.role != "admin":
        raise errors.Forbidden("admin role required")
    return p


async def current_node(
    request: Request, p: Annotated[Principal, Depends(current_principal)]
) -> dict[str, Any]:
    if p.kind != "node":
        raise errors.Forbidden("this endpoint is for nodes: authenticate with AK-SK CN…:CS…")
    return request.state.node  # type: ignore[no-any-return]


async def current_relay(request: Request, hub: HubDep) -> Principal:
    p = getattr(request.state, "principal", None)
    if isinstance(p, Principal) and p.kind == "relay":
        return p
    return await check_relay_key(request, hub)


UserDep = Annotated[Principal, Depends(current_user)]
WriterDep = Annotated[Principal, Depends(current_writer)]
AdminDep = Annotated[Principal, Depends(current_admin)]
NodeDep = Annotated[dict[str, Any], Depends(current_node)]
RelayKeyDep = Annotated[Principal, Depends(current_relay)]
