"""Dependencies shared by the routers: the hub, and who is calling."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from zhongshu import errors
from zhongshu.hub import Hub
from zhongshu.services import identity
from zhongshu.services.identity import Principal


def get_hub(request: Request) -> Hub:
    return request.app.state.hub  # type: ignore[no-any-return]


HubDep = Annotated[Hub, Depends(get_hub)]


async def _principal(request: Request, hub: Hub) -> Principal | None:
    """Resolve the Authorization header: node key pair, then user key pair, then JWT."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if not scheme or not value:
        raise errors.AuthenticationFailed(
            "Authorization header must be 'Bearer <token>' or 'AK-SK <key>:<secret>'"
        )
    if scheme.lower() == "bearer":
        if len(value) > 4096:
            raise errors.AuthenticationFailed("token is too long")
        return await hub.identity.principal_from_token(value)
    if scheme.upper() == "AK-SK":
        if value.startswith("CN"):
            key, secret = identity.parse_key_pair(value, "CN", "CS")
            node = await hub.nodes.authenticate(key, secret)
            request.state.node = node
            return Principal("node", node["id"], "node", name=node["name"])
        raise errors.AuthenticationFailed("access key must start with CN (node keys)")
    raise errors.AuthenticationFailed(
        f"unknown Authorization scheme {scheme[:20]!r}: use 'Bearer' or 'AK-SK'"
    )


async def optional_principal(request: Request, hub: HubDep) -> Principal | None:
    return await _principal(request, hub)


async def current_principal(request: Request, hub: HubDep) -> Principal:
    p = await _principal(request, hub)
    if p is None:
        raise errors.AuthenticationFailed("authentication required: send an Authorization header")
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


UserDep = Annotated[Principal, Depends(current_user)]
WriterDep = Annotated[Principal, Depends(current_writer)]
AdminDep = Annotated[Principal, Depends(current_admin)]
NodeDep = Annotated[dict[str, Any], Depends(current_node)]
