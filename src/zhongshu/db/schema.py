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
