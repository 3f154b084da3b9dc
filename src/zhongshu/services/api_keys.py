"""User API keys (MessagePusher lifecycle): ``AK-SK WK…:SK…``.

A key acts for its owner with at most the owner's role, narrowed to its scopes
(``read``, ``write``, ``push``). The secret is returned once at creation; only its hash is
stored. A user manages their own keys; an admin manages everyone's (deleting someone
else's key needs a step-up confirmation, checked at the HTTP edge).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from zhongshu import errors
from zhongshu.db.api_key_store import ApiKeyStore
from zhongshu.services import identity
from zhongshu.services.audit import AuditService
from zhongshu.services.events import Event, EventBus
from zhongshu.services.identity import Principal
from zhongshu.services.policy import SCOPES
from zhongshu.services.ratelimit import FailureLimiter

Row = dict[str, Any]
MAX_KEYS_PER_USER = 100
# last_used_at is written at most this often per key: one write per request would turn
# every authenticated call into a database write.
TOUCH_EVERY_S = 60.0


def check_scopes(scopes: Iterable[str], role: str) -> list[str]:
    out = sorted(set(scopes))
    if not out:
        raise errors.InvalidInput(f"scopes: give at least one of {', '.join(SCOPES)}")
    unknown = [s for s in out if s not in SCOPES]
    if unknown:
        raise errors.InvalidInput(f"scopes: unknown scope {unknown[0]!r}; use {', '.join(SCOPES)}")
    if role == "viewer" and out != ["read"]:
        raise errors.InvalidInput("scopes: a viewer's keys may only have the 'read' scope")
    return out


class ApiKeyService:
    def __init__(
        self,
        store: ApiKeyStore,
        bus: EventBus,
        limiter: FailureLimiter,
        audit: AuditService | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.limiter = limiter
        self.audit = audit
        self._touched: dict[str, float] = {}

    async def create(
        self,
        owner: Principal,
        name: str,
        scopes: Sequence[str],
        expires_at: float | None = None,
    ) -> tuple[Row, str]:
        """Create a key for ``owner``; returns it and its secret (shown this once only)."""
        if owner.kind != "user":
            raise errors.Forbidden("only users hold API keys")
        name = name.strip()
        if not name or len(name) > 128:
            raise errors.InvalidInput("name: 1-128 characters")
        clean_scopes = check_scopes(scopes, owner.role)
        now = time.time()
        if expires_at is not None and expires_at <= now:
            raise errors.InvalidInput("expires_at: must be in the future")
        _, count = await self.store.list(owner.id, limit=1)
        if count >= MAX_KEYS_PER_USER:
            raise errors.Conflict(
                f"you already hold {MAX_KEYS_PER_USER} API keys: delete unused ones first"
            )
        secret = identity.random_token("SK")
        key_id = "key_" + uuid.uuid4().hex[:24]
        row: dict[str, Any] = {
            "id": key_id,
            "owner_id": owner.id,
            "name": name,
            "access_key": identity.random_token("WK"),
            "secret_hash": identity.hash_secret(secret),
            "scopes": clean_scopes,
            "disabled": False,
            "expires_at": expires_at,
            "last_used_at": None,
            "created_at": now,
            "updated_at": now,
        }
        ev = Event(
            "api_key.created",
            "api_key",
            key_id,
            owner.actor,
            {"name": name, "scopes": clean_scopes, "owner_id": owner.id, "expires_at": expires_at},
            now,
        )
        await self.store.insert(row, ev)
        self.bus.publish([ev])
        return row, secret

    async def get(self, key_id: str, viewer: Principal) -> Row:
        """The key, if ``viewer`` may see it; otherwise 404 (ids of others do not leak)."""
        row = await self.store.get(key_id)
        if row is None or not viewer.may_see(row["owner_id"]):
            raise errors.ApiKeyNotFound(f"API key {key_id} not found")
        return row

    async def list(
        self, viewer: Principal, owner_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[list[Row], int]:
        if not viewer.is_admin:
            owner_id = viewer.id
        return await self.store.list(owner_id, limit, offset)

    async def update(self, key_id: str, changes: Row, viewer: Principal, owner_role: str) -> Row:
        key = await self.get(key_id, viewer)
        values: Row = {}
        if changes.get("name") is not None:
            name = str(changes["name"]).strip()
            if not name or len(name) > 128:
                raise errors.InvalidInput("name: 1-128 characters")
            values["name"] = name
        if changes.get("scopes") is not None:
            values["scopes"] = check_scopes(changes["scopes"], owner_role)
        if "expires_at" in changes:
            exp = changes["expires_at"]
            if exp is not None and exp <= time.time():
                raise errors.InvalidInput("expires_at: must be in the future")
            values["expires_at"] = exp
        if changes.get("disabled") is not None:
            values["disabled"] = bool(changes["disabled"])
        if not values:
            return key
        values["updated_at"] = time.time()
        evs = [
            Event(
                "api_key.updated",
                "api_key",
                key_id,
                viewer.actor,
                {k: v for k, v in values.items() if k != "updated_at"}
                | {"owner_id": key["owner_id"]},
            )
        ]
        if "disabled" in values and values["disabled"] != key["disabled"]:
            verb = "disabled" if values["disabled"] else "enabled"
            evs.append(
                Event(
                    f"api_key.{verb}",
                    "api_key",
                    key_id,
                    viewer.actor,
                    {"owner_id": key["owner_id"]},
                )
            )
        row = await self.store.update(key_id, values, evs)
        if row is None:
            raise errors.ApiKeyNotFound(f"API key {key_id} not found")
        self.bus.publish(evs)
        return row

    async def delete(self, key: Row, viewer: Principal) -> None:
        ev = Event(
            "api_key.deleted",
            "api_key",
            key["id"],
            viewer.actor,
            {"name": key["name"], "owner_id": key["owner_id"]},
        )
        if not await self.store.delete(key["id"], ev):
            raise errors.ApiKeyNotFound(f"API key {key['id']} not found")
        self.bus.publish([ev])

    async def authenticate(self, access_key: str, secret: str, ip: str) -> Principal:
        """The principal for a user key pair; one message for unknown key or wrong secret."""
        subjects = [f"key:{access_key}", f"ip:{ip}"]
        self.limiter.check(subjects)
        key, owner = await self.store.with_owner(access_key)
        if key is None or not identity.secret_matches(secret, key["secret_hash"]):
            if key is None:  # keep timing equal to the wrong-secret path
                identity.secret_matches(secret, "0" * 64)
            self.limiter.fail(subjects)
            await self._audit_failure(access_key, key, "invalid API key")
            raise errors.AuthenticationFailed("invalid API key")
        problem = None
        if key["disabled"]:
            problem = "API key is disabled: enable it or create a new one"
        elif key["expires_at"] is not None and key["expires_at"] <= time.time():
            problem = "API key has expired: create a new one"
        elif owner is None or owner["disabled"]:
            problem = "the owner of this API key is disabled"
        if problem:
            await self._audit_failure(access_key, key, problem)
            raise errors.AuthenticationFailed(problem)
        assert owner is not None  # refused above
        self.limiter.succeed(subjects[:1])
        now = time.time()
        if now - self._touched.get(key["id"], 0.0) >= TOUCH_EVERY_S:
            self._touched[key["id"]] = now
            if len(self._touched) > 100_000:
                self._touched.clear()
            await self.store.touch(key["id"], now)
            if self.audit is not None:
                await self.audit.record(
                    "auth.api_key",
                    actor=f"user:{owner['id']}",
                    target_type="api_key",
                    target_id=key["id"],
                    detail={"access_key": access_key, "note": "first use in this minute"},
                )
        return Principal(
            "user",
            owner["id"],
            owner["role"],
            frozenset(key["scopes"]),
            name=owner["username"],
            via="key",
            key_id=key["id"],
        )

    async def _audit_failure(self, access_key: str, key: Row | None, reason: str) -> None:
        if self.audit is None:
            return
        await self.audit.record(
            "auth.api_key",
            actor=f"user:{key['owner_id']}" if key else "anonymous",
            target_type="api_key",
            target_id=key["id"] if key else "",
            outcome="failure",
            detail={"access_key": access_key, "reason": reason},
        )
