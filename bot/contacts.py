"""Contacts' consent: an opt-out ends their open surveys and keeps new ones from being sent.

A consent keyword a customer sends (STOP, START, HELP by SMS) is an inbound message like an
answer: ``inbound.handle`` applies it with ``opted_out``/``opted_in`` in the transaction that
records its provider event, so a retried or replayed STOP or START changes nothing. The
``opt_out`` here is for what a provider reports instead (Twilio's 21610: the number
unsubscribed at the carrier).
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.lifecycle import SurveyStatus
from bot.privacy import forget_erasure, was_erased
from bot.store.db import Database, upsert_insert
from bot.store.tables import contacts, surveys
from bot.surveys import moved


async def opt_out(db: Database, channel: str, address: str, *, now: datetime) -> int:
    """Record that the contact wants no more surveys; returns how many open surveys were ended."""
    return await db.transact(opted_out, db.dialect, channel, address, now)


def opted_out(conn: Connection, dialect: str, channel: str, address: str, now: datetime) -> int:
    """``opt_out`` in the caller's transaction: the opt-out recorded, the contact's open surveys stopped."""
    conn.execute(
        upsert_insert(dialect, contacts)
        .values(channel=channel, address=address, created_at=now, opted_out_at=now)
        .on_conflict_do_update(index_elements=["channel", "address"], set_={"opted_out_at": now})
    )
    contact = (
        sa.select(contacts.c.id)
        .where(contacts.c.channel == channel, contacts.c.address == address)
        .scalar_subquery()
    )
    return int(conn.execute(moved(SurveyStatus.STOPPED, surveys.c.contact_id == contact)).rowcount or 0)


def opted_in(conn: Connection, channel: str, address: str) -> bool:
    """Undo an opt-out (START) or an erasure in the caller's transaction; True when there was one."""
    erased = forget_erasure(conn, channel, address)
    result = conn.execute(
        sa.update(contacts)
        .where(
            contacts.c.channel == channel,
            contacts.c.address == address,
            contacts.c.opted_out_at.is_not(None),
        )
        .values(opted_out_at=None)
    )
    return bool(result.rowcount) or erased


def has_opted_out(conn: Connection, channel: str, address: str) -> bool:
    """Whether the contact at ``address`` has opted out or was erased (and not opted back in)."""
    found = conn.execute(
        sa.select(contacts.c.id).where(
            contacts.c.channel == channel, contacts.c.address == address, contacts.c.opted_out_at.is_not(None)
        )
    )
    return found.first() is not None or was_erased(conn, channel, address)


def contact_language(conn: Connection, channel: str, address: str) -> str | None:
    """The language of the contact's newest survey, else the one stored with the contact."""
    row = conn.execute(
        sa.select(surveys.c.language, contacts.c.language.label("own"))
        .select_from(contacts.outerjoin(surveys, surveys.c.contact_id == contacts.c.id))
        .where(contacts.c.channel == channel, contacts.c.address == address)
        .order_by(surveys.c.id.desc())
        .limit(1)
    ).one_or_none()
    if row is None:
        return None
    language: str | None = row.language or row.own
    return language
