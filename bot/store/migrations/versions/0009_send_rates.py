"""Send rates shared by every worker: one row per provider holding its next free send slot.

Each process paced its sends with its own limiter, so two workers sent SMS at twice
SEND_RATE_SMS. A slot is now taken from this table by one atomic upsert (bot.scheduler), so
the rate holds across all processes. Jobs also get the status ``sending`` (a plain string,
no schema change): a send on its way to the provider, never claimed again.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "send_rates",
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("next_at", sa.Double, nullable=False),
        sa.PrimaryKeyConstraint("provider", name="pk_send_rates"),
    )


def downgrade() -> None:
    op.drop_table("send_rates")
