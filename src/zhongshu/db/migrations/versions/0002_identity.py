"""identity and access: sessions, refresh tokens, API keys, preferences, audit log

The audit log is append-only: triggers make the database itself refuse UPDATE and DELETE
on it (SQLite ``RAISE(ABORT)``, PostgreSQL a plpgsql function; the SQL is
``schema.AUDIT_TRIGGERS_V1``). TRUNCATE is not blocked: it needs table ownership, and
the test suite and restores (services/backup.py) empty tables with it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 08:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

# The trigger SQL lives in the schema module: restores (services/backup.py) reuse it.
from zhongshu.db.schema import AUDIT_TRIGGERS_V1, DROP_AUDIT_TRIGGERS_V1

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "auth_sessions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("token_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("revoked_reason", sa.String(64), nullable=True),
        sa.Column("client_ip", sa.String(64), server_default="", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_sessions")),
    )
    op.create_index("ix_auth_sessions_user", "auth_sessions", ["user_id"])

    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("session_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("rotated_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name=op.f("pk_refresh_tokens")),
    )
    op.create_index("ix_refresh_tokens_session", "refresh_tokens", ["session_id"])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("access_key", sa.String(34), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("disabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("access_key", name=op.f("uq_api_keys_access_key")),
    )
    op.create_index("ix_api_keys_owner", "api_keys", ["owner_id"])

    op.create_table(
        "user_preferences",
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_preferences")),
    )

    op.create_table(
        "audit_log",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(32), server_default="", nullable=False),
        sa.Column("target_id", sa.String(128), server_default="", nullable=False),
        sa.Column("client_ip", sa.String(64), server_default="", nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_action", "audit_log", ["action", "id"])
    op.create_index("ix_audit_log_actor", "audit_log", ["actor", "id"])
    op.create_index("ix_audit_log_target", "audit_log", ["target_type", "target_id", "id"])
    op.create_index("ix_audit_log_at", "audit_log", ["at"])

    dialect = op.get_bind().dialect.name
    if dialect not in AUDIT_TRIGGERS_V1:  # pragma: no cover - only SQLite and PostgreSQL
        raise RuntimeError(f"no append-only trigger for dialect {dialect}")
    for sql in AUDIT_TRIGGERS_V1[dialect]:
        op.execute(sql)


def downgrade() -> None:
    for sql in DROP_AUDIT_TRIGGERS_V1.get(op.get_bind().dialect.name, ()):
        op.execute(sql)
    op.drop_table("audit_log")
    op.drop_table("user_preferences")
    op.drop_table("api_keys")
    op.drop_table("refresh_tokens")
    op.drop_table("auth_sessions")
