"""Two job kinds: ``reply`` (the outbox of an answer's next question) and ``housekeeping``.

jobs.kind holds one of bot.lifecycle.JobKind's values (migration 0011): a CHECK constraint
on PostgreSQL, triggers on SQLite. Both are dropped and made again from the enum as it is
now; the values of 0011 are a subset, so no existing row is refused.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from bot.lifecycle import JobKind, one_of

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

NAME = "ck_jobs_kind"
BEFORE = [kind for kind in JobKind if kind not in (JobKind.REPLY, JobKind.HOUSEKEEPING)]


def upgrade() -> None:
    _allow(list(JobKind))


def downgrade() -> None:
    op.execute(f"DELETE FROM jobs WHERE kind IN ('{JobKind.REPLY}', '{JobKind.HOUSEKEEPING}')")  # noqa: S608
    _allow(BEFORE)


def _allow(kinds: Sequence[str]) -> None:
    condition = one_of("kind", kinds)
    if op.get_bind().dialect.name == "sqlite":
        refuse = f"BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: {NAME}'); END"
        when = f"FOR EACH ROW WHEN NOT (NEW.{condition}) {refuse}"
        for event, clause in (("insert", "INSERT"), ("update", "UPDATE OF kind")):
            op.execute(f"DROP TRIGGER IF EXISTS {NAME}_{event}")
            op.execute(f"CREATE TRIGGER {NAME}_{event} BEFORE {clause} ON jobs {when}")
        return
    op.drop_constraint(op.f(NAME), "jobs", type_="check")
    op.create_check_constraint(op.f(NAME), "jobs", condition)
