"""Dashboard sign-in: password hashes, web logins, sessions, CSRF tokens and throttled guessing."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from bot.errors import InputError
from bot.service import Service
from bot.store.tables import login_failures, staff, web_sessions
from bot.web.auth import (
    LoginResult,
    WebUser,
    csrf_ok,
    has_web_logins,
    hash_password,
    log_in,
    log_out,
    new_csrf_token,
    prune,
    session_user,
    set_web_login,
    verify_password,
)
from tests.support import Clock

PASSWORD = "correct horse battery"
WRONG = "incorrect horse battery"
IP = "203.0.113.7"
REFUSED = LoginResult(ok=False, throttled=False, cookie=None, retry_after=None)


async def _add(service: Service, clock: Clock, login: str = "ana", password: str = PASSWORD) -> bool:
    return await set_web_login(
        service.db, login=login, password=password, role="manager", name="Ana", now=clock()
    )


async def _cookie(service: Service, clock: Clock, login: str = "ana", ip: str = IP) -> str:
    result = await log_in(service.db, login=login, password=PASSWORD, ip=ip, now=clock())
    assert result.cookie is not None
    return result.cookie


async def _fail(service: Service, clock: Clock, times: int, login: str = "ana", ip: str = IP) -> None:
    for _ in range(times):
        assert REFUSED == await log_in(service.db, login=login, password=WRONG, ip=ip, now=clock())


async def _rows(service: Service, table: sa.Table) -> list[Any]:
    async with service.db.read() as conn:
        return list((await conn.execute(sa.select(table).order_by(table.c.id))).all())


def test_hash_and_verify_round_trip() -> None:
    """A hash verifies its own password and refuses another one."""
    stored = hash_password(PASSWORD)
    assert (True, False) == (verify_password(stored, PASSWORD), verify_password(stored, WRONG))


def test_hash_is_argon2id() -> None:
    """Passwords are hashed with argon2id, and the hash does not contain the password."""
    stored = hash_password(PASSWORD)
    assert ("$argon2id$", False) == (stored[:10], PASSWORD in stored)


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$m=65536,t=3,p=4$broken"])
def test_verify_refuses_a_malformed_hash(stored: str) -> None:
    """A malformed stored hash verifies nothing and raises nothing."""
    assert False is verify_password(stored, PASSWORD)


def test_short_password_refused() -> None:
    """A password of 9 characters is refused, naming the password field; 10 are enough."""
    with pytest.raises(InputError) as caught:
        hash_password("123456789")
    assert ("password", True) == (
        caught.value.field,
        verify_password(hash_password("1234567890"), "1234567890"),
    )


async def test_set_web_login_creates_then_updates(service: Service, clock: Clock) -> None:
    """The first call creates a staff member; the second changes the password, and the old one stops working."""
    assert False is await has_web_logins(service.db)
    created = await _add(service, clock)
    updated = await set_web_login(
        service.db, login="ana", password="a brand new secret", role="agent", name=None, now=clock()
    )
    old = await log_in(service.db, login="ana", password=PASSWORD, ip=IP, now=clock())
    new = await log_in(service.db, login="ana", password="a brand new secret", ip=IP, now=clock())
    (row,) = await _rows(service, staff)
    assert (True, False, False, True) == (created, updated, old.ok, new.ok)
    assert ("ana", "agent", "Ana", None) == (row.web_login, row.role, row.name, row.telegram_id)
    assert True is await has_web_logins(service.db)


async def test_new_password_ends_the_sessions_of_the_old_one(service: Service, clock: Clock) -> None:
    """Setting a new password signs out the sessions opened with the old one."""
    await _add(service, clock)
    cookie = await _cookie(service, clock)
    await _add(service, clock, password="a brand new secret")
    assert None is await session_user(service.db, cookie, now=clock())


@pytest.mark.parametrize(
    ("login", "role", "field"),
    [
        ("", "manager", "login"),
        ("ana maria", "manager", "login"),
        ("anä", "manager", "login"),
        ("a" * 65, "manager", "login"),
        ("ana", "admin", "role"),
        ("ana", "", "role"),
    ],
)
async def test_bad_login_or_role_names_the_field(
    service: Service, clock: Clock, login: str, role: str, field: str
) -> None:
    """A login outside [A-Za-z0-9._@-]{1,64} or a role other than manager/agent is refused, naming the field."""
    with pytest.raises(InputError) as caught:
        await set_web_login(service.db, login=login, password=PASSWORD, role=role, name=None, now=clock())
    assert (field, False) == (caught.value.field, await has_web_logins(service.db))


async def test_log_in_gives_a_cookie_for_the_right_user(service: Service, clock: Clock) -> None:
    """A successful sign-in returns a cookie that resolves to the staff member, with a CSRF token."""
    await _add(service, clock, login="ana.maria@example.com")
    result = await log_in(service.db, login="ana.maria@example.com", password=PASSWORD, ip=IP, now=clock())
    user = await session_user(service.db, result.cookie, now=clock())
    (row,) = await _rows(service, staff)
    assert user is not None
    expected = WebUser(row.id, "ana.maria@example.com", "Ana", "manager", user.csrf_token)
    assert (True, False, None, expected) == (result.ok, result.throttled, result.retry_after, user)
    assert 43 == len(user.csrf_token)


async def test_database_keeps_only_the_cookie_hash(service: Service, clock: Clock) -> None:
    """The sessions table holds the SHA-256 of the cookie, never the cookie itself."""
    await _add(service, clock)
    cookie = await _cookie(service, clock)
    (row,) = await _rows(service, web_sessions)
    assert hashlib.sha256(cookie.encode()).hexdigest() == row.token_hash
    assert [] == [value for value in row if isinstance(value, str) and cookie in value]


async def test_unknown_cookies_resolve_to_nobody(service: Service, clock: Clock) -> None:
    """No cookie, an empty one and an unknown one give no user."""
    await _add(service, clock)
    await _cookie(service, clock)
    found = [await session_user(service.db, cookie, now=clock()) for cookie in (None, "", "made-up")]
    assert [None, None, None] == found


async def test_wrong_password_is_refused_and_recorded(service: Service, clock: Clock) -> None:
    """A wrong password is refused and leaves one failure row with the login, address and time."""
    await _add(service, clock)
    result = await log_in(service.db, login="ana", password=WRONG, ip=IP, now=clock())
    rows = [(row.login, row.ip, row.failed_at) for row in await _rows(service, login_failures)]
    assert (REFUSED, [("ana", IP, clock())]) == (result, rows)


async def test_unknown_login_is_refused_and_recorded(service: Service, clock: Clock) -> None:
    """An unknown login is refused like a wrong password and counts as a failure."""
    result = await log_in(service.db, login="nobody", password=PASSWORD, ip=IP, now=clock())
    assert (REFUSED, ["nobody"]) == (result, [row.login for row in await _rows(service, login_failures)])


async def test_sixth_attempt_is_throttled_even_with_the_right_password(
    service: Service, clock: Clock
) -> None:
    """After 5 failures from one address its right password is refused for 15 minutes, and works after 16."""
    await _add(service, clock)
    await _fail(service, clock, 5)
    throttled = await log_in(service.db, login="ana", password=PASSWORD, ip=IP, now=clock())
    assert LoginResult(ok=False, throttled=True, cookie=None, retry_after=15 * 60) == throttled
    assert 5 == len(await _rows(service, login_failures))
    clock.advance(minutes=16)
    assert True is (await log_in(service.db, login="ana", password=PASSWORD, ip=IP, now=clock())).ok
    assert [] == await _rows(service, login_failures)


async def test_one_address_cannot_lock_out_the_owner(service: Service, clock: Clock) -> None:
    """Five failures from one address throttle that address for the login; its owner elsewhere gets in."""
    await _add(service, clock)
    await _fail(service, clock, 5, ip="198.51.100.1")
    attacker = await log_in(service.db, login="ana", password=PASSWORD, ip="198.51.100.1", now=clock())
    owner = await log_in(service.db, login="ana", password=PASSWORD, ip=IP, now=clock())
    assert (True, True) == (attacker.throttled, owner.ok)


async def test_twenty_failures_from_four_addresses_lock_the_login(service: Service, clock: Clock) -> None:
    """Guesses spread over addresses count for the login too: after 20 even a fifth address waits."""
    await _add(service, clock)
    for n in range(4):
        await _fail(service, clock, 5, ip=f"198.51.100.{n + 1}")
    fifth = await log_in(service.db, login="ana", password=PASSWORD, ip=IP, now=clock())
    assert LoginResult(ok=False, throttled=True, cookie=None, retry_after=15 * 60) == fifth


async def test_retry_after_counts_from_the_oldest_failure_in_the_window(
    service: Service, clock: Clock
) -> None:
    """With failures a minute apart, the wait ends when the first of the five leaves the window."""
    await _add(service, clock)
    for _ in range(5):
        await _fail(service, clock, 1)
        clock.advance(minutes=1)
    result = await log_in(service.db, login="ana", password=PASSWORD, ip=IP, now=clock())
    assert (True, 10 * 60) == (result.throttled, result.retry_after)
    clock.advance(minutes=10)
    assert True is (await log_in(service.db, login="ana", password=PASSWORD, ip=IP, now=clock())).ok


async def test_one_address_is_throttled_across_logins(service: Service, clock: Clock) -> None:
    """Twenty failures on twenty logins from one address throttle that address, not another one."""
    await _add(service, clock)
    for n in range(20):
        await _fail(service, clock, 1, login=f"guess{n}")
    same_ip = await log_in(service.db, login="ana", password=PASSWORD, ip=IP, now=clock())
    other_ip = await log_in(service.db, login="ana", password=PASSWORD, ip="198.51.100.1", now=clock())
    assert ((False, True, 15 * 60), True) == (
        (same_ip.ok, same_ip.throttled, same_ip.retry_after),
        other_ip.ok,
    )


async def test_forty_concurrent_guesses_get_five_password_checks(service: Service, clock: Clock) -> None:
    """40 guesses at once from one address, the right one last: 5 are checked, the rest throttled.

    Before, the count was read before the slow password check and written after it, so all 40
    were checked (15 of 40 on PostgreSQL) and the right one got in (issue 16).
    """
    await _add(service, clock)
    guesses = [WRONG] * 39 + [PASSWORD]
    results = await asyncio.gather(
        *(log_in(service.db, login="ana", password=guess, ip=IP, now=clock()) for guess in guesses)
    )
    checked = [result for result in results if not result.throttled]
    assert (5, False) == (len(checked), any(result.ok for result in results))
    again = await log_in(service.db, login="ana", password=PASSWORD, ip=IP, now=clock())
    assert (False, True) == (again.ok, again.throttled)


async def test_session_expires_after_12_hours(service: Service, clock: Clock) -> None:
    """A session works just before 12 hours and not a second after."""
    await _add(service, clock)
    cookie = await _cookie(service, clock)
    clock.advance(hours=11, minutes=59)
    before = await session_user(service.db, cookie, now=clock())
    clock.advance(minutes=1, seconds=1)
    assert (True, None) == (before is not None, await session_user(service.db, cookie, now=clock()))


async def test_last_seen_is_written_at_most_once_a_minute(service: Service, clock: Clock) -> None:
    """Requests within a minute of the last write leave last_seen_at alone; a later one moves it."""
    await _add(service, clock)
    start = clock()
    cookie = await _cookie(service, clock)
    clock.advance(seconds=30)
    await session_user(service.db, cookie, now=clock())
    (soon,) = await _rows(service, web_sessions)
    clock.advance(seconds=31)
    await session_user(service.db, cookie, now=clock())
    (later,) = await _rows(service, web_sessions)
    assert (start, clock()) == (soon.last_seen_at, later.last_seen_at)


async def test_log_out_ends_the_session(service: Service, clock: Clock) -> None:
    """After log_out the cookie resolves to nobody and the session row is gone."""
    await _add(service, clock)
    cookie = await _cookie(service, clock)
    await log_out(service.db, cookie)
    await log_out(service.db, None)
    found = await session_user(service.db, cookie, now=clock())
    assert (None, []) == (found, await _rows(service, web_sessions))


@pytest.mark.parametrize(
    ("expected", "given", "ok"),
    [
        ("token-a", "token-a", True),
        ("token-a", "token-b", False),
        ("token-a", None, False),
        ("token-a", "", False),
        ("", "", False),
        ("token-a", "tökén", False),
    ],
)
def test_csrf_ok(expected: str, given: str | None, ok: bool) -> None:
    """Only the exact, non-empty token passes; None, empty and non-ASCII input fail without raising."""
    assert ok is csrf_ok(expected, given)


def test_new_csrf_tokens_differ() -> None:
    """Each CSRF token is fresh and fits the 64-character column."""
    first, second = new_csrf_token(), new_csrf_token()
    assert (True, True) == (first != second, len(first) <= 64)


async def test_prune_deletes_expired_rows(service: Service, clock: Clock) -> None:
    """Prune removes expired sessions and old failures and keeps the live ones."""
    await _add(service, clock)
    await _cookie(service, clock)
    await _fail(service, clock, 1, login="bob")
    clock.advance(hours=12)
    live = await _cookie(service, clock)
    await _fail(service, clock, 1, login="carl")
    deleted = await prune(service.db, now=clock())
    sessions, failures = await _rows(service, web_sessions), await _rows(service, login_failures)
    assert (2, [hashlib.sha256(live.encode()).hexdigest()], ["carl"]) == (
        deleted,
        [row.token_hash for row in sessions],
        [row.login for row in failures],
    )


async def test_weak_hash_is_upgraded_on_sign_in(service: Service, clock: Clock) -> None:
    """A hash made with weaker parameters is replaced by a default one at the next sign-in."""
    await _add(service, clock)
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash(PASSWORD)
    await service.db.run(sa.update(staff).values(password_hash=weak))
    result = await log_in(service.db, login="ana", password=PASSWORD, ip=IP, now=clock())
    (row,) = await _rows(service, staff)
    assert (True, False) == (result.ok, PasswordHasher().check_needs_rehash(row.password_hash))
