"""Who may call what: every HTTP route's policy, in one table.

Each route is keyed by ``(method, path template)`` exactly as FastAPI declares it. The
HTTP edge (``api/deps.authorize``, an app-wide dependency) looks the route up before any
handler runs and refuses a route that has no entry (fail closed);
``tests/integration/test_policy_matrix.py`` walks the app's routes, fails for a route
missing here, and checks every role against the status code the entry predicts.

Reading an entry:

- ``who``: ``public`` (anyone, no credentials), ``user`` (a person: JWT or user API key),
  ``node`` (a node key pair, ``AK-SK CN…:CS…``: agent/worker surfaces only), ``relay``
  (the relay key, ``X-Relay-API-Key`` or ``?api_key=``).
- ``role``: the least user role: ``viewer`` < ``user`` < ``admin``.
- ``scope``: the scope a user API key (``AK-SK WK…:SK…``) needs; ``None`` means keys are
  refused and a login token is required (account, key and session management).
- ``owner``: ``own`` — non-admins see and change only objects they own, anything else is
  404 so ids do not leak; ``self`` — acts on the caller's own account; ``none`` — no
  per-object ownership (public, or admin-only).
- ``step_up``: ``always`` — a fresh password confirmation (``X-Confirm-Token`` from
  ``POST /api/v1/auth/confirm``) is required; ``others`` — required when acting on an
  object another user owns (checked by the handler, which knows the owner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Who = Literal["public", "user", "node", "relay"]
Role = Literal["viewer", "user", "admin"]
Scope = Literal["read", "write", "push"]
ROLE_RANK = {"viewer": 0, "user": 1, "admin": 2}
SCOPES: tuple[Scope, ...] = ("read", "write", "push")
CONFIRM_HEADER = "X-Confirm-Token"


@dataclass(frozen=True, slots=True)
class Policy:
    who: Who
    role: Role = "viewer"
    scope: Scope | None = None
    owner: Literal["none", "own", "self"] = "none"
    step_up: Literal["never", "always", "others"] = "never"

    def role_allows(self, role: str) -> bool:
        return ROLE_RANK.get(role, -1) >= ROLE_RANK[self.role]


PUBLIC = Policy("public")
NODE = Policy("node")
RELAY = Policy("relay")


def _user(
    role: Role = "viewer",
    scope: Scope | None = None,
    owner: Literal["none", "own", "self"] = "none",
    step_up: Literal["never", "always", "others"] = "never",
) -> Policy:
    return Policy("user", role, scope, owner, step_up)


V1 = "/api/v1"

POLICIES: dict[tuple[str, str], Policy] = {
    # ops
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    # Prometheus scrapes without credentials by convention; it exposes counts, no data.
    ("GET", "/metrics"): PUBLIC,
    # sessions
    ("POST", f"{V1}/auth/login"): PUBLIC,
    ("POST", f"{V1}/auth/refresh"): PUBLIC,
    ("GET", f"{V1}/auth/whoami"): _user(scope="read", owner="self"),
    ("POST", f"{V1}/auth/logout"): _user(owner="self"),
    ("POST", f"{V1}/auth/confirm"): _user(owner="self"),
    # self-service
    ("GET", f"{V1}/me"): _user(scope="read", owner="self"),
    ("PATCH", f"{V1}/me"): _user(owner="self"),
    ("POST", f"{V1}/me/password"): _user(owner="self"),
    # user administration
    ("GET", f"{V1}/users"): _user("admin"),
    ("POST", f"{V1}/users"): _user("admin"),
    ("GET", f"{V1}/users/{{user_id}}"): _user("admin"),
    ("PATCH", f"{V1}/users/{{user_id}}"): _user("admin"),
    ("PUT", f"{V1}/users/{{user_id}}/role"): _user("admin", step_up="always"),
    ("POST", f"{V1}/users/{{user_id}}/password"): _user("admin", step_up="always"),
    ("DELETE", f"{V1}/users/{{user_id}}"): _user("admin", step_up="always"),
    # user API keys (viewers may hold read-only keys)
    ("POST", f"{V1}/api-keys"): _user(owner="own"),
    ("GET", f"{V1}/api-keys"): _user(owner="own"),
    ("GET", f"{V1}/api-keys/{{key_id}}"): _user(owner="own"),
    ("PATCH", f"{V1}/api-keys/{{key_id}}"): _user(owner="own"),
    ("POST", f"{V1}/api-keys/{{key_id}}/disable"): _user(owner="own"),
    ("POST", f"{V1}/api-keys/{{key_id}}/enable"): _user(owner="own"),
    ("DELETE", f"{V1}/api-keys/{{key_id}}"): _user(owner="own", step_up="others"),
    # audit
    ("GET", f"{V1}/audit"): _user("admin", scope="read"),
    ("GET", f"{V1}/audit/export"): _user("admin", scope="read"),
    # events
    ("GET", f"{V1}/events"): _user("admin", scope="read"),
    # nodes (created by admins; a user sees the nodes they own)
    ("POST", f"{V1}/nodes"): _user("admin", scope="write"),
    ("GET", f"{V1}/nodes"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/nodes/{{node_id}}"): _user(scope="read", owner="own"),
    ("PATCH", f"{V1}/nodes/{{node_id}}"): _user("admin", scope="write"),
    ("POST", f"{V1}/nodes/{{node_id}}/credentials"): _user("admin", step_up="always"),
    ("DELETE", f"{V1}/nodes/{{node_id}}"): _user("admin", step_up="always"),
    # tasks
    ("POST", f"{V1}/tasks"): _user("user", scope="write", owner="own"),
    ("POST", f"{V1}/tasks/batch"): _user("user", scope="write", owner="own"),
    ("GET", f"{V1}/tasks"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/tasks/{{task_id}}"): _user(scope="read", owner="own"),
    ("POST", f"{V1}/tasks/{{task_id}}/cancel"): _user("user", scope="write", owner="own"),
    ("POST", f"{V1}/tasks/{{task_id}}/retry"): _user("user", scope="write", owner="own"),
    # the worker protocol's HTTP pull door
    ("POST", f"{V1}/agent/register"): NODE,
    ("POST", f"{V1}/agent/heartbeat"): NODE,
    ("POST", f"{V1}/agent/lease"): NODE,
    ("POST", f"{V1}/agent/tasks/{{task_id}}/start"): NODE,
    ("POST", f"{V1}/agent/tasks/{{task_id}}/result"): NODE,
    ("POST", f"{V1}/agent/started"): NODE,
    ("POST", f"{V1}/agent/results"): NODE,
    ("POST", f"{V1}/agent/release"): NODE,
    # the Conversation Bus relay (docs/relay.md): writes need the relay key; the seed's
    # reads are public (they show relay conversations only, never other tasks)
    ("POST", "/api/relay/send"): RELAY,
    ("POST", "/api/relay/callback"): RELAY,
    ("POST", "/api/relay/ack"): RELAY,
    ("GET", "/api/relay/logs"): PUBLIC,
    ("GET", "/api/relay/task-status/{relay_task_id}"): PUBLIC,
}


def lookup(method: str, path: str) -> Policy | None:
    """The policy of the route declared as ``method path`` (``None``: undeclared)."""
    return POLICIES.get((method.upper(), path))
