"""Creating surveys: the service every trigger (CLI, API, Telegram, helpdesk) calls."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot import jobs
from bot.errors import ContactOptedOut, OpenSurveysFull
from bot.flow_versions import UNAVAILABLE, FlowBook, as_book, no_definition
from bot.lifecycle import FINAL, OPEN, JobKind, SurveyStatus, has_expired, is_open, survey_sources
from bot.store.db import Database, upsert_insert
from bot.store.tables import MAX_REASON, contacts, surveys
from bot.store.tables import jobs as jobs_table
from flows import engine
from flows.loader import get_flow
from flows.schema import Flow

if TYPE_CHECKING:  # bot.inbound imports this module
    from bot.inbound import Event


@dataclass(frozen=True)
class NewSurvey:
    """What a trigger asks for: which flow, to whom, about which ticket."""

    flow_id: str
    channel: str
    address: str | None = None
    ticket: str | None = None
    agent: str | None = None
    team: str | None = None
    language: str | None = None
    meta: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Created:
    """A survey as created (or found again for the same ticket and flow), with its first prompts."""

    survey_id: int
    token: str
    status: SurveyStatus
    language: str
    prompts: tuple[engine.Prompt, ...]
    created: bool


async def create_survey(
    db: Database,
    flows: Mapping[str, Flow],
    new: NewSurvey,
    *,
    now: datetime,
    ttl: timedelta,
    send_at: datetime | None = None,
    max_open: int | None = None,
) -> Created:
    """Create and open a survey; the same ticket and flow give back the existing one.

    With ``max_open``, a contact that already has that many open surveys is refused another
    (OpenSurveysFull), counted in this transaction with the contact row locked, so two
    triggers for one contact never both take the last place (issue 16: 2,000 open surveys for
    one number were accepted). The same ticket and flow again is given back, never refused.

    The contact's older open survey on the same channel is closed as ``incomplete``, so a
    reply always belongs to the newest question the contact was asked. With ``send_at`` the
    survey stays ``pending`` and a send job is queued for the scheduler, which applies the
    opt-out, throttle and quiet-hour rules when it is due. An open survey gets an expiry job.
    """
    flow = get_flow(flows, new.flow_id)
    return await db.transact(_create, db.dialect, flow, new, now, ttl, send_at, max_open)


def _create(
    conn: Connection,
    dialect: str,
    flow: Flow,
    new: NewSurvey,
    now: datetime,
    ttl: timedelta,
    send_at: datetime | None,
    max_open: int | None,
) -> Created:
    contact_id, contact_language = _contact(conn, dialect, new, now)
    if new.ticket is not None:
        existing = _by_ticket(conn, new.ticket, flow.id)
        if existing is not None:
            return existing
    if contact_id is not None and max_open is not None:
        count = sa.select(sa.func.count()).where(
            surveys.c.contact_id == contact_id, surveys.c.status.in_(sorted(OPEN))
        )
        if conn.execute(count).scalar_one() >= max_open:
            raise OpenSurveysFull(new.channel, max_open)
    pending = send_at is not None
    expires_at = None if pending else now + ttl
    language = flow.language_for(new.language or contact_language)
    step = engine.start(flow, language)
    if contact_id is not None and not pending:  # a pending survey closes them when it is sent
        conn.execute(superseded(contact_id))
    token = secrets.token_urlsafe(16)
    stmt = (
        upsert_insert(dialect, surveys)
        .values(
            token=token,
            flow_id=flow.id,
            flow_version=flow.version,
            ticket=new.ticket,
            agent=new.agent,
            team=new.team,
            channel=new.channel,
            contact_id=contact_id,
            language=language,
            status=SurveyStatus.PENDING if pending else SurveyStatus.ACTIVE,
            created_at=now,
            send_at=send_at,
            sent_at=None if pending else now,
            expires_at=expires_at,
            state=step.state.to_json(),
            meta=dict(new.meta) if new.meta else None,
            requested_language=new.language,
        )
        .on_conflict_do_nothing()
        .returning(surveys.c.id)
    )
    survey_id = conn.execute(stmt).scalar_one_or_none()
    if survey_id is None:  # a concurrent trigger for the same ticket and flow won
        found = _by_ticket(conn, new.ticket or "", flow.id)
        assert found is not None  # noqa: S101 - the conflict guarantees the row
        return found
    if pending:
        conn.execute(jobs.job(JobKind.SEND, now=now, survey_id=survey_id, due_at=send_at))
    else:
        conn.execute(jobs.job(JobKind.EXPIRE, now=now, survey_id=survey_id, due_at=expires_at))
    status = SurveyStatus.PENDING if pending else SurveyStatus.ACTIVE
    return Created(survey_id, token, status, language, step.prompts, created=True)


def _contact(conn: Connection, dialect: str, new: NewSurvey, now: datetime) -> tuple[int | None, str | None]:
    if new.address is None:
        return None, None
    from bot.privacy import was_erased  # bot.privacy imports this module

    if was_erased(conn, new.channel, new.address):  # refused before the address is stored again
        raise ContactOptedOut(new.channel, new.address)
    conn.execute(
        upsert_insert(dialect, contacts)
        .values(channel=new.channel, address=new.address, language=new.language, created_at=now)
        .on_conflict_do_nothing()
    )
    row = conn.execute(
        sa.select(contacts.c.id, contacts.c.language, contacts.c.opted_out_at)
        .where(contacts.c.channel == new.channel, contacts.c.address == new.address)
        .with_for_update()  # surveys for one contact are created one after another
    ).one()
    if row.opted_out_at is not None:
        raise ContactOptedOut(new.channel, new.address)
    return row.id, row.language


def _by_ticket(conn: Connection, ticket: str, flow_id: str) -> Created | None:
    row = conn.execute(
        sa.select(surveys.c.id, surveys.c.token, surveys.c.status, surveys.c.language).where(
            surveys.c.ticket == ticket, surveys.c.flow_id == flow_id
        )
    ).one_or_none()
    if row is None:
        return None
    return Created(row.id, row.token, SurveyStatus(row.status), row.language, (), created=False)


LinkOutcome = Literal["started", "resumed", "expired", "closed", "used", "unknown", "duplicate"]


@dataclass(frozen=True)
class Opened:
    """What opening a survey link did: the prompts to show, or why there are none."""

    outcome: LinkOutcome
    survey_id: int | None = None
    language: str | None = None
    prompts: tuple[engine.Prompt, ...] = ()


async def open_link(
    db: Database,
    flows: Mapping[str, Flow],
    token: str,
    *,
    channel: str,
    address: str,
    language: str | None,
    now: datetime,
    event: Event | None = None,
) -> Opened:
    """Open a survey by its link token for the contact at ``address``.

    The first contact to open a link owns the survey; the same contact opening it again
    sees the current question, anyone else is told the link is used. A survey created
    without a language takes ``language`` (the customer's own) when the flow has it.
    ``event`` (the provider's request, a Telegram update) is recorded in the same
    transaction: seen before, nothing is done ("duplicate"); a failure leaves no record,
    so the request sent again is processed.
    """
    book = as_book(flows)
    return await db.transact(_open_link, db.dialect, book, token, channel, address, language, now, event)


def _open_link(
    conn: Connection,
    dialect: str,
    book: FlowBook,
    token: str,
    channel: str,
    address: str,
    language: str | None,
    now: datetime,
    event: Event | None = None,
) -> Opened:
    if event is not None:
        from bot.inbound import first_seen  # bot.inbound imports this module

        if not first_seen(conn, dialect, event):
            return Opened("duplicate")
    row = conn.execute(
        sa.select(surveys).where(surveys.c.token == token).with_for_update(of=surveys)
    ).one_or_none()
    if row is None:
        return Opened("unknown")
    # The survey's own flow version (bot.flow_versions); one that cannot be served closes it.
    flow = book.version(conn, row.flow_id, row.flow_version)
    if flow is None:
        conn.execute(unservable(row.id, row.flow_id, row.flow_version))
        return Opened("closed", row.id, row.language)
    state = engine.State.from_json(row.state, flow)
    contact_id, _ = _contact(conn, dialect, NewSurvey(row.flow_id, channel, address, language=language), now)
    if row.contact_id is not None and row.contact_id != contact_id:
        return Opened("used", row.id, row.language)
    if has_expired(row.status, row.expires_at, now):
        conn.execute(moved(SurveyStatus.EXPIRED, surveys.c.id == row.id))
        expired = engine.Prompt("expired", flow.texts[row.language].expired)
        return Opened("expired", row.id, row.language, (expired,))
    if not is_open(row.status, row.expires_at, now):
        return Opened("closed", row.id, row.language)
    if row.contact_id is not None:
        prompts = engine.resume(flow, state, language=row.language, status=row.status)
        return Opened("resumed", row.id, row.language, prompts)
    if state.scores:  # answered before it had a contact (a web link): carry on
        chosen = row.language
        started, prompts = state, engine.resume(flow, state, language=chosen, status=row.status)
    else:
        chosen = flow.language_for(row.requested_language or language)
        step = engine.start(flow, chosen)
        started, prompts = step.state, step.prompts
    if contact_id is not None:  # a link is opened by an address, which always has a contact
        conn.execute(superseded(contact_id, newer=row.id))
    conn.execute(
        sa.update(surveys)
        .where(surveys.c.id == row.id)
        .values(contact_id=contact_id, language=chosen, state=started.to_json())
    )
    return Opened("started", row.id, chosen, prompts)


async def remember_ref(db: Database, survey_id: int, ref: str | None) -> None:
    """Store the channel's handle of the question just shown (a Telegram message id)."""
    await db.run(kept_ref(survey_id, ref))


def kept_ref(survey_id: int, ref: str | None) -> sa.Update:
    """The UPDATE that keeps a channel's handle of the question just shown (`Delivered.ref`)."""
    return sa.update(surveys).where(surveys.c.id == survey_id).values(channel_ref=ref)


def closing(survey_id: int | None, status: SurveyStatus | str, *, reason: str | None = None) -> sa.Update:
    """The UPDATE that gives an open survey its final status, for a caller's own connection.

    ``reason`` says why, when something other than the customer closed it (a provider's
    refusal); it is kept in ``closed_reason``, cut to its column's length. A survey whose
    status may not move to ``status`` (bot.lifecycle) is left as it is: its rowcount is 0.
    A status that closes no survey (pending, active, or none) is a ValueError.
    """
    if status not in FINAL:
        raise ValueError(f"status: {status!r} does not close a survey; use one of {', '.join(sorted(FINAL))}")
    update = moved(SurveyStatus(status), surveys.c.id == survey_id)
    return update if reason is None else update.values(closed_reason=reason[:MAX_REASON])


# How long after a transient "not delivered" report the survey's question is sent once more.
REDELIVER_AFTER = timedelta(hours=1)


def undelivered(
    conn: Connection, survey_id: int, message_id: str, reason: str, *, transient: bool, now: datetime
) -> str:
    """A provider reported a message of the survey's send as not delivered; what was done.

    Transient (Twilio 30003: the handset was off or out of reach, and Twilio's advice is to
    send again later): the question is sent once more after REDELIVER_AFTER, as a reminder
    job with ``{"redeliver": reason}``, which the scheduler skips if the survey was answered
    or closed meanwhile ("again"). A report on another message of the first send changes
    nothing more ("ignored"). A report on a message of that second send, or a permanent one
    (30006: a landline), closes the survey as failed with ``reason`` ("failed").
    """
    rows = conn.execute(
        sa.select(jobs_table.c.status, jobs_table.c.payload, jobs_table.c.result)
        .where(jobs_table.c.survey_id == survey_id, jobs_table.c.kind == JobKind.REMINDER)
        .order_by(jobs_table.c.id)
    ).all()
    again = [row for row in rows if (row.payload or {}).get("redeliver")]
    if again:
        sent_again = str((again[-1].result or {}).get("provider_id") or "").split(",")
        if message_id not in sent_again:
            return "ignored"
    elif transient:
        due = now + REDELIVER_AFTER
        conn.execute(
            jobs.job(
                JobKind.REMINDER, now=now, survey_id=survey_id, due_at=due, payload={"redeliver": reason}
            )
        )
        return "again"
    conn.execute(closing(survey_id, SurveyStatus.FAILED, reason=reason))
    return "failed"


def unservable(survey_id: int, flow_id: str, version: int) -> sa.Update:
    """The UPDATE that closes a survey whose flow version cannot be served, saying so."""
    return closing(survey_id, UNAVAILABLE, reason=no_definition(flow_id, version))


def moved(status: SurveyStatus, *where: sa.ColumnElement[bool]) -> sa.Update:
    """The UPDATE that moves the surveys matching ``where`` to ``status``, only those allowed to.

    Only a survey whose status may move to ``status`` (bot.lifecycle.SURVEY_TRANSITIONS)
    changes; the others are left as they are, so a closed survey is never reopened or
    closed again, whoever comes second.
    """
    allowed = sorted(survey_sources(status))
    return sa.update(surveys).where(*where, surveys.c.status.in_(allowed)).values(status=status)


def superseded(contact_id: int, *, newer: int | None = None) -> sa.Update:
    """The UPDATE that closes a contact's open surveys but ``newer`` as incomplete.

    Written once for its three callers (a survey created open, a link opened, a survey sent):
    a contact answers one survey at a time, so a reply always belongs to the newest question.
    """
    where = [surveys.c.contact_id == contact_id]
    if newer is not None:
        where.append(surveys.c.id != newer)
    return moved(SurveyStatus.INCOMPLETE, *where)


@dataclass(frozen=True)
class Current:
    """Where an open survey stands: its language and the prompts that ask the current question."""

    survey_id: int
    status: str
    language: str
    prompts: tuple[engine.Prompt, ...]
    started: bool  # whether anything was answered yet


async def current(db: Database, flows: Mapping[str, Flow], survey_id: int) -> Current | None:
    """The survey's current question as prompts (with the intro before the first answer)."""
    async with db.read() as conn:
        row = (
            await conn.execute(
                sa.select(
                    surveys.c.flow_id,
                    surveys.c.flow_version,
                    surveys.c.status,
                    surveys.c.language,
                    surveys.c.state,
                ).where(surveys.c.id == survey_id)
            )
        ).one_or_none()
        # The survey's own flow version (bot.flow_versions), never the file as it is now.
        flow = await as_book(flows).version_async(conn, row.flow_id, row.flow_version) if row else None
    if row is None or flow is None:
        return None
    state = engine.State.from_json(row.state, flow)
    prompts = asking(flow, state, language=row.language, status=row.status)
    return Current(survey_id, str(row.status), row.language, prompts, engine.started(flow, state))


def asking(flow: Flow, state: engine.State, *, language: str, status: str) -> tuple[engine.Prompt, ...]:
    """The prompts that ask the current question, after the intro while nothing is answered.

    None unless the survey is ``active``; ``language`` and ``status`` are its columns.
    """
    prompts = engine.resume(flow, state, language=language, status=status)
    if prompts and not engine.started(flow, state):
        return (engine.intro(flow, language), *prompts)
    return prompts
