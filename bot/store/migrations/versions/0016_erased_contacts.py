"""Erased contacts: per channel, a SHA-256 of each erased person's address, never the address (bot.privacy).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.tables import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "erased_contacts",
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("address_hash", sa.String(64), nullable=False),
        sa.Column("erased_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("channel", "address_hash", name="pk_erased_contacts"),
    )


def downgrade() -> None:
    op.drop_table("erased_contacts")
