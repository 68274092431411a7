"""The audit trail: staff actions that read or change personal data, who, when, what, from where.

The trail holds no customer content: ``subject`` names a record ("staff:anna",
"staff:telegram:123", "apikey:zendesk-prod", "survey:12", "answers:30d"), never a phone
number, a comment or a token. ``actor`` is a dashboard login, the operating system's user for
the CLI (``cli_actor``), or "unknown-login" for a failed sign-in of no known login; ``source``
is where the action came from: the web client's address, "cli", "telegram:<user id>".

A row is written in the same transaction as the action it records (``audited`` inside
``db.transact``), or in one of its own (``record``). Recorded: dashboard sign-ins (success and
checked failure), the dashboard's CSV export, API keys created and revoked, staff roles given
or changed and staff removed; erasure and the person export record theirs too.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.store.db import Database
from bot.store.tables import audit_log

_ACTOR, _ACTION, _NAMED = 128, 32, 128  # the columns' lengths (tables.audit_log)
CLI = "cli"


class Action(StrEnum):
    """What was done; ``audited`` takes any string, these are the ones Afterword records."""

    LOGIN = "login"
    LOGIN_FAILED = "login-failed"  # a wrong password or an unknown login; a throttled try is not checked
    EXPORT_CSV = "export-csv"
    EXPORT_PERSON = "export-person"
    ERASE = "erase"
    APIKEY_CREATE = "apikey-create"
    APIKEY_REVOKE = "apikey-revoke"
    STAFF_ROLE = "staff-role"  # recorded as "staff-role:<new role>" (``role_change``)
    STAFF_REMOVE = "staff-remove"


def role_change(role: str) -> str:
    """The action of giving someone ``role``: "staff-role:manager"."""
    return f"{Action.STAFF_ROLE}:{role}"


@dataclass(frozen=True)
class AuditEntry:
    """One row of the trail."""

    at: datetime
    actor: str
    action: str
    subject: str | None
    source: str | None


def cli_actor() -> str:
    """Who runs a command: the operating system's user name, "unknown" when it has none."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no LOGNAME/USER and no passwd entry (a bare container)
        return "unknown"


def telegram_source(user_id: int) -> str:
    """The source of an action taken in Telegram."""
    return f"telegram:{user_id}"


def audited(
    conn: Connection,
    *,
    actor: str,
    action: str,
    subject: str | None,
    source: str | None,
    at: datetime,
) -> None:
    """Add one row to the trail, inside the caller's transaction."""
    conn.execute(
        sa.insert(audit_log).values(
            at=at,
            actor=actor[:_ACTOR],
            action=action[:_ACTION],
            subject=None if subject is None else subject[:_NAMED],
            source=None if source is None else source[:_NAMED],
        )
    )


async def record(
    db: Database,
    *,
    actor: str,
    action: str,
    subject: str | None,
    source: str | None,
    at: datetime,
) -> None:
    """Add one row to the trail in a transaction of its own."""
    await db.transact(audited, actor=actor, action=action, subject=subject, source=source, at=at)


async def listing(conn_or_db: AsyncConnection | Database, since: datetime | None = None) -> list[AuditEntry]:
    """The trail's rows at or after ``since`` (all without it), oldest first."""
    query = sa.select(
        audit_log.c.at, audit_log.c.actor, audit_log.c.action, audit_log.c.subject, audit_log.c.source
    ).order_by(audit_log.c.at, audit_log.c.id)
    if since is not None:
        query = query.where(audit_log.c.at >= since)
    if isinstance(conn_or_db, Database):
        async with conn_or_db.read() as conn:
            rows = (await conn.execute(query)).all()
    else:
        rows = (await conn_or_db.execute(query)).all()
    return [AuditEntry(row.at, row.actor, row.action, row.subject, row.source) for row in rows]
