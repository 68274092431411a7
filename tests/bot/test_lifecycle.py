"""One lifecycle: the transition tables, is_open, and the code and the database refusing other moves."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError

from bot import jobs as job_queries
from bot.lifecycle import (
    FINAL,
    JOB_TRANSITIONS,
    OPEN,
    SURVEY_TRANSITIONS,
    JobKind,
    JobStatus,
    SurveyStatus,
    can_move,
    has_expired,
    is_open,
)
from bot.store.db import Database
from bot.store.tables import answers, jobs, surveys
from bot.surveys import closing, moved

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
SURVEY_PAIRS = [(old, new) for old, new in itertools.permutations(SurveyStatus, 2)]
JOB_PAIRS = [(old, new) for old, new in itertools.permutations(JobStatus, 2)]


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database(make_url(db_url))
    yield database
    await database.dispose()


def _survey(n: int, status: str) -> dict[str, object]:
    return {
        "id": n,
        "token": f"t{n}",
        "flow_id": "support-csat",
        "flow_version": 1,
        "ticket": f"T-{n}",
        "channel": "sms",
        "language": "en",
        "status": status,
        "created_at": NOW,
        "state": {},
    }


def _job(n: int, status: str, kind: str = JobKind.SEND) -> dict[str, object]:
    return {"id": n, "kind": kind, "survey_id": None, "status": status, "due_at": NOW, "created_at": NOW}


def _insert(conn: Connection, table: sa.Table, rows: Sequence[dict[str, object]]) -> None:
    conn.execute(sa.insert(table), rows)


def _from_the_database(db: Database, exc: IntegrityError) -> bool:
    """Whether ``exc`` is SQLAlchemy's IntegrityError itself around the driver's: a CHECK or trigger refused.

    Raised inside ``transact`` (on SQLite by the standard sqlite3 driver in the writer thread) and
    passed on as it is, so nothing in the code between can have made or changed it.
    """
    return type(exc) is IntegrityError and isinstance(exc.orig, db.engine.dialect.loaded_dbapi.IntegrityError)


async def _status(db: Database, table: sa.Table, n: int) -> str:
    async with db.read() as conn:
        return str((await conn.execute(sa.select(table.c.status).where(table.c.id == n))).scalar_one())


def test_every_status_has_a_row_and_final_ones_move_nowhere() -> None:
    """Both tables name every status; only pending and active surveys may move, and only to another status."""
    assert set(SurveyStatus) == set(SURVEY_TRANSITIONS)
    assert set(JobStatus) == set(JOB_TRANSITIONS)
    assert set(SurveyStatus) - OPEN == FINAL
    assert all(not SURVEY_TRANSITIONS[status] for status in FINAL)
    assert all(status not in nexts for status, nexts in SURVEY_TRANSITIONS.items())
    assert {JobStatus.DONE, JobStatus.FAILED, JobStatus.SKIPPED} == {
        s for s, n in JOB_TRANSITIONS.items() if not n
    }


def test_can_move_follows_the_tables() -> None:
    """can_move says yes exactly for the pairs in the tables, for surveys and for jobs."""
    assert [can_move(o, n) for o, n in SURVEY_PAIRS] == [n in SURVEY_TRANSITIONS[o] for o, n in SURVEY_PAIRS]
    assert [can_move(o, n) for o, n in JOB_PAIRS] == [n in JOB_TRANSITIONS[o] for o, n in JOB_PAIRS]
    assert (True, False, False) == (
        can_move("pending", "active"),
        can_move("pending", "completed"),
        can_move("completed", "active"),
    )


def test_enum_values_are_the_stored_strings() -> None:
    """The values are the strings rows hold today, so stored rows stay valid."""
    assert {
        "pending", "active", "completed", "expired", "incomplete", "stopped",
        "failed", "no_answer", "skipped", "throttled", "unavailable",
    } == {str(s) for s in SurveyStatus}  # fmt: skip
    assert {"send", "reminder", "expire", "alert", "alert_comment", "reply", "housekeeping"} == {
        str(k) for k in JobKind
    }
    assert {"pending", "sending", "done", "failed", "skipped"} == {str(s) for s in JobStatus}


@pytest.mark.parametrize(
    ("status", "expires_at", "expected"),
    [
        (SurveyStatus.ACTIVE, None, True),
        (SurveyStatus.ACTIVE, NOW + timedelta(microseconds=1), True),
        (SurveyStatus.ACTIVE, NOW, False),  # expires at exactly now: closed
        (SurveyStatus.ACTIVE, NOW - timedelta(seconds=1), False),
        (SurveyStatus.PENDING, None, False),  # not sent yet: nothing to answer
        (SurveyStatus.COMPLETED, NOW + timedelta(days=1), False),
        (SurveyStatus.EXPIRED, None, False),
        ("active", None, True),
    ],
)
def test_is_open_at_its_edges(status: str, expires_at: datetime | None, expected: bool) -> None:
    """A survey is open while active and before its expiry; at the expiry instant it is not."""
    assert expected == is_open(status, expires_at, NOW)


def test_has_expired() -> None:
    """Expired by status, or active with its expiry at or before now; never a pending or completed one."""
    assert [True, True, False, False, False] == [
        has_expired(SurveyStatus.EXPIRED, None, NOW),
        has_expired(SurveyStatus.ACTIVE, NOW, NOW),
        has_expired(SurveyStatus.ACTIVE, None, NOW),
        has_expired(SurveyStatus.PENDING, NOW - timedelta(days=1), NOW),
        has_expired(SurveyStatus.COMPLETED, NOW - timedelta(days=1), NOW),
    ]


def test_closing_refuses_a_status_that_closes_nothing() -> None:
    """closing() with pending, active or an unknown status is a ValueError naming the allowed ones."""
    for status in ("active", "pending", "closed"):
        with pytest.raises(ValueError, match=r"status: .* does not close a survey; use one of completed"):
            closing(1, status)


async def test_the_database_refuses_every_forbidden_survey_move(db: Database) -> None:
    """A raw UPDATE of surveys.status succeeds for each allowed pair and fails for every other."""
    await db.transact(_insert, surveys, [_survey(i, old) for i, (old, _) in enumerate(SURVEY_PAIRS, 1)])
    refused, named = [], set()
    for i, (old, new) in enumerate(SURVEY_PAIRS, 1):
        try:
            await db.run(sa.update(surveys).where(surveys.c.id == i).values(status=new))
        except IntegrityError as exc:
            refused.append((old, new))
            named.add(("surveys.status may not move" in str(exc), _from_the_database(db, exc)))
    assert [(o, n) for o, n in SURVEY_PAIRS if n not in SURVEY_TRANSITIONS[o]] == refused
    assert {(True, True)} == named
    assert [n if n in SURVEY_TRANSITIONS[o] else o for o, n in SURVEY_PAIRS] == [
        await _status(db, surveys, i) for i in range(1, len(SURVEY_PAIRS) + 1)
    ]


async def test_the_code_moves_only_allowed_surveys(db: Database) -> None:
    """moved() changes each allowed pair and leaves every forbidden one as it was, without an error."""
    await db.transact(_insert, surveys, [_survey(i, old) for i, (old, _) in enumerate(SURVEY_PAIRS, 1)])
    changed = []
    for i, (_, new) in enumerate(SURVEY_PAIRS, 1):
        changed.append(await db.run(moved(new, surveys.c.id == i)))
    assert [int(n in SURVEY_TRANSITIONS[o]) for o, n in SURVEY_PAIRS] == changed
    assert [n if n in SURVEY_TRANSITIONS[o] else o for o, n in SURVEY_PAIRS] == [
        await _status(db, surveys, i) for i in range(1, len(SURVEY_PAIRS) + 1)
    ]


async def test_keeping_a_status_is_no_move(db: Database) -> None:
    """An UPDATE that writes the status a survey already has (with other columns) passes, even a final one."""

    def keep(conn: Connection) -> None:
        _insert(conn, surveys, [_survey(1, SurveyStatus.COMPLETED)])
        conn.execute(
            sa.update(surveys).where(surveys.c.id == 1).values(status=SurveyStatus.COMPLETED, channel_ref="7")
        )

    await db.transact(keep)
    assert "completed" == await _status(db, surveys, 1)


async def test_the_database_refuses_every_forbidden_job_move(db: Database) -> None:
    """A raw UPDATE of jobs.status succeeds for each allowed pair and fails for every other."""
    await db.transact(_insert, jobs, [_job(i, old) for i, (old, _) in enumerate(JOB_PAIRS, 1)])
    refused, named = [], set()
    for i, (old, new) in enumerate(JOB_PAIRS, 1):
        try:
            await db.run(sa.update(jobs).where(jobs.c.id == i).values(status=new))
        except IntegrityError as exc:
            refused.append((old, new))
            named.add(("jobs.status may not move" in str(exc), _from_the_database(db, exc)))
    assert [(o, n) for o, n in JOB_PAIRS if n not in JOB_TRANSITIONS[o]] == refused
    assert {(True, True)} == named


async def test_a_finished_job_is_not_finished_again(db: Database) -> None:
    """jobs.finished() on a job that is done already changes nothing (no error, the first result kept)."""

    def finish_done(conn: Connection) -> int:
        _insert(conn, jobs, [_job(1, JobStatus.DONE)])
        job = job_queries.Job(1, JobKind.SEND, None, {}, 1, NOW)
        return conn.execute(
            job_queries.finished(job, now=NOW, status=JobStatus.FAILED, error="late")
        ).rowcount

    assert (0, "done") == (await db.transact(finish_done), await _status(db, jobs, 1))


@pytest.mark.parametrize(
    ("table", "row", "column"),
    [
        (surveys, _survey(1, "closed"), "status"),
        (jobs, _job(1, "waiting"), "status"),
        (jobs, _job(1, "pending", "fax"), "kind"),
    ],
)
async def test_a_value_outside_the_enum_is_refused(
    db: Database, table: sa.Table, row: dict[str, object], column: str
) -> None:
    """The CHECK (a trigger of the same name on SQLite) refuses a status or kind that is no enum value."""
    with pytest.raises(IntegrityError, match=f"ck_{table.name}_{column}") as refused:
        await db.transact(_insert, table, [row])
    assert _from_the_database(db, refused.value)


async def test_an_update_to_a_value_outside_the_enum_is_refused(db: Database) -> None:
    """Changing a job's kind to one that is no JobKind is refused too."""
    await db.transact(_insert, jobs, [_job(1, JobStatus.PENDING)])
    with pytest.raises(IntegrityError, match="ck_jobs_kind") as refused:
        await db.run(sa.update(jobs).where(jobs.c.id == 1).values(kind="fax"))
    assert _from_the_database(db, refused.value)


async def test_upgrade_keeps_rows_of_every_status(empty_db_url: str) -> None:
    """A database at 0010 with surveys and jobs of every status and kind upgrades with its rows and answers."""
    db = Database(make_url(empty_db_url))
    try:
        await db.upgrade("0010")

        def every_status(conn: Connection) -> None:
            _insert(conn, surveys, [_survey(i, s) for i, s in enumerate(SurveyStatus, 1)])
            _insert(
                conn,
                jobs,
                [
                    {**_job(i, status, kind), "survey_id": 1}
                    for i, (status, kind) in enumerate(itertools.product(JobStatus, JobKind), 1)
                ],
            )
            _insert(
                conn,
                answers,
                [
                    {
                        "survey_id": i,
                        "question_id": "q",
                        "answered_at": NOW,
                        "channel": "sms",
                        "flow_id": "f",
                        "language": "en",
                    }
                    for i in range(1, len(SurveyStatus) + 1)
                ],
            )

        await db.transact(every_status)
        await db.upgrade()
        async with db.read() as conn:
            kept = (await conn.execute(sa.select(surveys.c.status).order_by(surveys.c.id))).scalars().all()
            job_rows = (await conn.execute(sa.select(jobs.c.status, jobs.c.kind).order_by(jobs.c.id))).all()
            answered = (await conn.execute(sa.select(sa.func.count()).select_from(answers))).scalar_one()
        assert [str(s) for s in SurveyStatus] == kept
        assert [(str(s), str(k)) for s, k in itertools.product(JobStatus, JobKind)] == [
            tuple(r) for r in job_rows
        ]
        assert len(SurveyStatus) == answered
        with pytest.raises(IntegrityError, match=r"surveys\.status may not move") as refused:
            await db.run(sa.update(surveys).where(surveys.c.id == 3).values(status="active"))
        assert _from_the_database(db, refused.value)
    finally:
        await db.dispose()


async def test_upgrade_names_a_status_no_release_wrote(empty_db_url: str) -> None:
    """A row with an unknown status stops the upgrade, naming the value and the allowed ones; nothing changes."""
    db = Database(make_url(empty_db_url))
    try:
        await db.upgrade("0010")
        await db.transact(_insert, surveys, [_survey(1, "archived")])
        with pytest.raises(
            RuntimeError, match=r"surveys.status holds 'archived', allowed are pending, active"
        ):
            await db.upgrade()
        assert "0010" == await db.revision()
    finally:
        await db.dispose()
