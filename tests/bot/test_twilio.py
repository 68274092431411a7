"""SMS, WhatsApp and voice end to end: signed webhooks in-process, the real twilio client
against a fake Twilio REST API on 127.0.0.1, and the TwiML replies parsed as XML."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from itertools import count
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from twilio.request_validator import RequestValidator

from bot.channels.base import Channel, Outgoing
from bot.errors import ContactOptedOut
from bot.scheduler import Scheduler
from bot.service import Service
from bot.store.tables import answers, contacts, surveys
from bot.surveys import NewSurvey, create_survey
from tests.fakes.twilio import FakeTwilioApi
from tests.support import Clock, running_app

PUBLIC = "https://survey.example.com"
SENDER = "+4930901820"
WHATSAPP_SENDER = "+14155238886"
CUSTOMER = "+4915112345678"


@dataclass
class Harness:
    """The app with Twilio on, the fake REST API, and a way to post signed webhooks."""

    app: FastAPI
    client: httpx.AsyncClient
    fake: FakeTwilioApi
    service: Service
    sids: count[int]

    @property
    def channels(self) -> Mapping[str, Channel]:
        channels: Mapping[str, Channel] = self.app.state.channels
        return channels

    async def post(
        self, path: str, params: dict[str, str], signature: str | None = "valid"
    ) -> httpx.Response:
        """POST a form as Twilio does, signed over PUBLIC_BASE_URL + path with the auth token."""
        headers = {}
        if signature == "valid":
            headers["X-Twilio-Signature"] = RequestValidator(self.fake.auth_token).compute_signature(
                PUBLIC + path, params
            )
        elif signature is not None:
            headers["X-Twilio-Signature"] = signature
        return await self.client.post(path, data=params, headers=headers)

    async def sms(self, text: str, sender: str = CUSTOMER, sid: str | None = None) -> list[str]:
        """Reply by SMS; the bodies of the TwiML <Message>s we answer with."""
        params = {
            "From": sender,
            "To": SENDER,
            "Body": text,
            "MessageSid": sid or f"SM{next(self.sids):032d}",
        }
        response = await self.post("/twilio/sms", params)
        assert (200, "application/xml") == (response.status_code, response.headers["content-type"])
        return [m.text or "" for m in ET.fromstring(response.text).iter("Message")]

    async def start(
        self, channel: str, flow: str = "support-csat", language: str = "de", ticket: str = "T-1"
    ) -> int:
        """Create a survey for the customer and send its start through ``channel``."""
        created = await create_survey(
            self.service.db,
            self.service.flows,
            NewSurvey(flow, channel, CUSTOMER, ticket=ticket, agent="anna", language=language),
            now=self.service.clock(),
            ttl=self.service.survey_ttl,
        )
        await self.channels[channel].deliver(
            Outgoing(CUSTOMER, created.prompts, created.language, survey_id=created.survey_id)
        )
        return created.survey_id


def twilio_settings(fake: FakeTwilioApi) -> dict[str, Any]:
    """Settings that turn SMS, WhatsApp and voice on against the fake REST API."""
    return {
        "twilio_account_sid": fake.account_sid,
        "twilio_auth_token": fake.auth_token,
        "twilio_from_number": SENDER,
        "twilio_whatsapp_from": WHATSAPP_SENDER,
        "twilio_api_base_url": fake.base_url,
        "public_base_url": PUBLIC,
        # The rate is shared through the database and paced in real time: tests that send many
        # messages would wait a second each at the default of 1/s. Pacing has its own tests.
        "send_rate_sms": 1000,
        "send_rate_voice": 1000,
    }


def twilio_process_env(base: Mapping[str, str], fake: FakeTwilioApi, **more: str) -> dict[str, str]:
    """``base`` for an `afterword` process whose SMS and calls go to ``fake``, and ``more`` on top.

    Quiet hours are off: a process reads the real clock, and a test must not depend on the hour.
    """
    kept = {k: v for k, v in base.items() if not k.startswith(("TWILIO_", "TELEGRAM_", "QUIET_"))}
    return {
        **kept,
        "TWILIO_ACCOUNT_SID": fake.account_sid,
        "TWILIO_AUTH_TOKEN": fake.auth_token,
        "TWILIO_FROM_NUMBER": SENDER,
        "TWILIO_API_BASE_URL": fake.base_url,
        "PUBLIC_BASE_URL": PUBLIC,
        "QUIET_HOURS": "off",
        "WORKER_POLL_SECONDS": "0.2",
        **more,
    }


@pytest.fixture
async def tw(service: Service, fake_twilio: FakeTwilioApi, clock: Clock) -> AsyncIterator[Harness]:
    """The web app with the Twilio channels on, pointed at the fake REST API."""
    async with running_app(service, clock, **twilio_settings(fake_twilio)) as (app, client, svc):
        yield Harness(app, client, fake_twilio, svc, count(1))


async def stored(service: Service) -> list[tuple[object, ...]]:
    async with service.db.read() as conn:
        rows = await conn.execute(
            sa.select(answers.c.question_id, answers.c.score, answers.c.text, answers.c.channel).order_by(
                answers.c.id
            )
        )
        return [tuple(r) for r in rows]


async def survey_status(service: Service, survey_id: int) -> str:
    async with service.db.read() as conn:
        status: str = (
            await conn.execute(sa.select(surveys.c.status).where(surveys.c.id == survey_id))
        ).scalar_one()
    return status


# --- SMS and WhatsApp -------------------------------------------------------------------


async def test_whole_sms_survey_in_german(tw: Harness, caplog: pytest.LogCaptureFixture) -> None:
    """The start goes out through the Messages API; each reply is answered in TwiML with the next question."""
    caplog.set_level(logging.INFO)
    survey_id = await tw.start("sms")
    [sent] = tw.fake.messages()  # the intro and the first question as one message
    assert (CUSTOMER, SENDER) == (sent.params["To"], sent.params["From"])
    assert f"{PUBLIC}/twilio/status?survey={survey_id}" == sent.params["StatusCallback"]
    assert sent.params["Body"].endswith(
        "\n\nWie zufrieden waren Sie mit unserem Kundenservice?\n1 = Sehr zufrieden ... 5 = Sehr unzufrieden"
    )

    assert [
        "Konnte unser Kundenservice Ihr Problem lösen?\n1 = Zu 100% ... 5 = Gar nicht gelöst"
    ] == await tw.sms("2")
    await tw.sms("eins")
    await tw.sms("2 - ging so")
    assert ["Vielen Dank für Ihre Antworten! Sie helfen uns, besser zu werden."] == await tw.sms("Sehr nett")
    assert [
        ("satisfaction", 2, None, "sms"),
        ("resolution", 1, None, "sms"),
        ("speed", 2, "ging so", "sms"),
        ("comment", None, "Sehr nett", "sms"),
    ] == await stored(tw.service)
    assert ("completed", 1) == (await survey_status(tw.service, survey_id), len(tw.fake.messages()))
    assert (False, True) == (CUSTOMER in caplog.text, "+49151****678" in caplog.text)  # masked in logs


async def test_whole_sms_survey_in_english_with_a_reprompt(tw: Harness) -> None:
    """An answer that is no number gets the reprompt with the valid range and the question again."""
    await tw.start("sms", flow="nps", language="en")
    assert [
        "Please reply with a number from 0 to 10.\n\n"
        "How likely are you to recommend us to a friend or colleague?\n0 = not at all likely ... 10 = extremely likely",
    ] == await tw.sms("maybe")
    reason = await tw.sms("9 of 10")
    assert reason[0].startswith("We are glad to hear that! What did you like most?")
    await tw.sms("Quick and friendly")
    assert [("recommend", 9, None, "sms"), ("reason", None, "Quick and friendly", "sms")] == await stored(
        tw.service
    )


async def test_whatsapp_survey_uses_whatsapp_addresses(tw: Harness) -> None:
    """WhatsApp sends from whatsapp:+… to whatsapp:+…, and replies from whatsapp: addresses count as WhatsApp."""
    await tw.start("whatsapp", flow="nps")
    first = tw.fake.messages()[0].params
    assert (f"whatsapp:{CUSTOMER}", f"whatsapp:{WHATSAPP_SENDER}") == (first["To"], first["From"])
    await tw.sms("10", sender=f"whatsapp:{CUSTOMER}")
    await tw.sms("weiter", sender=f"whatsapp:{CUSTOMER}")
    assert [("recommend", 10, None, "whatsapp")] == await stored(tw.service)


async def test_stop_opts_out_and_nothing_is_sent_again(tw: Harness) -> None:
    """STOP ends the open survey with no reply from us; a new survey for that number is refused unsent."""
    survey_id = await tw.start("sms")
    assert [] == await tw.sms("Stop")
    assert "stopped" == await survey_status(tw.service, survey_id)
    with pytest.raises(ContactOptedOut):
        await tw.start("sms", ticket="T-2")
    assert 1 == len(tw.fake.messages())  # only the first survey's intro and question
    assert [] == await tw.sms("2")  # no survey open: no answer, no reply
    assert [] == await stored(tw.service)


@pytest.mark.parametrize("word", ["STOPP", "abmelden", "UNSUBSCRIBE", "quit."])
async def test_german_and_english_opt_out_words(tw: Harness, word: str) -> None:
    """Every opt-out word, in any case, records the opt-out."""
    await tw.start("sms")
    await tw.sms(word)
    async with tw.service.db.read() as conn:
        opted = (await conn.execute(sa.select(contacts.c.opted_out_at))).scalar_one()
    assert opted is not None


async def test_start_after_stop_allows_surveys_again(tw: Harness) -> None:
    """START undoes STOP: the next survey is sent."""
    await tw.start("sms")
    await tw.sms("STOP")
    await tw.sms("START")
    await tw.start("sms", ticket="T-2")
    assert 2 == len(tw.fake.messages())


@pytest.mark.parametrize("word", ["START", "Anmelden", "ja!"])
async def test_german_and_english_opt_in_words_after_stop(tw: Harness, word: str) -> None:
    """Every opt-in word undoes an opt-out: the next survey is sent."""
    await tw.start("sms")
    await tw.sms("Stopp")
    await tw.sms(word)
    await tw.start("sms", ticket="T-2")
    assert 2 == len(tw.fake.messages())


@pytest.mark.parametrize("word", ["Ja", "Yes"])
async def test_yes_from_a_contact_who_never_opted_out_is_an_answer(tw: Harness, word: str) -> None:
    """An opt-in word from a contact who never opted out, to the comment question, is the comment."""
    await tw.start("sms")
    for text in ("2", "1", "2"):
        await tw.sms(text)
    [thanks] = await tw.sms(word)
    assert (word, "sms") == (await stored(tw.service))[-1][2:]
    assert thanks.startswith("Vielen Dank")


async def test_hilfe_gets_the_help_text_in_german(tw: Harness) -> None:
    """HILFE is HELP in German."""
    await tw.start("sms", language="de")
    [reply] = await tw.sms("Hilfe")
    assert reply.startswith("Kurze Umfrage nach Ihrem Kontakt")


async def test_help_gets_a_short_help_text(tw: Harness) -> None:
    """HELP is answered with what the messages are and how to stop them, in the contact's language."""
    await tw.start("sms")
    [reply] = await tw.sms("HELP")
    assert reply.startswith("Kurze Umfrage nach Ihrem Kontakt")
    assert "STOP" in reply


async def test_error_21610_on_sending_is_an_opt_out_the_channel_does_not_store(tw: Harness) -> None:
    """Twilio refusing a send with 21610 (unsubscribed) is ContactOptedOut; the channel stores nothing
    (the scheduler records the opt-out: test_delivery_failures)."""
    tw.fake.fail_next("Messages", status=400, code=21610)
    with pytest.raises(ContactOptedOut):
        await tw.start("sms")
    async with tw.service.db.read() as conn:
        opted = (await conn.execute(sa.select(contacts.c.opted_out_at))).scalar_one()
        status = (await conn.execute(sa.select(surveys.c.status))).scalar_one()
    assert (None, "active") == (opted, status)


@pytest.mark.parametrize("signature", [None, "forged", "host"])
async def test_unsigned_or_forged_webhook_is_refused(tw: Harness, signature: str | None) -> None:
    """A missing, forged, or Host-based signature gets 403 and nothing is stored."""
    await tw.start("sms")
    params = {"From": CUSTOMER, "To": SENDER, "Body": "1", "MessageSid": "SM1"}
    if signature == "host":  # signed over the address the request claims, not PUBLIC_BASE_URL
        signature = RequestValidator(tw.fake.auth_token).compute_signature(
            "http://testserver/twilio/sms", params
        )
    response = await tw.post("/twilio/sms", params, signature=signature)
    assert (403, []) == (response.status_code, await stored(tw.service))


async def test_redelivered_message_sid_stores_one_answer(tw: Harness) -> None:
    """Twilio retrying a webhook with the same MessageSid stores nothing twice and replies once."""
    await tw.start("sms")
    first = await tw.sms("2", sid="SM" + "a" * 32)
    again = await tw.sms("2", sid="SM" + "a" * 32)
    assert (1, first) == (len(first), again)  # the retry gets the next question again
    assert [("satisfaction", 2, None, "sms")] == await stored(tw.service)


async def test_failed_status_callback_marks_the_survey_failed(tw: Harness) -> None:
    """A failed or undelivered status callback marks the survey failed (not delivered in the response rate)."""
    survey_id = await tw.start("sms")
    params = {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "30006", "To": CUSTOMER}
    response = await tw.post(f"/twilio/status?survey={survey_id}", params)
    assert (204, "failed") == (response.status_code, await survey_status(tw.service, survey_id))


async def test_delivered_status_callback_changes_nothing(tw: Harness) -> None:
    """A delivered status leaves the survey active."""
    survey_id = await tw.start("sms")
    await tw.post(f"/twilio/status?survey={survey_id}", {"MessageSid": "SM1", "MessageStatus": "delivered"})
    assert "active" == await survey_status(tw.service, survey_id)


async def expire_by_scheduler(tw: Harness, clock: Clock) -> None:
    """Move past SURVEY_TTL_HOURS and run a scheduler pass, whose expire job closes the survey."""
    clock.advance(hours=49)
    await Scheduler(tw.service, tw.channels, worker="test").run_once()


async def test_reply_after_expiry_gets_the_expired_text(tw: Harness, clock: Clock) -> None:
    """A late reply to a survey the scheduler expired gets the flow's expired text, and nothing is stored."""
    survey_id = await tw.start("sms")
    await tw.sms("2")
    await expire_by_scheduler(tw, clock)
    assert "expired" == await survey_status(tw.service, survey_id)
    assert ["Diese Umfrage ist leider abgelaufen. Vielen Dank trotzdem!"] == await tw.sms("4")
    assert [("satisfaction", 2, None, "sms")] == await stored(tw.service)
    assert "expired" == await survey_status(tw.service, survey_id)


async def test_every_late_reply_is_told_in_the_survey_language(tw: Harness, clock: Clock) -> None:
    """The reply that finds the survey expired and each one after it get the expired text in its language."""
    await tw.start("sms", flow="nps", language="en")
    clock.advance(hours=49)
    expired = ["Sorry, this survey has expired. Thank you anyway!"]
    assert (expired, expired) == (await tw.sms("9"), await tw.sms("9 really"))
    assert [] == await stored(tw.service)


async def test_help_and_stop_after_expiry_get_their_own_answers(tw: Harness, clock: Clock) -> None:
    """HELP still gets the help text and STOP no reply: keywords never get the expired text."""
    await tw.start("sms")
    await expire_by_scheduler(tw, clock)
    [help_text] = await tw.sms("HELP")
    assert (True, []) == (help_text.startswith("Kurze Umfrage"), await tw.sms("STOP"))


async def test_reply_a_week_after_expiry_gets_no_reply(tw: Harness, clock: Clock) -> None:
    """Past LATE_REPLY_WINDOW the message is likely about something else: empty TwiML, as with no survey."""
    await tw.start("sms")
    await expire_by_scheduler(tw, clock)
    clock.advance(days=7, seconds=1)
    assert [] == await tw.sms("4")


async def test_reply_after_a_newer_finished_survey_gets_no_expired_text(tw: Harness, clock: Clock) -> None:
    """Only the newest survey counts: one completed after an expired one leaves a late reply unanswered."""
    await tw.start("sms")
    await expire_by_scheduler(tw, clock)
    await tw.start("sms", flow="nps", ticket="T-2")
    await tw.sms("10")
    await tw.sms("weiter")
    assert [] == await tw.sms("4")


# --- voice ------------------------------------------------------------------------------


@dataclass
class Call:
    """One fake phone call: posts Twilio's voice webhooks and reads the TwiML back."""

    tw: Harness
    survey_id: int
    sid: str = "CA" + "1" * 32
    action: str = ""

    def _params(self, **extra: str) -> dict[str, str]:
        return {"CallSid": self.sid, "From": SENDER, "To": CUSTOMER, "CallStatus": "in-progress", **extra}

    async def answer(self, answered_by: str = "human") -> ET.Element:
        response = await self.tw.post(
            f"/twilio/voice?survey={self.survey_id}", self._params(AnsweredBy=answered_by)
        )
        return self._read(response)

    async def reply(self, **params: str) -> ET.Element:
        """Press keys (Digits=…) or speak (SpeechResult=…) at the current Gather."""
        path = self.action.removeprefix(PUBLIC)
        return self._read(await self.tw.post(path, self._params(**params)))

    def _read(self, response: httpx.Response) -> ET.Element:
        assert 200 == response.status_code, response.text
        root = ET.fromstring(response.text)
        gather = root.find("Gather")
        self.action = gather.get("action", "") if gather is not None else ""
        return root


def said(root: ET.Element) -> list[str]:
    return [say.text or "" for say in root.iter("Say")]


async def test_whole_voice_survey_by_keys(tw: Harness) -> None:
    """An answered call hears the intro in a German voice; keys answer the ratings, speech the comment."""
    survey_id = await tw.start("voice")
    [placed] = tw.fake.calls_made()
    assert (CUSTOMER, SENDER, f"{PUBLIC}/twilio/voice?survey={survey_id}", "Enable") == (
        placed.params["To"],
        placed.params["From"],
        placed.params["Url"],
        placed.params["MachineDetection"],
    )
    call = Call(tw, survey_id)
    root = await call.answer()
    gather = root.find("Gather")
    assert gather is not None
    assert ("dtmf speech", "1", "de-DE", "true") == (
        gather.get("input"),
        gather.get("numDigits"),
        gather.get("language"),
        gather.get("actionOnEmptyResult"),
    )
    assert {"Polly.Vicki"} == {say.get("voice") for say in root.iter("Say")}
    assert "Drücken Sie 1 für Sehr zufrieden." in said(root)[-1]
    assert f"{PUBLIC}/twilio/voice/answer?survey={survey_id}&q=satisfaction&n=0" == call.action

    for digits in ("2", "1", "2"):
        root = await call.reply(Digits=digits)
    assert "speech" == root.find("Gather").get("input")  # type: ignore[union-attr]
    root = await call.reply(SpeechResult="Sehr freundlich.")
    assert said(root) == ["Vielen Dank für Ihre Antworten! Sie helfen uns, besser zu werden."]
    assert root.find("Hangup") is not None
    assert [
        ("satisfaction", 2, None, "voice"),
        ("resolution", 1, None, "voice"),
        ("speed", 2, None, "voice"),
        ("comment", None, "Sehr freundlich.", "voice"),
    ] == await stored(tw.service)


async def test_whole_voice_survey_by_speech(tw: Harness) -> None:
    """Spoken answers go through the shared parser: "vier" on 1-5, "neun von zehn" on 0-10 (keys end with #)."""
    survey_id = await tw.start("voice", flow="nps")
    call = Call(tw, survey_id)
    root = await call.answer()
    gather = root.find("Gather")
    assert gather is not None
    assert ("#", None) == (gather.get("finishOnKey"), gather.get("numDigits"))
    await call.reply(SpeechResult="Neun von zehn.")
    await call.reply(SpeechResult="Alles ging schnell.")
    assert [
        ("recommend", 9, None, "voice"),
        ("reason", None, "Alles ging schnell.", "voice"),
    ] == await stored(tw.service)
    second = await tw.start("voice", ticket="T-2")
    call = Call(tw, second, sid="CA" + "2" * 32)
    await call.answer()
    await call.reply(SpeechResult="vier")
    assert ("satisfaction", 4, None, "voice") == (await stored(tw.service))[-1]


async def test_voice_keys_for_ten_end_with_hash(tw: Harness) -> None:
    """On 0-10, the keys 1 0 # give 10."""
    survey_id = await tw.start("voice", flow="nps", language="en")
    call = Call(tw, survey_id)
    root = await call.answer()
    assert "en-US" == root.find("Gather").get("language")  # type: ignore[union-attr]
    await call.reply(Digits="10#")
    assert [("recommend", 10, None, "voice")] == await stored(tw.service)


async def test_silence_reprompts_twice_then_moves_on(tw: Harness) -> None:
    """No input is reprompted (the flow's max_reprompts, 2) and then the next question is asked."""
    survey_id = await tw.start("voice")
    call = Call(tw, survey_id)
    await call.answer()
    first = await call.reply()
    assert said(first)[0] == "Bitte antworten Sie mit einer Zahl von 1 bis 5."
    assert call.action.endswith("q=satisfaction&n=1")
    await call.reply(Digits="9")  # off the scale: the second reprompt
    assert call.action.endswith("q=satisfaction&n=2")
    moved = await call.reply()
    assert call.action.endswith("q=resolution&n=0")
    assert "Konnte unser Kundenservice Ihr Problem lösen?" in said(moved)[-1]
    assert [] == await stored(tw.service)


async def test_answering_machine_gets_no_survey(tw: Harness) -> None:
    """A machine answering is hung up on and the survey is marked no_answer."""
    survey_id = await tw.start("voice")
    root = await Call(tw, survey_id).answer(answered_by="machine_end_beep")
    assert ([], True) == (said(root), root.find("Hangup") is not None)
    assert "no_answer" == await survey_status(tw.service, survey_id)


async def test_call_dropped_half_way_keeps_answers_and_is_incomplete(tw: Harness) -> None:
    """Hanging up after one answer keeps it; the status callback marks the survey incomplete."""
    survey_id = await tw.start("voice")
    call = Call(tw, survey_id)
    await call.answer()
    await call.reply(Digits="3")
    response = await tw.post(
        f"/twilio/voice/status?survey={survey_id}", {"CallSid": call.sid, "CallStatus": "completed"}
    )
    assert 204 == response.status_code
    assert ("incomplete", [("satisfaction", 3, None, "voice")]) == (
        await survey_status(tw.service, survey_id),
        await stored(tw.service),
    )


async def test_repeated_voice_answer_stores_once(tw: Harness) -> None:
    """The same Gather posted twice (a Twilio retry) stores one answer and asks the open question again."""
    survey_id = await tw.start("voice")
    call = Call(tw, survey_id)
    await call.answer()
    action = call.action
    await call.reply(Digits="4")
    call.action = action
    again = await call.reply(Digits="4")
    assert [("satisfaction", 4, None, "voice")] == await stored(tw.service)
    assert "Konnte unser Kundenservice Ihr Problem lösen?" in said(again)[-1]


async def test_unsigned_voice_webhook_is_refused(tw: Harness) -> None:
    """The voice webhooks need the signature too."""
    survey_id = await tw.start("voice")
    response = await tw.post(f"/twilio/voice?survey={survey_id}", {"CallSid": "CA1"}, signature=None)
    assert 403 == response.status_code
