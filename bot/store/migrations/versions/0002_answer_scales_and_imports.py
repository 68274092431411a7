"""Answers carry their question's scale; imported answers have a response id and no survey.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot change a column's nullability in place.
    with op.batch_alter_table("answers") as batch:
        batch.alter_column("survey_id", existing_type=sa.Integer, nullable=True)
        batch.add_column(sa.Column("response_id", sa.String(128)))
        batch.add_column(sa.Column("scale_min", sa.Integer))
        batch.add_column(sa.Column("scale_max", sa.Integer))
        batch.add_column(sa.Column("scale_best", sa.String(4)))
        batch.create_unique_constraint("uq_answers_response_id", ["response_id"])
        batch.create_index("ix_answers_answered_at", ["answered_at"])
    # Answers stored before this revision came from the built-in flows' scales.
    op.execute("UPDATE answers SET scale_min = 0, scale_max = 10, scale_best = 'high' WHERE metric = 'nps'")
    op.execute(
        "UPDATE answers SET scale_min = 1, scale_max = 5, scale_best = 'low' "
        "WHERE metric = 'csat' AND flow_id = 'support-csat'"
    )
    op.execute(
        "UPDATE answers SET scale_min = 1, scale_max = 7, scale_best = 'high' WHERE metric = 'ces' AND flow_id = 'ces'"
    )


def downgrade() -> None:
    with op.batch_alter_table("answers") as batch:
        batch.drop_index("ix_answers_answered_at")
        batch.drop_constraint("uq_answers_response_id", type_="unique")
        batch.drop_column("scale_best")
        batch.drop_column("scale_max")
        batch.drop_column("scale_min")
        batch.drop_column("response_id")
        batch.alter_column("survey_id", existing_type=sa.Integer, nullable=False)
