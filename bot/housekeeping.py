"""The daily clean-up: retention (RETENTION_DAYS_PII, RETENTION_DAYS_EVENTS) and stale logins.

Each batch is one short transaction of at most ``BATCH`` rows per table, and the loop yields
between batches, so answers arriving meanwhile wait for one batch at most (on SQLite, where
writers queue; on PostgreSQL they only meet the batch's row locks). The scheduler calls
``run_due`` for its ``housekeeping`` job; ``afterword housekeeping`` calls ``housekeeping``.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.lifecycle import JobKind, JobStatus
from bot.privacy import anonymise_older_than, prune
from bot.store.tables import jobs, login_failures, web_sessions

if TYPE_CHECKING:
    from bot.service import Service
    from bot.settings import Settings
    from bot.store.db import Database

BATCH = 1_000  # rows per table and statement
EVERY = timedelta(days=1)
# A run that finished less than this ago makes run_due do nothing: once a day, with an hour of
# slack for a job that was due a little later than the previous run finished.
_AGAIN_AFTER = EVERY - timedelta(hours=1)
LOGINS = "web_sessions_and_login_failures"


def cutoffs(settings: Settings, now: datetime) -> tuple[datetime | None, datetime | None]:
    """(PII cutoff, events cutoff) at ``now``; None where the setting is 0 (kept for ever).

    Finished jobs and inbound events hold provider ids, references to a message: they go at
    the shorter of the two limits.
    """
    pii = settings.retention_days_pii
    days = [d for d in (pii, settings.retention_days_events) if d]
    return (now - timedelta(days=pii) if pii else None, now - timedelta(days=min(days)) if days else None)


async def housekeeping(service: Service, *, dry_run: bool) -> dict[str, int]:
    """Anonymise and delete what is past its retention; how many rows of each kind (or would be)."""
    db, now = service.db, service.clock()
    pii, events = cutoffs(service.settings, now)
    counts: Counter[str] = Counter()
    if pii is not None:
        counts.update(await _batches(db, anonymise_older_than, pii, now=now, dry_run=dry_run))
    if events is not None:
        counts.update(await _batches(db, prune, events, dry_run=dry_run))
    counts[LOGINS] = await _logins(db, now, dry_run=dry_run)
    return {key: counts[key] for key in sorted(counts)}


async def run_due(service: Service) -> dict[str, int] | None:
    """Run housekeeping unless a ``housekeeping`` job finished within the last day; its counts.

    For the scheduler's daily ``housekeeping`` job: it calls this when the job is due, finishes
    the job with the counts as its result, and queues the next one ``EVERY`` later. None: a
    run finished less than a day ago (another worker's), nothing was done.
    """
    now = service.clock()
    async with service.db.read() as conn:
        last = (
            await conn.execute(
                sa.select(sa.func.max(jobs.c.done_at)).where(
                    jobs.c.kind == JobKind.HOUSEKEEPING, jobs.c.status == JobStatus.DONE
                )
            )
        ).scalar_one_or_none()
    if last is not None and now - last < _AGAIN_AFTER:
        return None
    return await housekeeping(service, dry_run=False)


async def _batches(
    db: Database, step: Callable[..., dict[str, int]], cutoff: datetime, **kwargs: Any
) -> Counter[str]:
    """``step`` in short transactions until a batch finds fewer than BATCH rows of every kind."""
    total: Counter[str] = Counter()
    if kwargs.get("dry_run"):
        async with db.read() as conn:
            total.update(await conn.run_sync(step, cutoff, BATCH, **kwargs))
        return total
    while True:
        done = await db.transact(step, cutoff, BATCH, **kwargs)
        total.update(done)
        if max(done.values(), default=0) < BATCH:
            return total
        await asyncio.sleep(0)  # let waiting answers take the write lock between batches


async def _logins(db: Database, now: datetime, *, dry_run: bool) -> int:
    """Expired dashboard sessions and sign-in failures past their window, by bot.web.auth.prune."""
    # The web room owns its sessions; imported here, once a day, rather than written twice.
    from bot.web import auth

    if not dry_run:
        return await auth.prune(db, now=now)
    async with db.read() as conn:
        return int(await conn.run_sync(_stale_logins, now, auth.FAILURE_WINDOW))


def _stale_logins(conn: Connection, now: datetime, window: timedelta) -> int:
    """What auth.prune would delete (its conditions), counted."""
    sessions = sa.select(sa.func.count()).select_from(web_sessions).where(web_sessions.c.expires_at <= now)
    failures = (
        sa.select(sa.func.count())
        .select_from(login_failures)
        .where(login_failures.c.failed_at <= now - window)
    )
    return int(conn.execute(sessions).scalar_one()) + int(conn.execute(failures).scalar_one())
