"""collected data: items, sync state, notifications (issue 5)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "items",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("source_id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("platform_id", sa.String(255), nullable=False),
        sa.Column("parent_id", sa.String(255), nullable=True),
        sa.Column("title", sa.Text(), server_default="", nullable=False),
        sa.Column("text", sa.Text(), server_default="", nullable=False),
        sa.Column("url", sa.Text(), server_default="", nullable=False),
        sa.Column("author_name", sa.String(255), server_default="", nullable=False),
        sa.Column("author_id", sa.String(255), server_default="", nullable=False),
        sa.Column("direction", sa.String(8), nullable=True),
        sa.Column("unread_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("published_at", sa.Float(), nullable=False),
        sa.Column("first_seen_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("digest", sa.String(32), nullable=False),
        sa.Column("raw", sa.JSON(), nullable=False),
        sa.Column("is_read", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_pinned", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_muted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint(
            "source_id", "kind", "platform_id", name="uq_items_source_kind_platform"
        ),
    )
    op.create_index(
        "ix_items_source_kind_time", "items", ["source_id", "kind", "published_at", "id"]
    )
    op.create_index("ix_items_kind_time", "items", ["kind", "published_at", "id"])
    op.create_index(
        "ix_items_parent", "items", ["kind", "parent_id", "source_id", "published_at", "id"]
    )
    op.create_table(
        "item_syncs",
        sa.Column("source_id", sa.String(32), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("syncs", sa.Integer(), server_default="0", nullable=False),
        sa.Column("items_received", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_sync_at", sa.Float(), nullable=True),
        sa.Column("last_node_id", sa.String(64), nullable=True),
        sa.Column("last_mode", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("source_id", name=op.f("pk_item_syncs")),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(32), nullable=True),
        sa.Column("source_id", sa.String(32), nullable=True),
        sa.Column("related_id", sa.String(255), nullable=True),
        sa.Column("title", sa.String(255), nullable=False),
        sa.Column("content", sa.Text(), server_default="", nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("priority", sa.String(16), server_default="normal", nullable=False),
        sa.Column("is_sent", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=True),
        sa.Column("is_read", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("read_at", sa.Float(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    op.create_index("ix_notifications_owner", "notifications", ["owner_id", "created_at"])
    op.create_index("ix_notifications_type", "notifications", ["type", "created_at"])
    op.create_index("ix_notifications_source", "notifications", ["source_id"])


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_table("item_syncs")
    op.drop_table("items")
