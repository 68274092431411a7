"""Each staff member's language for the staff texts (/report, the dashboard): de or en.

NULL (every existing row) means "not chosen": Telegram's language_code of the user, the
dashboard's Accept-Language, then STAFF_LANGUAGE decide (bot.staff_language).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column: a plain ADD COLUMN on both backends, no SQLite table rebuild.
    op.add_column("staff", sa.Column("language", sa.String(8)))


def downgrade() -> None:
    with op.batch_alter_table("staff") as batch:
        batch.drop_column("language")
