"""Durable jobs: work queued in a transaction and done later by whichever process claims it.

A job is claimed by taking a lease (``locked_until``): on PostgreSQL with
``FOR UPDATE SKIP LOCKED``, so several workers never take the same row; on SQLite the
write lock serialises the claim. A worker that dies mid-job leaves the lease to run out,
and the job is taken again.

The lease a claim took also fences it: the statements built with ``held=True`` change the
row only while it still has the status and ``locked_until`` the claimer saw. A worker whose
lease ran out and whose job was claimed again by another therefore changes nothing. The
scheduler moves a send to ``sending`` (`taken`) before it reaches the provider; a job left
there is never claimed again, only settled (bot.scheduler).

Statuses and their moves: bot.lifecycle (JobStatus, JOB_TRANSITIONS). pending → (sending →)
done | failed | skipped; an UPDATE here moves a job only from a status that may move so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.lifecycle import JOB_TRANSITIONS, JobKind, JobStatus, job_sources
from bot.store.db import Database
from bot.store.tables import jobs

LEASE = timedelta(minutes=2)  # longer than any single job may take
MAX_ATTEMPTS = 8
_FIRST_RETRY = timedelta(seconds=5)
_LONGEST_RETRY = timedelta(hours=1)


@dataclass(frozen=True)
class Job:
    """A claimed job."""

    id: int
    kind: JobKind
    survey_id: int | None
    payload: Mapping[str, Any]
    attempts: int  # including this one
    created_at: datetime
    status: JobStatus = JobStatus.PENDING  # the status this worker holds it in
    lease: datetime | None = None  # the locked_until this worker set: its fencing token


def job(
    kind: JobKind,
    *,
    now: datetime,
    survey_id: int | None = None,
    payload: Mapping[str, Any] | None = None,
    due_at: datetime | None = None,
) -> sa.Insert:
    """The INSERT that queues a job, in the caller's transaction: the job exists exactly when it commits."""
    return sa.insert(jobs).values(
        kind=kind,
        survey_id=survey_id,
        payload=dict(payload) if payload else None,
        status=JobStatus.PENDING,
        due_at=due_at or now,
        created_at=now,
    )


async def claim(db: Database, kinds: Sequence[JobKind], *, now: datetime, limit: int = 20) -> list[Job]:
    """Take up to ``limit`` due jobs of ``kinds``, oldest first, leasing them for ``LEASE``."""
    j = jobs.c
    query = (
        sa.select(j.id, j.kind, j.survey_id, j.payload, j.attempts, j.created_at)
        .where(
            j.status == JobStatus.PENDING,
            j.kind.in_(kinds),
            j.due_at <= now,
            sa.or_(j.locked_until.is_(None), j.locked_until <= now),
        )
        .order_by(j.due_at, j.id)
        .limit(limit)
    )
    if not db.is_sqlite:
        query = query.with_for_update(skip_locked=True)
    return await db.transact(_claim, query, now)


def _claim(conn: Connection, query: sa.Select[Any], now: datetime) -> list[Job]:
    rows = conn.execute(query).all()
    if not rows:
        return []
    conn.execute(
        sa.update(jobs)
        .where(jobs.c.id.in_([row.id for row in rows]))
        .values(locked_until=now + LEASE, attempts=jobs.c.attempts + 1)
    )
    return [
        Job(
            row.id,
            JobKind(row.kind),
            row.survey_id,
            row.payload or {},
            row.attempts + 1,
            row.created_at,
            lease=now + LEASE,
        )
        for row in rows
    ]


def taken(job: Job, *, now: datetime) -> tuple[sa.Update, Job]:
    """The UPDATE that moves a claimed job to ``sending`` with a fresh lease, and the job as then held.

    Only the claimer still holding its lease changes the row; run it in the transaction that
    decides the send and check that its rowcount is 1, else the job is someone else's.
    """
    held = replace(job, status=JobStatus.SENDING, lease=now + LEASE)
    update = (
        sa.update(jobs)
        .where(jobs.c.id == job.id, *_holding(job), _may_become(JobStatus.SENDING))
        .values(status=held.status, locked_until=held.lease)
    )
    return update, held


def _holding(job: Job) -> list[sa.ColumnElement[bool]]:
    """The conditions under which ``job``'s row is still as its worker holds it."""
    lease = jobs.c.locked_until.is_(None) if job.lease is None else jobs.c.locked_until == job.lease
    return [jobs.c.status == job.status, lease]


def stalled(*, now: datetime, limit: int, skip_locked: bool) -> sa.Select[Any]:
    """Jobs left in ``sending`` whose lease ran out: their worker stopped during a send.

    ``skip_locked`` (PostgreSQL) locks the rows taken and passes over those another worker holds.
    """
    j = jobs.c
    query = (
        sa.select(
            j.id, j.kind, j.survey_id, j.payload, j.attempts, j.created_at, j.locked_until, j.last_error
        )
        .where(j.status == JobStatus.SENDING, j.locked_until <= now)
        .order_by(j.locked_until, j.id)
        .limit(limit)
    )
    return query.with_for_update(skip_locked=True) if skip_locked else query


def finished(
    job: Job,
    *,
    now: datetime,
    status: JobStatus = JobStatus.DONE,
    result: Mapping[str, Any] | None = None,
    error: str | None = None,
    held: bool = False,
) -> sa.Update:
    """The UPDATE that records a job's end, for a caller's own (async or plain) connection.

    With ``held``, only while the row is as this worker holds it (its rowcount says whether);
    never a job that has ended already.
    """
    return (
        sa.update(jobs)
        .where(jobs.c.id == job.id, *(_holding(job) if held else ()), _may_become(status))
        .values(
            status=status,
            done_at=now,
            locked_until=None,
            result=dict(result) if result else None,
            last_error=error,
        )
    )


def delivered(job_id: int, *, now: datetime, result: Mapping[str, Any]) -> sa.Update:
    """The UPDATE that ends an outbox `reply` job its channel sent right after the commit.

    Only while it is still pending: once the scheduler has taken it (the channel's send took
    longer than inbound.OUTBOX_GRACE), the scheduler's own send decides; rowcount says which.
    """
    return (
        sa.update(jobs)
        .where(jobs.c.id == job_id, jobs.c.status == JobStatus.PENDING)
        .values(status=JobStatus.DONE, done_at=now, result=dict(result))
    )


async def retry_later(db: Database, job: Job, *, now: datetime, error: str) -> bool:
    """Put a failed attempt back with exponential backoff; after ``MAX_ATTEMPTS``, mark it failed.

    Returns whether the job will be tried again.
    """
    if job.attempts >= MAX_ATTEMPTS:
        await db.run(finished(job, now=now, status=JobStatus.FAILED, error=error))
        return False
    await db.run(retried(job, now=now, error=error))
    return True


def retried(
    job: Job, *, now: datetime, error: str, held: bool = False, wait: timedelta | None = None
) -> sa.Update:
    """The UPDATE that puts a failed attempt back, pending, after ``wait`` (what the provider
    asked for), else after a wait that doubles per attempt (5 s, 10 s, … at most an hour).

    The caller checks ``MAX_ATTEMPTS`` first. With ``held``, only while the row is as this
    worker holds it.
    """
    delay = wait if wait is not None else min(_FIRST_RETRY * 2 ** (job.attempts - 1), _LONGEST_RETRY)
    return (
        sa.update(jobs)
        .where(jobs.c.id == job.id, *(_holding(job) if held else ()), _may_become(JobStatus.PENDING))
        .values(status=JobStatus.PENDING, due_at=now + delay, locked_until=None, last_error=error)
    )


def noted(job: Job, *, error: str) -> sa.Update:
    """The UPDATE that keeps ``error`` as the job's last_error, only while its worker still holds it."""
    return sa.update(jobs).where(jobs.c.id == job.id, *_holding(job)).values(last_error=error)


async def ended(conn: AsyncConnection, survey_id: int, kind: JobKind) -> Any:
    """The survey's newest job of ``kind`` that was done or failed: its status, result and last_error."""
    return (
        await conn.execute(
            sa.select(jobs.c.status, jobs.c.result, jobs.c.last_error)
            .where(
                jobs.c.survey_id == survey_id,
                jobs.c.kind == kind,
                jobs.c.status.in_([JobStatus.DONE, JobStatus.FAILED]),
            )
            .order_by(jobs.c.id.desc())
            .limit(1)
        )
    ).one_or_none()


def postponed(job: Job, *, due_at: datetime) -> sa.Update:
    """The UPDATE that puts a job back, pending and due later, for a caller's own connection."""
    return (
        sa.update(jobs)
        .where(jobs.c.id == job.id, _may_become(JobStatus.PENDING))
        .values(status=JobStatus.PENDING, due_at=due_at, locked_until=None, attempts=jobs.c.attempts - 1)
    )


def _may_become(status: JobStatus) -> sa.ColumnElement[bool]:
    """The job's status may move to ``status`` (bot.lifecycle.JOB_TRANSITIONS), or is it and not final."""
    staying = {status} if JOB_TRANSITIONS[status] else set()
    return jobs.c.status.in_(sorted(job_sources(status) | staying))
