"""The Telegram channel end to end: updates posted to the webhook, the real library, a fake Bot API."""

from __future__ import annotations

import asyncio
import bisect
import inspect
import itertools
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from bot.channels.base import Outgoing
from bot.channels.telegram.bot import TelegramBot
from bot.channels.telegram.customers import TelegramChannel, build_application
from bot.service import Service
from bot.settings import load_settings
from bot.staff import add_staff
from bot.store.tables import answers, jobs, surveys
from bot.surveys import NewSurvey, create_survey
from bot.web.app import create_app
from flows.engine import Prompt
from tests.fakes.telegram import Call, FakeBotApi, callback_update, message_update
from tests.support import Clock, running_app

SECRET = "webhook-secret_42"
MANAGER, AGENT, STRANGER = 111, 222, 333
ALERT_CHAT = -100777
CUSTOMER = 5001
LINK = re.compile(r"https://t\.me/afterword_test_bot\?start=([A-Za-z0-9_-]+)")


def telegram_settings(fake: FakeBotApi) -> dict[str, Any]:
    """Settings for a bot that talks to the fake."""
    return {
        "telegram_bot_token": fake.token,
        "telegram_api_base_url": fake.base_url,
        "telegram_webhook_secret": SECRET,
        "telegram_staff": f"{MANAGER}:manager,{AGENT}:agent",
        "telegram_alert_chat_id": ALERT_CHAT,
        "public_base_url": "https://survey.example.com",
        # Each answer's next question would wait a second for its chat's slot (the default of 1/s):
        # tests answer faster than people. Pacing per chat has its own test.
        "send_rate_telegram_chat": 1000,
    }


@dataclass
class Harness:
    """The running app with its bot, the fake Bot API and a counter for update ids."""

    app: FastAPI
    client: httpx.AsyncClient
    fake: FakeBotApi
    service: Service
    next_update: int = field(default=100)

    @property
    def bot(self) -> TelegramBot:
        bot: TelegramBot = self.app.state.telegram
        return bot

    def update_id(self) -> int:
        self.next_update += 1
        return self.next_update

    async def post(self, update: dict[str, Any], secret: str | None = SECRET) -> httpx.Response:
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        return await self.client.post("/telegram/webhook", json=update, headers=headers)

    async def say(self, chat: int, text: str, **kw: Any) -> httpx.Response:
        return await self.post(message_update(self.update_id(), chat, text, **kw))

    def to_chat(self, chat: int, method: str = "sendMessage") -> list[Call]:
        return [c for c in self.fake.sent(method) if c.params.get("chat_id") == chat]

    def question(self, chat: int) -> tuple[Call, int]:
        """The newest message to ``chat`` and its message id (the fake counts from 1 per chat)."""
        sent = self.to_chat(chat)
        return sent[-1], len(sent)

    async def tap(self, chat: int, value: int, **kw: Any) -> httpx.Response:
        """Tap ``value`` on the newest question's keyboard."""
        call, message_id = self.question(chat)
        data = button(call, value)
        return await self.post(
            callback_update(self.update_id(), chat, message_id, data, message_text=call.params["text"], **kw)
        )

    async def wait(self, check: Callable[[], bool | Awaitable[bool]]) -> None:
        """Until ``check()`` holds. The alert loop looks every second; 30 s allows a busy machine."""
        deadline = time.monotonic() + 30
        while not await _holds(check):
            assert time.monotonic() < deadline, [c.method for c in self.fake.calls]
            await asyncio.sleep(0.05)


async def _holds(check: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = check()
    return await result if inspect.isawaitable(result) else result


def button(call: Call, value: int) -> str:
    """The callback data of the button labelled ``value`` in a sent message's keyboard."""
    for row in call.params["reply_markup"]["inline_keyboard"]:
        for key in row:
            if key["text"] == str(value):
                return str(key["callback_data"])
    raise AssertionError(f"no button {value} in {call.params['reply_markup']}")


@pytest.fixture
async def tg(service: Service, fake_telegram: FakeBotApi, clock: Clock) -> AsyncIterator[Harness]:
    """The web app with the Telegram bot started in its lifespan, against the fake Bot API."""
    async with running_app(service, clock, **telegram_settings(fake_telegram)) as (app, client, svc):
        yield Harness(app, client, fake_telegram, svc)


async def stored(service: Service) -> list[tuple[object, ...]]:
    async with service.db.read() as conn:
        rows = await conn.execute(
            sa.select(answers.c.question_id, answers.c.score, answers.c.text).order_by(answers.c.id)
        )
        return [tuple(r) for r in rows]


async def survey_for(h: Harness, chat: int = CUSTOMER, language: str = "de", ticket: str = "T-1") -> int:
    """A survey for a customer who already chats with the bot, sent by chat id."""
    created = await create_survey(
        h.service.db,
        h.service.flows,
        NewSurvey("support-csat", "telegram", str(chat), ticket=ticket, agent="anna", language=language),
        now=h.service.clock(),
        ttl=h.service.survey_ttl,
    )
    await h.bot.customers.show(chat, created.prompts, created.language, created.survey_id)
    return created.survey_id


async def test_whole_survey_by_taps_in_german(tg: Harness) -> None:
    """Taps answer the three ratings, each question is edited to show the choice, text answers the comment."""
    await survey_for(tg)
    first, _ = tg.question(CUSTOMER)
    assert [[str(v) for v in range(1, 6)]] == [
        [key["text"] for key in row] for row in first.params["reply_markup"]["inline_keyboard"]
    ]
    assert "1 = Sehr zufrieden" in first.params["text"]
    assert "5 = Sehr unzufrieden" in first.params["text"]
    for value in (2, 1, 2):
        assert 200 == (await tg.tap(CUSTOMER, value)).status_code
    await tg.say(CUSTOMER, "Sehr freundlich, danke")

    assert [
        ("satisfaction", 2, None),
        ("resolution", 1, None),
        ("speed", 2, None),
        ("comment", None, "Sehr freundlich, danke"),
    ] == await stored(tg.service)
    edited = tg.fake.message(CUSTOMER, 1)
    assert (True, None) == (edited["text"].endswith("✅ 2"), edited.get("reply_markup"))
    assert 3 == len(tg.fake.sent("answerCallbackQuery"))
    assert "Vielen Dank für Ihre Antworten" in tg.question(CUSTOMER)[0].params["text"]


async def test_whole_survey_by_typed_text_in_english(tg: Harness) -> None:
    """Typed answers go through the shared parser; a bad one is reprompted; the old buttons are removed."""
    await survey_for(tg, language="en")
    for text in ["2", "great", "1", "3 - a bit slow", "/skip"]:
        assert 200 == (await tg.say(CUSTOMER, text, language_code="en")).status_code

    assert [
        ("satisfaction", 2, None),
        ("resolution", 1, None),
        ("speed", 3, "a bit slow"),
    ] == await stored(tg.service)
    texts = [c.params["text"] for c in tg.to_chat(CUSTOMER)]
    assert any(t.startswith("Please reply with a number from 1 to 5.") for t in texts)
    assert None is tg.fake.message(CUSTOMER, 1).get("reply_markup")
    assert texts[-1].startswith("Thank you for your answers!")


async def test_deep_link_from_survey_command_starts_in_the_customers_language(tg: Harness) -> None:
    """/survey gives an agent a link; /start with it opens the survey in English for an English user, once."""
    await tg.say(AGENT, "/survey T-9", first_name="Anna", user_id=AGENT)
    reply = tg.to_chat(AGENT)[-1].params["text"]
    match = LINK.search(reply)
    assert match is not None, reply
    token = match.group(1)
    assert len(token) <= 64

    await tg.say(CUSTOMER, f"/start {token}", language_code="en")
    opened, _ = tg.question(CUSTOMER)
    assert opened.params["text"].startswith("Thank you for contacting us!")
    assert "How satisfied were you" in opened.params["text"]
    async with tg.service.db.read() as conn:
        row = (await conn.execute(sa.select(surveys.c.agent, surveys.c.language, surveys.c.ticket))).one()
    assert ("Anna", "en", "T-9") == tuple(row)

    await tg.say(6002, f"/start {token}", language_code="en")
    assert ["This survey link was already opened in another chat."] == [
        c.params["text"] for c in tg.to_chat(6002)
    ]
    await tg.tap(CUSTOMER, 1, language_code="en")
    assert [("satisfaction", 1, None)] == await stored(tg.service)


async def test_double_tap_stores_one_answer(tg: Harness) -> None:
    """A second tap on the same keyboard is answered "already answered" and stores nothing."""
    await survey_for(tg)
    call, message_id = tg.question(CUSTOMER)
    data = button(call, 3)
    for _ in range(2):
        update = callback_update(tg.update_id(), CUSTOMER, message_id, data, message_text=call.params["text"])
        await tg.post(update)
    assert [("satisfaction", 3, None)] == await stored(tg.service)
    answered = tg.fake.sent("answerCallbackQuery")
    assert [None, "Schon beantwortet, danke!"] == [c.params.get("text") for c in answered]


async def test_redelivered_update_is_processed_once(tg: Harness) -> None:
    """Telegram sending the same update_id twice stores one answer; the second delivery (Telegram
    sends again only what got no reply) is given the next question again, not nothing."""
    await survey_for(tg)
    call, message_id = tg.question(CUSTOMER)
    update = callback_update(tg.update_id(), CUSTOMER, message_id, button(call, 4), message_text="q")
    await tg.post(update)
    assert 200 == (await tg.post(update)).status_code
    assert [("satisfaction", 4, None)] == await stored(tg.service)
    first, second, again = tg.to_chat(CUSTOMER)
    assert second.params["text"] == again.params["text"] != first.params["text"]
    # The query is answered once: Telegram refuses a second answer, which must not fail the update.
    assert [False, True] == [c.failed for c in tg.fake.calls_to("answerCallbackQuery")]


@pytest.mark.parametrize("secret", [None, "forged", ""])
async def test_missing_or_forged_secret_is_refused(tg: Harness, secret: str | None) -> None:
    """Without the right secret token header the webhook answers 403 and processes nothing."""
    await survey_for(tg)
    tg.fake.reset()
    response = await tg.post(message_update(tg.update_id(), CUSTOMER, "1"), secret=secret)
    assert (403, [], []) == (response.status_code, await stored(tg.service), tg.fake.calls)


async def test_non_staff_get_a_polite_refusal(tg: Harness) -> None:
    """/report and /survey from someone who is not staff are refused alike, with nothing revealed."""
    await tg.say(STRANGER, "/report 30d", language_code="en")
    await tg.say(STRANGER, "/survey T-1", language_code="en")
    refusal = "Sorry, this command is only for the support team."
    assert [refusal, refusal] == [c.params["text"] for c in tg.to_chat(STRANGER)]
    assert [] == tg.fake.sent("sendPhoto")
    async with tg.service.db.read() as conn:
        assert 0 == (await conn.execute(sa.select(sa.func.count()).select_from(surveys))).scalar_one()


async def test_agent_gets_a_report_of_their_own(tg: Harness) -> None:
    """/report is for agents too; an agent's report counts only their own answers (none here)."""
    await survey_for(tg, chat=7001)  # a survey of agent "anna"; this agent is Kim
    await tg.tap(7001, 2)
    await tg.say(AGENT, "/report", user_id=AGENT, language_code="en")
    text = tg.to_chat(AGENT)[-1].params["text"]
    assert (True, True) == (
        text.startswith("<b>Afterword report, last 30 days</b>"),
        "<b>CSAT</b> no answers" in text,
    )


async def test_manager_report_has_text_and_chart(tg: Harness, clock: Clock) -> None:
    """A manager's /report 30d by agent gets the scores with intervals as text and the trend as a PNG."""
    for chat, ticket in ((7001, "T-1"), (7002, "T-2")):
        await survey_for(tg, chat=chat, ticket=ticket)
        await tg.tap(chat, 2)
    clock.advance(hours=1)
    await tg.say(MANAGER, "/report 30d by agent", user_id=MANAGER, language_code="en")

    text_call = tg.to_chat(MANAGER)[-1]
    text = text_call.params["text"]
    assert "HTML" == text_call.params["parse_mode"]
    assert "<b>CSAT</b> 100.0 %, n=2 (too few for an interval)" in text
    assert "• anna: CSAT 100.0 %" in text
    photos = tg.to_chat(MANAGER, "sendPhoto")
    assert 1 == len(photos)
    assert photos[0].params["photo"].startswith(b"\x89PNG\r\n\x1a\n")


async def test_report_with_a_bad_argument_explains_usage(tg: Harness) -> None:
    """/report with an unknown word names it and shows the usage, and sends no chart."""
    await tg.say(MANAGER, "/report lastweek", user_id=MANAGER, language_code="en")
    reply = tg.to_chat(MANAGER)[-1].params["text"]
    assert reply.startswith("period: 'lastweek' is not a period such as 7d, 30d or 90d")
    assert "Usage: /report" in reply
    assert [] == tg.fake.sent("sendPhoto")


async def test_staff_added_in_the_database_may_report(tg: Harness) -> None:
    """A manager added with `staff add` (the database) is recognised without TELEGRAM_STAFF."""
    await add_staff(tg.service.db, telegram_id=444, role="manager", name="Maria", now=tg.service.clock())
    await tg.say(444, "/report 7d", user_id=444, language_code="en")
    assert tg.to_chat(444)[-1].params["text"].startswith("<b>Afterword report, last 7 days</b>")


async def test_detractor_alert_then_its_comment(tg: Harness) -> None:
    """A worst-two answer alerts the alert chat within seconds; the later comment follows as a reply."""
    await survey_for(tg)
    await tg.tap(CUSTOMER, 5)
    await tg.wait(lambda: len(tg.to_chat(ALERT_CHAT)) == 1)
    alert = tg.to_chat(ALERT_CHAT)[0].params["text"]
    assert alert.startswith("⚠️ Detractor: CSAT 5 on 1–5")
    assert ("Ticket: T-1", "Agent: anna", "Channel: telegram") == tuple(alert.splitlines()[1:4])

    await tg.tap(CUSTOMER, 1)
    await tg.tap(CUSTOMER, 2)
    await tg.say(CUSTOMER, "Niemand hat zurückgerufen")
    await tg.wait(lambda: len(tg.to_chat(ALERT_CHAT)) == 2)
    follow = tg.to_chat(ALERT_CHAT)[1].params
    assert "💬 Comment on ticket T-1 (anna): “Niemand hat zurückgerufen”" == follow["text"]
    assert 1 == follow["reply_parameters"]["message_id"]

    async def alert_jobs() -> list[tuple[object, ...]]:
        async with tg.service.db.read() as conn:
            query = sa.select(jobs.c.kind, jobs.c.status).where(jobs.c.kind.like("alert%"))
            return [tuple(k) for k in await conn.execute(query.order_by(jobs.c.id))]

    # The alerter marks a job done after Telegram answered, so the message can arrive first.
    done = [("alert", "done"), ("alert_comment", "done")]

    async def all_done() -> bool:
        return done == await alert_jobs()

    await tg.wait(all_done)
    assert done == await alert_jobs()


async def test_rate_limited_message_is_retried_and_delivered(tg: Harness) -> None:
    """A 429 with retry_after is waited out and the message sent again, not lost."""
    tg.fake.fail_next("sendMessage", retry_after=1)
    started = time.monotonic()
    await survey_for(tg)
    attempts = tg.fake.calls_to("sendMessage")
    assert [True, False] == [c.failed for c in attempts]
    assert attempts[0].params["text"] == attempts[1].params["text"]
    assert time.monotonic() - started >= 1.0


def bare_channel(
    service: Service, fake: FakeBotApi, clock: Clock, **settings: Any
) -> tuple[Any, TelegramChannel]:
    """A Telegram channel and its application against the fake, without the web app, at the default rates."""
    loaded = load_settings(
        _env_file=None,
        database_url=service.settings.database_url,
        flows_dir=[],
        telegram_bot_token=fake.token,
        telegram_api_base_url=fake.base_url,
        **settings,
    )
    svc = Service(settings=loaded, db=service.db, flows=service.flows, clock=clock)
    application = build_application(svc)
    return application, TelegramChannel(svc, application)


@pytest.mark.parametrize("per_chat", [1, 4])
async def test_new_messages_to_one_chat_keep_send_rate_telegram_chat(
    service: Service, fake_telegram: FakeBotApi, clock: Clock, per_chat: float
) -> None:
    """SEND_RATE_TELEGRAM_CHAT: messages sent at once to one chat arrive 1/rate apart; another chat waits for none."""
    application, channel = bare_channel(service, fake_telegram, clock, send_rate_telegram_chat=per_chat)
    async with application:
        await asyncio.gather(
            *(
                channel.deliver(Outgoing(str(CUSTOMER), (Prompt("intro", f"Hallo {n}"),), "de"))
                for n in range(3)
            ),
            channel.deliver(Outgoing(str(CUSTOMER + 1), (Prompt("intro", "Hallo"),), "de")),
        )
    arrivals = fake_telegram.message_arrivals
    ours = [c for c in fake_telegram.sent() if c.params["chat_id"] == CUSTOMER]
    gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals[:1] + arrivals[-2:])]
    assert (3, 4) == (len(ours), len(arrivals))
    # The other chat's message is not behind this chat's pacing: it is among the first two.
    order = [c.params["chat_id"] for c in fake_telegram.sent()]
    assert CUSTOMER + 1 in order[:2]
    # Up to a quarter below 1/rate for the time between the limiter and the fake's clock, which
    # a loaded machine stretches for one request and not the next; without pacing a gap is ~0.
    assert all(gap >= 0.75 / per_chat for gap in gaps), gaps


async def test_concurrent_sends_never_exceed_30_messages_a_second(
    service: Service, fake_telegram: FakeBotApi, clock: Clock
) -> None:
    """80 messages to 80 chats at once all reach a Bot API that enforces 30/s, with no 429."""
    fake_telegram.limit_rate(30)
    application, channel = bare_channel(service, fake_telegram, clock)
    chats = range(CUSTOMER, CUSTOMER + 80)
    async with application:
        await asyncio.gather(
            *(channel.deliver(Outgoing(str(chat), (Prompt("intro", "Hallo"),), "de")) for chat in chats)
        )

    arrivals = fake_telegram.message_arrivals
    # The busiest window (t - 1 s, t] is one that ends at an arrival.
    busiest = max(bisect.bisect_right(arrivals, t) - bisect.bisect_right(arrivals, t - 1.0) for t in arrivals)
    assert (list(chats), 0) == (
        sorted(c.params["chat_id"] for c in fake_telegram.sent()),
        fake_telegram.too_many_requests,
    )
    assert 30 >= busiest


async def test_expired_survey_answers_with_the_expired_text(tg: Harness, clock: Clock) -> None:
    """A tap after the survey's time is up stores nothing and gets the flow's expired text."""
    await survey_for(tg)
    clock.advance(hours=49)
    await tg.tap(CUSTOMER, 1)
    assert [] == await stored(tg.service)
    assert tg.question(CUSTOMER)[0].params["text"].startswith("Diese Umfrage ist leider abgelaufen.")


async def test_text_without_a_survey_gets_a_greeting(tg: Harness) -> None:
    """A customer writing with no open survey learns what the bot is for, in their language."""
    await tg.say(CUSTOMER, "Hallo?", language_code="de")
    await tg.say(CUSTOMER + 1, "/start", language_code="en")
    assert tg.to_chat(CUSTOMER)[-1].params["text"].startswith("Hallo! Nach einem Kontakt")
    assert tg.to_chat(CUSTOMER + 1)[-1].params["text"].startswith("Hello! After a contact")


async def test_long_polling_takes_updates_without_a_webhook(
    service: Service, fake_telegram: FakeBotApi, clock: Clock
) -> None:
    """With polling the bot fetches updates itself (after deleting any webhook) and answers them."""
    settings = load_settings(
        _env_file=None,
        database_url=service.settings.database_url,
        flows_dir=[],
        **telegram_settings(fake_telegram),
    )
    svc = Service(settings=settings, db=service.db, flows=service.flows, clock=clock)
    app = create_app(settings, svc, telegram_polling=True, scheduler=False)
    async with app.router.lifespan_context(app):
        fake_telegram.queue_update(message_update(1, CUSTOMER, "/start", language_code="en"))
        sent = await fake_telegram.wait_for("sendMessage")
    assert sent[0].params["text"].startswith("Hello! After a contact")
    assert 1 == len(fake_telegram.sent("deleteWebhook"))


async def test_tap_on_an_older_surveys_keyboard_stores_nothing(tg: Harness) -> None:
    """A button of a survey replaced by a newer one for the same chat answers neither survey."""
    await survey_for(tg, ticket="T-1")
    old_call, old_id = tg.question(CUSTOMER)
    await survey_for(tg, ticket="T-2")
    update = callback_update(tg.update_id(), CUSTOMER, old_id, button(old_call, 1), message_text="q")
    await tg.post(update)
    assert [] == await stored(tg.service)
    assert ["Diese Umfrage ist bereits geschlossen."] == [
        c.params.get("text") for c in tg.fake.sent("answerCallbackQuery")
    ]


async def test_tap_naming_another_chats_survey_stores_nothing(tg: Harness) -> None:
    """Button data naming a survey of another chat (a forged callback) does not answer it."""
    await survey_for(tg, chat=CUSTOMER)
    call, _ = tg.question(CUSTOMER)
    await tg.post(callback_update(tg.update_id(), 9999, 1, button(call, 1), message_text="q"))
    assert [] == await stored(tg.service)


async def test_stop_ends_the_survey_and_later_text_is_not_an_answer(tg: Harness) -> None:
    """/stop ends the survey with the flow's stopped text; a later "1" is not stored."""
    await survey_for(tg)
    await tg.say(CUSTOMER, "/stop")
    await tg.say(CUSTOMER, "1")
    texts = [c.params["text"] for c in tg.to_chat(CUSTOMER)]
    assert texts[1].startswith("Die Umfrage wurde beendet.")
    assert [] == await stored(tg.service)


async def test_link_expires_with_the_survey(tg: Harness, clock: Clock) -> None:
    """A survey link opened after the survey's time gets the expired text and no question."""
    await tg.say(AGENT, "/survey T-5", user_id=AGENT)
    match = LINK.search(tg.to_chat(AGENT)[-1].params["text"])
    assert match is not None
    clock.advance(hours=49)
    await tg.say(CUSTOMER, f"/start {match.group(1)}")
    sent = tg.to_chat(CUSTOMER)
    assert (1, None) == (len(sent), sent[0].params.get("reply_markup"))
    assert sent[0].params["text"].startswith("Diese Umfrage ist leider abgelaufen.")
