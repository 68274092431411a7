"""Dashboard sign-in: staff web logins, sessions (hashes only) and failed sign-ins.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("staff") as batch:
        batch.add_column(sa.Column("web_login", sa.String(64)))
        batch.add_column(sa.Column("password_hash", sa.String(255)))
        batch.create_unique_constraint("uq_staff_web_login", ["web_login"])
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column(
            "staff_id",
            sa.Integer,
            sa.ForeignKey("staff.id", ondelete="CASCADE", name="fk_web_sessions_staff_id_staff"),
            nullable=False,
        ),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", UTCDateTime()),
        sa.UniqueConstraint("token_hash", name="uq_web_sessions_token_hash"),
    )
    op.create_index("ix_web_sessions_expires_at", "web_sessions", ["expires_at"])
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("login", sa.String(64), nullable=False),
        sa.Column("ip", sa.String(64), nullable=False),
        sa.Column("failed_at", UTCDateTime(), nullable=False),
    )
    op.create_index("ix_login_failures_login_failed_at", "login_failures", ["login", "failed_at"])
    op.create_index("ix_login_failures_ip_failed_at", "login_failures", ["ip", "failed_at"])


def downgrade() -> None:
    op.drop_table("login_failures")
    op.drop_table("web_sessions")
    with op.batch_alter_table("staff") as batch:
        batch.drop_constraint("uq_staff_web_login", type_="unique")
        batch.drop_column("password_hash")
        batch.drop_column("web_login")
