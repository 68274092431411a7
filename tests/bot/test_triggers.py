"""Triggering and scheduling: the API with keys, helpdesk webhooks, and the scheduler's rules,
on SQLite and PostgreSQL, sending through the real twilio client to the fake REST API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from bot.apikeys import create_key, revoke_key
from bot.channels.base import Channel, Delivered, Outgoing
from bot.contacts import opt_out
from bot.scheduler import CONCURRENT_JOBS, Scheduler
from bot.service import Service
from bot.settings import Settings
from bot.store.tables import jobs, surveys
from tests.bot.test_twilio import PUBLIC, SENDER, twilio_settings
from tests.fakes.twilio import FakeTwilioApi
from tests.support import Clock, running_app

CUSTOMER = "+4915112345678"
HOOK_SECRET = "hook-secret-123"
GENERIC_MAP = '{"ticket_id": "data.ticket.id", "phone": "data.customer.phone", "agent": "data.agent"}'


@dataclass
class Api:
    """The app, a client with a valid key, the fake Twilio, and a scheduler pass."""

    app: FastAPI
    client: httpx.AsyncClient
    fake: FakeTwilioApi
    service: Service
    key: str
    clock: Clock

    async def post(self, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        return await self.client.post(
            "/api/surveys", json=body, headers={"Authorization": f"Bearer {key or self.key}"}
        )

    async def survey(self, **extra: Any) -> dict[str, Any]:
        body = {"ticket_id": "T-1", "channel": "sms", "to": CUSTOMER, "agent": "anna", **extra}
        response = await self.post(body)
        assert response.status_code in (200, 201), response.text
        made: dict[str, Any] = response.json()
        return made

    async def tick(self, **advance: float) -> int:
        """Move the clock, then run one scheduler pass."""
        if advance:
            self.clock.advance(**advance)
        return await Scheduler(self.service, self.app.state.channels, worker="test").run_once()

    async def status(self, survey_id: int) -> str:
        async with self.service.db.read() as conn:
            found: str = (
                await conn.execute(sa.select(surveys.c.status).where(surveys.c.id == survey_id))
            ).scalar_one()
        return found

    def sends_to(self, number: str = CUSTOMER) -> int:
        return sum(1 for m in self.fake.messages() if m.params["To"] == number)


@pytest.fixture
async def api(service: Service, fake_twilio: FakeTwilioApi, clock: Clock) -> AsyncIterator[Api]:
    """The app with Twilio on against the fake, helpdesk hooks on, and an API key."""
    settings = {**twilio_settings(fake_twilio), "hooks_secret": HOOK_SECRET, "hooks_generic_map": GENERIC_MAP}
    async with running_app(service, clock, **settings) as (app, client, svc):
        key = await create_key(svc.db, "test", now=clock())
        yield Api(app, client, fake_twilio, svc, key, clock)


async def count_surveys(service: Service) -> int:
    async with service.db.read() as conn:
        found: int = (await conn.execute(sa.select(sa.func.count()).select_from(surveys))).scalar_one()
    return found


# --- the API ----------------------------------------------------------------------------


async def test_trigger_is_idempotent_per_ticket_and_flow(api: Api) -> None:
    """The same ticket_id and flow return the existing survey (200), not a second one."""
    first = await api.post({"ticket_id": "T-1", "channel": "sms", "to": CUSTOMER})
    again = await api.post({"ticket_id": "T-1", "channel": "sms", "to": "+49 151 12345678"})
    assert (201, 200) == (first.status_code, again.status_code)
    assert (first.json()["id"], "pending", False) == (
        again.json()["id"],
        again.json()["status"],
        again.json()["created"],
    )
    assert 1 == await count_surveys(api.service)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"channel": "fax", "to": CUSTOMER}, "channel"),
        ({"channel": "sms", "to": CUSTOMER, "flow": "nope"}, "flow"),
        ({"channel": "sms", "to": CUSTOMER, "language": "fr"}, "language"),
        ({"channel": "sms", "to": "0000"}, "to"),
        ({"channel": "sms"}, "to"),
        ({"channel": "voice"}, "to"),
        ({"channel": "web", "to": CUSTOMER}, "to"),
        ({"channel": "web", "delay": "1h"}, "delay"),  # a link is open at once: nothing to send later
        ({"channel": "web", "send_at": "2026-11-24T09:00:00+01:00"}, "send_at"),
        ({"channel": "telegram"}, "channel"),  # Telegram is off in this app
        ({"channel": "sms", "to": CUSTOMER, "delay": "soon"}, "delay"),
        ({"channel": "sms", "to": CUSTOMER, "delay": "1h", "send_at": "2026-11-24T09:00:00+01:00"}, "delay"),
        ({"channel": "sms", "to": CUSTOMER, "send_at": "2026-11-24T09:00:00"}, "send_at"),  # no zone
        ({"channel": "sms", "to": CUSTOMER, "colour": "red"}, "colour"),
        ({"to": CUSTOMER}, "channel"),
    ],
)
async def test_bad_trigger_is_422_naming_the_field(api: Api, body: dict[str, Any], field: str) -> None:
    """Each bad part of a trigger is refused with 422 naming its field, and nothing is stored."""
    response = await api.post({"ticket_id": "T-1", **body})
    assert (422, field) == (response.status_code, response.json()["error"]["field"])
    assert response.json()["error"]["message"]
    assert 0 == await count_surveys(api.service)


@pytest.mark.parametrize("key", ["", "aw_wrong", "revoked"])
async def test_bad_or_revoked_key_is_401(api: Api, key: str) -> None:
    """A missing, wrong or revoked key gets 401 on every API route."""
    if key == "revoked":
        key = await create_key(api.service.db, "old", now=api.clock())
        await revoke_key(api.service.db, "old", now=api.clock())
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    responses = [
        await api.client.post("/api/surveys", json={"ticket_id": "T", "channel": "web"}, headers=headers),
        await api.client.get("/api/surveys/1", headers=headers),
        await api.client.get("/api/report", headers=headers),
    ]
    assert [401, 401, 401] == [r.status_code for r in responses]
    assert "Bearer" == responses[0].headers["WWW-Authenticate"]
    assert 0 == await count_surveys(api.service)


async def test_web_channel_returns_a_link_and_the_survey_is_open(api: Api) -> None:
    """A web survey needs no recipient: it is open at once and the answer has its link."""
    made = await api.survey(ticket_id="T-web", channel="web", to=None)
    assert ("active", f"{PUBLIC}/s/") == (made["status"], made["link"][: len(PUBLIC) + 3])


async def test_get_survey_shows_status_and_answers(api: Api) -> None:
    """GET /api/surveys/{id} gives the status and times; an unknown id is 404 naming it."""
    made = await api.survey()
    shown = await api.client.get(f"/api/surveys/{made['id']}", headers={"Authorization": f"Bearer {api.key}"})
    missing = await api.client.get("/api/surveys/999", headers={"Authorization": f"Bearer {api.key}"})
    assert ("pending", "T-1", "anna", []) == tuple(
        shown.json()[k] for k in ("status", "ticket_id", "agent", "answers")
    )
    assert (404, "survey_id") == (missing.status_code, missing.json()["error"]["field"])


async def test_metadata_is_returned_by_post_and_get(api: Api) -> None:
    """The metadata a trigger sends comes back as `metadata` from POST and GET; none gives null."""
    meta = {"order": "A-77", "priority": 2, "tags": ["vip", "eu"], "customer": {"since": 2019}}
    made = await api.survey(metadata=meta)
    bare = await api.survey(ticket_id="T-2", to="+4915112345679")
    auth = {"Authorization": f"Bearer {api.key}"}
    shown = (await api.client.get(f"/api/surveys/{made['id']}", headers=auth)).json()
    shown_bare = (await api.client.get(f"/api/surveys/{bare['id']}", headers=auth)).json()
    assert (meta, meta, None, None) == (
        made["metadata"],
        shown["metadata"],
        bare["metadata"],
        shown_bare["metadata"],
    )


async def test_trigger_found_again_returns_the_stored_metadata(api: Api) -> None:
    """A repeated trigger for the same ticket answers with the first request's metadata, as stored."""
    await api.survey(metadata={"order": "A-77"})
    again = await api.post({"ticket_id": "T-1", "channel": "sms", "to": CUSTOMER, "metadata": {"order": "X"}})
    assert (200, {"order": "A-77"}) == (again.status_code, again.json()["metadata"])


async def test_helpdesk_hook_survey_shows_its_source(api: Api) -> None:
    """A survey made by a helpdesk webhook shows the metadata the hook stores: its source."""
    made = (await hook(api, "/hooks/zendesk", ZENDESK)).json()
    shown = await api.client.get(f"/api/surveys/{made['id']}", headers={"Authorization": f"Bearer {api.key}"})
    assert ({"source": "zendesk"}, {"source": "zendesk"}) == (made["metadata"], shown.json()["metadata"])


async def test_openapi_docs_list_the_survey_routes(api: Api) -> None:
    """/docs is served and the OpenAPI schema documents POST /api/surveys."""
    schema = (await api.client.get("/openapi.json")).json()
    assert (200, True) == (
        (await api.client.get("/docs")).status_code,
        "post" in schema["paths"]["/api/surveys"],
    )


# --- the scheduler ----------------------------------------------------------------------


async def test_send_now_sends_intro_and_question(api: Api) -> None:
    """A survey due now is sent by the next scheduler pass, the intro and question as one SMS, and becomes active."""
    made = await api.survey()
    await api.tick()
    assert (1, "active") == (api.sends_to(), await api.status(made["id"]))
    [message] = api.fake.messages()
    assert message.params["Body"].startswith("Vielen Dank für Ihren Kontakt!")
    assert "\n\n" in message.params["Body"]


async def test_delay_is_honoured(api: Api) -> None:
    """delay 1h: nothing is sent before the hour is up, then it is."""
    made = await api.survey(delay="1h")
    await api.tick(minutes=59)
    before = api.sends_to()
    await api.tick(minutes=2)
    assert (0, 1, "active") == (before, api.sends_to(), await api.status(made["id"]))


async def test_quiet_hours_postpone_to_the_next_allowed_minute(api: Api) -> None:
    """Due at 22:30 in Berlin (21:30 UTC), the send waits until 08:00 Berlin (07:00 UTC)."""
    api.clock.now = datetime(2026, 11, 23, 21, 30, tzinfo=UTC)
    made = await api.survey()
    await api.tick()
    async with api.service.db.read() as conn:
        due = (await conn.execute(sa.select(jobs.c.due_at).where(jobs.c.kind == "send"))).scalar_one()
    assert (0, datetime(2026, 11, 24, 7, 0, tzinfo=UTC)) == (api.sends_to(), due)
    await api.tick(hours=9, minutes=29)  # 06:59 UTC
    assert 0 == api.sends_to()
    await api.tick(minutes=1)
    assert (1, "active") == (api.sends_to(), await api.status(made["id"]))


async def test_throttle_blocks_within_30_days_and_allows_after(api: Api) -> None:
    """A second ticket for the same number within 30 days is throttled, not sent; after 30 days it is sent."""
    await api.survey(ticket_id="T-1")
    await api.tick()
    await api.tick(days=1)  # T-1's one reminder: 2 messages so far
    second = await api.survey(ticket_id="T-2")
    await api.tick(days=9)
    assert ("throttled", 2) == (await api.status(second["id"]), api.sends_to())
    api.clock.advance(days=21)
    third = await api.survey(ticket_id="T-3")
    await api.tick()
    assert ("active", 3) == (await api.status(third["id"]), api.sends_to())


async def test_two_sends_to_one_address_in_one_batch_send_once(api: Api) -> None:
    """Two surveys for one number (SMS and WhatsApp) due in the same pass: one is sent, one throttled."""
    first = await api.survey(ticket_id="T-1")
    second = await api.survey(ticket_id="T-2", channel="whatsapp")
    claimed = await api.tick()
    statuses = sorted([await api.status(first["id"]), await api.status(second["id"])])
    assert (2, ["active", "throttled"], 1) == (claimed, statuses, len(api.fake.messages()))


class CountingChannel(Channel):
    """A channel that counts deliveries in flight; each waits (up to 10 s) until ``crowd`` are."""

    name: ClassVar[str] = "sms"

    def __init__(self, crowd: int) -> None:
        self.crowd = crowd
        self.crowded = asyncio.Event()
        self.in_flight = 0
        self.most = 0
        self.delivered: list[str] = []

    provider: ClassVar[str | None] = "twilio-messages"

    @classmethod
    def send_rate(cls, settings: Settings) -> float:
        return settings.send_rate_sms

    async def deliver(self, outgoing: Outgoing) -> Delivered:
        address = outgoing.address
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        if self.in_flight >= self.crowd:
            self.crowded.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self.crowded.wait(), 10.0
            )  # generous: a busy machine is slow to start them
        self.in_flight -= 1
        self.delivered.append(address)
        return Delivered()


async def test_a_pass_sends_to_different_addresses_side_by_side(api: Api) -> None:
    """Sends to different addresses overlap, at most CONCURRENT_JOBS at once, and each goes out once."""
    numbers = [f"+49151{20_000_000 + i}" for i in range(2 * CONCURRENT_JOBS)]
    for i, number in enumerate(numbers):
        await api.survey(ticket_id=f"T-{i}", to=number)
    fast = api.service.settings.model_copy(update={"send_rate_sms": 1000})
    channel = CountingChannel(crowd=CONCURRENT_JOBS)
    await Scheduler(replace(api.service, settings=fast), {"sms": channel}, worker="test").run_once()
    assert (CONCURRENT_JOBS, sorted(numbers)) == (channel.most, sorted(channel.delivered))


async def test_survey_expires_after_48_hours(api: Api) -> None:
    """48 h after the send the survey is expired; a reply then gets the flow's expired text."""
    made = await api.survey()
    await api.tick()
    await api.tick(hours=47)
    assert "active" == await api.status(made["id"])
    await api.tick(hours=1)
    assert "expired" == await api.status(made["id"])


async def test_exactly_one_reminder(api: Api) -> None:
    """A survey not started gets one reminder after REMINDER_AFTER_HOURS (24), never a second."""
    await api.survey()
    await api.tick()
    await api.tick(hours=23)
    assert 1 == api.sends_to()
    await api.tick(hours=1)
    assert 2 == api.sends_to()  # the intro and the question again, in one message
    await api.tick(hours=20)
    assert 2 == api.sends_to()


async def test_no_reminder_once_the_customer_answered(api: Api) -> None:
    """A customer who answered is not reminded."""
    from tests.bot.test_twilio import Harness

    await api.survey()
    await api.tick()
    replies = Harness(api.app, api.client, api.fake, api.service, iter(range(1, 100)))  # type: ignore[arg-type]
    await replies.sms("2")
    await api.tick(hours=25)
    assert 1 == api.sends_to()


async def test_provider_5xx_is_retried_then_failed(api: Api) -> None:
    """A 500 from Twilio is retried with growing waits; after 8 attempts the survey is failed with the reason."""
    api.fake.fail_next("Messages", status=500, code=20500, times=100)
    made = await api.survey()
    await api.tick()
    attempts = 1
    while await api.status(made["id"]) != "failed" and attempts < 20:
        await api.tick(hours=2)
        attempts += 1
    async with api.service.db.read() as conn:
        job = (
            await conn.execute(
                sa.select(jobs.c.status, jobs.c.attempts, jobs.c.last_error).where(jobs.c.kind == "send")
            )
        ).one()
    assert ("failed", 8, 8) == (
        await api.status(made["id"]),
        job.attempts,
        len(api.fake.requests_to("Messages")),
    )
    assert ("failed", True) == (job.status, "Internal Server Error" in job.last_error)


async def test_opted_out_contact_is_skipped(api: Api) -> None:
    """A contact who opted out after the trigger is skipped at send time; nothing is sent."""
    made = await api.survey(delay="10m")
    await opt_out(api.service.db, "sms", CUSTOMER, now=api.clock())
    await api.tick(minutes=11)
    assert (0, "stopped") == (api.sends_to(), await api.status(made["id"]))
    again = await api.survey(ticket_id="T-2")
    assert (None, "skipped") == (again["id"], again["status"])


async def test_sender_is_the_configured_number(api: Api) -> None:
    """Sends come from TWILIO_FROM_NUMBER with the status callback naming the survey."""
    made = await api.survey()
    await api.tick()
    first = api.fake.messages()[0].params
    assert (SENDER, f"{PUBLIC}/twilio/status?survey={made['id']}") == (first["From"], first["StatusCallback"])


# --- helpdesk webhooks ------------------------------------------------------------------

ZENDESK = {
    "ticket": {
        "id": "4711",
        "status": "Gelöst",
        "requester": {"name": "Erika Muster", "phone": "+49 151 12345678", "locale": "Deutsch"},
        "assignee": {"name": "Anna Berg"},
        "group": {"name": "Support Nord"},
    }
}
FRESHDESK = {
    "freshdesk_webhook": {
        "ticket_id": 815,
        "ticket_subject": "Router startet neu",
        "ticket_status": "Resolved",
        "ticket_priority": "Medium",
        "ticket_source": "Phone",
        "ticket_contact_name": "John Doe",
        "ticket_contact_phone": "",
        "ticket_contact_mobile": "+44 7911 123456",
        "ticket_agent_name": "Ben Kurz",
        "ticket_group_name": "Billing",
        "ticket_contact_language": "en",
        "ticket_url": "https://acme.freshdesk.com/helpdesk/tickets/815",
    }
}


async def hook(api: Api, path: str, payload: Any, secret: str = HOOK_SECRET) -> httpx.Response:
    return await api.client.post(path, json=payload, headers={"Authorization": f"Bearer {secret}"})


async def survey_row(api: Api) -> tuple[object, ...]:
    async with api.service.db.read() as conn:
        row = (
            await conn.execute(
                sa.select(
                    surveys.c.ticket, surveys.c.agent, surveys.c.team, surveys.c.language, surveys.c.channel
                )
            )
        ).one()
    return tuple(row)


async def test_zendesk_solved_ticket_creates_the_right_survey(api: Api) -> None:
    """A Zendesk trigger body maps requester phone, assignee and group to a German SMS survey."""
    response = await hook(api, "/hooks/zendesk", ZENDESK)
    assert (201, "pending") == (response.status_code, response.json()["status"])
    assert ("4711", "Anna Berg", "Support Nord", "de", "sms") == await survey_row(api)
    await api.tick()
    assert 1 == api.sends_to()


async def test_freshdesk_resolved_ticket_creates_the_right_survey(api: Api) -> None:
    """A Freshdesk webhook maps the contact's mobile, agent and group to an English survey."""
    response = await hook(api, "/hooks/freshdesk", FRESHDESK)
    assert 201 == response.status_code
    assert ("815", "Ben Kurz", "Billing", "en", "sms") == await survey_row(api)
    await api.tick()
    assert 1 == api.sends_to("+447911123456")


async def test_generic_hook_uses_the_mapping(api: Api) -> None:
    """HOOKS_GENERIC_MAP says where the fields are in any JSON."""
    payload = {"data": {"ticket": {"id": 9}, "customer": {"phone": CUSTOMER}, "agent": "cem"}}
    response = await hook(api, "/hooks/generic", payload)
    assert (201, ("9", "cem")) == (response.status_code, (await survey_row(api))[:2])


@pytest.mark.parametrize(
    ("path", "payload", "field"),
    [
        ("/hooks/zendesk", {"ticket": {"status": "Solved"}}, "ticket.id"),
        (
            "/hooks/zendesk",
            {"ticket": {"id": "1", "status": "Solved", "requester": {}}},
            "ticket.requester.phone",
        ),
        (
            "/hooks/freshdesk",
            {"freshdesk_webhook": {"ticket_status": "Resolved"}},
            "freshdesk_webhook.ticket_id",
        ),
        ("/hooks/generic", {"data": {}}, "data.ticket.id"),
    ],
)
async def test_helpdesk_payload_without_needed_fields_is_422_with_the_path(
    api: Api, path: str, payload: Any, field: str
) -> None:
    """A helpdesk payload missing what a survey needs gets 422 naming the JSON path; nothing stored."""
    response = await hook(api, path, payload)
    assert (422, field) == (response.status_code, response.json()["error"]["field"])
    assert 0 == await count_surveys(api.service)


async def test_unsolved_ticket_is_ignored_and_bad_secret_refused(api: Api) -> None:
    """A ticket not solved is ignored (200); a wrong secret gets 401; neither stores anything."""
    pending = {"ticket": {**ZENDESK["ticket"], "status": "Pending"}}
    ignored = await hook(api, "/hooks/zendesk", pending)
    refused = await hook(api, "/hooks/zendesk", ZENDESK, secret="wrong")
    assert ((200, "ignored"), 401) == ((ignored.status_code, ignored.json()["status"]), refused.status_code)
    assert 0 == await count_surveys(api.service)
