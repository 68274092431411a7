"""The audit trail: a row for each staff action on personal data, and `afterword audit` lists them."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from bot.apikeys import create_key, revoke_key
from bot.audit import AuditEntry, listing, record
from bot.service import Service
from bot.staff import add_staff, remove_staff
from bot.web.auth import set_web_login
from tests.cli import invoke
from tests.support import Clock, running_app

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
Row = tuple[str, str, str | None, str | None]


def rows(entries: list[AuditEntry]) -> list[Row]:
    """(actor, action, subject, source) of each entry."""
    return [(e.actor, e.action, e.subject, e.source) for e in entries]


@dataclass
class Dashboard:
    client: httpx.AsyncClient
    service: Service

    async def log_in(self, login: str, password: str) -> httpx.Response:
        found = CSRF.search((await self.client.get("/dashboard/login")).text)
        assert found is not None
        return await self.client.post(
            "/dashboard/login", data={"csrf": found.group(1), "login": login, "password": password}
        )


@pytest.fixture
async def dashboard(service: Service, clock: Clock) -> AsyncIterator[Dashboard]:
    """The app with a manager login "anna" made by "ops" from the CLI."""
    async with running_app(service, clock, public_base_url="http://testserver") as (_, client, svc):
        await set_web_login(
            svc.db, login="anna", password=PASSWORD, role="manager", name="Anna", now=clock(), actor="ops"
        )
        yield Dashboard(client, svc)


async def test_dashboard_logins_are_recorded_with_their_address(dashboard: Dashboard) -> None:
    """A wrong password, an unknown login and a sign-in each leave a row with the client's address;
    the unknown login's row does not keep what was typed."""
    since = dashboard.service.clock()
    assert 401 == (await dashboard.log_in("anna", "not the password")).status_code
    assert 401 == (await dashboard.log_in("my-password-by-mistake", PASSWORD)).status_code
    assert 303 == (await dashboard.log_in("anna", PASSWORD)).status_code

    found = rows(await listing(dashboard.service.db, since))
    assert [
        ("ops", "staff-role:manager", "staff:anna", "cli"),
        ("anna", "login-failed", "staff:anna", "127.0.0.1"),
        ("unknown-login", "login-failed", None, "127.0.0.1"),
        ("anna", "login", "staff:anna", "127.0.0.1"),
    ] == found


async def test_csv_export_is_recorded(dashboard: Dashboard) -> None:
    """Downloading the dashboard's CSV leaves a row naming who, the period and the address."""
    await dashboard.log_in("anna", PASSWORD)
    assert 200 == (await dashboard.client.get("/dashboard/export.csv?since=7d")).status_code
    found = rows(await listing(dashboard.service.db))
    assert ("anna", "export-csv", "answers:7d", "127.0.0.1") == found[-1]


async def test_api_keys_created_and_revoked_are_recorded(service: Service, clock: Clock) -> None:
    """Creating and revoking a key leave a row each, naming the key, never the key itself."""
    key = await create_key(service.db, "zendesk-prod", now=clock(), actor="ops")
    clock.advance(minutes=1)
    assert await revoke_key(service.db, "zendesk-prod", now=clock(), actor="ops")
    assert not await revoke_key(service.db, "zendesk-prod", now=clock(), actor="ops")  # nothing revoked

    entries = await listing(service.db)
    assert [
        ("ops", "apikey-create", "apikey:zendesk-prod", "cli"),
        ("ops", "apikey-revoke", "apikey:zendesk-prod", "cli"),
    ] == rows(entries)
    assert [] == [e for e in entries if key in repr(e) or key[3:] in repr(e)]


async def test_staff_role_changes_are_recorded_and_nothing_else(service: Service, clock: Clock) -> None:
    """A new member and each change of role leave a row; the same role again or a new name does not."""
    db, now = service.db, clock()
    await add_staff(db, telegram_id=555, role="agent", name="Ben", now=now, actor="ops")
    await add_staff(db, telegram_id=555, role="agent", name="Benjamin", now=now, actor="ops")
    await add_staff(db, telegram_id=555, role="manager", name=None, now=now, actor="ops")
    await set_web_login(db, login="cara", password=PASSWORD, role="agent", name=None, now=now, actor="ops")
    await set_web_login(db, login="cara", password=PASSWORD, role="manager", name=None, now=now, actor="ops")
    await set_web_login(db, login="cara", password=PASSWORD, role="manager", name=None, now=now, actor="ops")
    assert await remove_staff(db, 555, now=now, actor="ops")
    assert not await remove_staff(db, 555, now=now, actor="ops")

    assert [
        ("ops", "staff-role:agent", "staff:telegram:555", "cli"),
        ("ops", "staff-role:manager", "staff:telegram:555", "cli"),
        ("ops", "staff-role:agent", "staff:cara", "cli"),
        ("ops", "staff-role:manager", "staff:cara", "cli"),
        ("ops", "staff-remove", "staff:telegram:555", "cli"),
    ] == rows(await listing(db))


async def test_listing_starts_at_since_and_cuts_long_values(service: Service, clock: Clock) -> None:
    """`listing(since)` leaves out older rows; a value longer than its column is cut, not refused."""
    await record(service.db, actor="ops", action="erase", subject="survey:1", source="cli", at=clock())
    later = clock.advance(days=2)
    await record(service.db, actor="o" * 300, action="erase", subject="survey:2", source="x" * 300, at=later)
    async with service.db.read() as conn:
        found = await listing(conn, later)
    assert [("o" * 128, "erase", "survey:2", "x" * 128)] == rows(found)


def test_audit_command_lists_the_trail(cli_env: dict[str, str]) -> None:
    """`afterword apikey create` is recorded with the system user as actor and "cli" as source, and
    `afterword audit` shows it; a bad --since names the option."""
    env = {**cli_env, "USER": "ops-anna", "LOGNAME": "ops-anna", "COLUMNS": "200"}
    assert 0 == invoke(["apikey", "create", "zendesk-prod"], env).code
    shown = invoke(["audit", "--since", "7d"], env)
    cells = [
        [cell.strip() for cell in line.split("│")[2:-1]]
        for line in shown.stdout.splitlines()
        if line.startswith("│")
    ]
    assert (0, [["ops-anna", "apikey-create", "apikey:zendesk-prod", "cli"]]) == (shown.code, cells)
    refused = invoke(["audit", "--since", "week"], env)
    expected = "Error: --since: 'week' is not a number of days such as 7d, 30d or 365d"
    assert (2, expected) == (refused.code, refused.stderr.strip())
