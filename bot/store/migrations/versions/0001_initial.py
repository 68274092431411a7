"""Initial schema: contacts, surveys, answers, inbound events.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.tables import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("address", sa.String(255), nullable=False),
        sa.Column("language", sa.String(8)),
        sa.Column("time_zone", sa.String(64)),
        sa.Column("opted_out_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("channel", "address", name="uq_contacts_channel_address"),
    )
    op.create_table(
        "surveys",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("flow_version", sa.Integer, nullable=False),
        sa.Column("ticket", sa.String(128)),
        sa.Column("agent", sa.String(128)),
        sa.Column("team", sa.String(128)),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column(
            "contact_id",
            sa.Integer,
            sa.ForeignKey("contacts.id", ondelete="SET NULL", name="fk_surveys_contact_id_contacts"),
        ),
        sa.Column("language", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("send_at", UTCDateTime()),
        sa.Column("sent_at", UTCDateTime()),
        sa.Column("completed_at", UTCDateTime()),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("meta", sa.JSON),
        sa.UniqueConstraint("token", name="uq_surveys_token"),
        sa.UniqueConstraint("ticket", "flow_id", name="uq_surveys_ticket_flow_id"),
    )
    op.create_index("ix_surveys_contact_id_status", "surveys", ["contact_id", "status"])
    op.create_index("ix_surveys_status_expires_at", "surveys", ["status", "expires_at"])
    op.create_table(
        "answers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "survey_id",
            sa.Integer,
            sa.ForeignKey("surveys.id", ondelete="CASCADE", name="fk_answers_survey_id_surveys"),
            nullable=False,
        ),
        sa.Column("question_id", sa.String(64), nullable=False),
        sa.Column("metric", sa.String(8)),
        sa.Column("score", sa.Integer),
        sa.Column("text", sa.Text),
        sa.Column("answered_at", UTCDateTime(), nullable=False),
        sa.Column("ticket", sa.String(128)),
        sa.Column("agent", sa.String(128)),
        sa.Column("team", sa.String(128)),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("language", sa.String(8), nullable=False),
        sa.UniqueConstraint("survey_id", "question_id", name="uq_answers_survey_id_question_id"),
    )
    op.create_index("ix_answers_metric_answered_at", "answers", ["metric", "answered_at"])
    op.create_table(
        "inbound_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("event_id", sa.String(255), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("provider", "event_id", name="uq_inbound_events_provider_event_id"),
    )


def downgrade() -> None:
    op.drop_table("inbound_events")
    op.drop_index("ix_answers_metric_answered_at", table_name="answers")
    op.drop_table("answers")
    op.drop_index("ix_surveys_status_expires_at", table_name="surveys")
    op.drop_index("ix_surveys_contact_id_status", table_name="surveys")
    op.drop_table("surveys")
    op.drop_table("contacts")
