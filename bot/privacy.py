"""A person's data: erased or exported on request (GDPR Art. 17 and 15), aged out by retention.

A person is named by a phone number (their SMS, WhatsApp and voice contacts), a Telegram
chat id, an e-mail address (contacts of channel ``email``; no channel sends e-mail yet) or a
ticket (the contacts of the surveys about it). Everything here is a plain function of a
connection, run with ``db.transact`` in the caller's transaction.

Erasing removes what points to the person and keeps what the reports count: a contact's
address becomes ``erased:<id>``; the answers lose their comment but keep score, agent, team,
channel and time, so CSAT, NPS and CES do not move. Their open surveys close as ``stopped``
with the reason ``erased``. So that they are not surveyed again, ``erased_contacts`` keeps a
SHA-256 of the address, never the address; a trigger for it is refused as opted out until the
person opts in again (``bot.surveys._contact``, ``bot.contacts``).

Why a plain SHA-256 and not an HMAC with a server secret: there is no such secret setting,
and a secret that changes or is lost would silently let erased people be surveyed again. A
phone number can be guessed and its hash checked, so the table is pseudonymous: it can tell
whether a given number was erased, and holds nothing else (no name, no survey, no link).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.audit import Action, audited
from bot.errors import InputError
from bot.lifecycle import OPEN, JobStatus, SurveyStatus
from bot.phones import normalize
from bot.store.tables import answers, contacts, erased_contacts, inbound_events, jobs, surveys
from bot.surveys import closing

Kind = Literal["phone", "telegram", "email", "ticket"]
KINDS: tuple[Kind, ...] = ("phone", "telegram", "email", "ticket")
PHONE_CHANNELS = ("sms", "whatsapp", "voice")  # one number, one person, on each of them
PLACEHOLDER = "erased:"  # contacts.address once erased or aged out: erased:<contact id>
ERASED_REASON = "erased"  # surveys.closed_reason of a survey closed by an erasure
# The counts erase() reports, one per table it changes.
ERASE_TABLES = ("contacts", "erased_contacts", "surveys", "answers", "jobs", "inbound_events")
FINISHED_JOBS = (JobStatus.DONE, JobStatus.FAILED, JobStatus.SKIPPED)
_CHAT_ID = re.compile(r"-?\d{1,20}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
# A phone number or another long run of digits (a chat id) in a provider's error text; the
# same pattern in SQL (PostgreSQL's ~, SQLite's REGEXP, which SQLAlchemy's driver provides).
_NUMBER = r"\+?[0-9][0-9 ]{4,}[0-9]"
_DIGITS = re.compile(_NUMBER)
_SID = re.compile(r"[A-Za-z0-9]{10,64}")  # a Twilio CallSid, as voice events begin with it


def address_hash(address: str) -> str:
    """SHA-256 of an address as stored (E.164, chat id, lower-case e-mail), for ``erased_contacts``."""
    return hashlib.sha256(f"afterword-erased\x00{address}".encode()).hexdigest()


@dataclass(frozen=True)
class Person:
    """Whom an erasure or export is about; its repr never shows the address (it may be logged)."""

    kind: Kind
    value: str = field(repr=False)

    @classmethod
    def parse(cls, kind: str, raw: str, *, region: str = "DE") -> Person:
        """The person ``raw`` names as a ``kind``; InputError naming ``kind`` when it cannot be one."""
        text = raw.strip()
        if kind == "phone":
            return cls("phone", normalize(text, region))
        if kind == "telegram":
            if not _CHAT_ID.fullmatch(text):
                raise InputError("telegram", "a Telegram chat id is a number such as 123456789")
            return cls("telegram", text)
        if kind == "email":
            if len(text) > 255 or not _EMAIL.fullmatch(text):
                raise InputError("email", "an e-mail address such as kim@example.com, at most 255 characters")
            return cls("email", text.lower())
        if kind == "ticket":
            if not 0 < len(text) <= 128:
                raise InputError("ticket", "a ticket id of 1 to 128 characters, such as T-1")
            return cls("ticket", text)
        raise InputError("kind", f"{kind!r} is none of {', '.join(KINDS)}")

    @classmethod
    def of_address(cls, address: str, channel: str | None, *, region: str = "DE") -> Person:
        """The person at ``address``: ``channel`` says which kind (sms, whatsapp and voice are a phone).

        Without a channel: an address with ``@`` is an e-mail, one starting with ``+`` a phone
        number, and a number without ``+`` a Telegram chat id.
        """
        if channel is None:
            text = address.strip()
            kind = "email" if "@" in text else "phone" if text.startswith("+") else "telegram"
        elif channel in PHONE_CHANNELS:
            kind = "phone"
        elif channel in ("telegram", "email"):
            kind = channel
        else:
            raise InputError("channel", f"{channel!r} is none of sms, whatsapp, voice, telegram, email")
        return cls.parse(kind, address, region=region)

    @property
    def channels(self) -> tuple[str, ...]:
        """The contact channels the address is looked up on; none for a ticket."""
        if self.kind == "phone":
            return PHONE_CHANNELS
        return () if self.kind == "ticket" else (self.kind,)

    @property
    def reference(self) -> str:
        """How the audit trail names the person: a ticket as it is, an address by a prefix of its hash."""
        if self.kind == "ticket":
            return f"ticket:{self.value}"
        return f"{self.kind}:{address_hash(self.value)[:16]}"


@dataclass(frozen=True)
class _Found:
    contacts: tuple[sa.Row[Any], ...]  # the person's contacts not erased yet
    survey_ids: tuple[int, ...]
    erased: tuple[tuple[str, str], ...]  # (channel, address hash) to record in erased_contacts
    addresses: tuple[str, ...]  # to remove from provider texts (closed_reason)


def _find(conn: Connection, person: Person) -> _Found:
    c, s = contacts.c, surveys.c
    live = ~c.address.startswith(PLACEHOLDER, autoescape=True)
    ticket_surveys: list[int] = []
    if person.kind == "ticket":
        rows = conn.execute(sa.select(s.id, s.contact_id).where(s.ticket == person.value)).all()
        ticket_surveys = [row.id for row in rows]
        ids = sorted({row.contact_id for row in rows if row.contact_id is not None})
        where: sa.ColumnElement[bool] = c.id.in_(ids)
    elif person.kind == "email":
        where = sa.and_(c.channel == "email", sa.func.lower(c.address) == person.value)
    else:
        where = sa.and_(c.channel.in_(person.channels), c.address == person.value)
    found = tuple(conn.execute(sa.select(contacts).where(where, live).order_by(c.id)).all())
    owned = [row.id for row in found]
    survey_ids = set(ticket_surveys)
    if owned:
        survey_ids.update(conn.execute(sa.select(s.id).where(s.contact_id.in_(owned))).scalars())
    erased: set[tuple[str, str]] = set()
    for row in found:
        channels = PHONE_CHANNELS if row.channel in PHONE_CHANNELS else (row.channel,)
        address = str(row.address).lower() if row.channel == "email" else str(row.address)
        erased.update((channel, address_hash(address)) for channel in channels)
    addresses = {str(row.address) for row in found}
    if person.kind != "ticket":
        addresses.add(person.value)
    return _Found(found, tuple(sorted(survey_ids)), tuple(sorted(erased)), tuple(sorted(addresses)))


def erase(conn: Connection, person: Person, *, now: datetime, dry_run: bool = False) -> dict[str, int]:
    """Erase what is stored about ``person``; how many rows of each table changed (or would, dry).

    Idempotent: a second erasure finds nothing left and reports zeros. Inbound events are
    removed where they can be tied to the person: a call's answers (``CallSid:question:n``,
    the CallSid kept with the call's send). An SMS MessageSid or a Telegram update id is not
    stored with anything that names the person; those rows age out (RETENTION_DAYS_EVENTS).
    """
    found = _find(conn, person)
    counts = dict.fromkeys(ERASE_TABLES, 0)
    counts["contacts"] = len(found.contacts)
    new_hashes = _unrecorded(conn, found.erased)
    counts["erased_contacts"] = len(new_hashes)
    survey_changes = _survey_changes(conn, found.survey_ids, found.addresses)
    counts["surveys"] = len(survey_changes)
    with_comment = sa.and_(answers.c.survey_id.in_(found.survey_ids), answers.c.text.is_not(None))
    counts["answers"] = _count(conn, answers, with_comment)
    job_rows = conn.execute(
        sa.select(jobs.c.id, jobs.c.result).where(jobs.c.survey_id.in_(found.survey_ids))
    ).all()
    counts["jobs"] = len(job_rows)
    events = _call_events(_call_sids(row.result for row in job_rows))
    counts["inbound_events"] = _count(conn, inbound_events, events) if events is not None else 0
    if dry_run:
        return counts
    for survey_id, (close, values) in survey_changes.items():
        if close:
            conn.execute(closing(survey_id, SurveyStatus.STOPPED, reason=ERASED_REASON))
        if values:
            conn.execute(sa.update(surveys).where(surveys.c.id == survey_id).values(**values))
    conn.execute(sa.update(answers).where(with_comment).values(text=None))
    if job_rows:
        conn.execute(sa.delete(jobs).where(jobs.c.id.in_([row.id for row in job_rows])))
    if events is not None:
        conn.execute(sa.delete(inbound_events).where(events))
    _anonymise_contacts(conn, found.contacts, now=now, opt_out=True)
    if new_hashes:
        conn.execute(
            sa.insert(erased_contacts),
            [{"channel": ch, "address_hash": h, "erased_at": now} for ch, h in new_hashes],
        )
    return counts


def matches(conn: Connection, person: Person) -> bool:
    """Whether anything is stored about ``person``: a contact, a survey, or an erasure record."""
    found = _find(conn, person)
    return bool(found.contacts or found.survey_ids or _erasures(conn, person))


def export(conn: Connection, person: Person) -> dict[str, Any] | None:
    """Everything stored about ``person`` as JSON-able data; None when nothing is.

    Contacts (with their consent: ``opted_out_at``), surveys with their answers and the jobs
    queued for them, the inbound events tied to them (counted), and the erasures recorded for
    the address. Erased contacts are no longer found by address: what is left of them (scores
    without a person) is no longer about anyone.
    """
    found = _find(conn, person)
    erasures = _erasures(conn, person)
    if not (found.contacts or found.survey_ids or erasures):
        return None
    s, a, j = surveys.c, answers.c, jobs.c
    survey_rows = conn.execute(sa.select(surveys).where(s.id.in_(found.survey_ids)).order_by(s.id)).all()
    answer_rows = conn.execute(
        sa.select(answers).where(a.survey_id.in_(found.survey_ids)).order_by(a.survey_id, a.id)
    ).all()
    job_rows = conn.execute(sa.select(jobs).where(j.survey_id.in_(found.survey_ids)).order_by(j.id)).all()
    events = _call_events(_call_sids(row.result for row in job_rows))
    return {
        "person": {"kind": person.kind, "value": person.value},
        "contacts": [_contact_json(row) for row in found.contacts],
        "surveys": [
            _survey_json(
                row,
                [r for r in answer_rows if r.survey_id == row.id],
                [r for r in job_rows if r.survey_id == row.id],
            )
            for row in survey_rows
        ],
        "erasures": erasures,
        "inbound_events": _count(conn, inbound_events, events) if events is not None else 0,
    }


def was_erased(conn: Connection, channel: str, address: str) -> bool:
    """Whether the person at ``address`` on ``channel`` was erased (and has not opted in since)."""
    return (
        conn.execute(
            sa.select(erased_contacts.c.channel).where(
                erased_contacts.c.channel == channel, erased_contacts.c.address_hash == address_hash(address)
            )
        ).first()
        is not None
    )


def forget_erasure(conn: Connection, channel: str, address: str) -> bool:
    """Drop the erasure record of ``address`` on ``channel`` (the person opted in); True if there was one."""
    deleted = conn.execute(
        sa.delete(erased_contacts).where(
            erased_contacts.c.channel == channel, erased_contacts.c.address_hash == address_hash(address)
        )
    )
    return bool(deleted.rowcount)


# -- retention -----------------------------------------------------------------------------


def anonymise_older_than(
    conn: Connection, cutoff: datetime, limit: int, *, now: datetime, dry_run: bool = False
) -> dict[str, int]:
    """Anonymise at most ``limit`` rows per table whose last activity is before ``cutoff``.

    Comments (``answers.text``) answered before it become NULL; the scores stay. Closed
    surveys whose every time (created, sent, completed, expires) is before it lose their
    metadata, channel handle and any number in their closing reason. A contact created before
    it with no survey after it (and none open) has its address replaced by ``erased:<id>``;
    if it had opted out, its opt-out is kept as an erasure record (a hash of the address).
    A dry run counts every such row (no ``limit``) and changes nothing.
    """
    counts = {"answers": 0, "surveys": 0, "contacts": 0}
    comments = sa.and_(answers.c.text.is_not(None), answers.c.answered_at < cutoff)
    old_surveys = _old(cutoff)
    traces = sa.and_(
        old_surveys,
        sa.or_(
            surveys.c.meta.is_not(None),
            surveys.c.channel_ref.is_not(None),
            surveys.c.closed_reason.regexp_match(_NUMBER),
        ),
    )
    c = contacts.c
    recent = sa.exists().where(surveys.c.contact_id == c.id, ~old_surveys)
    stale_contacts = sa.and_(
        ~c.address.startswith(PLACEHOLDER, autoescape=True), c.created_at < cutoff, ~recent
    )
    if dry_run:
        counts["answers"] = _count(conn, answers, comments)
        counts["surveys"] = _count(conn, surveys, traces)
        counts["contacts"] = _count(conn, contacts, stale_contacts)
        return counts
    ids = list(
        conn.execute(
            sa.select(answers.c.id).where(comments).order_by(answers.c.answered_at).limit(limit)
        ).scalars()
    )
    if ids:
        counts["answers"] = conn.execute(
            sa.update(answers).where(answers.c.id.in_(ids)).values(text=None)
        ).rowcount
    rows = conn.execute(
        sa.select(surveys.c.id, surveys.c.meta, surveys.c.channel_ref, surveys.c.closed_reason)
        .where(traces)
        .order_by(surveys.c.id)
        .limit(limit)
    ).all()
    for row in rows:
        values = _retired_values(row)
        if values:
            conn.execute(sa.update(surveys).where(surveys.c.id == row.id).values(**values))
            counts["surveys"] += 1
    stale = tuple(conn.execute(sa.select(contacts).where(stale_contacts).order_by(c.id).limit(limit)).all())
    kept = [row for row in stale if row.opted_out_at is not None]
    hashes = _unrecorded(conn, [(row.channel, address_hash(_stored(row))) for row in kept])
    if hashes:
        conn.execute(
            sa.insert(erased_contacts),
            [{"channel": ch, "address_hash": h, "erased_at": now} for ch, h in hashes],
        )
    _anonymise_contacts(conn, stale, now=now, opt_out=False)
    counts["contacts"] = len(stale)
    return counts


def prune(conn: Connection, cutoff_events: datetime, limit: int, *, dry_run: bool = False) -> dict[str, int]:
    """Delete at most ``limit`` inbound events and finished jobs older than ``cutoff_events``.

    An inbound event is the de-duplication record of a provider's request: kept while the
    provider may still send it again. A job is finished when done, failed or skipped; its
    result holds provider ids. A dry run counts every such row and deletes nothing.
    """
    events = inbound_events.c.received_at < cutoff_events
    finished = sa.and_(
        jobs.c.status.in_(FINISHED_JOBS), sa.func.coalesce(jobs.c.done_at, jobs.c.created_at) < cutoff_events
    )
    if dry_run:
        return {"inbound_events": _count(conn, inbound_events, events), "jobs": _count(conn, jobs, finished)}
    counts = {}
    for name, table, where in (("inbound_events", inbound_events, events), ("jobs", jobs, finished)):
        # Oldest first by id: old rows have the lowest ids, so the scan stops early without an index.
        ids = list(
            conn.execute(sa.select(table.c.id).where(where).order_by(table.c.id).limit(limit)).scalars()
        )
        counts[name] = conn.execute(sa.delete(table).where(table.c.id.in_(ids))).rowcount if ids else 0
    return counts


# -- helpers -------------------------------------------------------------------------------


def _count(conn: Connection, table: sa.Table, where: sa.ColumnElement[bool]) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(where)).scalar_one())


def _unrecorded(conn: Connection, pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The (channel, hash) pairs not in ``erased_contacts`` yet."""
    wanted = sorted(set(pairs))
    if not wanted:
        return []
    e = erased_contacts.c
    rows = conn.execute(
        sa.select(e.channel, e.address_hash).where(e.address_hash.in_(sorted({h for _, h in wanted})))
    )
    stored = {(row.channel, row.address_hash) for row in rows}
    return [pair for pair in wanted if pair not in stored]


def _erasures(conn: Connection, person: Person) -> list[dict[str, Any]]:
    if person.kind == "ticket":
        return []
    e = erased_contacts.c
    rows = conn.execute(
        sa.select(e.channel, e.erased_at)
        .where(e.channel.in_(person.channels), e.address_hash == address_hash(person.value))
        .order_by(e.channel)
    )
    return [{"channel": row.channel, "erased_at": row.erased_at.isoformat()} for row in rows]


def _survey_changes(
    conn: Connection, survey_ids: Sequence[int], addresses: Sequence[str]
) -> dict[int, tuple[bool, dict[str, Any]]]:
    """Per survey to change: whether to close it, and the columns to clear."""
    s = surveys.c
    rows = conn.execute(
        sa.select(s.id, s.status, s.meta, s.channel_ref, s.closed_reason).where(s.id.in_(survey_ids))
    ).all()
    changes: dict[int, tuple[bool, dict[str, Any]]] = {}
    for row in rows:
        close = row.status in OPEN
        values = _retired_values(row, addresses)
        if close or values:
            changes[row.id] = (close, values)
    return changes


def _retired_values(row: Any, addresses: Sequence[str] = ()) -> dict[str, Any]:
    """The survey columns that name or reach the person, cleared: metadata, channel handle, numbers."""
    values: dict[str, Any] = {}
    if row.meta is not None:
        values["meta"] = None
    if row.channel_ref is not None:
        values["channel_ref"] = None
    if (
        row.closed_reason is not None
        and (scrubbed := scrub(row.closed_reason, addresses)) != row.closed_reason
    ):
        values["closed_reason"] = scrubbed
    return values


def scrub(text: str, addresses: Sequence[str] = ()) -> str:
    """``text`` without the addresses given and without any phone number or other long number."""
    for address in addresses:
        text = text.replace(address, "[erased]")
    return _DIGITS.sub("[erased]", text)


def _anonymise_contacts(
    conn: Connection, rows: Sequence[sa.Row[Any]], *, now: datetime, opt_out: bool
) -> None:
    for row in rows:
        values: dict[str, Any] = {"address": f"{PLACEHOLDER}{row.id}", "time_zone": None}
        if opt_out and row.opted_out_at is None:
            values["opted_out_at"] = now
        conn.execute(sa.update(contacts).where(contacts.c.id == row.id).values(**values))


def _stored(row: sa.Row[Any]) -> str:
    return str(row.address).lower() if row.channel == "email" else str(row.address)


def _old(cutoff: datetime) -> sa.ColumnElement[bool]:
    """A closed survey all of whose times are before ``cutoff``: nothing about it happened since."""
    s = surveys.c
    return sa.and_(
        s.status.not_in(sorted(OPEN)),
        s.created_at < cutoff,
        *(sa.or_(column.is_(None), column < cutoff) for column in (s.sent_at, s.completed_at, s.expires_at)),
    )


def _call_sids(results: Iterable[Mapping[str, Any] | None]) -> list[str]:
    """The CallSids among the provider ids of a survey's sends (several are comma-separated)."""
    sids: set[str] = set()
    for result in results:
        for part in str((result or {}).get("provider_id") or "").split(","):
            if part.startswith("CA") and _SID.fullmatch(part):
                sids.add(part)
    return sorted(sids)


def _call_events(sids: Sequence[str]) -> sa.ColumnElement[bool] | None:
    """The voice events of those calls: their ids are ``CallSid:question:n``."""
    if not sids:
        return None
    e = inbound_events.c
    return sa.and_(e.provider == "twilio-voice", sa.or_(*(e.event_id.startswith(f"{sid}:") for sid in sids)))


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _contact_json(row: sa.Row[Any]) -> dict[str, Any]:
    return {
        "id": row.id,
        "channel": row.channel,
        "address": row.address,
        "language": row.language,
        "time_zone": row.time_zone,
        "opted_out_at": _time(row.opted_out_at),
        "created_at": _time(row.created_at),
    }


def _survey_json(
    row: sa.Row[Any], given: Sequence[sa.Row[Any]], queued: Sequence[sa.Row[Any]]
) -> dict[str, Any]:
    return {
        "id": row.id,
        "contact_id": row.contact_id,
        "ticket": row.ticket,
        "flow": row.flow_id,
        "flow_version": row.flow_version,
        "agent": row.agent,
        "team": row.team,
        "channel": row.channel,
        "language": row.language,
        "requested_language": row.requested_language,
        "status": row.status,
        "closed_reason": row.closed_reason,
        **{
            name: _time(getattr(row, name))
            for name in ("created_at", "send_at", "sent_at", "completed_at", "expires_at")
        },
        "metadata": row.meta,
        "conversation": row.state,
        "channel_ref": row.channel_ref,
        "answers": [
            {
                "question": a.question_id,
                "metric": a.metric,
                "score": a.score,
                "text": a.text,
                "answered_at": _time(a.answered_at),
            }
            for a in given
        ],
        "jobs": [
            {
                "kind": j.kind,
                "status": j.status,
                "due_at": _time(j.due_at),
                "done_at": _time(j.done_at),
                "attempts": j.attempts,
                "payload": j.payload,
                "result": j.result,
                "last_error": j.last_error,
            }
            for j in queued
        ],
    }


# -- requests, with their audit row ----------------------------------------------------------


def erase_request(
    conn: Connection, person: Person, *, now: datetime, dry_run: bool, actor: str, source: str
) -> dict[str, int] | None:
    """``erase`` as a staff member asked for it, recorded in the audit trail (not a dry run).

    None when nothing is stored about ``person`` (nor an erasure of them): there is nobody to erase.
    """
    if not matches(conn, person):
        return None
    counts = erase(conn, person, now=now, dry_run=dry_run)
    if not dry_run:
        audited(conn, actor=actor, action=Action.ERASE, subject=person.reference, source=source, at=now)
    return counts


def export_request(
    conn: Connection, person: Person, *, now: datetime, actor: str, source: str
) -> dict[str, Any] | None:
    """``export`` as a staff member asked for it, recorded in the audit trail when anything was found."""
    found = export(conn, person)
    if found is not None:
        audited(
            conn, actor=actor, action=Action.EXPORT_PERSON, subject=person.reference, source=source, at=now
        )
    return found
