"""Telegram: staff, durable jobs (alerts), a survey's requested language and channel handle.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("surveys") as batch:
        batch.add_column(sa.Column("requested_language", sa.String(8)))
        batch.add_column(sa.Column("channel_ref", sa.String(64)))
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column(
            "survey_id",
            sa.Integer,
            sa.ForeignKey("surveys.id", ondelete="CASCADE", name="fk_jobs_survey_id_surveys"),
        ),
        sa.Column("payload", sa.JSON),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("locked_until", UTCDateTime()),
        sa.Column("last_error", sa.Text),
        sa.Column("result", sa.JSON),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("done_at", UTCDateTime()),
    )
    op.create_index("ix_jobs_status_due_at", "jobs", ["status", "due_at"])
    op.create_index("ix_jobs_survey_id_kind", "jobs", ["survey_id", "kind"])
    op.create_table(
        "staff",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(128)),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("telegram_id", sa.BigInteger),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("telegram_id", name="uq_staff_telegram_id"),
    )


def downgrade() -> None:
    op.drop_table("staff")
    op.drop_table("jobs")
    with op.batch_alter_table("surveys") as batch:
        batch.drop_column("channel_ref")
        batch.drop_column("requested_language")
