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
    # MessagePusher: ``?token=<push token>`` also proves who is calling (read-only).
    push_token: bool = False

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
    push_token: bool = False,
) -> Policy:
    return Policy("user", role, scope, owner, step_up, push_token)


V1 = "/api/v1"

POLICIES: dict[tuple[str, str], Policy] = {
    # ops
    ("GET", "/"): PUBLIC,
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
    # sources, accounts, workers, proxies, login sessions, lifecycle
    # sources (accounts, feeds) are owned; starting a QR login is a write on the source
    ("POST", f"{V1}/sources"): _user("user", scope="write", owner="own"),
    ("GET", f"{V1}/sources"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/sources/{{source_id}}"): _user(scope="read", owner="own"),
    ("PATCH", f"{V1}/sources/{{source_id}}"): _user("user", scope="write", owner="own"),
    ("DELETE", f"{V1}/sources/{{source_id}}"): _user("user", scope="write", owner="own"),
    ("POST", f"{V1}/sources/{{source_id}}/login"): _user("user", scope="write", owner="own"),
    # HisCRM accounts: the same sources under the seed's names
    ("GET", f"{V1}/accounts"): _user(scope="read", owner="own"),
    ("POST", f"{V1}/accounts"): _user("user", scope="write", owner="own"),
    ("GET", f"{V1}/accounts/{{source_id}}"): _user(scope="read", owner="own"),
    ("PUT", f"{V1}/accounts/{{source_id}}"): _user("user", scope="write", owner="own"),
    ("DELETE", f"{V1}/accounts/{{source_id}}"): _user("user", scope="write", owner="own"),
    # HisCRM workers: nodes as the seed shows them (a user sees the nodes they own)
    ("GET", f"{V1}/workers"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/workers/{{node_id}}"): _user(scope="read", owner="own"),
    # proxies (passwords sealed); a node's default proxy is the admin's to set
    ("POST", f"{V1}/proxies"): _user("user", scope="write", owner="own"),
    ("GET", f"{V1}/proxies"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/proxies/{{proxy_id}}"): _user(scope="read", owner="own"),
    ("PATCH", f"{V1}/proxies/{{proxy_id}}"): _user("user", scope="write", owner="own"),
    ("DELETE", f"{V1}/proxies/{{proxy_id}}"): _user("user", scope="write", owner="own"),
    ("PUT", f"{V1}/nodes/{{node_id}}/proxy"): _user("admin", scope="write"),
    # QR login sessions of one's own sources
    ("GET", f"{V1}/login-sessions"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/login-sessions/{{login_session_id}}"): _user(scope="read", owner="own"),
    # schedules, message tasks
    ("POST", f"{V1}/schedules"): _user("user", scope="write", owner="own"),
    ("GET", f"{V1}/schedules"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/schedules/{{schedule_id}}"): _user(scope="read", owner="own"),
    ("PATCH", f"{V1}/schedules/{{schedule_id}}"): _user("user", scope="write", owner="own"),
    ("DELETE", f"{V1}/schedules/{{schedule_id}}"): _user("user", scope="write", owner="own"),
    ("POST", f"{V1}/schedules/{{schedule_id}}/run"): _user("user", scope="write", owner="own"),
    ("POST", f"{V1}/message-tasks"): _user("user", scope="write", owner="own"),
    ("GET", f"{V1}/message-tasks"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/message-tasks/{{message_task_id}}"): _user(scope="read", owner="own"),
    ("PUT", f"{V1}/message-tasks/{{message_task_id}}"): _user("user", scope="write", owner="own"),
    ("PATCH", f"{V1}/message-tasks/{{message_task_id}}"): _user("user", scope="write", owner="own"),
    ("DELETE", f"{V1}/message-tasks/{{message_task_id}}"): _user(
        "user", scope="write", owner="own"
    ),
    ("POST", f"{V1}/message-tasks/{{message_task_id}}/run"): _user(
        "user", scope="write", owner="own"
    ),
    # worker lifecycle: local processes of configured profiles, admins only
    ("GET", f"{V1}/workers/{{profile}}/lifecycle"): _user("admin", scope="read"),
    ("POST", f"{V1}/workers/{{profile}}/lifecycle/start"): _user("admin", scope="write"),
    ("POST", f"{V1}/workers/{{profile}}/lifecycle/stop"): _user("admin", scope="write"),
    ("POST", f"{V1}/workers/{{profile}}/lifecycle/restart"): _user("admin", scope="write"),
    # channels, messages, push, view, AI providers, routing rules
    ("POST", f"{V1}/channels"): _user("user", scope="write", owner="own"),
    ("GET", f"{V1}/channels"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/channels/{{channel_id}}"): _user(scope="read", owner="own"),
    ("PATCH", f"{V1}/channels/{{channel_id}}"): _user("user", scope="write", owner="own"),
    ("DELETE", f"{V1}/channels/{{channel_id}}"): _user("user", scope="write", owner="own"),
    ("POST", f"{V1}/channels/{{channel_id}}/test"): _user("user", scope="write", owner="own"),
    ("POST", f"{V1}/messages"): _user("user", scope="push", owner="own"),
    ("GET", f"{V1}/messages"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/messages/{{message_id}}"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/message/{{message_id}}"): _user(scope="read", owner="own", push_token=True),
    # MessagePusher: /push authenticates by the push token in its body, /token by username
    # and password (both limited like logins); a view link is its own unguessable token.
    ("POST", f"{V1}/push"): PUBLIC,
    ("GET", f"{V1}/token"): PUBLIC,
    ("GET", "/view/{view_token}"): PUBLIC,
    # The push token is a credential: managed with a login, not with an API key.
    ("GET", f"{V1}/push-token"): _user("user", owner="self"),
    ("PUT", f"{V1}/push-token"): _user("user", owner="self"),
    ("POST", f"{V1}/push-token/rotate"): _user("user", owner="self"),
    ("POST", f"{V1}/ai-providers"): _user("user", scope="write", owner="own"),
    ("GET", f"{V1}/ai-providers"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/ai-providers/{{provider_id}}"): _user(scope="read", owner="own"),
    ("PATCH", f"{V1}/ai-providers/{{provider_id}}"): _user("user", scope="write", owner="own"),
    ("DELETE", f"{V1}/ai-providers/{{provider_id}}"): _user("user", scope="write", owner="own"),
    ("POST", f"{V1}/notification-rules"): _user("user", scope="write", owner="own"),
    ("GET", f"{V1}/notification-rules"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/notification-rules/{{rule_id}}"): _user(scope="read", owner="own"),
    ("PATCH", f"{V1}/notification-rules/{{rule_id}}"): _user("user", scope="write", owner="own"),
    ("DELETE", f"{V1}/notification-rules/{{rule_id}}"): _user("user", scope="write", owner="own"),
    # collected data, IM API, HisCRM data API
    # worker data sync, HTTP door (the Socket.IO door is /worker ``message``)
    ("POST", f"{V1}/sources/{{source_id}}/sync"): NODE,
    # the IM API: reads filtered to the caller's sources; flags and deletes need "user"
    ("GET", "/api/im/accounts"): _user(scope="read", owner="own"),
    ("GET", "/api/im/conversations"): _user(scope="read", owner="own"),
    ("POST", "/api/im/conversations"): _user("user", scope="write", owner="own"),
    ("GET", "/api/im/conversations/{conversation_id}"): _user(scope="read", owner="own"),
    ("PUT", "/api/im/conversations/{conversation_id}/read"): _user(
        "user", scope="write", owner="own"
    ),
    ("DELETE", "/api/im/conversations/{conversation_id}"): _user(
        "user", scope="write", owner="own"
    ),
    ("PUT", "/api/im/conversations/{conversation_id}/pin"): _user(
        "user", scope="write", owner="own"
    ),
    ("DELETE", "/api/im/conversations/{conversation_id}/pin"): _user(
        "user", scope="write", owner="own"
    ),
    ("PUT", "/api/im/conversations/{conversation_id}/mute"): _user(
        "user", scope="write", owner="own"
    ),
    ("DELETE", "/api/im/conversations/{conversation_id}/mute"): _user(
        "user", scope="write", owner="own"
    ),
    ("GET", "/api/im/messages"): _user(scope="read", owner="own"),
    ("GET", "/api/im/contents"): _user(scope="read", owner="own"),
    ("GET", "/api/im/discussions"): _user(scope="read", owner="own"),
    ("GET", "/api/im/unified-messages"): _user(scope="read", owner="own"),
    ("GET", "/api/im/stats"): _user(scope="read", owner="own"),
    ("GET", "/api/im/integrity"): _user(scope="read", owner="own"),
    # HisCRM data API (a viewer may mark their own notifications read)
    ("GET", f"{V1}/comments"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/direct-messages"): _user(scope="read", owner="own"),
    ("GET", f"{V1}/notifications"): _user(scope="read", owner="own"),
    ("PUT", f"{V1}/notifications/{{notification_id}}/read"): _user(scope="write", owner="own"),
    ("GET", f"{V1}/status"): _user(scope="read", owner="own"),
    # export/import of collected data (admins; the CLI works on the database directly)
    ("GET", f"{V1}/data/export"): _user("admin", scope="read"),
    ("POST", f"{V1}/data/import"): _user("admin", scope="write"),
    # backups: the whole database (hashes, sealed secrets), so login tokens only and a fresh
    # confirmation for everything but the list; restoring is offline (`zhongshu restore`)
    ("POST", f"{V1}/backups"): _user("admin", step_up="always"),
    ("GET", f"{V1}/backups"): _user("admin"),
    ("GET", f"{V1}/backups/{{backup_name}}"): _user("admin", step_up="always"),
    ("DELETE", f"{V1}/backups/{{backup_name}}"): _user("admin", step_up="always"),
    # runtime settings: reading shows the configuration (secrets hidden); changing it is
    # sensitive, so a login token and a fresh confirmation
    ("GET", f"{V1}/settings"): _user("admin", scope="read"),
    ("PATCH", f"{V1}/settings"): _user("admin", step_up="always"),
}


def lookup(method: str, path: str) -> Policy | None:
    """The policy of the route declared as ``method path`` (``None``: undeclared)."""
    return POLICIES.get((method.upper(), path))
