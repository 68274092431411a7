"""Flows are versioned: every flow definition served is kept, keyed by (flow_id, version).

A survey was interpreted with the flow file as it is now, so inserting, removing or
reordering a question while surveys were open filed the next answers under other questions.
A survey is now bound to the flow version it started with (surveys.flow_id, flow_version):
the service records each loaded flow's definition here, and an open survey is answered
with its own version's definition, even after the file changed. ``digest`` (SHA-256 of the
canonical JSON of the definition) tells a file changed without its ``version`` being raised.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from bot.store.tables import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "flow_versions",
        sa.Column("flow_id", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("first_seen_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("flow_id", "version", name="pk_flow_versions"),
    )


def downgrade() -> None:
    op.drop_table("flow_versions")
