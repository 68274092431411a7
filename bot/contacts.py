"""Contacts' consent: an opt-out ends their open surveys and keeps new ones from being sent.

A keyword that arrived as a provider event (an SMS with its MessageSid) is recorded with the
answers' events in the same transaction, so a retried or replayed STOP or START changes nothing.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.db import Database, upsert_insert
from bot.inbound import Event, first_seen
from bot.lifecycle import SurveyStatus
from bot.surveys import moved
from bot.tables import contacts, surveys


async def opt_out(
    db: Database, channel: str, address: str, *, now: datetime, event: Event | None = None
) -> int | None:
    """Record that the contact wants no more surveys; returns how many open surveys were ended.

    None when ``event`` was seen before: nothing changes.
    """
    return await db.transact(_opt_out, db.dialect, channel, address, now=now, event=event)


def _opt_out(
    conn: Connection, dialect: str, channel: str, address: str, *, now: datetime, event: Event | None
) -> int | None:
    if event is not None and not first_seen(conn, dialect, event):
        return None
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


async def opt_in(db: Database, channel: str, address: str, *, event: Event | None = None) -> bool | None:
    """Undo an opt-out (START); True when the contact had opted out, None when ``event`` was seen before."""
    return await db.transact(_opt_in, db.dialect, channel, address, event=event)


def _opt_in(
    conn: Connection, dialect: str, channel: str, address: str, *, event: Event | None
) -> bool | None:
    if event is not None and not first_seen(conn, dialect, event):
        return None
    result = conn.execute(
        sa.update(contacts)
        .where(
            contacts.c.channel == channel,
            contacts.c.address == address,
            contacts.c.opted_out_at.is_not(None),
        )
        .values(opted_out_at=None)
    )
    return bool(result.rowcount)


async def contact_language(db: Database, channel: str, address: str) -> str | None:
    """The language of the contact's newest survey, else the one stored with the contact."""
    async with db.read() as conn:
        row = (
            await conn.execute(
                sa.select(surveys.c.language, contacts.c.language.label("own"))
                .select_from(contacts.outerjoin(surveys, surveys.c.contact_id == contacts.c.id))
                .where(contacts.c.channel == channel, contacts.c.address == address)
                .order_by(surveys.c.id.desc())
                .limit(1)
            )
        ).one_or_none()
    if row is None:
        return None
    language: str | None = row.language or row.own
    return language
