"""Dashboard sign-in: staff logins with argon2id passwords, server-side sessions, slowed guessing.

The session cookie carries 256 random bits and the database keeps only their SHA-256; each
session has its own CSRF token for the dashboard's forms.

Guessing is slowed by counting failed sign-ins within ``FAILURE_WINDOW`` (15 minutes), three
ways, and refusing further attempts without looking at the password:

* per login and address: ``MAX_FAILURES`` (5). One address gets at most five password checks
  per login per window, however many requests it sends at once.
* per login, from any address: ``MAX_LOGIN_FAILURES`` (20). A guesser spread over many
  addresses is slowed too, and yet no single address can lock a login for its owner: one
  address stops at five, so locking a login for everyone takes at least four.
* per address, over all logins: ``MAX_ADDRESS_FAILURES`` (20), so one address cannot try five
  passwords on each of many logins. An office behind one NAT shares it; behind a reverse
  proxy the address is the client's only when ``TRUSTED_PROXIES`` names the proxy.

Each lock lasts until the oldest counted failure leaves the window: an attacker who stops
frees the login within 15 minutes. The count holds under concurrency because an attempt is
counted *before* its password is checked, in the one transaction that reads the counts (a
row in ``login_failures``, serialised by SQLite's write lock and on PostgreSQL by advisory
locks per login and per address); a right password then removes the login's failures. 40
simultaneous guesses used to be checked all at once, and the right one among them got in
(issue 16).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy.engine import Connection

from bot import audit
from bot.errors import InputError
from bot.settings import STAFF_ROLES
from bot.staff import agent_name, web_subject
from bot.store.db import Database, upsert_insert
from bot.store.tables import login_failures, staff, web_sessions

SESSION_TTL = timedelta(hours=12)
MAX_FAILURES = 5  # per login and address, within FAILURE_WINDOW
MAX_LOGIN_FAILURES = 20  # per login from any address: needs at least four addresses
MAX_ADDRESS_FAILURES = 20  # per address over all logins
FAILURE_WINDOW = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 10
_TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is a hint, not worth a write per request
_LOGIN = re.compile(r"[A-Za-z0-9._@-]{1,64}")
UNKNOWN_LOGIN = "unknown-login"  # the audit trail's actor for a failed sign-in of no known login
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

    @property
    def agent(self) -> str | None:
        """The ``answers.agent`` this login may see (its name, else the login); None for a manager."""
        return agent_name(self.role, self.name, self.login)


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
    db: Database,
    *,
    login: str,
    password: str,
    role: str,
    name: str | None,
    now: datetime,
    actor: str | None = None,
    source: str | None = audit.CLI,
) -> bool:
    """Create a web login, or set the password, role and name of an existing one; True when new.

    A new login or a changed role is recorded in the audit trail, by ``actor`` (default: the
    operating system's user, as for the CLI).
    """
    if not _LOGIN.fullmatch(login):
        raise InputError("login", "use 1 to 64 letters, digits, '.', '_', '@' or '-', e.g. ana@example.com")
    if role not in STAFF_ROLES:
        raise InputError("role", f"use one of {', '.join(STAFF_ROLES)}")
    # Before the transaction and in a thread: argon2 is slow on purpose.
    password_hash = await asyncio.to_thread(hash_password, password)
    by = actor or audit.cli_actor()
    return await db.transact(_set_login, db.dialect, login, password_hash, role, name, now, by, source)


def _set_login(
    conn: Connection,
    dialect: str,
    login: str,
    password_hash: str,
    role: str,
    name: str | None,
    now: datetime,
    actor: str,
    source: str | None,
) -> bool:
    before = conn.execute(sa.select(staff.c.role).where(staff.c.web_login == login)).scalar()
    inserted = conn.execute(
        upsert_insert(dialect, staff)
        .values(web_login=login, password_hash=password_hash, role=role, name=name, created_at=now)
        .on_conflict_do_nothing(index_elements=["web_login"])
        .returning(staff.c.id)
    ).scalar_one_or_none()
    if inserted is None:
        changes: dict[str, object] = {"password_hash": password_hash, "role": role}
        if name is not None:
            changes["name"] = name
        staff_id = conn.execute(
            sa.update(staff).where(staff.c.web_login == login).values(**changes).returning(staff.c.id)
        ).scalar_one()
        # A new password is often set because the old one leaked: end the sessions it opened.
        conn.execute(sa.delete(web_sessions).where(web_sessions.c.staff_id == staff_id))
    # Whoever set the password wants it usable now, not after the lock-out has run out.
    conn.execute(sa.delete(login_failures).where(login_failures.c.login == login))
    if before != role:
        subject = web_subject(login)
        audit.audited(
            conn, actor=actor, action=audit.role_change(role), subject=subject, source=source, at=now
        )
    return inserted is not None


async def has_web_logins(db: Database) -> bool:
    """Whether anyone can sign in to the dashboard."""
    async with db.read() as conn:
        found = await conn.execute(sa.select(staff.c.id).where(staff.c.web_login.is_not(None)).limit(1))
        return found.first() is not None


def _wait(conn: Connection, limit: int, now: datetime, *where: sa.ColumnElement[bool]) -> int | None:
    """Seconds until the failures matching ``where`` fall below ``limit``; None when they are below it."""
    query = (
        sa.select(login_failures.c.failed_at)
        .where(*where, login_failures.c.failed_at > now - FAILURE_WINDOW)
        .order_by(login_failures.c.failed_at.desc())
        .limit(limit)
    )
    recent: list[datetime] = list(conn.execute(query).scalars())
    if len(recent) < limit:
        return None
    # Once the oldest of the latest ``limit`` leaves the window, fewer than ``limit`` remain.
    return max(1, math.ceil((recent[-1] + FAILURE_WINDOW - now).total_seconds()))


def _lock(conn: Connection, *keys: str) -> None:
    """On PostgreSQL, hold a lock per key until the transaction ends (SQLite's write lock does it there)."""
    if conn.dialect.name != "postgresql":
        return
    for key in keys:  # always in this order (login, then address), so two attempts cannot deadlock
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(key))))


def _count_attempt(conn: Connection, login: str, ip: str, now: datetime) -> tuple[int | None, Any]:
    """Count an attempt as failed before its password is checked; (seconds to wait, None) when throttled.

    Otherwise (None, the staff row or None for an unknown login). Reading the counts and adding
    the attempt happen in one transaction under the locks, so concurrent attempts see each other.
    """
    c = login_failures.c
    _lock(conn, f"afterword-login:{login}", f"afterword-address:{ip}")
    waits = [
        _wait(conn, MAX_FAILURES, now, c.login == login, c.ip == ip),
        _wait(conn, MAX_LOGIN_FAILURES, now, c.login == login),
        _wait(conn, MAX_ADDRESS_FAILURES, now, c.ip == ip),
    ]
    if any(wait is not None for wait in waits):
        return max(wait for wait in waits if wait is not None), None
    conn.execute(sa.insert(login_failures).values(login=login, ip=ip, failed_at=now))
    row = conn.execute(
        sa.select(staff.c.id, staff.c.password_hash).where(
            staff.c.web_login == login, staff.c.password_hash.is_not(None)
        )
    ).one_or_none()
    return None, row


async def log_in(db: Database, *, login: str, password: str, ip: str, now: datetime) -> LoginResult:
    """Check a login and password; on success a new session and its cookie.

    ``ip`` is the client's address as the app sees it (behind a proxy named in
    ``TRUSTED_PROXIES``, the one in X-Forwarded-For). A success or a checked failure is recorded
    in the audit trail with that address; a throttled attempt, refused unchecked, is not (a
    flood of them would flood the trail). A failure for an unknown login is recorded without
    what was typed, which may be a password typed into the wrong field.
    """
    login_key, ip_key = login[:_KEY_LENGTH], ip[:_KEY_LENGTH]
    wait, row = await db.transact(_count_attempt, login_key, ip_key, now)
    if wait is not None:
        return LoginResult(False, True, None, wait)
    # An unknown login is checked against a dummy hash, so the time taken does not tell it apart.
    stored: str = row.password_hash if row is not None else _dummy_hash()
    # argon2 takes tens of milliseconds on purpose: in a thread, so webhooks are not kept waiting.
    if not await asyncio.to_thread(verify_password, stored, password) or row is None:
        actor, subject = (login_key, web_subject(login_key)) if row is not None else (UNKNOWN_LOGIN, None)
        await audit.record(
            db, actor=actor, action=audit.Action.LOGIN_FAILED, subject=subject, source=ip_key, at=now
        )
        return LoginResult(False, False, None, None)  # the attempt stays counted as a failure
    rehashed = await asyncio.to_thread(_hasher.hash, password) if _hasher.check_needs_rehash(stored) else None
    cookie = secrets.token_urlsafe(32)
    await db.transact(_open_session, row.id, _digest(cookie), login_key, ip_key, rehashed, now)
    return LoginResult(True, False, cookie, None)


def _open_session(
    conn: Connection, staff_id: int, token_hash: str, login: str, ip: str, rehashed: str | None, now: datetime
) -> None:
    conn.execute(
        sa.insert(web_sessions).values(
            token_hash=token_hash,
            staff_id=staff_id,
            csrf_token=new_csrf_token(),
            created_at=now,
            expires_at=now + SESSION_TTL,
            last_seen_at=now,
        )
    )
    # This attempt's row and the login's earlier failures: the owner is in, the count starts anew.
    conn.execute(sa.delete(login_failures).where(login_failures.c.login == login))
    if rehashed is not None:  # the hasher's parameters were raised since this hash was made
        conn.execute(sa.update(staff).where(staff.c.id == staff_id).values(password_hash=rehashed))
    audit.audited(conn, actor=login, action=audit.Action.LOGIN, subject=web_subject(login), source=ip, at=now)


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
        await db.run(
            sa.update(web_sessions).where(web_sessions.c.id == row.session_id).values(last_seen_at=now)
        )
    return WebUser(row.id, row.web_login, row.name, row.role, row.csrf_token)


async def log_out(db: Database, cookie: str | None) -> None:
    """End the session of ``cookie``, if there is one."""
    if not cookie:
        return
    await db.run(sa.delete(web_sessions).where(web_sessions.c.token_hash == _digest(cookie)))


async def prune(db: Database, *, now: datetime) -> int:
    """Delete expired sessions and failures older than the window; the number of rows deleted."""
    return await db.transact(_prune, now)


def _prune(conn: Connection, now: datetime) -> int:
    sessions = conn.execute(sa.delete(web_sessions).where(web_sessions.c.expires_at <= now))
    failures = conn.execute(
        sa.delete(login_failures).where(login_failures.c.failed_at <= now - FAILURE_WINDOW)
    )
    return int(sessions.rowcount + failures.rowcount)
