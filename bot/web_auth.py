"""Dashboard sign-in: staff logins with argon2id passwords, server-side sessions, slowed guessing.

The session cookie carries 256 random bits and the database keeps only their SHA-256; each
session has its own CSRF token for the dashboard's forms. Failed sign-ins are counted per
login and per address: after ``MAX_FAILURES`` within ``FAILURE_WINDOW`` further attempts are
refused without looking at the password, so guessing stays slow even for a lucky guess.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.db import Database, upsert_insert
from bot.errors import InputError
from bot.settings import STAFF_ROLES
from bot.tables import login_failures, staff, web_sessions

SESSION_TTL = timedelta(hours=12)
MAX_FAILURES = 5  # per login, and per IP, within FAILURE_WINDOW
FAILURE_WINDOW = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 10
_TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is a hint, not worth a write per request
_LOGIN = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_KEY_LENGTH = 64  # login_failures.login and .ip: longer input is cut, it cannot be a real login

_hasher = PasswordHasher()


@dataclass(frozen=True)
class WebUser:
    """The staff member behind a valid session cookie."""

    staff_id: int
    login: str
    name: str | None
    role: str
    csrf_token: str


@dataclass(frozen=True)
class LoginResult:
    """The outcome of a sign-in; ``retry_after`` (seconds) only when throttled."""

    ok: bool
    throttled: bool
    cookie: str | None
    retry_after: int | None


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``; refuses passwords shorter than 10 characters."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InputError("password", f"use at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``stored_hash``; False for a mismatch or a malformed hash."""
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, ValueError):  # InvalidHashError and encoding errors are ValueErrors
        return False


@functools.cache
def _dummy_hash() -> str:
    # Made with today's parameters, so checking an unknown login costs what a real check costs.
    return _hasher.hash(secrets.token_urlsafe(32))


def _digest(cookie: str) -> str:
    # Cookies are 256 random bits, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(cookie.encode()).hexdigest()


def new_csrf_token() -> str:
    """A fresh random CSRF token."""
    return secrets.token_urlsafe(32)


def csrf_ok(expected: str, given: str | None) -> bool:
    """Whether the form's CSRF token is the session's, compared in constant time."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


async def set_web_login(
    db: Database, *, login: str, password: str, role: str, name: str | None, now: datetime
) -> bool:
    """Create a web login, or set the password, role and name of an existing one; True when new."""
    if not _LOGIN.fullmatch(login):
        raise InputError("login", "use 1 to 64 letters, digits, '.', '_', '@' or '-', e.g. ana@example.com")
    if role not in STAFF_ROLES:
        raise InputError("role", f"use one of {', '.join(STAFF_ROLES)}")
    password_hash = hash_password(password)  # before the transaction: argon2 is slow on purpose
    async with db.write() as conn:
        inserted = (
            await conn.execute(
                upsert_insert(db, staff)
                .values(web_login=login, password_hash=password_hash, role=role, name=name, created_at=now)
                .on_conflict_do_nothing(index_elements=["web_login"])
                .returning(staff.c.id)
            )
        ).scalar_one_or_none()
        if inserted is None:
            changes: dict[str, object] = {"password_hash": password_hash, "role": role}
            if name is not None:
                changes["name"] = name
            staff_id = (
                await conn.execute(
                    sa.update(staff).where(staff.c.web_login == login).values(**changes).returning(staff.c.id)
                )
            ).scalar_one()
            # A new password is often set because the old one leaked: end the sessions it opened.
            await conn.execute(sa.delete(web_sessions).where(web_sessions.c.staff_id == staff_id))
        # Whoever set the password wants it usable now, not after the lock-out has run out.
        await conn.execute(sa.delete(login_failures).where(login_failures.c.login == login))
    return inserted is not None


async def has_web_logins(db: Database) -> bool:
    """Whether anyone can sign in to the dashboard."""
    async with db.read() as conn:
        found = await conn.execute(sa.select(staff.c.id).where(staff.c.web_login.is_not(None)).limit(1))
        return found.first() is not None


async def _wait(conn: AsyncConnection, column: sa.Column[str], value: str, now: datetime) -> int | None:
    """Seconds until ``value`` may try again, None when it has failed fewer than MAX_FAILURES times."""
    query = (
        sa.select(login_failures.c.failed_at)
        .where(column == value, login_failures.c.failed_at > now - FAILURE_WINDOW)
        .order_by(login_failures.c.failed_at.desc())
        .limit(MAX_FAILURES)
    )
    recent: list[datetime] = list((await conn.execute(query)).scalars())
    if len(recent) < MAX_FAILURES:
        return None
    # Once the oldest of the latest MAX_FAILURES leaves the window, fewer than MAX_FAILURES remain.
    return max(1, math.ceil((recent[-1] + FAILURE_WINDOW - now).total_seconds()))


async def log_in(db: Database, *, login: str, password: str, ip: str, now: datetime) -> LoginResult:
    """Check a login and password; on success a new session and its cookie."""
    login_key, ip_key = login[:_KEY_LENGTH], ip[:_KEY_LENGTH]
    async with db.read() as conn:
        waits = [
            await _wait(conn, login_failures.c.login, login_key, now),
            await _wait(conn, login_failures.c.ip, ip_key, now),
        ]
        row = (
            await conn.execute(
                sa.select(staff.c.id, staff.c.password_hash).where(
                    staff.c.web_login == login, staff.c.password_hash.is_not(None)
                )
            )
        ).one_or_none()
    if any(wait is not None for wait in waits):
        return LoginResult(False, True, None, max(wait for wait in waits if wait is not None))
    # An unknown login is checked against a dummy hash, so the time taken does not tell it apart.
    stored: str = row.password_hash if row is not None else _dummy_hash()
    if not verify_password(stored, password) or row is None:
        async with db.write() as conn:
            await conn.execute(sa.insert(login_failures).values(login=login_key, ip=ip_key, failed_at=now))
        return LoginResult(False, False, None, None)
    rehashed = _hasher.hash(password) if _hasher.check_needs_rehash(stored) else None
    cookie = secrets.token_urlsafe(32)
    async with db.write() as conn:
        await conn.execute(
            sa.insert(web_sessions).values(
                token_hash=_digest(cookie),
                staff_id=row.id,
                csrf_token=new_csrf_token(),
                created_at=now,
                expires_at=now + SESSION_TTL,
                last_seen_at=now,
            )
        )
        await conn.execute(sa.delete(login_failures).where(login_failures.c.login == login_key))
        if rehashed is not None:  # the hasher's parameters were raised since this hash was made
            await conn.execute(sa.update(staff).where(staff.c.id == row.id).values(password_hash=rehashed))
    return LoginResult(True, False, cookie, None)


async def session_user(db: Database, cookie: str | None, *, now: datetime) -> WebUser | None:
    """The staff member signed in with ``cookie``; None for a missing, unknown or expired one."""
    if not cookie:
        return None
    async with db.read() as conn:
        row = (
            await conn.execute(
                sa.select(
                    web_sessions.c.id.label("session_id"),
                    web_sessions.c.csrf_token,
                    web_sessions.c.last_seen_at,
                    staff.c.id,
                    staff.c.web_login,
                    staff.c.name,
                    staff.c.role,
                )
                .join(staff, staff.c.id == web_sessions.c.staff_id)
                .where(
                    web_sessions.c.token_hash == _digest(cookie),
                    web_sessions.c.expires_at > now,
                    staff.c.web_login.is_not(None),
                )
            )
        ).one_or_none()
    if row is None:
        return None
    if row.last_seen_at is None or now - row.last_seen_at >= _TOUCH_EVERY:
        async with db.write() as conn:
            await conn.execute(
                sa.update(web_sessions).where(web_sessions.c.id == row.session_id).values(last_seen_at=now)
            )
    return WebUser(row.id, row.web_login, row.name, row.role, row.csrf_token)


async def log_out(db: Database, cookie: str | None) -> None:
    """End the session of ``cookie``, if there is one."""
    if not cookie:
        return
    async with db.write() as conn:
        await conn.execute(sa.delete(web_sessions).where(web_sessions.c.token_hash == _digest(cookie)))


async def prune(db: Database, *, now: datetime) -> int:
    """Delete expired sessions and failures older than the window; the number of rows deleted."""
    async with db.write() as conn:
        sessions = await conn.execute(sa.delete(web_sessions).where(web_sessions.c.expires_at <= now))
        failures = await conn.execute(
            sa.delete(login_failures).where(login_failures.c.failed_at <= now - FAILURE_WINDOW)
        )
    return sessions.rowcount + failures.rowcount
