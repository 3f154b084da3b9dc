"""sources, proxies, login sessions (issue 4)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sources",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(32), nullable=False),
        sa.Column("platform", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("account_id", sa.String(255), server_default="", nullable=False),
        sa.Column("monitor_interval_s", sa.Integer(), server_default="20", nullable=False),
        sa.Column("status", sa.String(16), server_default="active", nullable=False),
        sa.Column("login_status", sa.String(16), server_default="not_logged_in", nullable=False),
        sa.Column("credentials", sa.Text(), nullable=True),
        sa.Column("user_info", sa.JSON(), nullable=True),
        sa.Column("fingerprint", sa.JSON(), nullable=True),
        sa.Column("proxy_id", sa.String(32), nullable=True),
        sa.Column("assigned_node_id", sa.String(64), nullable=True),
        sa.Column("assigned_at", sa.Float(), nullable=True),
        sa.Column("cookies_valid_until", sa.Float(), nullable=True),
        sa.Column("last_monitored_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("last_login_at", sa.Float(), nullable=True),
        sa.Column("monitor_task_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sources")),
    )
    op.create_index("ix_sources_owner", "sources", ["owner_id"])
    op.create_index("ix_sources_node", "sources", ["assigned_node_id"])
    op.create_index("ix_sources_platform", "sources", ["platform", "status"])
    op.create_table(
        "proxies",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(128), server_default="", nullable=False),
        sa.Column("protocol", sa.String(8), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("username", sa.String(255), server_default="", nullable=False),
        sa.Column("password", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_proxies")),
    )
    op.create_index("ix_proxies_owner", "proxies", ["owner_id"])
    op.create_table(
        "node_proxies",
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("proxy_id", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_node_proxies")),
    )
    op.create_table(
        "login_sessions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("source_id", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(32), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("login_method", sa.String(16), server_default="qrcode", nullable=False),
        sa.Column("qr_code_data", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("started_by", sa.String(128), server_default="", nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("logged_in_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_sessions")),
    )
    op.create_index("ix_login_sessions_source", "login_sessions", ["source_id"])
    op.create_index("ix_login_sessions_status", "login_sessions", ["status", "expires_at"])
    op.create_index("ix_login_sessions_owner", "login_sessions", ["owner_id", "created_at"])


def downgrade() -> None:
    op.drop_table("login_sessions")
    op.drop_table("node_proxies")
    op.drop_table("proxies")
    op.drop_table("sources")
