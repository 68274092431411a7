"""The scheduler: due jobs (send, reminder, expire) done by whichever process claims them.

It runs inside `afterword serve` and alone as `afterword worker`. Jobs are claimed with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL (bot.jobs), so any number of processes share the
work and none sends a survey twice. Before each send the rules apply, in this order: an
opted-out contact is skipped; a contact surveyed within THROTTLE_DAYS is throttled; a send
due in the recipient's quiet hours is postponed to the first allowed minute.

A claimed batch is done ``CONCURRENT_JOBS`` at a time, the jobs of one address one after
another, and the send limiters set the pace. A send costs two transactions, written as plain
SQLAlchemy for ``Database.transact``: one applies the rules and opens the survey, one records
the send.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from aiolimiter import AsyncLimiter
from sqlalchemy.engine import Connection

from bot import jobs
from bot.channels.base import Channel
from bot.errors import ContactOptedOut, DeliveryFailed
from bot.phones import mask, time_zone
from bot.quiet_hours import next_allowed, zone_or_default
from bot.service import Service
from bot.surveys import OPEN, asking, close_survey, closing
from bot.tables import contacts, surveys
from flows import engine

log = logging.getLogger(__name__)

KINDS = ("send", "reminder", "expire")
BATCH = 50
# Jobs in flight at once. A send mostly waits: for the limiters, the provider, the database.
# Eight overlap enough of that to keep Telegram's 30/s busy (a send takes 20–50 ms of its own),
# so the limiters, not this number, set the pace; more would only queue more writers behind
# SQLite's one and hold more pooled connections on PostgreSQL.
CONCURRENT_JOBS = 8
PHONE_CHANNELS = frozenset({"sms", "whatsapp", "voice"})

_SURVEY = (
    sa.select(
        surveys.c.id,
        surveys.c.status,
        surveys.c.channel,
        surveys.c.flow_id,
        surveys.c.sent_at,
        surveys.c.state,
        surveys.c.contact_id,
        contacts.c.address,
        contacts.c.time_zone,
        contacts.c.opted_out_at,
    )
    .join(contacts, contacts.c.id == surveys.c.contact_id)
    .where(surveys.c.id == sa.bindparam("survey_id"))
)
# Another survey sent to the address (on any channel) since then; ix_contacts_address finds it.
_SENT_TO_ADDRESS = (
    sa.select(surveys.c.id)
    .join(contacts, contacts.c.id == surveys.c.contact_id)
    .where(
        contacts.c.address == sa.bindparam("address"),
        surveys.c.id != sa.bindparam("survey_id"),
        surveys.c.sent_at >= sa.bindparam("since"),
    )
    .limit(1)
)


def worker_name() -> str:
    """This process, as it signs the jobs it does: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _limiter(per_second: float) -> AsyncLimiter:
    # aiolimiter needs a capacity of at least one; below 1/s stretch the period instead.
    return AsyncLimiter(per_second, 1) if per_second >= 1 else AsyncLimiter(1, 1 / per_second)


@dataclass(frozen=True)
class _Ready:
    """A survey cleared to go out, and what to show."""

    row: Any
    prompts: tuple[engine.Prompt, ...]
    language: str


class Scheduler:
    """Claims due jobs and does them: sends surveys, sends one reminder, expires surveys."""

    def __init__(
        self, service: Service, channels: Mapping[str, Channel], *, worker: str | None = None
    ) -> None:
        self.service = service
        self.channels = channels
        self.worker = worker or worker_name()
        settings = service.settings
        sms = _limiter(settings.send_rate_sms)
        self.limiters = {
            "telegram": _limiter(settings.send_rate_telegram),
            "sms": sms,
            "whatsapp": sms,
            "voice": _limiter(settings.send_rate_voice),
        }

    async def run_once(self) -> int:
        """Do every job due now (up to a batch); returns how many were claimed."""
        claimed = await jobs.claim(self.service.db, KINDS, now=self.service.clock(), limit=BATCH)
        room = asyncio.Semaphore(CONCURRENT_JOBS)
        queues = await self._queues(claimed)
        ended = await asyncio.gather(*(self._do_in_turn(q, room) for q in queues), return_exceptions=True)
        errors = [error for error in ended if isinstance(error, BaseException)]
        if errors:  # a failed job could not even be put back: let run() log it and wait
            raise errors[0]
        return len(claimed)

    async def run(self) -> None:
        """Do due jobs until cancelled; look again at once while there was work."""
        log.info("scheduler %s started", self.worker)
        while True:
            try:
                busy = await self.run_once()
            except Exception:  # the loop must outlive a database hiccup
                log.exception("scheduler pass failed")
                busy = 0
            if busy < BATCH:
                await asyncio.sleep(self.service.settings.worker_poll_seconds)

    async def _queues(self, claimed: Sequence[jobs.Job]) -> list[list[jobs.Job]]:
        """The batch as one queue per address, in claim order; queues run side by side.

        An address's jobs must not overlap: two sends to it would both pass the throttle
        before either is recorded, and a survey's reminder could race its expiry. Queues do
        what a lock per address would, with no locks left to clean up, since run() does one
        batch at a time. Addresses are read for the batch at once (a survey keeps its contact
        once it has one); a survey without a contact queues by its id. As before, several
        worker processes on PostgreSQL keep apart only the jobs each of them claimed.
        """
        ids = [job.survey_id for job in claimed if job.survey_id is not None]
        addresses: dict[int | None, str] = {}
        if ids:
            async with self.service.db.read() as conn:
                rows = await conn.execute(
                    sa.select(surveys.c.id, contacts.c.address)
                    .join(contacts, contacts.c.id == surveys.c.contact_id)
                    .where(surveys.c.id.in_(ids))
                )
                addresses = {row.id: row.address for row in rows}
        queues: dict[str | int | None, list[jobs.Job]] = defaultdict(list)
        for job in claimed:
            queues[addresses.get(job.survey_id, job.survey_id)].append(job)
        return list(queues.values())

    async def _do_in_turn(self, queue: Sequence[jobs.Job], room: asyncio.Semaphore) -> None:
        for job in queue:
            async with room:
                try:
                    await self._do(job)
                except Exception as exc:  # a job's failure must not stop the others
                    log.exception("job %s (%s) failed", job.id, job.kind)
                    await self._retry(job, str(exc) or type(exc).__name__)

    async def _do(self, job: jobs.Job) -> None:
        if job.survey_id is None:
            await self.service.db.transact(self._settle, job, "skipped", "no survey")
        elif job.kind == "expire":
            await self.service.db.transact(self._expire, job)
        else:
            await self._send(job, reminder=job.kind == "reminder")

    async def _send(self, job: jobs.Job, *, reminder: bool) -> None:
        db, now = self.service.db, self.service.clock()
        ready = await db.transact(self._check, job, now, reminder=reminder)
        if ready is None:  # the rules settled it
            return
        row = ready.row
        try:
            async with self.limiters.get(row.channel, self.limiters["sms"]):
                await self.channels[row.channel].deliver(
                    row.address, ready.prompts, ready.language, survey_id=row.id
                )
        except ContactOptedOut:
            await db.transact(self._settle, job, "done", None, outcome="skipped: opted out", close="skipped")
            return
        except DeliveryFailed as exc:
            if exc.retry_after is None:  # the provider will never take it (a wrong number)
                await db.transact(self._settle, job, "failed", str(exc), close="failed")
            else:
                await self._retry(job, str(exc))
            return
        await db.transact(self._sent, job, now, reminder=reminder)
        log.info(
            "survey %s %s by %s to %s",
            row.id,
            "reminded" if reminder else "sent",
            row.channel,
            mask(row.address),
        )

    def _check(self, conn: Connection, job: jobs.Job, now: datetime, *, reminder: bool) -> _Ready | None:
        """Apply the rules; settle the job (None), or open the survey and say what to send."""
        row = conn.execute(_SURVEY, {"survey_id": job.survey_id}).one_or_none()
        if row is None:
            self._settle(conn, job, "skipped", "survey not found")
            return None
        state = engine.State.from_json(row.state)
        if reminder and (row.status != "active" or state.scores or state.position > 0):
            self._settle(conn, job, "skipped", None, outcome="started or closed")
            return None
        if not reminder and not (row.status == "pending" or (row.status == "active" and row.sent_at is None)):
            self._settle(conn, job, "skipped", None, outcome=f"survey is {row.status}")
            return None
        if row.opted_out_at is not None:
            self._settle(conn, job, "done", None, outcome="skipped: opted out", close="skipped")
            return None
        if not reminder and self._throttled(conn, row, now):
            self._settle(conn, job, "done", None, outcome="throttled", close="throttled")
            return None
        due = next_allowed(now, self.service.settings.quiet, self._zone(row))
        if due > now:  # put back without counting the attempt, as jobs.postpone does
            conn.execute(jobs.postponed(job, due_at=due))
            log.info("survey %s postponed to %s (quiet hours)", row.id, due.isoformat())
            return None
        if row.channel not in self.channels:
            error = f"the {row.channel} channel is not configured in this process"
            self._settle(conn, job, "failed", error, close="failed")
            return None
        if not reminder:
            state = self._activate(conn, row, state, now)
        prompts = self._prompts(row.flow_id, state)
        if not prompts:
            self._settle(conn, job, "skipped", None, outcome="nothing to ask")
            return None
        return _Ready(row, prompts, state.language)

    def _throttled(self, conn: Connection, row: Any, now: datetime) -> bool:
        """Whether this address (on any channel) was sent a survey within THROTTLE_DAYS."""
        days = self.service.settings.throttle_days
        if days == 0:
            return False
        since = now - timedelta(days=days)
        found = conn.execute(_SENT_TO_ADDRESS, {"address": row.address, "survey_id": row.id, "since": since})
        return found.first() is not None

    def _zone(self, row: Any) -> str:
        default = self.service.settings.default_time_zone
        guessed = row.time_zone or (time_zone(row.address) if row.channel in PHONE_CHANNELS else None)
        return zone_or_default(guessed, default)

    def _activate(self, conn: Connection, row: Any, state: engine.State, now: datetime) -> engine.State:
        """Make the survey answerable just before it is sent, closing the contact's older ones."""
        expires = now + self.service.survey_ttl
        state = replace(state, expires_at=expires)
        conn.execute(
            sa.update(surveys)
            .where(surveys.c.contact_id == row.contact_id, surveys.c.status.in_(OPEN), surveys.c.id != row.id)
            .values(status="incomplete")
        )
        conn.execute(
            sa.update(surveys)
            .where(surveys.c.id == row.id)
            .values(status="active", expires_at=expires, state=state.to_json())
        )
        return state

    def _prompts(self, flow_id: str, state: engine.State) -> tuple[engine.Prompt, ...]:
        flow = self.service.flows.get(flow_id)
        return asking(flow, state) if flow is not None else ()

    def _sent(self, conn: Connection, job: jobs.Job, now: datetime, *, reminder: bool) -> None:
        """Record the send and finish the job; a first send queues the expiry and the one reminder."""
        if not reminder:
            settings = self.service.settings
            conn.execute(sa.update(surveys).where(surveys.c.id == job.survey_id).values(sent_at=now))
            expires = now + self.service.survey_ttl
            conn.execute(jobs.job("expire", now=now, survey_id=job.survey_id, due_at=expires))
            if settings.reminder_after_hours > 0:
                due = now + timedelta(hours=settings.reminder_after_hours)
                conn.execute(jobs.job("reminder", now=now, survey_id=job.survey_id, due_at=due))
        self._settle(conn, job, "done", None, outcome="sent")

    def _expire(self, conn: Connection, job: jobs.Job) -> None:
        expired = _close(conn, job.survey_id, "expired")
        self._settle(conn, job, "done", None, outcome="expired" if expired else "closed before")

    def _settle(
        self,
        conn: Connection,
        job: jobs.Job,
        status: str,
        error: str | None,
        *,
        outcome: str | None = None,
        close: str | None = None,
    ) -> None:
        """Finish the job (done, skipped, failed), first closing its survey as ``close`` if still open."""
        if close is not None:
            _close(conn, job.survey_id, close)
        result = {"worker": self.worker, "outcome": outcome} if outcome else {"worker": self.worker}
        conn.execute(jobs.finished(job, now=self.service.clock(), status=status, result=result, error=error))

    async def _retry(self, job: jobs.Job, error: str) -> None:
        again = await jobs.retry_later(self.service.db, job, now=self.service.clock(), error=error)
        if not again and job.survey_id is not None and job.kind == "send":
            await close_survey(self.service.db, job.survey_id, "failed")
            log.warning("survey %s failed after %d attempts: %s", job.survey_id, job.attempts, error)


def _close(conn: Connection, survey_id: int | None, status: str) -> bool:
    """Give an open survey its final status; True if it was open."""
    return bool(conn.execute(closing(survey_id, status)).rowcount)
