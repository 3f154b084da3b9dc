"""Users, passwords, access tokens and the shapes of credentials.

Full RBAC (issue: identity and access) builds on this; here are the pieces the core needs:
the first admin, password login, JWTs, and key-pair parsing and hashing for nodes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from zhongshu import errors
from zhongshu.db.user_store import UserStore
from zhongshu.services.events import Event, EventBus

ROLES = ("admin", "user", "viewer")
Role = Literal["admin", "user", "viewer"]
_ALPHABET = string.ascii_letters + string.digits
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")
_hasher = PasswordHasher()
# Verifying against this keeps the timing of "no such user" equal to "wrong password".
_DUMMY_HASH = _hasher.hash("zhongshu-dummy-password")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a user (by password/JWT or user key) or a node (by node key)."""

    kind: Literal["user", "node", "relay"]
    id: str
    role: str = "user"
    scopes: frozenset[str] = field(default_factory=frozenset)
    name: str = ""

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"

    @property
    def is_admin(self) -> bool:
        return self.kind == "user" and self.role == "admin"


SYSTEM = Principal("user", "system", "admin", name="system")


def random_token(prefix: str, length: int = 32) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def hash_secret(secret: str) -> str:
    """Hash a generated key secret.

    Key secrets are 32 random alphanumerics (~190 bits), so a fast hash cannot be brute
    forced; argon2 here would cost tens of milliseconds on every authenticated request.
    """
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)


def parse_key_pair(value: str, key_prefix: str, secret_prefix: str) -> tuple[str, str]:
    """Split ``AK:SK`` and check both halves' shape; raise with what is wrong."""
    if len(value) > 200:
        raise errors.AuthenticationFailed("key pair is too long")
    key, sep, secret = value.partition(":")
    if not sep:
        raise errors.AuthenticationFailed("key pair must be '<access key>:<secret>'")
    if not key or not secret:
        raise errors.AuthenticationFailed("key pair has an empty access key or secret")
    if not (key.startswith(key_prefix) and len(key) == len(key_prefix) + 32 and key.isalnum()):
        raise errors.AuthenticationFailed(f"access key must be {key_prefix} + 32 letters or digits")
    if not (
        secret.startswith(secret_prefix)
        and len(secret) == len(secret_prefix) + 32
        and secret.isalnum()
    ):
        raise errors.AuthenticationFailed(f"secret must be {secret_prefix} + 32 letters or digits")
    return key, secret


def check_password_strength(password: str) -> None:
    if len(password) < 8:
        raise errors.InvalidInput("password: must be at least 8 characters")
    if len(password) > 256:
        raise errors.InvalidInput("password: must be at most 256 characters")
    kinds = sum(
        [
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        ]
    )
    if kinds < 2:
        raise errors.InvalidInput(
            "password: mix at least two of lower case, upper case, digits and symbols"
        )


class IdentityService:
    def __init__(
        self, store: UserStore, bus: EventBus, signing_key: str, access_token_ttl_s: int
    ) -> None:
        self.store = store
        self.bus = bus
        self.signing_key = signing_key
        self.access_token_ttl_s = access_token_ttl_s

    async def create_user(
        self,
        username: str,
        password: str,
        role: str = "user",
        *,
        actor: Principal = SYSTEM,
        display_name: str = "",
        email: str = "",
    ) -> dict[str, Any]:
        if not _USERNAME.match(username):
            raise errors.InvalidInput(
                "username: 2-64 letters, digits or . _ @ - (no spaces)"
            )
        if role not in ROLES:
            raise errors.InvalidInput(f"role: must be one of {', '.join(ROLES)}, got {role!r}")
        check_password_strength(password)
        if await self.store.by_username(username):
            raise errors.Conflict(f"username {username!r} is taken")
        now = time.time()
        row = {
            "id": uuid.uuid4().hex,
            "username": username,
            "password_hash": _hasher.hash(password),
            "role": role,
            "display_name": display_name,
            "email": email,
            "disabled": False,
            "token_version": 0,
            "created_at": now,
            "updated_at": now,
        }
        ev = Event("user.created", "user", row["id"], actor.actor, {"username": username, "role": role})
        await self.store.insert(row, ev)
        self.bus.publish([ev])
        return row

    async def authenticate(self, username: str, password: str) -> dict[str, Any]:
        """Return the user for a correct password; one message for every failure."""
        user = await self.store.by_username(username)
        try:
            _hasher.verify(user["password_hash"] if user else _DUMMY_HASH, password)
        except (VerificationError, InvalidHashError):
            user = None
        if user is None or user["disabled"]:
            raise errors.AuthenticationFailed("wrong username or password")
        return user

    def issue_access_token(self, user: dict[str, Any]) -> str:
        now = int(time.time())
        claims = {
            "sub": user["id"],
            "role": user["role"],
            "ver": user["token_version"],
            "iat": now,
            "exp": now + self.access_token_ttl_s,
            "typ": "access",
        }
        return jwt.encode(claims, self.signing_key, algorithm="HS256")

    async def principal_from_token(self, token: str) -> Principal:
        try:
            claims = jwt.decode(token, self.signing_key, algorithms=["HS256"])
        except jwt.ExpiredSignatureError as exc:
            raise errors.AuthenticationFailed("token expired: log in again") from exc
        except jwt.PyJWTError as exc:
            raise errors.AuthenticationFailed("invalid token") from exc
        if claims.get("typ") != "access":
            raise errors.AuthenticationFailed("not an access token")
        user = await self.store.get(str(claims.get("sub")))
        if user is None or user["disabled"] or user["token_version"] != claims.get("ver"):
            raise errors.AuthenticationFailed("token revoked: log in again")
        return Principal("user", user["id"], user["role"], name=user["username"])

    async def user_count(self) -> int:
        return await self.store.count()
