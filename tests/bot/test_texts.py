"""The one catalogue of customer-facing UI strings (bot.texts), and a French flow through every channel.

The catalogue ships German and English. A flow may speak a language it does not have (French
here): the flow's own texts are French, and each channel's UI strings come from the flow's
default language, else English, with no error anywhere. Two French flows are written to the
test's folder: ``avis`` (``languages: [fr]``, so its UI strings are English) and ``avis-de``
(``languages: [de, fr]``, default de, so its UI strings are German).
"""

from __future__ import annotations

import io
import logging
import string
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from bot.channels.console import ChatRequest, chat
from bot.service import Service
from bot.store.tables import answers
from bot.surveys import NewSurvey, create_survey
from bot.texts import CATALOGUE, LANGUAGES, text
from bot.triggers import SurveyRequest, trigger
from flows.loader import load_flows
from tests.bot import test_telegram as telegram
from tests.bot import test_twilio as twilio
from tests.fakes.telegram import FakeBotApi, callback_update
from tests.fakes.twilio import FakeTwilioApi
from tests.support import Clock, running_app

# --- the catalogue ----------------------------------------------------------------------


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def test_every_key_has_every_shipped_language() -> None:
    """Each key has a non-empty text in de and en, with the same {placeholders} in each."""
    assert ("de", "en") == LANGUAGES
    incomplete = {key: sorted(entry) for key, entry in CATALOGUE.items() if set(entry) != set(LANGUAGES)}
    empty = [(key, lang) for key, entry in CATALOGUE.items() for lang, t in entry.items() if not t.strip()]
    mismatched = [
        key for key, entry in CATALOGUE.items() if len({frozenset(_fields(t)) for t in entry.values()}) != 1
    ]
    assert ({}, [], []) == (incomplete, empty, mismatched)


def test_keys_are_namespaced_by_channel_or_staff_room() -> None:
    """A customer key is <channel>.<name>; a staff key is staff.<room>.<name>."""
    customer = [key.split(".") for key in CATALOGUE if not key.startswith("staff.")]
    staff = [key.split(".") for key in CATALOGUE if key.startswith("staff.")]
    assert {"console", "sms", "telegram", "voice", "web"} == {parts[0] for parts in customer}
    assert {"alert", "by", "dashboard", "report", "sci", "telegram"} == {parts[1] for parts in staff}
    assert ([], []) == ([p for p in customer if len(p) != 2], [p for p in staff if len(p) != 3])


def test_fallback_order_is_language_then_flow_default_then_english() -> None:
    """French (not shipped) takes the flow's default language, then English; a shipped language is its own."""
    closed = CATALOGUE["telegram.closed"]
    assert [closed["de"], closed["en"], closed["en"], closed["de"], closed["en"], closed["de"]] == [
        text("telegram.closed", "fr", fallback="de"),  # the flow's default language
        text("telegram.closed", "fr", fallback="fr"),  # a French-only flow: English
        text("telegram.closed", "fr", fallback="it"),  # neither shipped: English
        text("telegram.closed", "de", fallback="en"),  # shipped: the fallback is not asked
        text("telegram.closed", "en", fallback="de"),
        text("telegram.closed", None, fallback="de"),  # no language known: the flow's default
    ]


def test_a_missing_key_is_a_key_error() -> None:
    """An unknown key is a programming error, whatever the language."""
    with pytest.raises(KeyError):
        text("telegram.nope", "de", fallback="de")


# --- a French flow ----------------------------------------------------------------------

FLOW_TEXTS = {
    "fr": {
        "intro": "Merci de nous avoir contactés ! Deux questions rapides.",
        "stop_hint": 'Répondez "stop" pour arrêter.',
        "thanks": "Merci pour vos réponses !",
        "reprompt": "Merci de répondre par un chiffre de {min} à {max}.",
        "expired": "Désolé, cette enquête a expiré.",
        "stopped": "L'enquête est terminée.",
    },
    "de": {
        "intro": "Danke für Ihren Kontakt! Zwei kurze Fragen.",
        "thanks": "Danke für Ihre Antworten!",
        "reprompt": "Bitte antworten Sie mit einer Zahl von {min} bis {max}.",
        "expired": "Diese Umfrage ist abgelaufen.",
        "stopped": "Die Umfrage wurde beendet.",
    },
}
RATING = {"fr": "Comment était notre support ?", "de": "Wie war unser Support?"}
LABELS = {"fr": {1: "bien", 2: "moyen", 3: "mal"}, "de": {1: "gut", 2: "mittel", 3: "schlecht"}}
COMMENT = {"fr": "Un commentaire ?", "de": "Ein Kommentar?"}


@dataclass(frozen=True)
class Case:
    """A French flow and the language its UI strings must come in."""

    flow: str
    languages: tuple[str, ...]
    ui: str

    def ui_text(self, key: str) -> str:
        return CATALOGUE[key][self.ui]


CASES = [Case("avis", ("fr",), "en"), Case("avis-de", ("de", "fr"), "de")]


def flow_definition(case: Case) -> dict[str, Any]:
    """A small valid flow: a 1-3 rating with labels, then an optional comment."""
    return {
        "id": case.flow,
        "version": 1,
        "title": "Avis client",
        "languages": list(case.languages),
        "default_language": case.languages[0],
        "texts": {lang: FLOW_TEXTS[lang] for lang in case.languages},
        "questions": [
            {
                "id": "note",
                "kind": "rating",
                "metric": "csat",
                "scale": {"min": 1, "max": 3, "best": "low"},
                "prompt": {lang: RATING[lang] for lang in case.languages},
                "labels": {lang: LABELS[lang] for lang in case.languages},
            },
            {
                "id": "commentaire",
                "kind": "text",
                "optional": True,
                "prompt": {lang: COMMENT[lang] for lang in case.languages},
            },
        ],
    }


@pytest.fixture(params=CASES, ids=[c.flow for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    found: Case = request.param
    return found


@pytest.fixture
async def french(service: Service, clock: Clock, tmp_path: Path) -> Service:
    """A service over the test database with the built-in flows and both French flows, recorded."""
    folder = tmp_path / "flows"
    folder.mkdir()
    for each in CASES:
        (folder / f"{each.flow}.yaml").write_text(
            yaml.safe_dump(flow_definition(each), allow_unicode=True), encoding="utf-8"
        )
    svc = Service(settings=service.settings, db=service.db, flows=load_flows([folder]), clock=clock)
    await svc.record_flows()
    assert ("fr", "de") == (svc.flows["avis"].default_language, svc.flows["avis-de"].default_language)
    return svc


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if anything was logged at ERROR (a handler's exception is logged, not raised)."""
    caplog.set_level(logging.INFO)
    yield
    assert [] == [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def stored(service: Service) -> list[tuple[object, ...]]:
    async with service.db.read() as conn:
        rows = await conn.execute(
            sa.select(answers.c.question_id, answers.c.score, answers.c.text).order_by(answers.c.id)
        )
        return [tuple(r) for r in rows]


# --- Telegram ---------------------------------------------------------------------------


@pytest.fixture
async def tg(french: Service, fake_telegram: FakeBotApi, clock: Clock) -> AsyncIterator[telegram.Harness]:
    async with running_app(french, clock, **telegram.telegram_settings(fake_telegram)) as (app, client, svc):
        yield telegram.Harness(app, client, fake_telegram, svc)


async def test_french_flow_by_telegram_taps(tg: telegram.Harness, case: Case, no_errors: None) -> None:
    """French prompts; a double tap and a tap after the end are "already answered" in the UI language."""
    chat = telegram.CUSTOMER
    created = await create_survey(
        tg.service.db,
        tg.service.flows,
        NewSurvey(case.flow, "telegram", str(chat), ticket="T-1", language="fr"),
        now=tg.service.clock(),
        ttl=tg.service.survey_ttl,
    )
    await tg.bot.customers.show(chat, created.prompts, created.language, created.survey_id)
    first, message_id = tg.question(chat)
    intro = f"{FLOW_TEXTS['fr']['intro']} {FLOW_TEXTS['fr']['stop_hint']}"
    assert f"{intro}\n\n{RATING['fr']}\n\n1 = bien\n2 = moyen\n3 = mal" == first.params["text"]

    data = telegram.button(first, 2)
    for _ in range(2):  # a double tap on the same button: the second is "already answered"
        update = callback_update(
            tg.update_id(), chat, message_id, data, message_text=first.params["text"], language_code="fr"
        )
        assert 200 == (await tg.post(update)).status_code
    comment, _ = tg.question(chat)
    assert f"{COMMENT['fr']}\n{case.ui_text('telegram.skip')}" == comment.params["text"]
    assert 200 == (await tg.say(chat, "Très bien", language_code="fr")).status_code
    assert FLOW_TEXTS["fr"]["thanks"] == tg.question(chat)[0].params["text"]
    # A second tap on the first keyboard, now that the survey is completed.
    update = callback_update(tg.update_id(), chat, message_id, data, message_text="q", language_code="fr")
    assert 200 == (await tg.post(update)).status_code

    assert [("note", 2, None), ("commentaire", None, "Très bien")] == await stored(tg.service)
    answered = tg.fake.calls_to("answerCallbackQuery")
    assert [None, case.ui_text("telegram.already"), case.ui_text("telegram.already")] == [
        c.params.get("text") for c in answered
    ]
    assert [False, False, False] == [c.failed for c in answered]


async def test_french_flow_by_telegram_link(tg: telegram.Harness, case: Case, no_errors: None) -> None:
    """/start opens a French link in French; the link from another chat is "used", in the UI language."""
    made = await trigger(
        tg.service,
        SurveyRequest(ticket_id="T-2", channel="telegram", language="fr", flow=case.flow),
        channels={"telegram": None},
        link_for=lambda _channel, token: token,
    )
    assert made.link is not None
    assert 200 == (await tg.say(telegram.CUSTOMER, f"/start {made.link}", language_code="fr")).status_code
    opened, _ = tg.question(telegram.CUSTOMER)
    assert opened.params["text"].startswith(FLOW_TEXTS["fr"]["intro"])
    assert 200 == (await tg.say(6002, f"/start {made.link}", language_code="fr")).status_code
    assert [case.ui_text("telegram.used")] == [c.params["text"] for c in tg.to_chat(6002)]
    first, message_id = tg.question(telegram.CUSTOMER)
    await tg.tap(telegram.CUSTOMER, 1, language_code="fr")
    assert [("note", 1, None)] == await stored(tg.service)
    # A newer survey for the chat closes this one: a tap on its keyboard is told it is closed.
    await create_survey(
        tg.service.db,
        tg.service.flows,
        NewSurvey(case.flow, "telegram", str(telegram.CUSTOMER), ticket="T-9", language="fr"),
        now=tg.service.clock(),
        ttl=tg.service.survey_ttl,
    )
    data = telegram.button(first, 3)
    update = callback_update(tg.update_id(), telegram.CUSTOMER, message_id, data, message_text="q")
    assert 200 == (await tg.post(update)).status_code
    assert [("note", 1, None)] == await stored(tg.service)
    answered = tg.fake.calls_to("answerCallbackQuery")
    assert [(None, False), (case.ui_text("telegram.closed"), False)] == [
        (c.params.get("text"), c.failed) for c in answered
    ]


@pytest.mark.parametrize(("code", "expected"), [("fr", "fr"), ("fr-CA", "fr"), ("de", "de"), ("it", "de")])
async def test_telegram_link_without_a_language_opens_in_the_users_own_when_the_flow_has_it(
    tg: telegram.Harness, code: str, expected: str
) -> None:
    """A [de, fr] link that names no language opens in the Telegram user's language if the flow has it,
    else in the flow's default: French users were given German because only de and en were read."""
    made = await trigger(
        tg.service,
        SurveyRequest(ticket_id="T-3", channel="telegram", flow="avis-de"),
        channels={"telegram": None},
        link_for=lambda _channel, token: token,
    )
    assert made.link is not None
    assert 200 == (await tg.say(telegram.CUSTOMER, f"/start {made.link}", language_code=code)).status_code
    opened, _ = tg.question(telegram.CUSTOMER)
    assert opened.params["text"].startswith(FLOW_TEXTS[expected]["intro"])


# --- SMS and voice ----------------------------------------------------------------------


@pytest.fixture
async def tw(french: Service, fake_twilio: FakeTwilioApi, clock: Clock) -> AsyncIterator[twilio.Harness]:
    async with running_app(french, clock, **twilio.twilio_settings(fake_twilio)) as (app, client, svc):
        yield twilio.Harness(app, client, fake_twilio, svc, count(1))


async def test_french_flow_by_sms(tw: twilio.Harness, case: Case, no_errors: None) -> None:
    """French prompts by SMS; the skip hint in the UI language; HELP in the default flow's language."""
    survey_id = await tw.start("sms", flow=case.flow, language="fr")
    assert [
        f"{FLOW_TEXTS['fr']['intro']} {FLOW_TEXTS['fr']['stop_hint']}\n\n{RATING['fr']}\n1 = bien ... 3 = mal",
    ] == [c.params["Body"] for c in tw.fake.messages()]
    assert [f"{COMMENT['fr']}\n{case.ui_text('sms.skip')}"] == await tw.sms("2")
    assert [FLOW_TEXTS["fr"]["thanks"]] == await tw.sms("skip")
    assert [("note", 2, None)] == await stored(tw.service)
    assert "completed" == await twilio.survey_status(tw.service, survey_id)
    # HELP names no survey: the default flow's (support-csat) default language backs French up.
    assert [CATALOGUE["sms.help"]["de"]] == await tw.sms("HELP")


async def test_french_flow_by_voice_keys(tw: twilio.Harness, case: Case, no_errors: None) -> None:
    """French questions are spoken with the keypad instructions in the UI language; a retry is asked again."""
    survey_id = await tw.start("voice", flow=case.flow, language="fr")
    call = twilio.Call(tw, survey_id)
    root = await call.answer()
    press = " ".join(
        case.ui_text("voice.press").format(value=v, label=label) for v, label in LABELS["fr"].items()
    )
    assert [FLOW_TEXTS["fr"]["intro"], f"{RATING['fr']} {press} {case.ui_text('voice.say')}"] == twilio.said(
        root
    )
    first_action = call.action
    root = await call.reply(Digits="3")
    assert [f"{COMMENT['fr']} {case.ui_text('voice.speak')}"] == twilio.said(root)
    # Twilio retrying the key press: the open question again, in the same words.
    call.action = first_action
    again = await call.reply(Digits="3")
    assert [f"{COMMENT['fr']} {case.ui_text('voice.speak')}"] == twilio.said(again)
    root = await call.reply(SpeechResult="Parfait.")
    assert ([FLOW_TEXTS["fr"]["thanks"]], True) == (twilio.said(root), root.find("Hangup") is not None)
    assert [("note", 3, None), ("commentaire", None, "Parfait.")] == await stored(tw.service)


# --- web --------------------------------------------------------------------------------


async def test_french_flow_by_web_link(french: Service, clock: Clock, case: Case, no_errors: None) -> None:
    """The page is lang="fr" with French questions, its own strings in the UI language; no error."""
    async with running_app(french, clock, public_base_url="http://testserver") as (_app, client, svc):
        made = await trigger(
            svc,
            SurveyRequest(ticket_id="T-3", channel="web", language="fr", flow=case.flow),
            channels={"web": None},
            link_for=lambda _channel, token: f"/s/{token}",
        )
        assert made.link is not None
        page = (await client.get(made.link)).text
        assert '<html lang="fr">' in page
        for expected in (
            FLOW_TEXTS["fr"]["intro"],
            RATING["fr"],
            'aria-label="1 – bien"',
            case.ui_text("web.title"),
            case.ui_text("web.progress").format(n=1, total=2),
        ):
            assert expected in page, expected
        answered = await client.post(made.link, data={"question": "note", "choice": "1"})
        assert 303 == answered.status_code
        page = (await client.get(made.link)).text
        for expected in (
            COMMENT["fr"],
            case.ui_text("web.progress").format(n=2, total=2),
            f">{case.ui_text('web.send')}</button>",
            f">{case.ui_text('web.skip')}</button>",
        ):
            assert expected in page, expected
        await client.post(made.link, data={"question": "commentaire", "text": "Rien à ajouter"})
        assert FLOW_TEXTS["fr"]["thanks"] in (await client.get(made.link)).text
        assert [("note", 1, None), ("commentaire", None, "Rien à ajouter")] == await stored(svc)


# --- console ----------------------------------------------------------------------------


async def test_french_flow_in_the_console(french: Service, case: Case) -> None:
    """`afterword chat` in French: the skip hint and the pause line in the UI language."""
    out = io.StringIO()
    request = ChatRequest(contact="kim", flow_id=case.flow, language="fr")
    result = await chat(french, request, stdin=io.StringIO("2\n"), out=out, echo=False)
    assert "active" == result.status
    shown = out.getvalue()
    assert f"{COMMENT['fr']}\n  ({case.ui_text('console.skip')})" in shown
    assert shown.endswith(case.ui_text("console.paused") + "\n")
