"""Where a flow's stop hint is shown: after the intro on the channels where a customer types a
reply (SMS, WhatsApp, Telegram, the terminal), and neither on the web page nor in a call.

The web page is tested in test_web.py with the rest of the page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import count

import pytest

from bot.channels.sms import segments
from bot.scheduler import Scheduler
from bot.service import Service
from bot.triggers import SurveyRequest, trigger
from tests.bot import test_telegram as telegram
from tests.bot import test_twilio as twilio
from tests.cli import invoke
from tests.fakes.telegram import FakeBotApi
from tests.fakes.twilio import FakeTwilioApi
from tests.support import Clock, running_app


def _typed_intro(service: Service, language: str, flow: str = "support-csat") -> str:
    texts = service.flows[flow].texts[language]
    assert texts.stop_hint is not None
    return f"{texts.intro} {texts.stop_hint}"


@pytest.fixture
async def tw(service: Service, fake_twilio: FakeTwilioApi, clock: Clock) -> AsyncIterator[twilio.Harness]:
    """The web app with SMS, WhatsApp and voice on, against the fake Twilio REST API."""
    async with running_app(service, clock, **twilio.twilio_settings(fake_twilio)) as (app, client, svc):
        yield twilio.Harness(app, client, fake_twilio, svc, count(1))


@pytest.fixture
async def tg(service: Service, fake_telegram: FakeBotApi, clock: Clock) -> AsyncIterator[telegram.Harness]:
    """The web app with the Telegram bot on, against the fake Bot API."""
    async with running_app(service, clock, **telegram.telegram_settings(fake_telegram)) as (app, client, svc):
        yield telegram.Harness(app, client, fake_telegram, svc)


@pytest.mark.parametrize("channel", ["sms", "whatsapp"])
@pytest.mark.parametrize("language", ["de", "en"])
async def test_first_sms_carries_the_stop_hint(tw: twilio.Harness, channel: str, language: str) -> None:
    """A triggered survey's one message, sent by the scheduler, starts with the intro and its stop hint, then
    the first question; GSM-7 in at most two segments (the intro alone fits one, as before)."""
    request = SurveyRequest(ticket_id="T-1", channel=channel, to=twilio.CUSTOMER, language=language)
    await trigger(tw.service, request, channels=tw.channels, link_for=lambda _c, t: t)
    await Scheduler(tw.service, tw.channels, worker="test").run_once()
    [message] = tw.fake.messages()
    first = message.params["Body"]
    intro, question = first.split("\n\n", 1)
    parts, encoding = segments(first)
    assert (_typed_intro(tw.service, language), (1, "GSM-7")) == (intro, segments(intro))
    assert ("GSM-7", True, True) == (encoding, parts <= 2, question.count("\n") == 1)


@pytest.mark.parametrize("language", ["de", "en"])
async def test_first_telegram_message_carries_the_stop_hint(tg: telegram.Harness, language: str) -> None:
    """The first Telegram message starts with the intro and its stop hint, then asks the question."""
    await telegram.survey_for(tg, language=language)
    first, _ = tg.question(telegram.CUSTOMER)
    assert first.params["text"].startswith(_typed_intro(tg.service, language) + "\n\n")


async def test_telegram_deep_link_carries_the_stop_hint(tg: telegram.Harness) -> None:
    """A survey opened with /start <token> begins with the intro and its stop hint too."""
    await tg.say(telegram.AGENT, "/survey T-9", first_name="Anna", user_id=telegram.AGENT)
    link = telegram.LINK.search(tg.to_chat(telegram.AGENT)[-1].params["text"])
    assert link is not None
    await tg.say(telegram.CUSTOMER, f"/start {link.group(1)}", language_code="en")
    opened, _ = tg.question(telegram.CUSTOMER)
    assert opened.params["text"].startswith(_typed_intro(tg.service, "en") + "\n\n")


async def test_call_does_not_say_the_stop_hint(tw: twilio.Harness) -> None:
    """A call reads the intro without the stop hint: a caller hangs up instead."""
    survey_id = await tw.start("voice", language="en")
    spoken = " ".join(twilio.said(await twilio.Call(tw, survey_id).answer()))
    intro = tw.service.flows["support-csat"].texts["en"].intro
    assert (True, False) == (intro in spoken, "stop" in spoken.lower())


def test_console_chat_carries_the_stop_hint(cli_env: dict[str, str], service: Service) -> None:
    """`afterword chat` prints the intro with its stop hint: in the terminal one types too."""
    result = invoke(["chat", "--flow", "nps", "--lang", "de", "--contact", "kim"], cli_env, stdin="10\n\n")
    assert (0, True) == (result.code, result.stdout.startswith(_typed_intro(service, "de", "nps") + "\n\n"))
