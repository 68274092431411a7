"""The scheduler: due jobs (send, reminder, expire) done by whichever process claims them.

It runs inside `afterword serve` and alone as `afterword worker`. Jobs are claimed with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL (bot.jobs), so any number of processes share the
work. Before each send the rules apply, in this order: an opted-out contact is skipped; a
contact surveyed within THROTTLE_DAYS is throttled; a send due in the recipient's quiet hours
is postponed to the first allowed minute.

Sends are at most once. The transaction that applies the rules also moves the job to
``sending`` with a fresh lease, which only the worker still holding its claim can do
(`jobs.taken`); a worker that finds the job gone skips it quietly. After the provider took
the send, one transaction records it (``sent_at``, the provider's id in the job's result, the
expiry and the reminder) and finishes the job, if it is still ``sending``. Only a refusal
(``DeliveryFailed``, ``ContactOptedOut``) or a connection that never opened
(`channels.base.never_sent`) puts a send back or fails it. Any other error once the request
may have left, the recording's included, is logged and leaves the job in ``sending``: the
Twilio Messages and Calls APIs and Telegram's sendMessage take no idempotency key, so sending
again could reach the customer twice. A job left in ``sending`` (its worker died or was
stopped mid-send, or the outcome is unknown) is settled by the first pass of any scheduler
after its lease ran out, without sending: counted as sent but unconfirmed (result outcome
"sent, unconfirmed: …", ``sent_at`` and the expiry and reminder as after a send), with a
WARNING naming the job, survey, channel and masked address.

Pace: each send first takes its provider's next slot from the ``send_rates`` table
(`reserve_slot`, one atomic upsert shared by every process; a channel names its provider and
rate (`Channel.provider`, `send_rate`): SMS and WhatsApp share the one Twilio sender's
SEND_RATE_SMS) and sleeps until it, before the rules' transaction, so the wait never eats into
the ``sending`` lease. A send takes a slot as long as the messages it makes
(`Channel.messages`: an SMS's segments, a WhatsApp message each), so SEND_RATE_* counts
what the provider counts. The per-process aiolimiter this replaces let N workers send at N ×
SEND_RATE_* (two workers sent SMS at twice the rate, issue 16); the shared slots pace this
process's own sends as well, so no limiter is kept beside them.

Batches, not lease renewal: a pass claims at most what the slowest configured rate sends in
half a lease, at two messages a send (`batch_size`, at least one job, at most ``BATCH``), so
jobs waiting for their slots are sent before their claim runs out. Should a claim still run
out (several workers share a slow rate), another worker may claim the job, and the first
one's `jobs.taken` then changes nothing: its slot goes unused, the job is sent once.

A claimed batch is done ``CONCURRENT_JOBS`` at a time, the jobs of one address one after
another. The transactions are plain SQLAlchemy for ``Database.transact``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot import housekeeping, jobs
from bot.channels.base import Channel, Delivered, Outgoing, never_sent
from bot.contacts import opted_out
from bot.errors import ContactOptedOut, DeliveryFailed
from bot.flow_versions import UNAVAILABLE, no_definition
from bot.inbound import asked_now
from bot.lifecycle import JobKind, JobStatus, SurveyStatus, is_open, survey_sources
from bot.phones import mask, time_zone
from bot.quiet_hours import next_allowed, zone_or_default
from bot.service import Service
from bot.settings import Settings
from bot.store.db import Database, upsert_insert
from bot.store.tables import contacts, send_rates, surveys
from bot.store.tables import jobs as jobs_table
from bot.surveys import asking, closing, kept_ref, superseded
from flows import engine

log = logging.getLogger(__name__)

KINDS = (JobKind.SEND, JobKind.REMINDER, JobKind.EXPIRE, JobKind.REPLY, JobKind.HOUSEKEEPING)
BATCH = 50  # the most jobs a pass claims; fewer when a configured send rate is slow (batch_size)
# Jobs in flight at once. A send mostly waits: for its slot, the provider, the database.
# Eight overlap enough of that to keep Telegram's 30/s busy (a send takes 20–50 ms of its own),
# so the rates, not this number, set the pace; more would only queue more writers behind
# SQLite's one and hold more pooled connections on PostgreSQL.
CONCURRENT_JOBS = 8
SEND_MESSAGES = 2  # messages a send is counted as when sizing a batch: SMS segments of intro and question
STOPPED = "worker stopped during the send"
# A pending survey is activated; an active one not sent yet (its send was retried) stays so.
_MAY_ACTIVATE = sorted(survey_sources(SurveyStatus.ACTIVE) | {SurveyStatus.ACTIVE})

_SURVEY = (
    sa.select(
        surveys.c.id,
        surveys.c.status,
        surveys.c.channel,
        surveys.c.flow_id,
        surveys.c.flow_version,
        surveys.c.language,
        surveys.c.sent_at,
        surveys.c.expires_at,
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
_RECIPIENT = (
    sa.select(surveys.c.channel, contacts.c.address)
    .select_from(surveys.outerjoin(contacts, contacts.c.id == surveys.c.contact_id))
    .where(surveys.c.id == sa.bindparam("survey_id"))
)


def worker_name() -> str:
    """This process, as it signs the jobs it does: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def batch_size(slowest: float | None) -> int:
    """How many jobs a pass claims: what ``slowest`` messages/s sends in half a lease, 1 to ``BATCH``.

    A send is counted as ``SEND_MESSAGES`` messages, as a first send by SMS is.
    """
    if slowest is None:
        return BATCH
    return max(1, min(BATCH, int(slowest * jobs.LEASE.total_seconds() / 2 / SEND_MESSAGES)))


async def reserve_slot(db: Database, provider: str, per_second: float, *, messages: int = 1) -> float:
    """Take ``provider``'s next send slot, shared by every process: its time in epoch seconds.

    A slot is ``messages/per_second`` long (GCRA without a burst): the row holds the next free
    time, and one upsert moves it to ``max(next_at, now) + messages/per_second`` and returns it,
    so two callers never get the same slot. The caller waits until its slot and then sends its
    messages. Real time, not the service's clock: a test's clock stands still, and the provider
    counts in real seconds.
    """
    return await db.transact(_reserve, provider, messages / per_second)


def _reserve(conn: Connection, provider: str, interval: float) -> float:
    """Take ``interval`` seconds of ``provider``'s sending time; when they start."""
    now = time.time()  # read inside the transaction: a wait for SQLite's write lock must not age it
    next_at = send_rates.c.next_at
    upsert = (
        upsert_insert(conn.dialect.name, send_rates)
        .values(provider=provider, next_at=now + interval)
        .on_conflict_do_update(
            index_elements=[send_rates.c.provider],
            set_={"next_at": sa.case((next_at > now, next_at), else_=sa.literal(now, sa.Double)) + interval},
        )
        .returning(next_at)
    )
    return float(conn.execute(upsert).scalar_one()) - interval


@dataclass(frozen=True)
class _Queued:
    """A claimed job, its survey's channel, and how many messages a send of it makes."""

    job: jobs.Job
    channel: str | None
    messages: int


@dataclass(frozen=True)
class _Ready:
    """A survey cleared to go out, the job as now held (``sending``), and what to show."""

    job: jobs.Job
    row: Any
    prompts: tuple[engine.Prompt, ...]
    language: str
    fallback: str  # the flow's default language, for UI strings (bot.texts)


class Scheduler:
    """Claims due jobs and does them: sends surveys, sends one reminder, expires surveys."""

    def __init__(
        self, service: Service, channels: Mapping[str, Channel], *, worker: str | None = None
    ) -> None:
        self.service = service
        self.channels = channels
        self.worker = worker or worker_name()
        rates = [rate for channel in channels.values() if (rate := _rate(channel, service.settings))]
        self.batch = batch_size(min(rates, default=None))

    async def run_once(self) -> int:
        """Settle sends left mid-way, then do the jobs due now (up to a batch); how many were claimed."""
        db = self.service.db
        await db.transact(self._reconcile, self.service.clock())
        claimed = await jobs.claim(db, KINDS, now=self.service.clock(), limit=self.batch)
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
        try:
            await self.service.db.transact(self._plan_housekeeping, self.service.clock())
        except Exception:  # the database may be down at start; the next start plans it
            log.exception("could not plan the daily housekeeping")
        while True:
            try:
                busy = await self.run_once()
            except Exception:  # the loop must outlive a database hiccup
                log.exception("scheduler pass failed")
                busy = 0
            if busy < self.batch:
                await asyncio.sleep(self.service.settings.worker_poll_seconds)

    async def _queues(self, claimed: Sequence[jobs.Job]) -> list[list[_Queued]]:
        """The batch as one queue per address, in claim order, each job with its channel and its messages.

        An address's jobs must not overlap: two sends to it would both pass the throttle
        before either is recorded, and a survey's reminder could race its expiry. Queues do
        what a lock per address would, with no locks left to clean up, since run() does one
        batch at a time. Surveys are read for the batch at once (a survey keeps its contact
        once it has one); a survey without a contact queues by its id. The channel and the
        number of messages say how many of which rate's slots to take before the rules' transaction.
        """
        ids = [job.survey_id for job in claimed if job.survey_id is not None]
        found: dict[int, Any] = {}
        if ids:
            async with self.service.db.read() as conn:
                rows = await conn.execute(
                    sa.select(
                        surveys.c.id,
                        surveys.c.channel,
                        surveys.c.flow_id,
                        surveys.c.flow_version,
                        surveys.c.language,
                        surveys.c.state,
                        contacts.c.address,
                    )
                    .select_from(surveys.outerjoin(contacts, contacts.c.id == surveys.c.contact_id))
                    .where(surveys.c.id.in_(ids))
                )
                found = {row.id: row for row in rows}
        queues: dict[str | int | None, list[_Queued]] = defaultdict(list)
        for job in claimed:
            row = found.get(job.survey_id) if job.survey_id is not None else None
            if row is None:
                queues[job.survey_id].append(_Queued(job, None, 1))
                continue
            queues[row.address or job.survey_id].append(_Queued(job, row.channel, self._messages(row)))
        return list(queues.values())

    def _messages(self, row: Any) -> int:
        """How many provider messages a send of this survey makes, as its channel counts them
        (`Channel.messages`: SMS segments, else one); a usual send's count when it cannot be told."""
        channel = self.channels.get(row.channel)
        if channel is None or channel.provider is None:
            return 1
        flow = self.service.flow_for(row.flow_id, row.flow_version)  # in memory only: a count
        if flow is None:  # not read yet, or not servable: _check reads it; count a usual send
            return SEND_MESSAGES
        try:
            state = engine.State.from_json(row.state, flow)
        except (KeyError, TypeError, ValueError):  # _check will meet it too; count a usual send
            return SEND_MESSAGES
        # As it will be sent: active (a send activates it; a reminder is only for an active one).
        prompts = asking(flow, state, language=row.language, status=SurveyStatus.ACTIVE)
        return channel.messages(Outgoing(row.address or "", prompts, row.language, flow.default_language))

    async def _do_in_turn(self, queue: Sequence[_Queued], room: asyncio.Semaphore) -> None:
        for queued in queue:
            job = queued.job
            async with room:
                try:
                    await self._do(queued)
                except Exception as exc:  # a job's failure must not stop the others
                    # Only a job still pending under this claim is put back (the retry is
                    # fenced): once it is `sending`, nothing here sends it again.
                    log.exception("job %s (%s) failed", job.id, job.kind)
                    await self._retry(job, _reason(exc))

    async def _do(self, queued: _Queued) -> None:
        job = queued.job
        if job.kind == JobKind.HOUSEKEEPING:
            await self._housekeeping(job)
        elif job.survey_id is None:
            await self.service.db.transact(self._settle, job, JobStatus.SKIPPED, "no survey")
        elif job.kind == JobKind.EXPIRE:
            await self.service.db.transact(self._expire, job)
        elif job.kind == JobKind.REPLY:
            channel = self.channels.get(queued.channel) if queued.channel else None
            if channel is not None and channel.provider is not None:
                await self._wait_for_slot(channel, queued.messages)
            await self._reply(job)
        else:
            channel = self.channels.get(queued.channel) if queued.channel else None
            if channel is not None and channel.provider is not None:
                await self._wait_for_slot(channel, queued.messages)
            await self._send(job, reminder=job.kind == JobKind.REMINDER)

    def _plan_housekeeping(self, conn: Connection, now: datetime, due_at: datetime | None = None) -> None:
        """Queue the daily housekeeping run (bot.housekeeping) unless one is waiting already, so
        processes started together, or a run finishing, never make a second daily chain."""
        waiting = conn.execute(
            sa.select(jobs_table.c.id)
            .where(
                jobs_table.c.kind == JobKind.HOUSEKEEPING,
                jobs_table.c.status.in_([JobStatus.PENDING, JobStatus.SENDING]),
            )
            .limit(1)
        ).first()
        if waiting is None:
            conn.execute(jobs.job(JobKind.HOUSEKEEPING, now=now, due_at=due_at))

    async def _housekeeping(self, job: jobs.Job) -> None:
        """Retention and clean-up in small batches (bot.housekeeping), then the next run a day later."""
        counts = await housekeeping.run_due(self.service)
        now = self.service.clock()
        result: dict[str, Any] = {"worker": self.worker, **(counts or {"skipped": "ran within the last day"})}
        await self.service.db.transact(self._housekept, job, now, result)

    def _housekept(self, conn: Connection, job: jobs.Job, now: datetime, result: dict[str, Any]) -> None:
        if conn.execute(jobs.finished(job, now=now, result=result, held=True)).rowcount:
            self._plan_housekeeping(conn, now, now + housekeeping.EVERY)

    async def _wait_for_slot(self, channel: Channel, messages: int) -> None:
        rate = _rate(channel, self.service.settings)
        if channel.provider is None or rate is None:
            return
        slot = await reserve_slot(self.service.db, channel.provider, rate, messages=messages)
        await asyncio.sleep(max(0.0, slot - time.time()))

    async def _send(self, job: jobs.Job, *, reminder: bool) -> None:
        db = self.service.db
        now = self.service.clock()
        ready = await db.transact(self._check, job, now, reminder=reminder)
        if ready is None:  # the rules settled it, or it is another worker's
            return
        job, row = ready.job, ready.row  # from here on the job is `sending`: never sent again
        try:
            delivered = await self.channels[row.channel].deliver(
                Outgoing(row.address, ready.prompts, ready.language, ready.fallback, row.id)
            )
        except ContactOptedOut:  # the provider says the contact unsubscribed: record it, send nothing
            await db.transact(self._opted_out, job, row, now)
            return
        except DeliveryFailed as exc:  # classified by the channel; nothing of it was delivered
            if exc.permanent:
                log.warning("survey %s failed: %s", row.id, exc)
            await self._refused(job, exc, close=SurveyStatus.FAILED)
            return
        except Exception as exc:
            if never_sent(exc):  # no connection, so no request: safe to try again later
                log.warning("job %s: could not reach %s: %s", job.id, row.channel, _reason(exc))
                await self._retry(job, _reason(exc))
                return
            log.exception(
                "job %s: survey %s by %s to %s may have been sent; it will not be sent again",
                job.id,
                row.id,
                row.channel,
                mask(row.address),
            )
            await self._note(job, f"{type(exc).__name__}: {_reason(exc)}")
            return
        try:
            await db.transact(self._sent, job, now, delivered, reminder=reminder)
        except Exception as exc:
            log.exception(
                "job %s: survey %s was sent by %s to %s but not recorded; it stays `sending` "
                "and is counted as sent, unconfirmed, once its lease runs out",
                job.id,
                row.id,
                row.channel,
                mask(row.address),
            )
            await self._note(
                job, f"delivered ({delivered.provider_id or 'no provider id'}), not recorded: {_reason(exc)}"
            )
            return
        log.info(
            "survey %s %s by %s to %s",
            row.id,
            "reminded" if reminder else "sent",
            row.channel,
            mask(row.address),
        )

    async def _reply(self, job: jobs.Job) -> None:
        """Send what an answer asked next and its channel could not (the outbox, bot.inbound.OUTBOX_GRACE).

        It is what the survey asks now (`inbound.asked_now`: the open question, or the thanks),
        so a reply that comes late still fits. A permanent refusal (a blocked bot) ends the job
        and leaves the survey as it is. Unlike a survey's first send, a reply is at least once:
        an error whose outcome is unknown (a timeout, a 502) is retried, because a question shown
        twice costs the customer less than one never shown.
        """
        db = self.service.db
        ready = await db.transact(self._check_reply, job, self.service.clock())
        if ready is None:
            return
        job, row = ready.job, ready.row
        try:
            delivered = await self.channels[row.channel].deliver(
                Outgoing(row.address, ready.prompts, ready.language, ready.fallback, row.id)
            )
        except DeliveryFailed as exc:
            if exc.permanent:
                log.warning("job %s: the reply to survey %s failed: %s", job.id, row.id, exc)
            await self._refused(job, exc, close=None)  # the answer is stored: the survey stays as it is
            return
        except Exception as exc:
            log.warning(
                "job %s: the reply to survey %s failed, to try again: %s", job.id, row.id, _reason(exc)
            )
            await self._retry(job, f"{type(exc).__name__}: {_reason(exc)}")
            return
        # Not a first send: no sent_at, expiry or reminder (`reminder=True` says so to _sent).
        await db.transact(self._sent, job, self.service.clock(), delivered, reminder=True)
        log.info("survey %s: reply sent by %s to %s", row.id, row.channel, mask(row.address))

    def _check_reply(self, conn: Connection, job: jobs.Job, now: datetime) -> _Ready | None:
        """Take a `reply` job; what its survey asks now, or settle it when there is nothing to send."""
        taking, job = jobs.taken(job, now=now)
        if conn.execute(taking).rowcount != 1:
            return None
        row = conn.execute(_SURVEY, {"survey_id": job.survey_id}).one_or_none()
        flow = None if row is None else self.service.book.version(conn, row.flow_id, row.flow_version)
        if row is None or flow is None or row.address is None:
            self._settle(conn, job, JobStatus.SKIPPED, None, outcome="survey or flow gone")
            return None
        if row.channel not in self.channels:
            error = f"the {row.channel} channel is not configured in this process"
            self._settle(conn, job, JobStatus.FAILED, error)
            return None
        prompts = asked_now(flow, row.state, row.language, row.status)
        if not prompts:
            self._settle(conn, job, JobStatus.SKIPPED, None, outcome=f"survey is {row.status}")
            return None
        return _Ready(job, row, prompts, row.language, flow.default_language)

    def _check(self, conn: Connection, job: jobs.Job, now: datetime, *, reminder: bool) -> _Ready | None:
        """Take the job, apply the rules: settle it (None), or open the survey and say what to send."""
        taking, job = jobs.taken(job, now=now)
        if conn.execute(taking).rowcount != 1:  # settled or claimed again by another worker meanwhile
            log.debug("job %s is no longer this worker's", job.id)
            return None
        row = conn.execute(_SURVEY, {"survey_id": job.survey_id}).one_or_none()
        if row is None:
            self._settle(conn, job, JobStatus.SKIPPED, "survey not found")
            return None
        # The survey's own flow version (bot.flow_versions): one that cannot be served closes it.
        flow = self.service.book.version(conn, row.flow_id, row.flow_version)
        if flow is None:
            why = no_definition(row.flow_id, row.flow_version)
            log.warning("survey %s closed as %s: %s", row.id, UNAVAILABLE, why)
            self._settle(conn, job, JobStatus.SKIPPED, why, close=UNAVAILABLE)
            return None
        state = engine.State.from_json(row.state, flow)
        if reminder and (not is_open(row.status, row.expires_at, now) or engine.started(flow, state)):
            self._settle(conn, job, JobStatus.SKIPPED, None, outcome="started or closed")
            return None
        if not reminder and not (
            row.status == SurveyStatus.PENDING or (row.status == SurveyStatus.ACTIVE and row.sent_at is None)
        ):
            self._settle(conn, job, JobStatus.SKIPPED, None, outcome=f"survey is {row.status}")
            return None
        if row.opted_out_at is not None:
            self._settle(
                conn, job, JobStatus.DONE, None, outcome="skipped: opted out", close=SurveyStatus.SKIPPED
            )
            return None
        if not reminder and self._throttled(conn, row, now):
            self._settle(conn, job, JobStatus.DONE, None, outcome="throttled", close=SurveyStatus.THROTTLED)
            return None
        due = next_allowed(now, self.service.settings.quiet, self._zone(row))
        if due > now:  # put back without counting the attempt (quiet hours are no failure)
            conn.execute(jobs.postponed(job, due_at=due))
            log.info("survey %s postponed to %s (quiet hours)", row.id, due.isoformat())
            return None
        if row.channel not in self.channels:
            error = f"the {row.channel} channel is not configured in this process"
            self._settle(conn, job, JobStatus.FAILED, error, close=SurveyStatus.FAILED)
            return None
        if not reminder and not self._activate(conn, row, now):
            # closed meanwhile (PostgreSQL: by another transaction)
            self._settle(conn, job, JobStatus.SKIPPED, None, outcome="survey closed")
            return None
        # Active now: a reminder's survey is open, a send's was just activated.
        prompts = asking(flow, state, language=row.language, status=SurveyStatus.ACTIVE)
        if not prompts:
            self._settle(conn, job, JobStatus.SKIPPED, None, outcome="nothing to ask")
            return None
        return _Ready(job, row, prompts, row.language, flow.default_language)

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
        channel = self.channels.get(row.channel)
        phone = channel is not None and channel.phone_numbers
        guessed = row.time_zone or (time_zone(row.address) if phone else None)
        return zone_or_default(guessed, default)

    def _activate(self, conn: Connection, row: Any, now: datetime) -> bool:
        """Make the survey answerable just before it is sent.

        The lifecycle is in the columns only (status, expires_at); the state is not touched.
        The contact's older open surveys stay open until the send is recorded (_record_send):
        a send the provider refuses must not have closed them. False, and nothing changed,
        when the survey is no longer pending or active.
        """
        activating = (
            sa.update(surveys)
            .where(surveys.c.id == row.id, surveys.c.status.in_(_MAY_ACTIVATE))
            .values(status=SurveyStatus.ACTIVE, expires_at=now + self.service.survey_ttl)
        )
        return bool(conn.execute(activating).rowcount == 1)

    def _opted_out(self, conn: Connection, job: jobs.Job, row: Any, now: datetime) -> None:
        """The provider refused the send because the contact unsubscribed (Twilio 21610): the
        opt-out is recorded (their open surveys stop) and this survey is skipped, not stopped."""
        if self._settle(
            conn, job, JobStatus.DONE, None, outcome="skipped: opted out", close=SurveyStatus.SKIPPED
        ):
            opted_out(conn, conn.dialect.name, row.channel, row.address, now)

    def _sent(
        self, conn: Connection, job: jobs.Job, now: datetime, delivered: Delivered, *, reminder: bool
    ) -> None:
        """Record a send and finish the job if still `sending`; a first send queues expiry and reminder.

        What the channel asked to keep (`Delivered.ref`) becomes the survey's ``channel_ref``.
        """
        result = {"worker": self.worker, "outcome": "sent"}
        if delivered.provider_id:
            result["provider_id"] = delivered.provider_id
        finishing = jobs.finished(
            job, now=self.service.clock(), status=JobStatus.DONE, result=result, held=True
        )
        if not conn.execute(finishing).rowcount:
            log.warning(
                "job %s was settled by another worker while it was being sent (its lease ran out)", job.id
            )
            return
        if delivered.keeps_ref and job.survey_id is not None:
            conn.execute(kept_ref(job.survey_id, delivered.ref))
        if not reminder and job.survey_id is not None:
            self._record_send(conn, job.survey_id, now)

    def _record_send(self, conn: Connection, survey_id: int, at: datetime) -> None:
        """Set the survey's ``sent_at`` (if unset), close the contact's older open surveys (a
        contact answers the newest question asked), and queue its expiry and its one reminder."""
        settings = self.service.settings
        contact_id = conn.execute(
            sa.select(surveys.c.contact_id).where(surveys.c.id == survey_id)
        ).scalar_one_or_none()
        if contact_id is not None:
            conn.execute(superseded(contact_id, newer=survey_id))
        conn.execute(
            sa.update(surveys)
            .where(surveys.c.id == survey_id, surveys.c.sent_at.is_(None))
            .values(sent_at=at)
        )
        conn.execute(
            jobs.job(JobKind.EXPIRE, now=at, survey_id=survey_id, due_at=at + self.service.survey_ttl)
        )
        if settings.reminder_after_hours > 0:
            due = at + timedelta(hours=settings.reminder_after_hours)
            conn.execute(jobs.job(JobKind.REMINDER, now=at, survey_id=survey_id, due_at=due))

    def _reconcile(self, conn: Connection, now: datetime) -> int:
        """Settle the sends left `sending` past their lease, without sending: sent, unconfirmed."""
        stalled = jobs.stalled(now=now, limit=BATCH, skip_locked=conn.dialect.name != "sqlite")
        settled = 0
        for row in conn.execute(stalled).all():
            job = jobs.Job(
                row.id,
                JobKind(row.kind),
                row.survey_id,
                row.payload or {},
                row.attempts,
                row.created_at,
                status=JobStatus.SENDING,
                lease=row.locked_until,
            )
            why = row.last_error or STOPPED
            result = {"worker": self.worker, "outcome": f"sent, unconfirmed: {why}"}
            if not conn.execute(
                jobs.finished(job, now=now, status=JobStatus.DONE, result=result, held=True)
            ).rowcount:
                continue
            settled += 1
            if job.survey_id is None:
                continue
            if job.kind == JobKind.SEND:  # as a send would have, from when it was taken for sending
                self._record_send(conn, job.survey_id, row.locked_until - jobs.LEASE)
            recipient = conn.execute(_RECIPIENT, {"survey_id": job.survey_id}).one_or_none()
            log.warning(
                "job %s (%s): survey %s by %s to %s was left mid-send (%s); counted as sent, "
                "unconfirmed, and not sent again",
                job.id,
                job.kind,
                job.survey_id,
                recipient.channel if recipient else "?",
                mask(recipient.address) if recipient and recipient.address else "?",
                why,
            )
        return settled

    def _expire(self, conn: Connection, job: jobs.Job) -> None:
        expired = conn.execute(closing(job.survey_id, SurveyStatus.EXPIRED)).rowcount
        self._settle(conn, job, JobStatus.DONE, None, outcome="expired" if expired else "closed before")

    def _settle(
        self,
        conn: Connection,
        job: jobs.Job,
        status: JobStatus,
        error: str | None,
        *,
        outcome: str | None = None,
        close: SurveyStatus | str | None = None,
    ) -> bool:
        """Finish the job (done, skipped, failed), then close its survey as ``close`` if still open.

        Only while this worker still holds the job; False (and nothing changed) if not.
        """
        result = {"worker": self.worker, "outcome": outcome} if outcome else {"worker": self.worker}
        finishing = jobs.finished(
            job, now=self.service.clock(), status=status, result=result, error=error, held=True
        )
        if not conn.execute(finishing).rowcount:
            log.info("job %s was settled by another worker", job.id)
            return False
        if close is not None:
            conn.execute(closing(job.survey_id, close, reason=error))
        return True

    async def _refused(self, job: jobs.Job, exc: DeliveryFailed, *, close: SurveyStatus | None) -> None:
        """A send the provider refused: a permanent refusal (blocked, an invalid number) fails the
        job, and its survey as ``close``, with no retry; a transient one is tried again after the
        wait the provider asked for, else after the back-off."""
        if exc.permanent:
            await self.service.db.transact(self._settle, job, JobStatus.FAILED, str(exc), close=close)
            return
        wait = None if exc.retry_after is None else timedelta(seconds=exc.retry_after)
        await self._retry(job, str(exc), wait=wait)

    async def _retry(self, job: jobs.Job, error: str, *, wait: timedelta | None = None) -> None:
        await self.service.db.transact(self._retry_in, job, error, wait)

    def _retry_in(self, conn: Connection, job: jobs.Job, error: str, wait: timedelta | None) -> None:
        """Put the job back to try later, or after the last attempt fail it (and a send's survey)."""
        if job.attempts < jobs.MAX_ATTEMPTS:
            conn.execute(jobs.retried(job, now=self.service.clock(), error=error, held=True, wait=wait))
            return
        close = SurveyStatus.FAILED if job.kind == JobKind.SEND else None
        if self._settle(conn, job, JobStatus.FAILED, error, close=close) and close is not None:
            log.warning("survey %s failed after %d attempts: %s", job.survey_id, job.attempts, error)

    async def _note(self, job: jobs.Job, error: str) -> None:
        """Keep why a `sending` job's outcome is unknown, for the reconciler's outcome (best effort)."""
        try:
            await self.service.db.run(jobs.noted(job, error=error))
        except Exception:  # the database may be what failed; the reconciler still settles the job
            log.exception("job %s: could not note the error", job.id)


def _rate(channel: Channel, settings: Settings) -> float | None:
    """A paced channel's sends per second (SEND_RATE_*, for all processes together), else None."""
    return channel.send_rate(settings) if channel.provider is not None else None


def _reason(exc: BaseException) -> str:
    """An exception for a job's last_error: its message, or its type when it has none."""
    return str(exc) or type(exc).__name__
