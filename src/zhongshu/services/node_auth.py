"""Authenticating a node key pair, the same way through every door (HTTP and Socket.IO):
rate-limited per access key and client IP, and audited when it fails."""

from __future__ import annotations

from typing import Any

from zhongshu import errors
from zhongshu.services import identity
from zhongshu.services.audit import AuditService
from zhongshu.services.nodes import NodeService
from zhongshu.services.ratelimit import FailureLimiter


async def authenticate_node(
    nodes: NodeService,
    limiter: FailureLimiter,
    audit: AuditService,
    key_pair: str,
    ip: str,
) -> dict[str, Any]:
    """The node for ``CN…:CS…``; raises 401 (wrong pair), 403 (disabled) or 429 (locked out)."""
    key, secret = identity.parse_key_pair(key_pair, "CN", "CS")
    subjects = [f"key:{key}", f"ip:{ip}"]
    limiter.check(subjects)
    try:
        node = await nodes.authenticate(key, secret)
    except errors.ZhongshuError as exc:
        if isinstance(exc, errors.AuthenticationFailed):
            limiter.fail(subjects)
        await audit.record(
            "auth.node_key",
            actor="anonymous",
            target_type="node",
            outcome="failure",
            detail={"access_key": key, "reason": exc.message},
            ip=ip,
        )
        raise
    limiter.succeed(subjects[:1])
    return node
