"""Staff: who may use the staff commands, from TELEGRAM_STAFF and from `afterword staff add`.

A member added with `staff add --lang de|en` reads the staff texts in that language; without
one (and for TELEGRAM_STAFF) their client's language decides (bot.staff_language).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot import audit
from bot.settings import Settings, StaffRole
from bot.store.db import Database, upsert_insert
from bot.store.tables import staff


@dataclass(frozen=True)
class StaffMember:
    """One member of staff and where the entry comes from."""

    telegram_id: int | None
    role: StaffRole
    name: str | None
    source: Literal["settings", "database"]
    web_login: str | None = None
    language: str | None = None  # de or en, chosen with `staff add --lang`; None: not chosen


async def find_staff(db: Database, settings: Settings, telegram_id: int) -> StaffMember | None:
    """The staff member with this Telegram user id; a database entry wins over TELEGRAM_STAFF."""
    async with db.read() as conn:
        row = (
            await conn.execute(
                sa.select(staff.c.role, staff.c.name, staff.c.language).where(
                    staff.c.telegram_id == telegram_id
                )
            )
        ).one_or_none()
    if row is not None:
        return StaffMember(telegram_id, row.role, row.name, "database", language=row.language)
    role = settings.telegram_staff.get(telegram_id)
    return StaffMember(telegram_id, role, None, "settings") if role else None


async def add_staff(
    db: Database,
    *,
    telegram_id: int,
    role: StaffRole,
    name: str | None,
    now: datetime,
    language: str | None = None,
    actor: str | None = None,
    source: str | None = audit.CLI,
) -> bool:
    """Add a staff member, or change the role, name and language of an existing one; True when new.

    A name or language that is None leaves an existing member's as it is. A new member or a
    changed role is recorded in the audit trail, by ``actor`` (default: the operating system's user).
    """
    by = actor or audit.cli_actor()
    return await db.transact(_add_staff, db.dialect, telegram_id, role, name, now, language, by, source)


def _add_staff(
    conn: Connection,
    dialect: str,
    telegram_id: int,
    role: StaffRole,
    name: str | None,
    now: datetime,
    language: str | None,
    actor: str,
    source: str | None,
) -> bool:
    before = conn.execute(sa.select(staff.c.role).where(staff.c.telegram_id == telegram_id)).scalar()
    inserted = conn.execute(
        upsert_insert(dialect, staff)
        .values(telegram_id=telegram_id, role=role, name=name, language=language, created_at=now)
        .on_conflict_do_nothing()
        .returning(staff.c.id)
    ).scalar_one_or_none()
    if inserted is None:
        changes: dict[str, object] = {"role": role}
        if name is not None:
            changes["name"] = name
        if language is not None:
            changes["language"] = language
        conn.execute(sa.update(staff).where(staff.c.telegram_id == telegram_id).values(**changes))
    if before != role:
        subject = telegram_subject(telegram_id)
        audit.audited(
            conn, actor=actor, action=audit.role_change(role), subject=subject, source=source, at=now
        )
    return inserted is not None


def telegram_subject(telegram_id: int) -> str:
    """How the audit trail names a staff member known by their Telegram user id."""
    return f"staff:telegram:{telegram_id}"


def web_subject(login: str) -> str:
    """How the audit trail names a staff member known by their dashboard login."""
    return f"staff:{login}"


def agent_name(role: str, name: str | None, fallback: str) -> str | None:
    """The ``answers.agent`` whose answers this staff member may see; None for a manager (all).

    Staff rows have no link to ``answers.agent``: an agent is their staff name (`staff add
    --name`, the name `/survey` stores as the agent), else ``fallback`` (their dashboard login,
    or their Telegram name). Anyone who is not a manager counts as an agent.
    """
    if role == "manager":
        return None
    return name or fallback


async def set_web_login_language(db: Database, web_login: str, language: str) -> bool:
    """Set the staff language of a dashboard login; True when the login exists."""
    return bool(
        await db.run(sa.update(staff).where(staff.c.web_login == web_login).values(language=language))
    )


async def language_of(db: Database, staff_id: int) -> str | None:
    """The language a staff member chose (`staff add --lang`), None when they chose none."""
    async with db.read() as conn:
        found = await conn.execute(sa.select(staff.c.language).where(staff.c.id == staff_id))
        return found.scalar_one_or_none()


async def remove_staff(
    db: Database,
    telegram_id: int,
    *,
    now: datetime | None = None,
    actor: str | None = None,
    source: str | None = audit.CLI,
) -> bool:
    """Remove a staff member added with `staff add`; True when one was removed (and recorded)."""
    when = now or datetime.now(UTC)
    return await db.transact(_remove_staff, telegram_id, when, actor or audit.cli_actor(), source)


def _remove_staff(conn: Connection, telegram_id: int, now: datetime, actor: str, source: str | None) -> bool:
    if not conn.execute(sa.delete(staff).where(staff.c.telegram_id == telegram_id)).rowcount:
        return False
    subject = telegram_subject(telegram_id)
    audit.audited(conn, actor=actor, action=audit.Action.STAFF_REMOVE, subject=subject, source=source, at=now)
    return True


async def list_staff(db: Database, settings: Settings) -> list[StaffMember]:
    """Everyone with a staff role, database entries first, then those only in TELEGRAM_STAFF."""
    async with db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    staff.c.telegram_id, staff.c.web_login, staff.c.role, staff.c.name, staff.c.language
                ).order_by(staff.c.id)
            )
        ).all()
    found = [
        StaffMember(row.telegram_id, row.role, row.name, "database", row.web_login, row.language)
        for row in rows
    ]
    known = {member.telegram_id for member in found}
    found.extend(
        StaffMember(user, role, None, "settings")
        for user, role in sorted(settings.telegram_staff.items())
        if user not in known
    )
    return found
