"""Detractor alerts: queued with the answer that causes them, sent to staff within seconds.

An answer that is a detractor (``scoring.metrics.is_detractor``) queues an ``alert`` job in
the same transaction that stores it; a comment that arrives later in that survey queues an
``alert_comment``, sent as a reply to the alert. A sender (the Telegram alert chat) takes
them from the jobs table, so an alert survives a restart and is sent once by one worker.

The alert chat is one chat that the whole team reads, with no one person's language, so its
texts are in STAFF_LANGUAGE (bot.texts, ``staff.alert.*``).

Nothing is queued when nobody would send it: an ``Alerter`` (made by the Telegram bot only with
TELEGRAM_ALERT_CHAT_ID) marks its database as having a sender (``has_sender``), and the
inbound path queues alerts only for such a database. Before, every detractor queued a job
that nobody ever claimed.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from bot import jobs
from bot.lifecycle import JobKind, JobStatus
from bot.service import Service
from bot.store.db import Database
from bot.store.tables import answers
from bot.store.tables import jobs as jobs_table
from bot.texts import LAST_RESORT, staff_text
from flows.engine import Answer
from scoring.metrics import Scale, is_detractor

log = logging.getLogger(__name__)

ALERT = JobKind.ALERT
ALERT_COMMENT = JobKind.ALERT_COMMENT
KINDS = (ALERT, ALERT_COMMENT)
POLL_SECONDS = 1.0
STALE_HOURS = 24  # an alert not sent within a day (no alert chat then) is skipped, not sent late

# The databases whose alerts an Alerter of this process sends. Keyed by the Database object, not
# a flag of the process: tests run services with and without an alert chat side by side.
_SENDERS: weakref.WeakSet[Database] = weakref.WeakSet()

# Sends one alert text, as a reply to an earlier message when given; returns the new message's id.
Send = Callable[[str, int | None], Awaitable[int | None]]


def _is_detractor(answer: Answer) -> bool:
    if answer.score is None or answer.metric is None or answer.scale is None:
        return False
    scale = Scale(answer.scale.min, answer.scale.max, answer.scale.best)
    return is_detractor(answer.metric, answer.score, scale)


def has_sender(db: Database) -> bool:
    """Whether an Alerter of this process sends the alerts of ``db`` (an alert chat is configured)."""
    return db in _SENDERS


def queue_alerts(
    conn: Connection, survey_id: int, stored: Sequence[Answer], now: datetime, *, sink: bool = True
) -> None:
    """Queue an alert for each detractor answer, and a follow-up for each later comment.

    Plain SQLAlchemy: it runs inside the inbound transaction (bot.inbound, Database.transact).
    Without a ``sink`` (no alert chat: ``has_sender``) nothing is queued, as nothing would send it.
    """
    if not sink:
        return
    alerted = False
    for answer in stored:
        if _is_detractor(answer):
            conn.execute(
                jobs.job(ALERT, now=now, survey_id=survey_id, payload={"question": answer.question_id})
            )
            alerted = True
    comments = [a for a in stored if a.text and not _is_detractor(a)]
    if comments and (alerted or _was_alerted(conn, survey_id)):
        for answer in comments:
            conn.execute(
                jobs.job(
                    ALERT_COMMENT, now=now, survey_id=survey_id, payload={"question": answer.question_id}
                )
            )


def _was_alerted(conn: Connection, survey_id: int) -> bool:
    found = conn.execute(
        sa.select(jobs_table.c.id)
        .where(jobs_table.c.survey_id == survey_id, jobs_table.c.kind == ALERT)
        .limit(1)
    )
    return found.first() is not None


async def alert_text(conn: AsyncConnection, job: jobs.Job, language: str = LAST_RESORT) -> str | None:
    """The message for one alert job in ``language`` (de or en); None when its answer is gone."""
    a = answers.c
    row = (
        await conn.execute(
            sa.select(
                a.ticket, a.agent, a.team, a.channel, a.metric, a.score, a.scale_min, a.scale_max, a.text
            ).where(a.survey_id == job.survey_id, a.question_id == job.payload.get("question"))
        )
    ).one_or_none()
    if row is None:
        return None
    ticket = row.ticket or staff_text("staff.alert.no_ticket", language)
    if job.kind == ALERT_COMMENT:
        agent = row.agent or staff_text("staff.alert.no_agent", language)
        return staff_text("staff.alert.follow_up", language, ticket=ticket, agent=agent, text=row.text)
    lines = [
        staff_text(
            "staff.alert.detractor",
            language,
            metric=str(row.metric).upper(),
            score=row.score,
            min=row.scale_min,
            max=row.scale_max,
        ),
        staff_text("staff.alert.ticket", language, ticket=ticket),
        staff_text("staff.alert.agent_team", language, agent=row.agent or "-", team=row.team)
        if row.team
        else staff_text("staff.alert.agent", language, agent=row.agent or "-"),
        staff_text("staff.alert.channel", language, channel=row.channel),
    ]
    if row.text:
        lines.append(staff_text("staff.alert.comment", language, text=row.text))
    return "\n".join(lines)


class Alerter:
    """Sends due alert jobs through ``send``; one loop per process, safe with several."""

    def __init__(self, service: Service, send: Send) -> None:
        self.service = service
        self.send = send
        _SENDERS.add(service.db)  # from now on, answers queue alerts for this sender

    async def run_once(self) -> int:
        """Send every due alert; returns how many were sent."""
        now = self.service.clock()
        sent = 0
        for job in await jobs.claim(self.service.db, KINDS, now=now):
            if (now - job.created_at).total_seconds() > STALE_HOURS * 3600:
                await self.service.db.run(
                    jobs.finished(job, now=now, status=JobStatus.SKIPPED, error="stale")
                )
                continue
            async with self.service.db.read() as conn:
                text = await alert_text(conn, job, self.service.settings.staff_language)
                reply_to = None
                if job.kind == ALERT_COMMENT and job.survey_id is not None:
                    earlier = await jobs.ended(conn, job.survey_id, ALERT)
                    reply_to = (earlier.result or {}).get("message_id") if earlier else None
            if text is None:
                await self.service.db.run(
                    jobs.finished(job, now=now, status=JobStatus.SKIPPED, error="answer not found")
                )
                continue
            try:
                message_id = await self.send(text, reply_to)
            except Exception as exc:  # any provider failure is retried later
                log.warning("alert %s not sent (attempt %s): %s", job.id, job.attempts, exc)
                await jobs.retry_later(self.service.db, job, now=self.service.clock(), error=str(exc))
                continue
            await self.service.db.run(
                jobs.finished(job, now=self.service.clock(), result={"message_id": message_id})
            )
            sent += 1
        return sent

    async def run(self, interval: float = POLL_SECONDS) -> None:
        """Send due alerts until cancelled, looking every ``interval`` seconds."""
        while True:
            try:
                await self.run_once()
            except Exception:  # the loop must outlive a database hiccup
                log.exception("alert loop failed; trying again in %s s", interval)
            await asyncio.sleep(interval)
