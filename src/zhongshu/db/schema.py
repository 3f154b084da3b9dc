"""The whole schema in one place (SQLAlchemy Core).

Times are stored as float epoch seconds (UTC): one portable type on SQLite and PostgreSQL,
cheap to compare in the queue's hot queries. JSON columns hold payloads and results.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# BigInteger ids that are also SQLite rowids (INTEGER PRIMARY KEY) on SQLite.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

users = Table(
    "users",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("username", String(64), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("display_name", String(128), nullable=False, server_default=""),
    Column("email", String(255), nullable=False, server_default=""),
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    # Bumped to revoke every token issued before (logout-all, password change, disable).
    Column("token_version", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

nodes = Table(
    "nodes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("kind", String(16), nullable=False),
    # What the admin allows (empty: whatever the node advertises).
    Column("capabilities", JSON, nullable=False),
    # What the node said it can do at its last registration.
    Column("advertised_capabilities", JSON, nullable=False),
    Column("capacity", Integer, nullable=False),
    Column("advertised_capacity", Integer, nullable=True),
    Column("max_accounts", Integer, nullable=False, server_default="10"),
    Column("access_key", String(34), nullable=False, unique=True),
    Column("secret_hash", String(128), nullable=False),
    Column("status", String(16), nullable=False, server_default="offline"),
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    Column("owner_id", String(32), nullable=True),
    Column("version", String(64), nullable=False, server_default=""),
    Column("host", String(255), nullable=False, server_default=""),
    Column("pid", Integer, nullable=True),
    Column("stats", JSON, nullable=False),
    Column("last_heartbeat_at", Float, nullable=True),
    Column("registered_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

tasks = Table(
    "tasks",
    metadata,
    # seq gives FIFO order within a priority; id is the public handle.
    Column("seq", _BigId, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("kind", String(128), nullable=False),
    Column("capability", String(128), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=False),
    Column("timeout_s", Float, nullable=False),
    Column("run_at", Float, nullable=False),
    Column("node_id", String(64), nullable=True),
    Column("lease_token", Integer, nullable=False, server_default="0"),
    Column("lease_expires_at", Float, nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    Column("owner_id", String(32), nullable=True),
    Column("result", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Column("callback_url", Text, nullable=True),
    # none | pending | delivered | failed
    Column("callback_status", String(16), nullable=False, server_default="none"),
    Column("callback_attempts", Integer, nullable=False, server_default="0"),
    Column("callback_next_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("leased_at", Float, nullable=True),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    UniqueConstraint("owner_id", "idempotency_key", name="uq_tasks_owner_idempotency"),
)

_READY = "status IN ('pending', 'failed')"
# The dispatcher's scan: ready tasks in priority, then FIFO, order.
Index(
    "ix_tasks_ready",
    tasks.c.priority.desc(),
    tasks.c.seq,
    sqlite_where=text(_READY),
    postgresql_where=text(_READY),
)
Index(
    "ix_tasks_leased",
    tasks.c.node_id,
    tasks.c.lease_expires_at,
    sqlite_where=text("status IN ('leased', 'running')"),
    postgresql_where=text("status IN ('leased', 'running')"),
)
Index("ix_tasks_status_kind", tasks.c.status, tasks.c.kind)
Index("ix_tasks_owner", tasks.c.owner_id, tasks.c.seq)
Index(
    "ix_tasks_callback_due",
    tasks.c.callback_next_at,
    sqlite_where=text("callback_status = 'pending'"),
    postgresql_where=text("callback_status = 'pending'"),
)

task_attempts = Table(
    "task_attempts",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("task_id", String(64), ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("lease_token", Integer, nullable=False),
    Column("node_id", String(64), nullable=True),
    Column("leased_at", Float, nullable=False),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    # running | succeeded | failed | lost | cancelled
    Column("outcome", String(16), nullable=False, server_default="running"),
    Column("error", Text, nullable=True),
    UniqueConstraint("task_id", "lease_token", name="uq_task_attempts_lease"),
)

callback_deliveries = Table(
    "callback_deliveries",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("task_id", String(64), ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("webhook_id", String(64), nullable=False),
    Column("at", Float, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("ok", Boolean, nullable=False),
    Column("error", Text, nullable=True),
    Column("duration_ms", Float, nullable=False),
)
Index("ix_callback_deliveries_task", callback_deliveries.c.task_id)

events = Table(
    "events",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("type", String(64), nullable=False),
    # "user:<id>", "node:<id>", "system"
    Column("actor", String(128), nullable=False),
    Column("subject_type", String(32), nullable=False),
    Column("subject_id", String(128), nullable=False),
    Column("data", JSON, nullable=False),
)
Index("ix_events_type_id", events.c.type, events.c.id)
Index("ix_events_subject", events.c.subject_type, events.c.subject_id, events.c.id)

# --- identity and access (migration 0002) ------------------------------------------------

# One row per login: the family of rotating refresh tokens. Revoking it ends the session
# (access tokens carry its id as ``sid``), and reuse of a rotated refresh token revokes it.
auth_sessions = Table(
    "auth_sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("user_id", String(32), nullable=False),
    # users.token_version when the session began; a bump ends every older session.
    Column("token_version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("last_used_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
    Column("revoked_reason", String(64), nullable=True),
    Column("client_ip", String(64), nullable=False, server_default=""),
)
Index("ix_auth_sessions_user", auth_sessions.c.user_id)

# Only the SHA-256 of each refresh token is kept.
refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("session_id", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    # Set when the token is exchanged; presenting it again is reuse.
    Column("rotated_at", Float, nullable=True),
)
Index("ix_refresh_tokens_session", refresh_tokens.c.session_id)

# User API keys (``AK-SK WK…:SK…``); only a hash of the secret is kept.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), nullable=False),
    Column("name", String(128), nullable=False),
    Column("access_key", String(34), nullable=False, unique=True),
    Column("secret_hash", String(128), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("disabled", Boolean, nullable=False, server_default=text("false")),
    Column("expires_at", Float, nullable=True),
    Column("last_used_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)
Index("ix_api_keys_owner", api_keys.c.owner_id)

user_preferences = Table(
    "user_preferences",
    metadata,
    Column("user_id", String(32), primary_key=True),
    Column("data", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# Append-only: triggers (migration 0002) make the database refuse UPDATE and DELETE.
audit_log = Table(
    "audit_log",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    # "user:<id>", "node:<id>", "key:<id>", "anonymous", "system"
    Column("actor", String(128), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target_type", String(32), nullable=False, server_default=""),
    Column("target_id", String(128), nullable=False, server_default=""),
    Column("client_ip", String(64), nullable=False, server_default=""),
    # success | failure | denied
    Column("outcome", String(16), nullable=False),
    Column("detail", JSON, nullable=False),
)
Index("ix_audit_log_action", audit_log.c.action, audit_log.c.id)
Index("ix_audit_log_actor", audit_log.c.actor, audit_log.c.id)
Index("ix_audit_log_target", audit_log.c.target_type, audit_log.c.target_id, audit_log.c.id)
Index("ix_audit_log_at", audit_log.c.at)


# sources, proxies, login sessions

# One model for HisCRM "accounts" and WeRSS "feeds": something on a platform a worker
# watches on behalf of its owner. ``platform`` is the capability a node needs to serve it.
sources = Table(
    "sources",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), nullable=False),
    Column("platform", String(64), nullable=False),
    Column("name", String(255), nullable=False),
    # The account's id on its platform (HisCRM ``account_id``), "" until known.
    Column("account_id", String(255), nullable=False, server_default=""),
    Column("monitor_interval_s", Integer, nullable=False, server_default="20"),
    Column("status", String(16), nullable=False, server_default="active"),
    Column("login_status", String(16), nullable=False, server_default="not_logged_in"),
    # Sealed JSON (services/secrets.py): cookies, tokens. Never returned in clear.
    Column("credentials", Text, nullable=True),
    Column("user_info", JSON, nullable=True),
    Column("fingerprint", JSON, nullable=True),
    Column("proxy_id", String(32), nullable=True),
    Column("assigned_node_id", String(64), nullable=True),
    Column("assigned_at", Float, nullable=True),
    Column("cookies_valid_until", Float, nullable=True),
    Column("last_monitored_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # When the last QR login succeeded, and the last monitor task (at most one is open).
    Column("last_login_at", Float, nullable=True),
    Column("monitor_task_id", String(64), nullable=True),
    Index("ix_sources_owner", "owner_id"),
    Index("ix_sources_node", "assigned_node_id"),
    Index("ix_sources_platform", "platform", "status"),
)

# Proxies a user's sources (or, set by an admin, a node) go through.
proxies = Table(
    "proxies",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), nullable=False),
    Column("name", String(128), nullable=False, server_default=""),
    Column("protocol", String(8), nullable=False),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("username", String(255), nullable=False, server_default=""),
    # Sealed (services/secrets.py); never returned in clear.
    Column("password", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_proxies_owner", "owner_id"),
)

# A node's default proxy, used by sources that name none (kept beside ``nodes``).
node_proxies = Table(
    "node_proxies",
    metadata,
    Column("node_id", String(64), primary_key=True),
    Column("proxy_id", String(32), nullable=False),
    Column("updated_at", Float, nullable=False),
)

# QR logins: pending → scanning → success | failed | expired.
login_sessions = Table(
    "login_sessions",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("source_id", String(32), nullable=False),
    Column("owner_id", String(32), nullable=False),
    Column("node_id", String(64), nullable=True),
    Column("status", String(16), nullable=False),
    Column("login_method", String(16), nullable=False, server_default="qrcode"),
    Column("qr_code_data", Text, nullable=True),
    Column("error_message", Text, nullable=True),
    Column("started_by", String(128), nullable=False, server_default=""),
    Column("expires_at", Float, nullable=False),
    Column("logged_in_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_login_sessions_source", "source_id"),
    Index("ix_login_sessions_status", "status", "expires_at"),
    Index("ix_login_sessions_owner", "owner_id", "created_at"),
)


# schedules, message tasks, worker lifecycle

# A cron or interval trigger that submits a task from its template. ``next_run_at`` is the
# due time the hubs race for: a fire is claimed by the conditional UPDATE that moves it on
# (services/schedules.py), so two hub processes never fire one due time twice.
schedules = Table(
    "schedules",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), nullable=False),
    Column("name", String(255), nullable=False, server_default=""),
    # Exactly one of cron (crontab, 5 fields) and interval_s is set.
    Column("cron", String(255), nullable=True),
    Column("interval_s", Float, nullable=True),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    # The task template.
    Column("kind", String(128), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("capability", String(128), nullable=True),
    Column("priority", Integer, nullable=False, server_default="0"),
    Column("max_attempts", Integer, nullable=True),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    # Interval schedules stay on the grid that starts here (a restart does not shift it).
    Column("anchor_at", Float, nullable=False),
    Column("next_run_at", Float, nullable=True),
    Column("last_run_at", Float, nullable=True),
    Column("last_due_at", Float, nullable=True),
    Column("last_task_id", String(64), nullable=True),
    Column("run_count", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_schedules_owner", "owner_id"),
    Index("ix_schedules_due", "enabled", "next_run_at"),
)

# WeRSS message tasks: on ``cron_exp`` the new articles of the ``mps_id`` sources are
# rendered with ``message_template`` and POSTed to ``web_hook_url``. Shares the due-claim
# of schedules (same columns: next_run_at, last_run_at, …). ``status``: 1 on, 0 off.
message_tasks = Table(
    "message_tasks",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), nullable=False),
    Column("name", String(255), nullable=False),
    Column("message_type", Integer, nullable=False, server_default="0"),
    Column("message_template", Text, nullable=False),
    Column("web_hook_url", Text, nullable=False),
    Column("mps_id", JSON, nullable=False),
    Column("cron_exp", String(255), nullable=False),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("status", Integer, nullable=False, server_default="1"),
    # Sealed JSON (services/secrets.py); masked in every reply.
    Column("headers", Text, nullable=True),
    Column("cookies", Text, nullable=True),
    Column("next_run_at", Float, nullable=True),
    # Articles first seen after this time are "new" for the next run (the collection
    # cursor; it starts at the creation time).
    Column("last_run_at", Float, nullable=True),
    Column("last_due_at", Float, nullable=True),
    Column("last_task_id", String(64), nullable=True),
    Column("run_count", Integer, nullable=False, server_default="0"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_message_tasks_owner", "owner_id"),
    Index("ix_message_tasks_due", "status", "next_run_at"),
)

# Every webhook POST of a message task run (one per feed per attempt).
message_task_deliveries = Table(
    "message_task_deliveries",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("message_task_id", String(32), nullable=False),
    Column("task_id", String(64), nullable=False),
    Column("attempt", Integer, nullable=False),
    # The part of the run this POST carried (the feed's source id).
    Column("part", String(64), nullable=False),
    Column("at", Float, nullable=False),
    Column("articles", Integer, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("ok", Boolean, nullable=False),
    Column("error", Text, nullable=True),
    Column("duration_ms", Float, nullable=False),
    Index("ix_message_task_deliveries_task", "message_task_id", "id"),
)

# Local worker processes the hub supervises (config ``worker_profiles``): the node each
# profile runs as, with its secret sealed so a restart reuses the same node.
worker_processes = Table(
    "worker_processes",
    metadata,
    Column("profile", String(64), primary_key=True),
    Column("node_id", String(64), nullable=False),
    Column("access_key", String(34), nullable=False),
    Column("secret", Text, nullable=False),
    Column("desired", String(16), nullable=False, server_default="stopped"),
    Column("status", String(16), nullable=False, server_default="stopped"),
    Column("pid", Integer, nullable=True),
    Column("started_at", Float, nullable=True),
    Column("restarts", Integer, nullable=False, server_default="0"),
    Column("last_exit_code", Integer, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)


# channels, messages, AI providers, routing rules

# A push destination: an Apprise URL or a templated HTTP request. Integer ids, because
# MessagePusher clients name channels as "1|2|3". ``secret`` is sealed JSON (the Apprise
# URL, or the HTTP URL and headers); ``display`` is the masked copy responses show.
channels = Table(
    "channels",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("owner_id", String(32), nullable=False),
    Column("name", String(128), nullable=False),
    # apprise | http
    Column("kind", String(16), nullable=False),
    Column("secret", Text, nullable=False),
    Column("display", JSON, nullable=False),
    # http: method, body_template, content_type; apprise: the service's schema
    Column("options", JSON, nullable=False),
    # Sealed proxy URL (it may hold a password), masked in ``display``.
    Column("proxy", Text, nullable=True),
    Column("max_length", Integer, nullable=True),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_channels_owner", "owner_id"),
)

# OpenAI-compatible chat-completions endpoints a user's messages may be run through.
ai_providers = Table(
    "ai_providers",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), nullable=False),
    Column("name", String(128), nullable=False),
    Column("base_url", Text, nullable=False),
    Column("model", String(128), nullable=False),
    # Sealed; ``api_key_hint`` is the masked copy.
    Column("api_key", Text, nullable=True),
    Column("api_key_hint", String(32), nullable=False, server_default=""),
    Column("prompt_template", Text, nullable=False),
    Column("is_default", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_ai_providers_owner", "owner_id"),
)

# A MessagePusher message. Each pipeline stage keeps its own status (fetch_*, ai_*); the
# per-channel outcome lives in ``message_deliveries``.
messages = Table(
    "messages",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), nullable=False),
    Column("title", Text, nullable=False, server_default=""),
    Column("content", Text, nullable=False, server_default=""),
    Column("url", Text, nullable=False, server_default=""),
    Column("ai", Boolean, nullable=False, server_default=text("false")),
    Column("ai_provider_id", String(32), nullable=True),
    # pending | processing | sent | partially_sent | failed
    Column("status", String(16), nullable=False),
    # The unguessable handle of /view/{view_token}.
    Column("view_token", String(64), nullable=False, unique=True),
    # api | push | routing
    Column("origin", String(16), nullable=False, server_default="api"),
    Column("priority", Integer, nullable=False, server_default="0"),
    # skipped | pending | done | failed
    Column("fetch_status", String(16), nullable=False, server_default="skipped"),
    Column("fetch_title", Text, nullable=True),
    # Relative to the data dir.
    Column("fetch_path", Text, nullable=True),
    Column("fetch_chars", Integer, nullable=True),
    Column("fetch_error", Text, nullable=True),
    Column("ai_status", String(16), nullable=False, server_default="skipped"),
    Column("ai_result", Text, nullable=True),
    Column("ai_error", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Index("ix_messages_owner", "owner_id", "created_at"),
)

message_deliveries = Table(
    "message_deliveries",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("message_id", String(32), ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("channel_id", BigInteger, nullable=False),
    Column("channel_name", String(128), nullable=False, server_default=""),
    # pending | sending | sent | failed
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error", Text, nullable=True),
    Column("task_id", String(64), nullable=True),
    Column("truncated", Boolean, nullable=False, server_default=text("false")),
    Column("sent_at", Float, nullable=True),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("message_id", "channel_id", name="uq_message_deliveries_channel"),
)

# One push token per user (MessagePusher's ``token``): looked up by hash, kept sealed so
# GET /api/v1/token can show it again.
push_tokens = Table(
    "push_tokens",
    metadata,
    Column("user_id", String(32), primary_key=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("token", Text, nullable=False),
    Column("default_channels", JSON, nullable=False),
    Column("default_ai", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

notification_rules = Table(
    "notification_rules",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("owner_id", String(32), nullable=False),
    Column("name", String(128), nullable=False),
    Column("events", JSON, nullable=False),
    # Optional filters: item kinds (comment, message …) and source ids; empty means all.
    Column("item_kinds", JSON, nullable=False),
    Column("source_ids", JSON, nullable=False),
    Column("channel_ids", JSON, nullable=False),
    Column("digest_window_s", Integer, nullable=False, server_default="0"),
    # "HH:MM" in ``timezone``; both set or both null.
    Column("quiet_start", String(5), nullable=True),
    Column("quiet_end", String(5), nullable=True),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_notification_rules_owner", "owner_id"),
)

# Events waiting for their rule's digest window or quiet hours to end. Kept in a table so
# a restart loses nothing; a flushed batch becomes one message with an id derived from
# its first entry, so a flush repeated after a crash creates no second message.
digest_entries = Table(
    "digest_entries",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("rule_id", String(32), nullable=False),
    Column("owner_id", String(32), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("summary", Text, nullable=False),
    Column("count", Integer, nullable=False, server_default="1"),
    Column("created_at", Float, nullable=False),
    Column("due_at", Float, nullable=False),
    # Set when a hub takes the batch to send: two replicas never send one entry twice,
    # and a batch claimed by a hub that died is taken over (docs/messages.md, routing).
    Column("batch_id", String(32), nullable=True),
    Column("claimed_at", Float, nullable=True),
    Index("ix_digest_entries_rule", "rule_id", "id"),
    Index("ix_digest_entries_batch", "batch_id"),
    Index("ix_digest_entries_due", "due_at"),
)


# collected data: items, sync state, notifications

# Everything workers collect from a source: contents (posts/videos), comments,
# conversations, direct messages, platform notifications. One table, because every IM
# query is "a page of one kind, of some sources, in time order"; kind-specific fields
# live in ``raw``. ``parent_id`` is the platform id of the parent: a comment's content, a
# message's conversation. ``digest`` (of ``raw``) lets a re-sent snapshot skip unchanged
# rows. ``is_read``/``is_pinned``/``is_muted`` belong to the user and survive re-syncs.
items = Table(
    "items",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("source_id", String(32), nullable=False),
    # content | comment | conversation | message | notification
    Column("kind", String(16), nullable=False),
    Column("platform_id", String(255), nullable=False),
    Column("parent_id", String(255), nullable=True),
    Column("title", Text, nullable=False, server_default=""),
    Column("text", Text, nullable=False, server_default=""),
    Column("url", Text, nullable=False, server_default=""),
    Column("author_name", String(255), nullable=False, server_default=""),
    Column("author_id", String(255), nullable=False, server_default=""),
    # inbound | outbound (messages; comments are inbound)
    Column("direction", String(8), nullable=True),
    Column("unread_count", Integer, nullable=False, server_default="0"),
    # The item's own time on the platform (a conversation's: its last message).
    Column("published_at", Float, nullable=False),
    Column("first_seen_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("digest", String(32), nullable=False),
    Column("raw", JSON, nullable=False),
    Column("is_read", Boolean, nullable=False, server_default=text("false")),
    Column("is_pinned", Boolean, nullable=False, server_default=text("false")),
    Column("is_muted", Boolean, nullable=False, server_default=text("false")),
    UniqueConstraint("source_id", "kind", "platform_id", name="uq_items_source_kind_platform"),
)
# A page of one kind of one account in time order (the IM lists).
Index(
    "ix_items_source_kind_time",
    items.c.source_id,
    items.c.kind,
    items.c.published_at,
    items.c.id,
)
# A page of one kind across accounts (admins), and retention by age.
Index("ix_items_kind_time", items.c.kind, items.c.published_at, items.c.id)
# Messages of a conversation, comments of a content: with the source, the page is one
# range of this index in time order (without source_id in it, SQLite scanned the account's
# whole kind and filtered by parent: 3x slower at 1M items, bench/im.py).
Index(
    "ix_items_parent",
    items.c.kind,
    items.c.parent_id,
    items.c.source_id,
    items.c.published_at,
    items.c.id,
)

# Per-source sync bookkeeping: the delta sequence and the counters behind the stats.
item_syncs = Table(
    "item_syncs",
    metadata,
    Column("source_id", String(32), primary_key=True),
    # The last delta sequence number applied (0: next delta must be 1).
    Column("last_seq", BigInteger, nullable=False, server_default="0"),
    Column("syncs", Integer, nullable=False, server_default="0"),
    Column("items_received", BigInteger, nullable=False, server_default="0"),
    Column("last_sync_at", Float, nullable=True),
    Column("last_node_id", String(64), nullable=True),
    Column("last_mode", String(16), nullable=True),
)

# Notification records (HisCRM ``notifications``): what a person should be told about.
notifications = Table(
    "notifications",
    metadata,
    Column("id", String(32), primary_key=True),
    # comment | direct_message | system | account_status
    Column("type", String(32), nullable=False),
    Column("owner_id", String(32), nullable=True),
    Column("source_id", String(32), nullable=True),
    Column("related_id", String(255), nullable=True),
    Column("title", String(255), nullable=False),
    Column("content", Text, nullable=False, server_default=""),
    Column("data", JSON, nullable=False),
    # low | normal | high | urgent
    Column("priority", String(16), nullable=False, server_default="normal"),
    Column("is_sent", Boolean, nullable=False, server_default=text("false")),
    Column("sent_at", Float, nullable=True),
    Column("is_read", Boolean, nullable=False, server_default=text("false")),
    Column("read_at", Float, nullable=True),
    Column("created_at", Float, nullable=False),
)
Index("ix_notifications_owner", notifications.c.owner_id, notifications.c.created_at)
Index("ix_notifications_type", notifications.c.type, notifications.c.created_at)
Index("ix_notifications_source", notifications.c.source_id)


# Settings an admin changed while the hub runs (services/runtime_settings.py).
runtime_settings = Table(
    "runtime_settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("updated_by", String(128), nullable=False),
)


# --- the audit log's append-only triggers ---
# Created by migration 0002; a restore drops and recreates them inside its transaction
# (services/backup.py). Versioned names: a changed trigger is a new ``_v2`` and a migration.

AUDIT_APPEND_ONLY_MESSAGE = "audit_log is append-only: rows cannot be changed or deleted"
AUDIT_TRIGGERS_V1: dict[str, tuple[str, ...]] = {
    "sqlite": tuple(
        f"CREATE TRIGGER audit_log_no_{verb.lower()}_v1 BEFORE {verb} ON audit_log "
        f"BEGIN SELECT RAISE(ABORT, '{AUDIT_APPEND_ONLY_MESSAGE}'); END"
        for verb in ("UPDATE", "DELETE")
    ),
    "postgresql": (
        "CREATE OR REPLACE FUNCTION zhongshu_audit_append_only_v1() RETURNS trigger "
        "LANGUAGE plpgsql AS $$ BEGIN "
        f"RAISE EXCEPTION '{AUDIT_APPEND_ONLY_MESSAGE}' USING ERRCODE = 'insufficient_privilege'; "
        "END $$",
        "CREATE TRIGGER audit_log_append_only_v1 BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION zhongshu_audit_append_only_v1()",
    ),
}
DROP_AUDIT_TRIGGERS_V1: dict[str, tuple[str, ...]] = {
    "sqlite": (
        "DROP TRIGGER IF EXISTS audit_log_no_update_v1",
        "DROP TRIGGER IF EXISTS audit_log_no_delete_v1",
    ),
    "postgresql": (
        "DROP TRIGGER IF EXISTS audit_log_append_only_v1 ON audit_log",
        "DROP FUNCTION IF EXISTS zhongshu_audit_append_only_v1()",
    ),
}
