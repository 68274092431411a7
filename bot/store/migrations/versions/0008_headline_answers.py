"""One respondent, one observation: answers mark the flow's headline question per metric.

A flow like support-csat asks three CSAT questions. Counting all three made one customer
three observations, so n and the interval were wrong. Now each answer says whether it is
the headline of its metric (the question the flow names, for support-csat the overall
satisfaction); CSAT, NPS and CES count only those, and every question is reported on its
own beside them. Imported rows share a response id per respondent: the response id is now
unique per question, not per row.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

REPORT_COLUMNS = ["metric", "scale_min", "scale_max", "scale_best", "score", "answered_at"]
REPORT_INDEXES = {
    "ix_answers_report": [],
    "ix_answers_report_agent": ["agent"],
    "ix_answers_report_team": ["team"],
    "ix_answers_report_channel": ["channel"],
}


def upgrade() -> None:
    for name in REPORT_INDEXES:
        op.drop_index(name, table_name="answers")
    # batch mode: SQLite cannot drop a constraint in place.
    with op.batch_alter_table("answers") as batch:
        batch.add_column(sa.Column("headline", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.drop_constraint("uq_answers_response_id", type_="unique")
        batch.create_unique_constraint("uq_answers_response_id_question_id", ["response_id", "question_id"])
    # Answers stored before: the built-in flows' first question of each metric was the one asked
    # first, so the lowest id of each survey (or imported response) and metric is its headline.
    op.execute(
        sa.text(
            "UPDATE answers SET headline = :yes WHERE id IN ("
            " SELECT min(id) FROM answers WHERE metric IS NOT NULL AND score IS NOT NULL"
            " GROUP BY survey_id, response_id, metric)"
        ).bindparams(yes=True)
    )
    # The covering indexes hold the headline answers only: CSAT, NPS and CES read only those.
    # (Partial, not led by headline: see HEADLINE_ONLY in bot/store/tables.py.)
    for name, lead in REPORT_INDEXES.items():
        op.create_index(
            name,
            "answers",
            [*lead, *REPORT_COLUMNS, "headline"],
            sqlite_where=sa.text("headline = 1"),
            postgresql_where=sa.text("headline"),
        )
    op.create_index("ix_answers_report_question", "answers", ["question_id", *REPORT_COLUMNS])


def downgrade() -> None:
    op.drop_index("ix_answers_report_question", table_name="answers")
    for name in REPORT_INDEXES:
        op.drop_index(name, table_name="answers")
    with op.batch_alter_table("answers") as batch:
        batch.drop_constraint("uq_answers_response_id_question_id", type_="unique")
        batch.create_unique_constraint("uq_answers_response_id", ["response_id"])
        batch.drop_column("headline")
    for name, lead in REPORT_INDEXES.items():
        op.create_index(name, "answers", [*lead, *REPORT_COLUMNS])
