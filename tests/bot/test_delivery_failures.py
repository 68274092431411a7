"""Provider failures are classified where they are read: a permanent one (the customer blocked
the bot, an invalid or landline number) ends the delivery at once with its reason; a transient
one (a 429, a 5xx, a handset switched off) is tried again after the wait the provider asked
for, else after the back-off. The real python-telegram-bot and twilio libraries talk to fakes
on 127.0.0.1; the scheduler runs in-process, status callbacks are posted signed."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from twilio.request_validator import RequestValidator

from bot.apikeys import create_key
from bot.channels.base import Channel
from bot.jobs import MAX_ATTEMPTS
from bot.scheduler import Scheduler
from bot.service import Service
from bot.store.tables import jobs
from bot.triggers import SurveyRequest, trigger
from tests.bot.test_telegram import telegram_settings
from tests.bot.test_twilio import PUBLIC, survey_status, twilio_settings
from tests.fakes.telegram import FakeBotApi
from tests.fakes.twilio import FakeTwilioApi
from tests.support import Clock, running_app

PHONE = "+4915112345678"
CHAT = "5001"


@dataclass
class Sends:
    """The running app with its channels, the provider fakes and the test's clock."""

    service: Service
    channels: Mapping[str, Channel]
    client: httpx.AsyncClient
    clock: Clock

    async def survey(self, channel: str, to: str, ticket: str = "T-1") -> int:
        """A due survey, as POST /api/surveys makes it."""
        request = SurveyRequest(ticket_id=ticket, channel=channel, to=to)
        made = await trigger(self.service, request, channels=self.channels, link_for=lambda *_: None)
        assert made.survey_id is not None
        return made.survey_id

    async def tick(self, **advance: float) -> None:
        """Move the clock, then run one scheduler pass."""
        if advance:
            self.clock.advance(**advance)
        await Scheduler(self.service, self.channels, worker="test").run_once()

    async def jobs(self, kind: str = "send") -> list[Any]:
        async with self.service.db.read() as conn:
            query = sa.select(jobs).where(jobs.c.kind == kind).order_by(jobs.c.id)
            return list((await conn.execute(query)).all())

    async def shown(self, survey_id: int) -> dict[str, Any]:
        """GET /api/surveys/{id}, as a helpdesk would read it."""
        key = await create_key(self.service.db, f"reader-{time.monotonic_ns()}", now=self.clock())
        response = await self.client.get(
            f"/api/surveys/{survey_id}", headers={"Authorization": f"Bearer {key}"}
        )
        assert 200 == response.status_code, response.text
        body: dict[str, Any] = response.json()
        return body

    async def status(self, survey_id: int) -> str:
        return await survey_status(self.service, survey_id)

    async def twilio_status(self, survey_id: int, sid: str, status: str, code: str) -> httpx.Response:
        """A signed delivery-status callback, as Twilio posts it for a message of the survey."""
        path = f"/twilio/status?survey={survey_id}"
        params = {"MessageSid": sid, "MessageStatus": status, "ErrorCode": code, "To": PHONE}
        token = self.service.settings.twilio_auth_token
        assert token is not None
        signature = RequestValidator(token.get_secret_value()).compute_signature(PUBLIC + path, params)
        return await self.client.post(path, data=params, headers={"X-Twilio-Signature": signature})


@pytest.fixture
async def telegram(service: Service, fake_telegram: FakeBotApi, clock: Clock) -> AsyncIterator[Sends]:
    async with running_app(service, clock, **telegram_settings(fake_telegram)) as (app, client, svc):
        yield Sends(svc, app.state.channels, client, clock)


@pytest.fixture
async def sms(service: Service, fake_twilio: FakeTwilioApi, clock: Clock) -> AsyncIterator[Sends]:
    # No throttle: a test sends one number several surveys in a row.
    settings = {**twilio_settings(fake_twilio), "throttle_days": 0}
    async with running_app(service, clock, **settings) as (app, client, svc):
        yield Sends(svc, app.state.channels, client, clock)


# --- Telegram ----------------------------------------------------------------------------------


async def test_blocked_telegram_user_fails_the_survey_at_once_with_the_reason(
    telegram: Sends, fake_telegram: FakeBotApi
) -> None:
    """403 "bot was blocked by the user": failed on the first attempt, the reason shown, never retried."""
    fake_telegram.fail_next("sendMessage", error_code=403, times=5)
    survey_id = await telegram.survey("telegram", CHAT)
    await telegram.tick()
    await telegram.tick(hours=2)  # nothing left to try
    [job] = await telegram.jobs()
    shown = await telegram.shown(survey_id)
    reason = "telegram: Forbidden: bot was blocked by the user (code 403)"
    assert ("failed", 1, reason) == (job.status, job.attempts, job.last_error)
    assert ("failed", reason, {"outcome": "failed", "provider_id": None, "reason": reason}) == (
        shown["status"],
        shown["closed_reason"],
        shown["delivery"],
    )
    assert 1 == len(fake_telegram.calls_to("sendMessage"))


async def test_telegram_429_is_waited_out_as_long_as_telegram_asked_and_delivered(
    telegram: Sends, fake_telegram: FakeBotApi
) -> None:
    """A 429 with retry_after 3: the message is sent again no sooner than 3 s later, and delivered."""
    fake_telegram.fail_next("sendMessage", retry_after=3)
    survey_id = await telegram.survey("telegram", CHAT)
    started = time.monotonic()
    await telegram.tick()
    waited = time.monotonic() - started
    [job] = await telegram.jobs()
    assert ([True, False], "done", "active") == (
        [c.failed for c in fake_telegram.calls_to("sendMessage")],
        job.status,
        await telegram.status(survey_id),
    )
    assert waited >= 3.0


async def test_telegram_flood_control_that_outlasts_the_limiter_is_retried_when_telegram_said(
    telegram: Sends, fake_telegram: FakeBotApi
) -> None:
    """Still 429 after the rate limiter's own retries: the job waits the retry_after, not the back-off."""
    fake_telegram.fail_next("sendMessage", retry_after=1, times=20)
    survey_id = await telegram.survey("telegram", CHAT)
    await telegram.tick()
    [job] = await telegram.jobs()
    assert ("pending", telegram.clock() + timedelta(seconds=1), "active") == (
        job.status,
        job.due_at,
        await telegram.status(survey_id),
    )
    assert "(code 429)" in job.last_error


# --- Twilio SMS --------------------------------------------------------------------------------


async def test_invalid_number_21211_fails_the_survey_at_once(sms: Sends, fake_twilio: FakeTwilioApi) -> None:
    """Twilio's 21211 (invalid 'To' number) is permanent: failed on the first attempt with Twilio's reason."""
    fake_twilio.fail_next("Messages", status=400, code=21211, times=5)
    survey_id = await sms.survey("sms", PHONE)
    await sms.tick()
    await sms.tick(hours=2)
    [job] = await sms.jobs()
    shown = await sms.shown(survey_id)
    assert ("failed", 1, 1) == (job.status, job.attempts, len(fake_twilio.requests_to("Messages")))
    assert "(code 21211)" in job.last_error
    assert ("+49151****678" in job.last_error, PHONE in job.last_error) == (True, False)  # Twilio names it
    assert ("failed", job.last_error, "failed") == (
        shown["status"],
        shown["closed_reason"],
        shown["delivery"]["outcome"],
    )


async def test_unsubscribed_21610_skips_the_survey_and_records_the_opt_out(
    sms: Sends, fake_twilio: FakeTwilioApi
) -> None:
    """21610 is an opt-out made at the carrier: the survey is skipped, and the next one is not sent."""
    fake_twilio.fail_next("Messages", status=400, code=21610)
    first = await sms.survey("sms", PHONE)
    await sms.tick()
    request = SurveyRequest(ticket_id="T-2", channel="sms", to=PHONE)
    again = await trigger(sms.service, request, channels=sms.channels, link_for=lambda *_: None)
    assert ("skipped", "skipped", 1) == (
        await sms.status(first),
        again.status,
        len(fake_twilio.requests_to("Messages")),
    )


async def test_twilio_5xx_is_retried_with_back_off_then_failed_with_the_reason(
    sms: Sends, fake_twilio: FakeTwilioApi
) -> None:
    """A 500 may work later: tried again after 5, 10, 20 … s; after the last attempt failed with Twilio's reason."""
    fake_twilio.fail_next("Messages", status=500, code=20500, times=MAX_ATTEMPTS)
    survey_id = await sms.survey("sms", PHONE)
    waits = []
    for _ in range(MAX_ATTEMPTS):
        await sms.tick()
        [job] = await sms.jobs()
        if job.status != "pending":
            break
        waits.append((job.due_at - sms.clock()).total_seconds())
        sms.clock.now = job.due_at
    assert [5.0 * 2**n for n in range(MAX_ATTEMPTS - 1)] == waits
    assert ("failed", MAX_ATTEMPTS, "failed") == (job.status, job.attempts, await sms.status(survey_id))
    assert "(code 20500)" in job.last_error
    assert job.last_error == (await sms.shown(survey_id))["closed_reason"]


async def test_handset_off_30003_is_sent_again_once_an_hour_later(
    sms: Sends, fake_twilio: FakeTwilioApi
) -> None:
    """30003 (handset unreachable) is transient, as Twilio documents it: the question goes out once more
    an hour later; a second 30003 for that message fails the survey with the reason."""
    survey_id = await sms.survey("sms", PHONE)
    await sms.tick()
    [first] = fake_twilio.messages()  # the intro and the question in one message
    assert 204 == (await sms.twilio_status(survey_id, str(first.sid), "undelivered", "30003")).status_code
    assert 204 == (await sms.twilio_status(survey_id, str(first.sid), "undelivered", "30003")).status_code
    await sms.tick(minutes=59)
    assert (1, "active") == (len(fake_twilio.messages()), await sms.status(survey_id))
    await sms.tick(minutes=2)
    resent = fake_twilio.messages()[1:]
    assert [first.params["Body"]] == [m.params["Body"] for m in resent]
    assert "active" == await sms.status(survey_id)
    await sms.twilio_status(survey_id, str(resent[0].sid), "undelivered", "30003")
    await sms.tick(hours=2)
    shown = await sms.shown(survey_id)
    assert (2, "failed") == (len(fake_twilio.messages()), shown["status"])
    assert "30003" in shown["closed_reason"]


async def test_landline_30006_fails_the_survey_at_once(sms: Sends, fake_twilio: FakeTwilioApi) -> None:
    """30006 (landline or unreachable carrier) never works: failed with the reason, nothing sent again."""
    survey_id = await sms.survey("sms", PHONE)
    await sms.tick()
    sid = str(fake_twilio.messages()[0].sid)
    await sms.twilio_status(survey_id, sid, "undelivered", "30006")
    await sms.tick(hours=2)
    shown = await sms.shown(survey_id)
    assert (1, "failed") == (len(fake_twilio.messages()), shown["status"])
    assert "30006" in shown["closed_reason"]


async def test_a_refused_send_leaves_the_contacts_older_survey_open(
    sms: Sends, fake_twilio: FakeTwilioApi
) -> None:
    """The contact's older open survey is closed when the newer one is sent, not when a provider refused it."""
    first = await sms.survey("sms", PHONE, ticket="T-1")
    await sms.tick()
    refused = await sms.survey("sms", PHONE, ticket="T-2")
    fake_twilio.fail_next("Messages", status=400, code=21211)
    await sms.tick()
    assert ("active", "failed") == (await sms.status(first), await sms.status(refused))
    sent = await sms.survey("sms", PHONE, ticket="T-3")
    await sms.tick()
    assert ("incomplete", "active") == (await sms.status(first), await sms.status(sent))
