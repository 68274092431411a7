"""One lifecycle: statuses and job kinds hold only bot.lifecycle's values, and move only as it allows.

The statuses were bare strings spread over many modules, with no constraint: any string
could be stored, and any status could follow any other (an UPDATE without a WHERE on the
status could reopen a closed survey). Now the database refuses both, by rules generated
from the Python tables in bot.lifecycle:

- surveys.status, jobs.kind and jobs.status hold one of their enum's values: named CHECK
  constraints on PostgreSQL; on SQLite triggers with the same names, since rebuilding
  ``surveys`` to add a CHECK would delete every answer and job through ON DELETE CASCADE
  (see bot.lifecycle.value_triggers);
- a BEFORE UPDATE trigger per table (PL/pgSQL on PostgreSQL, RAISE(ABORT) on SQLite) refuses
  a status move that SURVEY_TRANSITIONS or JOB_TRANSITIONS does not allow.

Rows stored before keep their statuses: every value written so far is one of the enum's;
a database holding another is refused with the values named, before anything changes.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

import enum

import sqlalchemy as sa
from alembic import op

from bot.lifecycle import CHECKED, drop_triggers, one_of, transition_triggers, value_triggers

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    conn = op.get_bind()
    for table, column, values in CHECKED:
        _require_known(conn, table, column, values)
    if conn.dialect.name == "sqlite":
        for ddl in [*value_triggers(), *transition_triggers("sqlite")]:
            op.execute(ddl)
        return
    for table, column, values in CHECKED:
        op.create_check_constraint(op.f(f"ck_{table}_{column}"), table, one_of(column, values))
    for ddl in transition_triggers("postgresql"):
        op.execute(ddl)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for ddl in drop_triggers("sqlite" if sqlite else "postgresql"):
        op.execute(ddl)
    if not sqlite:
        for table, column, _ in CHECKED:
            op.drop_constraint(op.f(f"ck_{table}_{column}"), table, type_="check")


def _require_known(conn: sa.Connection, table: str, column: str, values: type[enum.StrEnum]) -> None:
    """Refuse, naming them, values the new rules would refuse (no release wrote any)."""
    query = f"SELECT DISTINCT {column} FROM {table} WHERE NOT ({one_of(column, values)})"  # noqa: S608
    unknown = conn.execute(sa.text(query)).scalars().all()
    if unknown:
        raise RuntimeError(
            f"{table}.{column} holds {', '.join(map(repr, unknown))}, allowed are {', '.join(values)};"
            " correct those rows, then run `afterword db upgrade` again"
        )
