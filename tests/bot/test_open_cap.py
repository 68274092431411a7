"""MAX_OPEN_SURVEYS_PER_ADDRESS: a contact's open surveys are capped in the API, the CLI and the
helpdesk hooks, on SQLite and PostgreSQL; re-sending the same ticket is never refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import Connection

from bot.apikeys import create_key
from bot.errors import ConfigError
from bot.scheduler import Scheduler
from bot.service import Service
from bot.settings import load_settings
from bot.store.tables import surveys
from tests.bot.test_twilio import twilio_process_env, twilio_settings
from tests.cli import invoke, query
from tests.fakes.twilio import FakeTwilioApi
from tests.support import Clock, running_app

CUSTOMER = "+4915112345678"
OTHER = "+4915187654321"
SECRET = "hook-secret-123"
KEY = "MAX_OPEN_SURVEYS_PER_ADDRESS"
FULL = (
    "this sms recipient already has {n} open survey(s), the most MAX_OPEN_SURVEYS_PER_ADDRESS "
    "allows; another can be sent once one is answered or expires"
)


@dataclass
class Api:
    """The app with Twilio on against the fake and helpdesk hooks on, and an API key."""

    app: FastAPI
    client: httpx.AsyncClient
    service: Service
    key: str

    async def post(self, ticket: str, to: str = CUSTOMER, **extra: Any) -> httpx.Response:
        body = {"ticket_id": ticket, "channel": "sms", "to": to, **extra}
        return await self.client.post(
            "/api/surveys", json=body, headers={"Authorization": f"Bearer {self.key}"}
        )

    async def tick(self) -> int:
        return await Scheduler(self.service, self.app.state.channels, worker="test").run_once()

    async def statuses(self) -> list[tuple[str, str]]:
        async with self.service.db.read() as conn:
            rows = await conn.execute(sa.select(surveys.c.ticket, surveys.c.status).order_by(surveys.c.id))
            return [(r.ticket, r.status) for r in rows]


@asynccontextmanager
async def api_with(
    service: Service, fake: FakeTwilioApi, clock: Clock, **settings: Any
) -> AsyncIterator[Api]:
    async with running_app(service, clock, **twilio_settings(fake), hooks_secret=SECRET, **settings) as (
        app,
        client,
        svc,
    ):
        yield Api(app, client, svc, await create_key(svc.db, "test", now=clock()))


@pytest.fixture
async def api(service: Service, fake_twilio: FakeTwilioApi, clock: Clock) -> AsyncIterator[Api]:
    """The API with the default cap."""
    async with api_with(service, fake_twilio, clock) as made:
        yield made


def refused(n: int) -> dict[str, Any]:
    return {"error": {"field": "to", "message": FULL.format(n=n)}}


async def test_default_cap_refuses_the_fourth_open_survey_with_409(api: Api) -> None:
    """Three open surveys for one number are taken; the fourth is 409 naming `to`, and not stored."""
    codes = [(await api.post(f"T-{i}", delay="1h")).status_code for i in range(1, 4)]
    fourth = await api.post("T-4", delay="1h")
    assert ([201, 201, 201], 409, refused(3)) == (codes, fourth.status_code, fourth.json())
    assert ["T-1", "T-2", "T-3"] == [ticket for ticket, _ in await api.statuses()]


async def test_refusal_never_shows_the_number(api: Api) -> None:
    """The 409 names the field and the setting, not the recipient's phone number."""
    for i in range(1, 4):
        await api.post(f"T-{i}", delay="1h")
    text = (await api.post("T-4", delay="1h")).text
    assert (False, False) == ("15112345678" in text, "5678" in text)


async def test_the_same_ticket_again_is_not_refused_at_the_cap(api: Api) -> None:
    """Re-sending a request for a ticket that has its survey gives that survey back (200), even at the cap."""
    first = (await api.post("T-1", delay="1h")).json()
    for i in range(2, 4):
        await api.post(f"T-{i}", delay="1h")
    again = await api.post("T-1", delay="1h")
    assert (200, first["id"], False) == (again.status_code, again.json()["id"], again.json()["created"])


async def test_sent_and_queued_surveys_both_count(api: Api) -> None:
    """An active (sent) survey counts as open, as pending ones do."""
    await api.post("T-1")
    assert 1 == await api.tick()
    await api.post("T-2", delay="1h")
    await api.post("T-3", delay="1h")
    fourth = await api.post("T-4", delay="1h")
    assert ([("T-1", "active"), ("T-2", "pending"), ("T-3", "pending")], 409) == (
        await api.statuses(),
        fourth.status_code,
    )


@pytest.mark.parametrize("final", ["completed", "expired", "incomplete", "failed", "stopped"])
async def test_a_closed_survey_frees_its_place(api: Api, final: str) -> None:
    """Only pending and active surveys count: once one is closed, another can be triggered."""
    for i in range(1, 4):
        await api.post(f"T-{i}", delay="1h")

    def close_first(conn: Connection) -> None:
        # A queued survey is sent (active) before it is answered or expires (bot.lifecycle).
        conn.execute(sa.update(surveys).where(surveys.c.ticket == "T-1").values(status="active"))
        conn.execute(sa.update(surveys).where(surveys.c.ticket == "T-1").values(status=final))

    await api.service.db.transact(close_first)
    assert 201 == (await api.post("T-4", delay="1h")).status_code


async def test_the_cap_is_per_channel_and_address(api: Api) -> None:
    """At the cap for SMS, the same number by WhatsApp and another number by SMS are still taken."""
    for i in range(1, 4):
        await api.post(f"T-{i}", delay="1h")
    whatsapp = await api.post("W-1", channel="whatsapp", delay="1h")
    other = await api.post("O-1", to=OTHER, delay="1h")
    assert (201, 201) == (whatsapp.status_code, other.status_code)


async def test_the_cap_is_the_setting(service: Service, fake_twilio: FakeTwilioApi, clock: Clock) -> None:
    """MAX_OPEN_SURVEYS_PER_ADDRESS=1 refuses the second open survey."""
    async with api_with(service, fake_twilio, clock, max_open_surveys_per_address=1) as api:
        first, second = await api.post("T-1", delay="1h"), await api.post("T-2", delay="1h")
    assert (201, 409, refused(1)) == (first.status_code, second.status_code, second.json())


async def test_concurrent_triggers_never_pass_the_cap(api: Api) -> None:
    """Twelve triggers at once for one new number: exactly three surveys, the other nine 409."""
    responses = await asyncio.gather(*(api.post(f"T-{i}", delay="1h") for i in range(12)))
    codes = sorted(r.status_code for r in responses)
    assert ([201] * 3 + [409] * 9, 3) == (codes, len(await api.statuses()))


ZENDESK = {
    "ticket": {
        "id": "4711",
        "status": "Solved",
        "requester": {"name": "Erika Muster", "phone": CUSTOMER},
        "assignee": {"name": "Anna Berg"},
    }
}


async def test_helpdesk_hook_over_the_cap_is_409_and_its_retry_of_a_taken_ticket_200(
    service: Service, fake_twilio: FakeTwilioApi, clock: Clock
) -> None:
    """A hook for a new ticket at the cap is 409 (not retried for ever); the first ticket again is 200."""
    async with api_with(service, fake_twilio, clock, max_open_surveys_per_address=1) as api:

        async def hook(ticket: str) -> httpx.Response:
            payload = {"ticket": {**ZENDESK["ticket"], "id": ticket}}
            return await api.client.post(
                "/hooks/zendesk", json=payload, headers={"Authorization": f"Bearer {SECRET}"}
            )

        first, second, again = await hook("4711"), await hook("4712"), await hook("4711")
    assert (201, 409, refused(1), 200) == (
        first.status_code,
        second.status_code,
        second.json(),
        again.status_code,
    )


def test_cli_trigger_over_the_cap_exits_1_with_the_message(
    cli_env: dict[str, str], fake_twilio: FakeTwilioApi, db_url: str, in_tmp_path: None
) -> None:
    """`afterword trigger` over the cap prints one line naming `to` and exits 1; nothing more is stored."""
    env = twilio_process_env(cli_env, fake_twilio, **{KEY: "1"})
    args = ["trigger", "--channel", "sms", "--to", CUSTOMER, "--delay", "1h", "--ticket"]
    first, second = invoke([*args, "T-1"], env), invoke([*args, "T-2"], env)
    stored = asyncio.run(query(db_url, sa.select(surveys.c.ticket)))
    assert (0, 1, [f"Error: to: {FULL.format(n=1)}"], [("T-1",)]) == (
        first.code,
        second.code,
        second.stderr.strip().splitlines(),
        stored,
    )


@pytest.mark.parametrize("value", ["0", "-1", "1001", "three"])
def test_a_cap_out_of_bounds_is_refused_naming_the_key(
    value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """MAX_OPEN_SURVEYS_PER_ADDRESS must be 1 to 1000; anything else is refused with the key named."""
    monkeypatch.chdir(tmp_path)  # no .env of the repository
    monkeypatch.setenv(KEY, value)
    with pytest.raises(ConfigError) as bad:
        load_settings(_env_file=None)
    assert KEY == bad.value.key


def test_a_zero_cap_stops_the_command_at_start(cli_env: dict[str, str], in_tmp_path: None) -> None:
    """MAX_OPEN_SURVEYS_PER_ADDRESS=0: `afterword trigger` refuses to start, one line naming the key, exit 2."""
    ran = invoke(["trigger", "--channel", "web", "--ticket", "T-1"], {**cli_env, KEY: "0"})
    assert (2, True) == (ran.code, ran.stderr.startswith(f"Error: {KEY}: ")), ran.stderr
