"""Why a survey closed: the provider's refusal of its send, in the survey row.

A send that a provider refused for good (the customer blocked the bot, an invalid number, a
landline) failed the survey, but the reason was kept only in the send job's last_error, and a
failure reported later by a status callback (Twilio 30006) only in the log. ``closed_reason``
holds it where `GET /api/surveys/{id}` and the reports can show it. Existing rows keep NULL.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN on both backends: SQLite needs no table rebuild for a nullable column,
    # and its status triggers (migration 0011) stay as they are.
    op.add_column("surveys", sa.Column("closed_reason", sa.String(500)))


def downgrade() -> None:
    with op.batch_alter_table("surveys") as batch:
        batch.drop_column("closed_reason")
