"""The one inbound path: every channel turns a provider request into an Inbound and calls handle()."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot import jobs
from bot.alerts import has_sender, queue_alerts
from bot.contacts import contact_language, has_opted_out, opted_in, opted_out
from bot.errors import clean_text
from bot.flow_versions import UNAVAILABLE, as_book, no_definition
from bot.lifecycle import JobKind, SurveyStatus, has_expired, is_open
from bot.phones import mask
from bot.store.db import Database, upsert_insert
from bot.store.tables import answers, contacts, inbound_events, surveys
from bot.store.tables import jobs as jobs_table
from bot.surveys import unservable
from flows import engine
from flows.schema import Flow

log = logging.getLogger(__name__)

Outcome = (
    engine.Outcome | Literal["duplicate", "no_survey", "already_answered", "opted_out", "opted_in", "help"]
)

# Consent keywords, where carriers expect them (SMS and WhatsApp: Inbound.keywords), in English
# and German. An opt-out ends the contact's open surveys and keeps new ones from being sent. An
# opt-in undoes it, and only then is it a keyword: from a contact who never opted out, "Ja" or
# "Start" is an answer like any other text. HELP is answered with the channel's help text.
CONSENT: dict[str, Literal["opt_out", "opt_in", "help"]] = {
    **dict.fromkeys(
        ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "STOPP", "ABMELDEN"), "opt_out"
    ),
    **dict.fromkeys(("START", "YES", "UNSTOP", "ANMELDEN", "JA"), "opt_in"),
    **dict.fromkeys(("HELP", "INFO", "HILFE"), "help"),
}


def consent_keyword(text: str | None) -> Literal["opt_out", "opt_in", "help"] | None:
    """What a whole message means as a consent keyword ("Stop!", " ja. "), or None."""
    return CONSENT.get((text or "").strip().strip(".!").upper())


# The largest id a row can have: sa.Integer is 32 bits on PostgreSQL (64 on SQLite). A larger
# id from a URL or a button names no row, and the database would refuse it as a parameter.
MAX_ID = 2**31 - 1
# A survey token as surveys.create_survey makes it (secrets.token_urlsafe), at most the column's 64.
TOKEN = re.compile(r"[A-Za-z0-9_-]{1,64}")

# The survey status each final engine state is stored as.
# Ended by the conversation itself: a reply is still given to the engine (which closes it), and
# a press on an old button is "already answered" rather than "closed".
_ENDED = frozenset({SurveyStatus.COMPLETED, SurveyStatus.STOPPED})

# The answer path's statements are built once. SQLAlchemy memoizes a statement object's cache
# key, so reusing one skips rebuilding and re-keying it on every answer (a fifth of its cost).
_CONTACT = (
    sa.select(contacts.c.id)
    .where(contacts.c.channel == sa.bindparam("channel"), contacts.c.address == sa.bindparam("address"))
    .scalar_subquery()
)
_LOCKED_SURVEY = sa.select(surveys).with_for_update(of=surveys)
_SURVEY_BY_TOKEN = _LOCKED_SURVEY.where(surveys.c.token == sa.bindparam("token"))
_SURVEY_BY_ID = _LOCKED_SURVEY.where(
    surveys.c.id == sa.bindparam("survey_id"), surveys.c.contact_id == _CONTACT
)
_ACTIVE_SURVEY = (
    _LOCKED_SURVEY.where(surveys.c.contact_id == _CONTACT, surveys.c.status == SurveyStatus.ACTIVE)
    # A survey being sent (active, sent_at not yet set) comes last on both backends: until its
    # send is recorded the customer cannot be answering it, and its older one is still open.
    .order_by(surveys.c.sent_at.desc().nulls_last(), surveys.c.id.desc())
    .limit(1)
)
# The contact's newest survey that reached them (a pending one has not been sent yet): when no
# survey is active, a late reply may still be meant for it.
_NEWEST_SURVEY = (
    sa.select(
        surveys.c.id,
        surveys.c.flow_id,
        surveys.c.flow_version,
        surveys.c.language,
        surveys.c.status,
        surveys.c.expires_at,
    )
    .where(surveys.c.contact_id == _CONTACT, surveys.c.status != SurveyStatus.PENDING)
    .order_by(sa.func.coalesce(surveys.c.sent_at, surveys.c.created_at).desc(), surveys.c.id.desc())
    .limit(1)
)
# How long after a survey expired a reply by address still gets the flow's `expired` text.
# A week covers a customer who reads the message after a weekend or a holiday; a message
# weeks later is more likely about something else, and "this survey has expired" would puzzle.
LATE_REPLY_WINDOW = timedelta(days=7)
# How long a `reply` job waits for the channel to send it right after the commit before the
# scheduler takes it: longer than a send takes when the provider answers (Telegram's timeouts
# are 5–20 s), short enough that a customer whose reply failed waits about a minute.
OUTBOX_GRACE = timedelta(seconds=60)
_EVENT_SEEN = sa.select(inbound_events.c.id).where(
    inbound_events.c.provider == sa.bindparam("provider"),
    inbound_events.c.event_id == sa.bindparam("event_id"),
)
_SAVE_SURVEY = (
    sa.update(surveys)
    .where(surveys.c.id == sa.bindparam("survey_id"))
    .values(
        state=sa.bindparam("new_state"),
        status=sa.bindparam("new_status"),
        completed_at=sa.bindparam("new_completed_at"),
    )
)


@functools.cache
def _event_insert(dialect: str) -> Any:
    """INSERT … ON CONFLICT DO NOTHING RETURNING id: a row only for an event not seen before."""
    return (
        upsert_insert(dialect, inbound_events)
        .values(
            provider=sa.bindparam("provider"),
            event_id=sa.bindparam("event_id"),
            received_at=sa.bindparam("received_at"),
        )
        .on_conflict_do_nothing()
        .returning(inbound_events.c.id)
    )


@functools.cache
def _answers_insert(dialect: str) -> Any:
    return upsert_insert(dialect, answers).on_conflict_do_nothing()


@dataclass(frozen=True)
class Inbound:
    """One message from a customer, whatever the channel."""

    channel: str
    address: str
    received_at: datetime
    text: str | None = None
    choice: int | None = None
    command: Literal["skip", "stop"] | None = None
    provider: str | None = None
    event_id: str | None = None
    question_id: str | None = None
    survey_token: str | None = None
    survey_id: int | None = None  # a button names its survey; it must belong to this contact
    keywords: bool = False  # consent keywords (CONSENT) apply: SMS and WhatsApp
    # The channel sends its reply by an API call after the commit (Telegram), not in the HTTP
    # response: what the answer asks next is queued as a `reply` job in the answer's transaction.
    outbox: bool = False


@dataclass(frozen=True)
class Event:
    """One delivery of a provider's request (Twilio's MessageSid): acted on once, however often it comes."""

    provider: str
    event_id: str
    received_at: datetime


@dataclass(frozen=True)
class Handled:
    """What handle() did, and the prompts the channel must now show."""

    outcome: Outcome
    prompts: tuple[engine.Prompt, ...] = ()
    answers: tuple[engine.Answer, ...] = ()
    survey_id: int | None = None
    language: str | None = None
    status: str | None = None  # the survey's status after this message, when one was found
    channel_ref: str | None = None  # the channel's handle of the question shown before this message
    reply_job: int | None = None  # the outbox job holding ``prompts`` (Inbound.outbox), to finish once sent


async def handle(db: Database, flows: Mapping[str, Flow], inbound: Inbound) -> Handled:
    """Apply one inbound message to its survey, in one transaction.

    Drops a provider event seen before, locks the open survey (a row lock on PostgreSQL,
    the write lock on SQLite), runs the engine, stores answers and state. A press that
    names a question other than the current one (an old button, a double tap) stores nothing.
    Text is stored without NUL and the other characters no column holds (errors.clean_text);
    a token or a survey id that cannot name a survey finds none, without asking the database.
    """
    if inbound.text is not None:
        inbound = replace(inbound, text=clean_text(inbound.text))
    if (inbound.survey_token is not None and not TOKEN.fullmatch(inbound.survey_token)) or (
        inbound.survey_id is not None and not 0 < inbound.survey_id <= MAX_ID
    ):
        return Handled("no_survey")
    return await db.transact(_handle, db, flows, inbound)


def _handle(conn: Connection, db: Database, flows: Mapping[str, Flow], inbound: Inbound) -> Handled:
    # Plain SQLAlchemy, run by Database.transact in one trip (see there why).
    if inbound.event_id is not None:
        event = Event(inbound.provider or inbound.channel, inbound.event_id, inbound.received_at)
        if not first_seen(conn, db.dialect, event):
            return _repeat(conn, flows, inbound)
    if inbound.keywords and (consent := _consent(conn, db.dialect, inbound)) is not None:
        return consent
    row = _open_survey(conn, inbound)
    if row is None:
        return _late_reply(conn, flows, inbound)
    # The survey's own flow version, never the file as it is now (bot.flow_versions).
    flow = as_book(flows).version(conn, row.flow_id, row.flow_version)
    if flow is None:
        return _unavailable(conn, row)
    # The columns own the lifecycle (status, language, expiry); the state is the conversation.
    state = engine.State.from_json(row.state, flow)
    at = inbound.received_at
    expired = has_expired(row.status, row.expires_at, at)  # by the scheduler or by time (bot.lifecycle)
    if not expired and not is_open(row.status, row.expires_at, at) and row.status not in _ENDED:
        # Closed from outside the conversation (a newer survey, a failed delivery): no answers.
        return Handled("closed", survey_id=row.id, language=row.language, status=row.status)
    # A press on an expired survey gets the expired text, whichever question it names.
    if (
        not expired
        and inbound.question_id is not None
        and engine.current_question(flow, state, status=row.status) != inbound.question_id
    ):
        return Handled("already_answered", survey_id=row.id, language=row.language, status=row.status)
    reply = engine.Reply(text=inbound.text, choice=inbound.choice, command=inbound.command)
    status = SurveyStatus.EXPIRED if expired else row.status
    step = engine.step(
        flow, state, reply, at, language=row.language, status=status, expires_at=row.expires_at
    )
    status = _store(db, conn, row, flow, step, at)
    reply_job = None
    if inbound.outbox and step.prompts:
        reply_job = conn.execute(
            jobs.job(JobKind.REPLY, now=at, survey_id=row.id, due_at=at + OUTBOX_GRACE).returning(
                jobs_table.c.id
            )
        ).scalar_one()
    return Handled(
        step.outcome, step.prompts, step.answers, row.id, row.language, status, row.channel_ref, reply_job
    )


async def done_before(db: Database, event: Event) -> bool:
    """Whether ``event`` is recorded, so its work was done: for a command that only replies.

    Such a command (a greeting, /report) changes nothing a transaction could record its event
    with, so it records the event after its reply went out (``record_done``): a reply that
    failed leaves no record and the provider's next try is answered, one that went out is not
    given again. Should recording fail (the database went down just then), the webhook answers
    5xx and the reply is given twice: at least once, never lost.
    """
    params = {"provider": event.provider, "event_id": event.event_id}
    async with db.read() as conn:
        return (await conn.execute(_EVENT_SEEN, params)).first() is not None


async def record_done(db: Database, event: Event) -> None:
    """Record ``event`` once its reply went out (see ``done_before``)."""
    await db.transact(first_seen, db.dialect, event)


def first_seen(conn: Connection, dialect: str, event: Event) -> bool:
    """Record ``event`` in the caller's transaction; False when it came before (a retry or a replay)."""
    params = {"provider": event.provider, "event_id": event.event_id, "received_at": event.received_at}
    return conn.execute(_event_insert(dialect), params).scalar_one_or_none() is not None


def _open_survey(conn: Connection, inbound: Inbound) -> sa.Row[tuple[object, ...]] | None:
    contact = {"channel": inbound.channel, "address": inbound.address}
    if inbound.survey_token is not None:
        return conn.execute(_SURVEY_BY_TOKEN, {"token": inbound.survey_token}).one_or_none()
    if inbound.survey_id is not None:
        return conn.execute(_SURVEY_BY_ID, {"survey_id": inbound.survey_id, **contact}).one_or_none()
    return conn.execute(_ACTIVE_SURVEY, contact).one_or_none()


def _consent(conn: Connection, dialect: str, inbound: Inbound) -> Handled | None:
    """A consent keyword applied in the message's transaction; None when the text is no keyword."""
    kind = consent_keyword(inbound.text)
    channel, address = inbound.channel, inbound.address
    if kind == "opt_out":
        ended = opted_out(conn, dialect, channel, address, inbound.received_at)
        log.info("%s opted out of %s surveys (%d open ended)", mask(address), channel, ended)
        return Handled("opted_out")
    if kind == "opt_in":
        if not has_opted_out(conn, channel, address):
            return None  # an answer ("Ja"), not a keyword: there is nothing to undo
        opted_in(conn, channel, address)
        return Handled("opted_in")
    if kind == "help":
        return Handled("help", language=contact_language(conn, channel, address))
    return None


def _repeat(conn: Connection, flows: Mapping[str, Flow], inbound: Inbound) -> Handled:
    """A provider's request seen before: sent again because our reply to it was lost (a crash
    after the commit, a Bot API that did not answer, so the webhook answered 5xx).

    Nothing is stored again. The prompts are what the conversation asks now: the question
    after the stored answer, or the thanks when that answer completed the survey; so the
    customer is not left waiting. Outcome "duplicate", with no prompts when nothing is open.
    """
    book = as_book(flows)
    row = _open_survey(conn, inbound)
    if row is not None:
        flow = book.version(conn, row.flow_id, row.flow_version)
        language, status = str(row.language), str(row.status)
        prompts = asked_now(flow, row.state, language, status) if flow is not None else ()
        return Handled(
            "duplicate",
            prompts,
            survey_id=row.id,
            language=language,
            status=status,
            channel_ref=row.channel_ref,
        )
    if inbound.survey_token is not None or inbound.survey_id is not None:
        return Handled("duplicate")
    # No active survey by this address: the repeated message may have completed it.
    newest = conn.execute(
        _NEWEST_SURVEY, {"channel": inbound.channel, "address": inbound.address}
    ).one_or_none()
    if newest is None or newest.status != SurveyStatus.COMPLETED:
        return Handled("duplicate")
    flow = book.version(conn, newest.flow_id, newest.flow_version)
    if flow is None:
        return Handled("duplicate", survey_id=newest.id)
    thanks = engine.Prompt("thanks", flow.texts[newest.language].thanks)
    return Handled(
        "duplicate", (thanks,), survey_id=newest.id, language=newest.language, status=newest.status
    )


def asked_now(flow: Flow, state: Any, language: str, status: str) -> tuple[engine.Prompt, ...]:
    """What a survey shows the customer now: the open question of an active one, the thanks of a
    completed one, else nothing. For a reply that was lost (a redelivery, the outbox's `reply` job)."""
    if status == SurveyStatus.ACTIVE:
        return engine.resume(flow, engine.State.from_json(state, flow), language=language, status=status)
    if status == SurveyStatus.COMPLETED:
        return (engine.Prompt("thanks", flow.texts[language].thanks),)
    return ()


def _late_reply(conn: Connection, flows: Mapping[str, Flow], inbound: Inbound) -> Handled:
    """No active survey: the flow's `expired` text if the newest one expired lately, stored nowhere.

    Only for a look-up by address (SMS, WhatsApp, Telegram text); a token or a survey id
    reaches the expired branch of the engine through its own row.
    """
    if inbound.survey_token is not None or inbound.survey_id is not None:
        return Handled("no_survey")
    row = conn.execute(_NEWEST_SURVEY, {"channel": inbound.channel, "address": inbound.address}).one_or_none()
    if row is None or row.status != SurveyStatus.EXPIRED or row.expires_at is None:
        return Handled("no_survey")
    if inbound.received_at - row.expires_at > LATE_REPLY_WINDOW:
        return Handled("no_survey", survey_id=row.id)
    flow = as_book(flows).version(conn, row.flow_id, row.flow_version)
    if flow is None:
        return Handled("no_survey", survey_id=row.id)
    language = str(row.language)
    expired = engine.Prompt("expired", flow.texts[language].expired)
    return Handled("expired", (expired,), survey_id=row.id, language=language, status=SurveyStatus.EXPIRED)


def _unavailable(conn: Connection, row: sa.Row[tuple[object, ...]]) -> Handled:
    """Close a survey whose flow version cannot be served: never answered against another one."""
    closed = conn.execute(unservable(int(row.id), str(row.flow_id), int(row.flow_version)))
    if closed.rowcount:
        log.warning(
            "survey %s closed as %s: %s", row.id, UNAVAILABLE, no_definition(row.flow_id, row.flow_version)
        )
    status = UNAVAILABLE if closed.rowcount else str(row.status)
    return Handled("closed", survey_id=int(row.id), status=status)


def _store(
    db: Database,
    conn: Connection,
    row: sa.Row[tuple[object, ...]],
    flow: Flow,
    step: engine.Step,
    now: datetime,
) -> str:
    if step.answers:
        copied = {
            "survey_id": row.id,
            "ticket": row.ticket,
            "agent": row.agent,
            "team": row.team,
            "channel": row.channel,
            "flow_id": row.flow_id,
            "language": row.language,
        }
        values = [
            {
                **copied,
                "question_id": a.question_id,
                "metric": a.metric,
                "score": a.score,
                "text": a.text,
                "answered_at": a.answered_at,
                "scale_min": a.scale.min if a.scale else None,
                "scale_max": a.scale.max if a.scale else None,
                "scale_best": a.scale.best if a.scale else None,
                # One respondent, one observation: only the flow's headline question of a metric.
                "headline": a.metric is not None
                and a.score is not None
                and flow.headline_question(a.metric) == a.question_id,
            }
            for a in step.answers
        ]
        # executemany with the rows as parameters: a statement SQLAlchemy can cache (a multi-row
        # VALUES is compiled afresh each time, which was a third of the answer path).
        conn.execute(_answers_insert(db.dialect), values)
        queue_alerts(conn, int(row.id), step.answers, now, sink=has_sender(db))
    # The engine's status is the survey's own, or where the conversation ended it (completed,
    # stopped, expired); completed_at is set when it completes, never moved afterwards.
    status = str(step.status)
    completed = status == SurveyStatus.COMPLETED and row.status != SurveyStatus.COMPLETED
    conn.execute(
        _SAVE_SURVEY,
        {
            "survey_id": row.id,
            "new_state": step.state.to_json(),
            "new_status": status,
            "new_completed_at": now if completed else row.completed_at,
        },
    )
    return status
