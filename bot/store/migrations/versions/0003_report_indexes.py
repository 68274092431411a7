"""Report indexes: covering ones for histograms, comments newest first, surveys by send time.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen here rather than imported: a migration must not change when tables.py does.
_COLUMNS = ["metric", "scale_min", "scale_max", "scale_best", "score", "answered_at"]
_INDEXES = {
    "ix_answers_report": [],
    "ix_answers_report_agent": ["agent"],
    "ix_answers_report_team": ["team"],
    "ix_answers_report_channel": ["channel"],
}


def upgrade() -> None:
    for name, lead in _INDEXES.items():
        op.create_index(name, "answers", [*lead, *_COLUMNS])
    # Only answers with a comment: "latest comments" reads a few rows, not the table.
    op.create_index(
        "ix_answers_comments",
        "answers",
        ["answered_at"],
        sqlite_where=sa.text("text IS NOT NULL"),
        postgresql_where=sa.text("text IS NOT NULL"),
    )
    op.create_index("ix_surveys_sent_at", "surveys", ["sent_at"])


def downgrade() -> None:
    op.drop_index("ix_surveys_sent_at", table_name="surveys")
    op.drop_index("ix_answers_comments", table_name="answers")
    for name in _INDEXES:
        op.drop_index(name, table_name="answers")
