"""schedules, message tasks (issue 4)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), server_default="", nullable=False),
        sa.Column("cron", sa.String(255), nullable=True),
        sa.Column("interval_s", sa.Float(), nullable=True),
        sa.Column("timezone", sa.String(64), server_default="UTC", nullable=False),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("capability", sa.String(128), nullable=True),
        sa.Column("priority", sa.Integer(), server_default="0", nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("anchor_at", sa.Float(), nullable=False),
        sa.Column("next_run_at", sa.Float(), nullable=True),
        sa.Column("last_run_at", sa.Float(), nullable=True),
        sa.Column("last_due_at", sa.Float(), nullable=True),
        sa.Column("last_task_id", sa.String(64), nullable=True),
        sa.Column("run_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    op.create_index("ix_schedules_owner", "schedules", ["owner_id"])
    op.create_index("ix_schedules_due", "schedules", ["enabled", "next_run_at"])

    op.create_table(
        "message_tasks",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("message_type", sa.Integer(), server_default="0", nullable=False),
        sa.Column("message_template", sa.Text(), nullable=False),
        sa.Column("web_hook_url", sa.Text(), nullable=False),
        sa.Column("mps_id", sa.JSON(), nullable=False),
        sa.Column("cron_exp", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), server_default="UTC", nullable=False),
        sa.Column("status", sa.Integer(), server_default="1", nullable=False),
        sa.Column("headers", sa.Text(), nullable=True),
        sa.Column("cookies", sa.Text(), nullable=True),
        sa.Column("next_run_at", sa.Float(), nullable=True),
        sa.Column("last_run_at", sa.Float(), nullable=True),
        sa.Column("last_due_at", sa.Float(), nullable=True),
        sa.Column("last_task_id", sa.String(64), nullable=True),
        sa.Column("run_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_tasks")),
    )
    op.create_index("ix_message_tasks_owner", "message_tasks", ["owner_id"])
    op.create_index("ix_message_tasks_due", "message_tasks", ["status", "next_run_at"])

    op.create_table(
        "message_task_deliveries",
        sa.Column("id", _BigId, autoincrement=True, nullable=False),
        sa.Column("message_task_id", sa.String(32), nullable=False),
        sa.Column("task_id", sa.String(64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("part", sa.String(64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("articles", sa.Integer(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_message_task_deliveries")),
    )
    op.create_index(
        "ix_message_task_deliveries_task", "message_task_deliveries", ["message_task_id", "id"]
    )

    op.create_table(
        "worker_processes",
        sa.Column("profile", sa.String(64), nullable=False),
        sa.Column("node_id", sa.String(64), nullable=False),
        sa.Column("access_key", sa.String(34), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("desired", sa.String(16), server_default="stopped", nullable=False),
        sa.Column("status", sa.String(16), server_default="stopped", nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("restarts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_exit_code", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("profile", name=op.f("pk_worker_processes")),
    )


def downgrade() -> None:
    op.drop_table("worker_processes")
    op.drop_table("message_task_deliveries")
    op.drop_table("message_tasks")
    op.drop_table("schedules")
