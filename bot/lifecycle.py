"""The survey lifecycle: statuses, job kinds and job statuses, and the moves between statuses.

One table per status column says which status may follow which (``SURVEY_TRANSITIONS``,
``JOB_TRANSITIONS``). The code moves a row only from a status that may move to the new
one (`survey_sources`, `job_sources` in the UPDATE's WHERE), and the database refuses any
other change too: CHECK constraints name the allowed values, and a trigger, generated here
from the same tables (`transition_triggers`), refuses a forbidden move (migration 0011).
Statuses that no status follows are final. Keeping a status (an UPDATE that writes the
status a row already has) is not a move and always allowed.

`is_open` is the one rule for "may this survey be answered at time t", used by every
channel, the scheduler and the link pages.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal


class SurveyStatus(enum.StrEnum):
    """A survey's status (surveys.status); the values are the strings stored."""

    PENDING = "pending"  # queued for a send at send_at (bot.scheduler)
    ACTIVE = "active"  # sent or opened: answers are taken until expires_at
    COMPLETED = "completed"  # every question answered
    EXPIRED = "expired"  # not finished by expires_at
    INCOMPLETE = "incomplete"  # a newer survey to the contact closed it, or the call ended early
    STOPPED = "stopped"  # the customer said stop (or opted out)
    FAILED = "failed"  # the provider refused the send, or it failed after every attempt
    NO_ANSWER = "no_answer"  # a call nobody (or a machine) answered
    SKIPPED = "skipped"  # never sent: the contact had opted out
    THROTTLED = "throttled"  # never sent: the address was surveyed within THROTTLE_DAYS
    UNAVAILABLE = "unavailable"  # its flow version can no longer be served


class JobKind(enum.StrEnum):
    """What a job does (jobs.kind)."""

    SEND = "send"  # a survey's first send (bot.scheduler)
    REMINDER = "reminder"  # its one reminder
    EXPIRE = "expire"  # close it as expired at expires_at
    ALERT = "alert"  # a detractor alert to the staff chat (bot.alerts)
    ALERT_COMMENT = "alert_comment"  # the detractor's comment, as a reply to the alert
    REPLY = "reply"  # what an answer asks to show next (the outbox: bot.inbound, bot.scheduler)
    HOUSEKEEPING = "housekeeping"  # the daily retention and clean-up run


class JobStatus(enum.StrEnum):
    """Where a job stands (jobs.status)."""

    PENDING = "pending"  # due at due_at, to be claimed
    SENDING = "sending"  # on its way to the provider: never claimed again, only settled
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


S = SurveyStatus
J = JobStatus

# Not closed yet: a pending or active survey still counts against the open cap and may move.
OPEN: frozenset[SurveyStatus] = frozenset({S.PENDING, S.ACTIVE})
# Why a survey closed without being sent or answered, as every closer may record it.
_CLOSED_FROM_OUTSIDE = frozenset({S.INCOMPLETE, S.STOPPED, S.FAILED, S.SKIPPED, S.THROTTLED, S.UNAVAILABLE})

# Which status may follow which, as the code moves them (and the database enforces):
# pending → active when the scheduler sends it (bot.scheduler); any open survey is closed by
# a newer one (incomplete), an opt-out (stopped), a refused or failed send (failed), the send
# rules (skipped, throttled), or a flow version gone (unavailable). Only an active survey is
# answered (completed, stopped), expires, or ends with a call (no_answer, incomplete).
SURVEY_TRANSITIONS: Mapping[SurveyStatus, frozenset[SurveyStatus]] = {
    S.PENDING: frozenset({S.ACTIVE}) | _CLOSED_FROM_OUTSIDE,
    S.ACTIVE: frozenset({S.COMPLETED, S.EXPIRED, S.NO_ANSWER}) | _CLOSED_FROM_OUTSIDE,
    **{status: frozenset() for status in S if status not in OPEN},
}

# pending → sending (taken for a send) → done | failed | skipped; back to pending when a send
# is retried or postponed; a job that is not a send ends straight from pending.
JOB_TRANSITIONS: Mapping[JobStatus, frozenset[JobStatus]] = {
    J.PENDING: frozenset({J.SENDING, J.DONE, J.FAILED, J.SKIPPED}),
    J.SENDING: frozenset({J.PENDING, J.DONE, J.FAILED, J.SKIPPED}),
    J.DONE: frozenset(),
    J.FAILED: frozenset(),
    J.SKIPPED: frozenset(),
}

FINAL: frozenset[SurveyStatus] = frozenset(
    status for status, nexts in SURVEY_TRANSITIONS.items() if not nexts
)


def can_move(old: SurveyStatus | JobStatus | str, new: SurveyStatus | JobStatus | str) -> bool:
    """Whether a survey (or, given JobStatus values, a job) may move from ``old`` to ``new``.

    Keeping a status is no move: ``can_move(s, s)`` is False. A string is read as a survey status.
    """
    if isinstance(old, JobStatus) or isinstance(new, JobStatus):
        return JobStatus(new) in JOB_TRANSITIONS[JobStatus(old)]
    return SurveyStatus(new) in SURVEY_TRANSITIONS[SurveyStatus(old)]


def survey_sources(new: SurveyStatus) -> frozenset[SurveyStatus]:
    """The statuses a survey may move to ``new`` from: the WHERE of an UPDATE that moves it."""
    return frozenset(old for old, nexts in SURVEY_TRANSITIONS.items() if new in nexts)


def job_sources(new: JobStatus) -> frozenset[JobStatus]:
    """The statuses a job may move to ``new`` from."""
    return frozenset(old for old, nexts in JOB_TRANSITIONS.items() if new in nexts)


def is_open(status: SurveyStatus | str, expires_at: datetime | None, now: datetime) -> bool:
    """Whether a survey may be answered at ``now``: active, and ``now`` before its expiry (if any)."""
    return status == S.ACTIVE and (expires_at is None or now < expires_at)


def has_expired(status: SurveyStatus | str, expires_at: datetime | None, now: datetime) -> bool:
    """Whether a survey is over by time: expired, or active with its expiry at or before ``now``."""
    return status == S.EXPIRED or (status == S.ACTIVE and not is_open(status, expires_at, now))


# The columns the database checks: (table, column, the enum of its values).
CHECKED: tuple[tuple[str, str, type[enum.StrEnum]], ...] = (
    ("surveys", "status", SurveyStatus),
    ("jobs", "kind", JobKind),
    ("jobs", "status", JobStatus),
)
# The database's copy of the transition tables, per table's status column.
_TRANSITION_COLUMNS: tuple[tuple[str, Mapping[Any, frozenset[Any]]], ...] = (
    ("surveys", SURVEY_TRANSITIONS),
    ("jobs", JOB_TRANSITIONS),
)
Dialect = Literal["sqlite", "postgresql"]


def one_of(column: str, values: Iterable[str]) -> str:
    """The condition of a CHECK constraint: ``column`` holds one of the values (an enum's)."""
    quoted = ", ".join(f"'{value}'" for value in values)
    return f"{column} IN ({quoted})"


def _pairs(transitions: Mapping[Any, frozenset[Any]]) -> str:
    """The allowed moves as SQL string literals 'old>new', for an IN list."""
    return ", ".join(f"'{old}>{new}'" for old, nexts in sorted(transitions.items()) for new in sorted(nexts))


def value_triggers() -> list[str]:
    """SQLite's stand-in for the CHECK constraints: triggers refusing a value outside the enum.

    A CHECK cannot be added to a SQLite table in place, and rebuilding ``surveys`` (Alembic's
    batch mode) drops the old table, which with foreign keys on deletes every answer and job
    through ON DELETE CASCADE; PRAGMA foreign_keys cannot change inside the migration's
    transaction. The triggers refuse what the constraint would, with the constraint's name.
    """
    ddl: list[str] = []
    for table, column, values in CHECKED:
        name = f"ck_{table}_{column}"
        refuse = f"BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: {name}'); END"
        when = f"FOR EACH ROW WHEN NOT (NEW.{one_of(column, values)}) {refuse}"
        ddl.append(f"CREATE TRIGGER {name}_insert BEFORE INSERT ON {table} {when}")
        ddl.append(f"CREATE TRIGGER {name}_update BEFORE UPDATE OF {column} ON {table} {when}")
    return ddl


def transition_triggers(dialect: Dialect) -> list[str]:
    """The DDL of the triggers that refuse a status move the tables above do not allow.

    One BEFORE UPDATE trigger per table: on SQLite with RAISE(ABORT), on PostgreSQL with a
    PL/pgSQL function raising check_violation. Run by migration 0011; a change to the tables
    needs a migration that runs `drop_triggers` and then this again.
    """
    ddl: list[str] = []
    for table, transitions in _TRANSITION_COLUMNS:
        moved = f"(OLD.status || '>' || NEW.status) NOT IN ({_pairs(transitions)})"
        name = f"tr_{table}_status_move"
        if dialect == "sqlite":
            message = f"{table}.status may not move so (allowed moves: bot.lifecycle)"
            ddl.append(
                f"CREATE TRIGGER {name} BEFORE UPDATE OF status ON {table} FOR EACH ROW"
                f" WHEN NEW.status <> OLD.status AND {moved}"
                f" BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )
            continue
        ddl.append(
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            f"BEGIN\n"
            f"  IF NEW.status IS DISTINCT FROM OLD.status AND {moved} THEN\n"
            f"    RAISE EXCEPTION '{table}.status may not move from % to % (allowed moves: bot.lifecycle)',"
            f" OLD.status, NEW.status USING ERRCODE = 'check_violation';\n"
            f"  END IF;\n"
            f"  RETURN NEW;\n"
            f"END $$"
        )
        ddl.append(
            f"CREATE TRIGGER {name} BEFORE UPDATE OF status ON {table} FOR EACH ROW EXECUTE PROCEDURE {name}()"
        )
    return ddl


def drop_triggers(dialect: Dialect) -> list[str]:
    """The DDL that removes what `transition_triggers` (and on SQLite `value_triggers`) made."""
    ddl: list[str] = []
    for table, _ in _TRANSITION_COLUMNS:
        name = f"tr_{table}_status_move"
        if dialect == "sqlite":
            ddl.append(f"DROP TRIGGER IF EXISTS {name}")
        else:
            ddl += [f"DROP TRIGGER IF EXISTS {name} ON {table}", f"DROP FUNCTION IF EXISTS {name}()"]
    if dialect == "sqlite":
        for table, column, _ in CHECKED:
            ddl += [f"DROP TRIGGER IF EXISTS ck_{table}_{column}_{when}" for when in ("insert", "update")]
    return ddl
