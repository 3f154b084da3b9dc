"""Users, passwords, sessions (access + refresh tokens), step-up confirmation, and the
shapes of credentials.

Sessions: a login starts a session (``auth_sessions``) and returns a short access JWT
(``sid`` = the session) and an opaque refresh token. Each refresh exchanges the token for a
new one; presenting an exchanged token again revokes the whole session (a stolen token
was used). Logout revokes the session; disabling a user or changing a password bumps
``users.token_version``, which every access token carries, and revokes all sessions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
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
from zhongshu.db.token_store import TokenStore
from zhongshu.db.user_store import UserStore
from zhongshu.services.audit import AuditService
from zhongshu.services.events import Event, EventBus
from zhongshu.services.ratelimit import FailureLimiter, LockoutPolicy

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
    # How the caller proved who they are: "token" (JWT), "key" (user API key), "node",
    # "relay", "system". Key principals are limited to their scopes.
    via: str = "token"
    session_id: str | None = None
    key_id: str | None = None

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"

    @property
    def is_admin(self) -> bool:
        return self.kind == "user" and self.role == "admin"

    @property
    def owner_filter(self) -> str | None:
        """Whose objects a listing shows this caller: everyone's (``None``) for an admin,
        else only their own."""
        return None if self.is_admin else self.id

    def may_see(self, owner_id: str | None) -> bool:
        """Whether this caller may see one object owned by ``owner_id``: an admin sees
        everyone's, anyone else only their own (the per-object twin of ``owner_filter``)."""
        return self.is_admin or owner_id == self.id


SYSTEM = Principal("user", "system", "admin", name="system", via="system")


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


_TOKEN_BODY = re.compile(r"^[A-Za-z0-9]{32}$")


def parse_key_pair(value: str, key_prefix: str, secret_prefix: str) -> tuple[str, str]:
    """Split ``AK:SK`` and check both halves' shape; raise with what is wrong."""
    if len(value) > 200:
        raise errors.AuthenticationFailed("key pair is too long")
    key, sep, secret = value.partition(":")
    if not sep:
        raise errors.AuthenticationFailed("key pair must be '<access key>:<secret>'")
    if not key or not secret:
        raise errors.AuthenticationFailed("key pair has an empty access key or secret")
    if not (key.startswith(key_prefix) and _TOKEN_BODY.match(key[len(key_prefix) :])):
        raise errors.AuthenticationFailed(
            f"access key must be {key_prefix} + 32 ASCII letters or digits"
        )
    if not (secret.startswith(secret_prefix) and _TOKEN_BODY.match(secret[len(secret_prefix) :])):
        raise errors.AuthenticationFailed(
            f"secret must be {secret_prefix} + 32 ASCII letters or digits"
        )
    return key, secret


_COMMON_PASSWORDS = frozenset(
    {
        "password",
        "password1",
        "password123",
        "passw0rd",
        "12345678",
        "123456789",
        "1234567890",
        "qwerty123",
        "qwertyuiop",
        "iloveyou",
        "admin123",
        "administrator",
        "letmein1",
        "welcome1",
        "changeme",
        "zhongshu",
        "abc12345",
        "11111111",
        "00000000",
    }
)


def check_password_strength(password: str, username: str = "") -> None:
    """Refuse weak passwords with a message that says what to change."""
    if not isinstance(password, str):
        raise errors.InvalidInput("password: must be a string")
    if len(password) < 8:
        raise errors.InvalidInput("password: must be at least 8 characters")
    if len(password) > 256:
        raise errors.InvalidInput("password: must be at most 256 characters")
    if password.lower() in _COMMON_PASSWORDS:
        raise errors.InvalidInput("password: this is a well-known password; choose another")
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
    if username and username.lower() == password.lower():
        raise errors.InvalidInput("password: must not be the username")
    if len(set(password)) < 4:
        raise errors.InvalidInput("password: use at least 4 different characters")


_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}$")
REFRESH_PREFIX = "zsr_"
MAX_PREFERENCES_BYTES = 16 * 1024


def _check_profile(display_name: str | None, email: str | None) -> None:
    if display_name is not None and len(display_name) > 128:
        raise errors.InvalidInput("display_name: at most 128 characters")
    if email and not _EMAIL.match(email):
        raise errors.InvalidInput(f"email: {email[:64]!r} is not an e-mail address")


def check_role(role: str) -> str:
    if role not in ROLES:
        raise errors.InvalidInput(
            f"role: must be one of {', '.join(ROLES)}, got {str(role)[:32]!r}"
        )
    return role


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: str


class IdentityService:
    """Users, sessions and step-up confirmation.

    Parameters
    ----------
    store, bus:
        The user store and the event bus (``user.*`` events feed the audit log).
    signing_key:
        HS256 key for access and confirm tokens.
    access_token_ttl_s, refresh_token_ttl_s, confirm_token_ttl_s:
        Lifetimes: the access JWT, a session (refresh tokens), a step-up confirmation.
    tokens:
        The session/refresh-token store (default: one on the user store's database).
    limiter:
        Failure limits for logins and confirmations (per username and client IP).
    audit:
        Where authentication outcomes are recorded (``None``: not recorded).
    """

    def __init__(
        self,
        store: UserStore,
        bus: EventBus,
        signing_key: str,
        access_token_ttl_s: int,
        *,
        refresh_token_ttl_s: int = 30 * 86400,
        confirm_token_ttl_s: int = 300,
        tokens: TokenStore | None = None,
        limiter: FailureLimiter | None = None,
        audit: AuditService | None = None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.signing_key = signing_key
        self.access_token_ttl_s = access_token_ttl_s
        self.refresh_token_ttl_s = refresh_token_ttl_s
        self.confirm_token_ttl_s = confirm_token_ttl_s
        self.tokens = tokens or TokenStore(store.db)
        self.limiter = limiter or FailureLimiter({"*": LockoutPolicy()})
        self.audit = audit

    # --- users ---------------------------------------------------------------------------

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
        if not isinstance(username, str) or not _USERNAME.match(username):
            raise errors.InvalidInput("username: 2-64 letters, digits or . _ @ - (no spaces)")
        check_role(role)
        check_password_strength(password, username)
        _check_profile(display_name, email)
        if await self.store.by_username(username):
            raise errors.Conflict(f"username {username!r} is taken")
        now = time.time()
        user_id = uuid.uuid4().hex
        row: dict[str, Any] = {
            "id": user_id,
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
        ev = Event(
            "user.created", "user", user_id, actor.actor, {"username": username, "role": role}
        )
        await self.store.insert(row, ev)
        self.bus.publish([ev])
        return row

    async def get_user(self, user_id: str) -> dict[str, Any]:
        row = await self.store.get(user_id)
        if row is None:
            raise errors.UserNotFound(f"user {user_id} not found")
        return row

    async def list_users(self, **filters: Any) -> tuple[list[dict[str, Any]], int]:
        return await self.store.list(**filters)

    async def update_user(
        self, user_id: str, changes: dict[str, Any], actor: Principal
    ) -> dict[str, Any]:
        """Change display name, e-mail or disabled. Disabling revokes the user's tokens."""
        user = await self.get_user(user_id)
        values = {
            k: changes[k]
            for k in ("display_name", "email", "disabled")
            if changes.get(k) is not None
        }
        _check_profile(values.get("display_name"), values.get("email"))
        revoke = None
        if values.get("disabled") and not user["disabled"]:
            if user_id == actor.id:
                raise errors.Conflict("you cannot disable yourself")
            await self._keep_an_admin(user, "disable")
            revoke = "user disabled"
        if not values:
            return user
        values["updated_at"] = time.time()
        data = {k: v for k, v in values.items() if k != "updated_at"}
        ev = Event("user.updated", "user", user_id, actor.actor, data)
        row = await self.store.update(user_id, values, ev, revoke_tokens=revoke)
        if row is None:
            raise errors.UserNotFound(f"user {user_id} not found")
        evs = [ev]
        if "disabled" in values and values["disabled"] != user["disabled"]:
            verb = "disabled" if values["disabled"] else "enabled"
            evs.append(
                Event(f"user.{verb}", "user", user_id, actor.actor, {"username": user["username"]})
            )
        self.bus.publish(evs)
        return row

    async def set_role(self, user_id: str, role: str, actor: Principal) -> dict[str, Any]:
        check_role(role)
        user = await self.get_user(user_id)
        if user["role"] == role:
            return user
        if user["role"] == "admin":
            await self._keep_an_admin(user, "demote")
        now = time.time()
        ev = Event(
            "user.role_changed",
            "user",
            user_id,
            actor.actor,
            {"username": user["username"], "from": user["role"], "to": role},
            now,
        )
        row = await self.store.update(user_id, {"role": role, "updated_at": now}, ev)
        if row is None:
            raise errors.UserNotFound(f"user {user_id} not found")
        self.bus.publish([ev])
        return row

    async def reset_password(self, user_id: str, password: str, actor: Principal) -> dict[str, Any]:
        """An admin sets a new password; every token of the user stops working."""
        user = await self.get_user(user_id)
        check_password_strength(password, user["username"])
        return await self._set_password(user, password, actor, "user.password_reset")

    async def change_password(
        self, me: Principal, old_password: str, new_password: str, ip: str = ""
    ) -> TokenPair:
        """Self-service change with the old password; returns a fresh session for the caller
        (every other token, this request's included, is revoked)."""
        user = await self.get_user(me.id)
        subjects = [f"user:{user['username'].lower()}", f"ip:{ip}"]
        self.limiter.check(subjects)
        if not _verify(user["password_hash"], old_password):
            self.limiter.fail(subjects)
            await self._audit(
                "auth.password_change",
                me.actor,
                user["id"],
                "failure",
                {"reason": "wrong current password"},
                ip,
            )
            raise errors.Forbidden("current password is wrong")
        check_password_strength(new_password, user["username"])
        if old_password == new_password:
            raise errors.InvalidInput("new_password: must differ from the current password")
        self.limiter.succeed(subjects[:1])
        row = await self._set_password(user, new_password, me, "user.password_changed")
        return await self._start_session(row, ip)

    async def _set_password(
        self, user: dict[str, Any], password: str, actor: Principal, event_type: str
    ) -> dict[str, Any]:
        now = time.time()
        ev = Event(event_type, "user", user["id"], actor.actor, {"username": user["username"]}, now)
        row = await self.store.update(
            user["id"],
            {"password_hash": _hasher.hash(password), "updated_at": now},
            ev,
            revoke_tokens="password changed",
        )
        if row is None:
            raise errors.UserNotFound(f"user {user['id']} not found")
        self.bus.publish([ev])
        return row

    async def delete_user(self, user_id: str, actor: Principal) -> None:
        user = await self.get_user(user_id)
        if user_id == actor.id:
            raise errors.Conflict("you cannot delete yourself")
        await self._keep_an_admin(user, "delete")
        ev = Event("user.deleted", "user", user_id, actor.actor, {"username": user["username"]})
        if not await self.store.delete(user_id, ev):
            raise errors.UserNotFound(f"user {user_id} not found")
        self.bus.publish([ev])

    async def _keep_an_admin(self, user: dict[str, Any], verb: str) -> None:
        if (
            user["role"] == "admin"
            and not user["disabled"]
            and await self.store.count_active_admins() <= 1
        ):
            raise errors.Conflict(f"cannot {verb} the last active admin: make another admin first")

    async def preferences(self, user_id: str) -> dict[str, Any]:
        return await self.store.preferences(user_id)

    async def set_preferences(self, me: Principal, data: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(data)) > MAX_PREFERENCES_BYTES:
            raise errors.InvalidInput(f"preferences: at most {MAX_PREFERENCES_BYTES} bytes of JSON")
        await self.store.set_preferences(me.id, data, time.time())
        return data

    async def update_profile(self, me: Principal, changes: dict[str, Any]) -> dict[str, Any]:
        values = {k: changes[k] for k in ("display_name", "email") if changes.get(k) is not None}
        _check_profile(values.get("display_name"), values.get("email"))
        if not values:
            return await self.get_user(me.id)
        values["updated_at"] = time.time()
        data = {k: v for k, v in values.items() if k != "updated_at"}
        ev = Event("user.updated", "user", me.id, me.actor, data)
        row = await self.store.update(me.id, values, ev)
        if row is None:
            raise errors.UserNotFound(f"user {me.id} not found")
        self.bus.publish([ev])
        return row

    async def user_count(self) -> int:
        return await self.store.count()

    # --- authentication ----------------------------------------------------------------

    async def authenticate(self, username: str, password: str) -> dict[str, Any]:
        """Return the user for a correct password; one message for every failure."""
        user = await self.store.by_username(username)
        ok = _verify(user["password_hash"] if user else _DUMMY_HASH, password)
        if user is None or not ok or user["disabled"]:
            raise errors.AuthenticationFailed("wrong username or password")
        return user

    async def login(self, username: str, password: str, ip: str = "") -> TokenPair:
        """Password login with failure limits; starts a session. Every outcome is audited."""
        subjects = [f"user:{username.lower()[:64]}", f"ip:{ip}"]
        try:
            self.limiter.check(subjects)
        except errors.TooManyRequests:
            await self._audit(
                "auth.login",
                "anonymous",
                "",
                "denied",
                {"username": username, "reason": "locked out"},
                ip,
            )
            raise
        try:
            user = await self.authenticate(username, password)
        except errors.AuthenticationFailed:
            self.limiter.fail(subjects)
            await self._audit("auth.login", "anonymous", "", "failure", {"username": username}, ip)
            raise
        self.limiter.succeed(subjects[:1])
        pair = await self._start_session(user, ip)
        await self._audit(
            "auth.login",
            f"user:{user['id']}",
            user["id"],
            "success",
            {"username": username, "session": pair.session_id},
            ip,
        )
        return pair

    async def _start_session(self, user: dict[str, Any], ip: str) -> TokenPair:
        now = time.time()
        sid = uuid.uuid4().hex
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        await self.tokens.create_session(
            {
                "id": sid,
                "user_id": user["id"],
                "token_version": user["token_version"],
                "created_at": now,
                "expires_at": now + self.refresh_token_ttl_s,
                "client_ip": ip[:64],
            },
            {
                "token_hash": hash_token(refresh),
                "session_id": sid,
                "created_at": now,
                "expires_at": now + self.refresh_token_ttl_s,
            },
        )
        return TokenPair(
            self.issue_access_token(user, sid),
            self.access_token_ttl_s,
            refresh,
            self.refresh_token_ttl_s,
            sid,
        )

    def issue_access_token(self, user: dict[str, Any], session_id: str | None = None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "sub": user["id"],
            "role": user["role"],
            "ver": user["token_version"],
            "iat": now,
            "exp": now + self.access_token_ttl_s,
            "typ": "access",
            # Unique per issue: two tokens minted in the same second must still differ.
            "jti": secrets.token_hex(8),
        }
        if session_id:
            claims["sid"] = session_id
        return jwt.encode(claims, self.signing_key, algorithm="HS256")

    async def refresh(self, refresh_token: str, ip: str = "") -> TokenPair:
        """Exchange a refresh token for a new pair; the old token stops working."""
        subjects = [f"ip:{ip}"]
        self.limiter.check(subjects)
        if not refresh_token.startswith(REFRESH_PREFIX) or len(refresh_token) > 200:
            self.limiter.fail(subjects)
            raise errors.AuthenticationFailed("invalid refresh token")
        now = time.time()
        new = REFRESH_PREFIX + secrets.token_urlsafe(32)
        outcome, session = await self.tokens.rotate(
            hash_token(refresh_token),
            {
                "token_hash": hash_token(new),
                "created_at": now,
                "expires_at": now + self.refresh_token_ttl_s,
            },
            now,
        )
        actor = f"user:{session['user_id']}" if session else "anonymous"
        sid = session["id"] if session else ""
        if outcome != "ok":
            self.limiter.fail(subjects)
            message = {
                "unknown": "invalid refresh token",
                "reused": "refresh token was already used: the session is revoked, log in again",
                "expired": "session expired: log in again",
                "revoked": "session revoked: log in again",
            }[outcome]
            await self._audit("auth.refresh", actor, sid, "failure", {"reason": outcome}, ip)
            raise errors.AuthenticationFailed(message)
        assert session is not None
        user = await self.store.get(session["user_id"])
        if user is None or user["disabled"] or user["token_version"] != session["token_version"]:
            await self.tokens.revoke_session(session["id"], now, "user changed")
            await self._audit("auth.refresh", actor, sid, "failure", {"reason": "revoked"}, ip)
            raise errors.AuthenticationFailed("session revoked: log in again")
        await self._audit("auth.refresh", actor, sid, "success", {}, ip)
        remaining = int(session["expires_at"] - now)
        return TokenPair(
            self.issue_access_token(user, sid), self.access_token_ttl_s, new, remaining, sid
        )

    async def logout(self, me: Principal, everywhere: bool = False) -> int:
        """End this session (or, with ``everywhere``, every token of the user)."""
        now = time.time()
        if everywhere:
            ev = Event("user.logged_out_everywhere", "user", me.id, me.actor, {})
            await self.store.update(
                me.id, {"updated_at": now}, ev, revoke_tokens="logout everywhere"
            )
            self.bus.publish([ev])
            ended = 1
        elif me.session_id:
            ended = int(await self.tokens.revoke_session(me.session_id, now, "logout"))
        else:
            raise errors.InvalidInput("this token has no session to end: use everywhere=true")
        await self._audit(
            "auth.logout", me.actor, me.session_id or "", "success", {"everywhere": everywhere}
        )
        return ended

    async def principal_from_token(self, token: str) -> Principal:
        try:
            claims = jwt.decode(token, self.signing_key, algorithms=["HS256"])
        except jwt.ExpiredSignatureError as exc:
            raise errors.AuthenticationFailed("token expired: log in again") from exc
        except jwt.PyJWTError as exc:
            raise errors.AuthenticationFailed("invalid token") from exc
        if claims.get("typ") != "access":
            raise errors.AuthenticationFailed("not an access token")
        sid = claims.get("sid")
        user, session = await self.tokens.user_and_session(str(claims.get("sub")), sid)
        if user is None or user["disabled"] or user["token_version"] != claims.get("ver"):
            raise errors.AuthenticationFailed("token revoked: log in again")
        if sid is not None and (session is None or session["revoked_at"] is not None):
            raise errors.AuthenticationFailed("session ended: log in again")
        return Principal(
            "user", user["id"], user["role"], name=user["username"], via="token", session_id=sid
        )

    # --- step-up -------------------------------------------------------------------------

    async def confirm(self, me: Principal, password: str, ip: str = "") -> str:
        """Check the caller's password again; returns a short-lived confirm token."""
        if me.via != "token":
            raise errors.Forbidden("confirm with a login token, not an API key")
        user = await self.get_user(me.id)
        subjects = [f"user:{user['username'].lower()}", f"ip:{ip}"]
        self.limiter.check(subjects)
        if not _verify(user["password_hash"], password):
            self.limiter.fail(subjects)
            await self._audit("auth.confirm", me.actor, me.id, "failure", {}, ip)
            raise errors.Forbidden("wrong password")
        self.limiter.succeed(subjects[:1])
        now = int(time.time())
        token = jwt.encode(
            {
                "sub": user["id"],
                "ver": user["token_version"],
                "sid": me.session_id,
                "iat": now,
                "exp": now + self.confirm_token_ttl_s,
                "typ": "confirm",
            },
            self.signing_key,
            algorithm="HS256",
        )
        await self._audit("auth.confirm", me.actor, me.id, "success", {}, ip)
        return token

    async def check_confirm_token(self, me: Principal, token: str | None) -> None:
        """Raise ``StepUpRequired`` unless ``token`` is a live confirmation by ``me``."""
        if not token:
            raise errors.StepUpRequired()
        if me.via != "token":
            raise errors.StepUpRequired(
                "this operation needs a login token plus a confirmation, not an API key"
            )
        try:
            claims = jwt.decode(token[:4096], self.signing_key, algorithms=["HS256"])
        except jwt.ExpiredSignatureError as exc:
            raise errors.StepUpRequired(
                "the confirmation expired: confirm your password again"
            ) from exc
        except jwt.PyJWTError as exc:
            raise errors.StepUpRequired(
                "invalid X-Confirm-Token: confirm your password again"
            ) from exc
        user = await self.store.get(me.id)
        if (
            claims.get("typ") != "confirm"
            or claims.get("sub") != me.id
            or user is None
            or claims.get("ver") != user["token_version"]
            or claims.get("sid") != me.session_id
        ):
            raise errors.StepUpRequired("X-Confirm-Token belongs to another session: confirm again")

    async def _audit(
        self,
        action: str,
        actor: str,
        target_id: str,
        outcome: str,
        detail: dict[str, Any],
        ip: str | None = None,
    ) -> None:
        if self.audit is not None:
            await self.audit.record(
                action,
                actor=actor,
                target_type="user" if target_id else "",
                target_id=target_id,
                outcome=outcome,
                detail=detail,
                ip=ip,
            )


def _verify(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False
