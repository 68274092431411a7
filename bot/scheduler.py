"""The scheduler: due jobs (send, reminder, expire) done by whichever process claims them.

It runs inside `afterword serve` and alone as `afterword worker`. Jobs are claimed with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL (bot.jobs), so any number of processes share the
work and none sends a survey twice. Before each send the rules apply, in this order: an
opted-out contact is skipped; a contact surveyed within THROTTLE_DAYS is throttled; a send
due in the recipient's quiet hours is postponed to the first allowed minute.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from aiolimiter import AsyncLimiter

from bot import jobs
from bot.channels.base import Channel
from bot.errors import ContactOptedOut, DeliveryFailed
from bot.phones import mask, time_zone
from bot.quiet_hours import next_allowed, zone_or_default
from bot.service import Service
from bot.surveys import OPEN, close_survey, current
from bot.tables import contacts, surveys
from flows import engine

log = logging.getLogger(__name__)

KINDS = ("send", "reminder", "expire")
BATCH = 50
PHONE_CHANNELS = frozenset({"sms", "whatsapp", "voice"})


def worker_name() -> str:
    """This process, as it signs the jobs it does: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _limiter(per_second: float) -> AsyncLimiter:
    # aiolimiter needs a capacity of at least one; below 1/s stretch the period instead.
    return AsyncLimiter(per_second, 1) if per_second >= 1 else AsyncLimiter(1, 1 / per_second)


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
        for job in claimed:
            try:
                await self._do(job)
            except Exception as exc:  # a job's failure must not stop the others
                log.exception("job %s (%s) failed", job.id, job.kind)
                await self._retry(job, str(exc) or type(exc).__name__)
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

    async def _do(self, job: jobs.Job) -> None:
        if job.survey_id is None:
            await self._finish(job, "skipped", "no survey")
        elif job.kind == "expire":
            expired = await close_survey(self.service.db, job.survey_id, "expired")
            await self._finish(job, "done", None, outcome="expired" if expired else "closed before")
        else:
            await self._send(job, reminder=job.kind == "reminder")

    async def _send(self, job: jobs.Job, *, reminder: bool) -> None:
        assert job.survey_id is not None  # noqa: S101 - checked by _do
        now = self.service.clock()
        row = await self._survey(job.survey_id)
        if row is None:
            await self._finish(job, "skipped", "survey not found")
            return
        state = engine.State.from_json(row.state)
        if reminder and (row.status != "active" or state.scores or state.position > 0):
            await self._finish(job, "skipped", None, outcome="started or closed")
            return
        if not reminder and not (row.status == "pending" or (row.status == "active" and row.sent_at is None)):
            await self._finish(job, "skipped", None, outcome=f"survey is {row.status}")
            return
        if row.opted_out_at is not None:
            await close_survey(self.service.db, row.id, "skipped")
            await self._finish(job, "done", None, outcome="skipped: opted out")
            return
        if not reminder and await self._throttled(row, now):
            await close_survey(self.service.db, row.id, "throttled")
            await self._finish(job, "done", None, outcome="throttled")
            return
        due = next_allowed(now, self.service.settings.quiet, self._zone(row))
        if due > now:
            await jobs.postpone(self.service.db, job, due_at=due)
            log.info("survey %s postponed to %s (quiet hours)", row.id, due.isoformat())
            return
        channel = self.channels.get(row.channel)
        if channel is None:
            await close_survey(self.service.db, row.id, "failed")
            await self._finish(job, "failed", f"the {row.channel} channel is not configured in this process")
            return
        if not reminder:
            await self._activate(row, now)
        shown = await current(self.service.db, self.service.flows, row.id)
        if shown is None or not shown.prompts:
            await self._finish(job, "skipped", None, outcome="nothing to ask")
            return
        try:
            async with self.limiters.get(row.channel, self.limiters["sms"]):
                await channel.deliver(row.address, shown.prompts, shown.language, survey_id=row.id)
        except ContactOptedOut:
            await close_survey(self.service.db, row.id, "skipped")
            await self._finish(job, "done", None, outcome="skipped: opted out")
            return
        except DeliveryFailed as exc:
            if exc.retry_after is None:  # the provider will never take it (a wrong number)
                await close_survey(self.service.db, row.id, "failed")
                await self._finish(job, "failed", str(exc))
            else:
                await self._retry(job, str(exc))
            return
        if not reminder:
            await self._sent(row.id, now)
        await self._finish(job, "done", None, outcome="sent")
        log.info(
            "survey %s %s by %s to %s",
            row.id,
            "reminded" if reminder else "sent",
            row.channel,
            mask(row.address),
        )

    async def _survey(self, survey_id: int) -> Any:
        async with self.service.db.read() as conn:
            return (
                await conn.execute(
                    sa.select(
                        surveys.c.id,
                        surveys.c.status,
                        surveys.c.channel,
                        surveys.c.sent_at,
                        surveys.c.state,
                        surveys.c.contact_id,
                        contacts.c.address,
                        contacts.c.time_zone,
                        contacts.c.opted_out_at,
                    )
                    .join(contacts, contacts.c.id == surveys.c.contact_id)
                    .where(surveys.c.id == survey_id)
                )
            ).one_or_none()

    async def _throttled(self, row: Any, now: datetime) -> bool:
        """Whether this address (on any channel) was sent a survey within THROTTLE_DAYS."""
        days = self.service.settings.throttle_days
        if days == 0:
            return False
        since = now - timedelta(days=days)
        async with self.service.db.read() as conn:
            found = await conn.execute(
                sa.select(surveys.c.id)
                .join(contacts, contacts.c.id == surveys.c.contact_id)
                .where(contacts.c.address == row.address, surveys.c.id != row.id, surveys.c.sent_at >= since)
                .limit(1)
            )
            return found.first() is not None

    def _zone(self, row: Any) -> str:
        default = self.service.settings.default_time_zone
        guessed = row.time_zone or (time_zone(row.address) if row.channel in PHONE_CHANNELS else None)
        return zone_or_default(guessed, default)

    async def _activate(self, row: Any, now: datetime) -> None:
        """Make the survey answerable just before it is sent, closing the contact's older ones."""
        expires = now + self.service.survey_ttl
        state = replace(engine.State.from_json(row.state), expires_at=expires)
        async with self.service.db.write() as conn:
            await conn.execute(
                sa.update(surveys)
                .where(
                    surveys.c.contact_id == row.contact_id, surveys.c.status.in_(OPEN), surveys.c.id != row.id
                )
                .values(status="incomplete")
            )
            await conn.execute(
                sa.update(surveys)
                .where(surveys.c.id == row.id)
                .values(status="active", expires_at=expires, state=state.to_json())
            )

    async def _sent(self, survey_id: int, now: datetime) -> None:
        """Record the send, and queue the expiry and the one reminder."""
        settings = self.service.settings
        async with self.service.db.write() as conn:
            await conn.execute(sa.update(surveys).where(surveys.c.id == survey_id).values(sent_at=now))
            await jobs.enqueue(
                conn, "expire", now=now, survey_id=survey_id, due_at=now + self.service.survey_ttl
            )
            if settings.reminder_after_hours > 0:
                due = now + timedelta(hours=settings.reminder_after_hours)
                await jobs.enqueue(conn, "reminder", now=now, survey_id=survey_id, due_at=due)

    async def _finish(
        self, job: jobs.Job, status: str, error: str | None, outcome: str | None = None
    ) -> None:
        result = {"worker": self.worker, "outcome": outcome} if outcome else {"worker": self.worker}
        await jobs.finish(
            self.service.db, job, now=self.service.clock(), status=status, result=result, error=error
        )

    async def _retry(self, job: jobs.Job, error: str) -> None:
        again = await jobs.retry_later(self.service.db, job, now=self.service.clock(), error=error)
        if not again and job.survey_id is not None and job.kind == "send":
            await close_survey(self.service.db, job.survey_id, "failed")
            log.warning("survey %s failed after %d attempts: %s", job.survey_id, job.attempts, error)
