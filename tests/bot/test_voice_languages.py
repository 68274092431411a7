"""A call in any language a flow declares that Twilio can speak and recognise.

A French flow is triggered for voice, the scheduler places the call on the fake Twilio REST
API, and the call's webhooks are posted signed: every <Say> and the <Gather> are in the
French voice and locale, keys and French speech ("quatre") are stored with their scores, and
the keypad instructions (the catalogue has no French) come in the flow's default language,
else English. A language no voice speaks is never read by another language's voice.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from bot.channels.voice import VOICES, cannot_speak, speakable
from bot.scheduler import Scheduler
from bot.service import Service
from bot.store.tables import answers, surveys
from bot.surveys import NewSurvey, create_survey
from bot.texts import CATALOGUE
from bot.triggers import SurveyRequest, trigger
from flows.loader import load_flows
from flows.parser import parse_score
from tests.bot.test_twilio import CUSTOMER, Call, Harness, said, twilio_settings
from tests.fakes.twilio import FakeTwilioApi
from tests.support import Clock, running_app

TEXTS = {
    "fr": {
        "intro": "Merci de votre appel ! Trois questions rapides.",
        "thanks": "Merci pour vos réponses !",
        "reprompt": "Merci de répondre par un chiffre de {min} à {max}.",
        "expired": "Désolé, cette enquête a expiré.",
        "stopped": "L'enquête est terminée.",
    },
    "de": {
        "intro": "Danke für Ihren Anruf! Drei kurze Fragen.",
        "thanks": "Danke für Ihre Antworten!",
        "reprompt": "Bitte antworten Sie mit einer Zahl von {min} bis {max}.",
        "expired": "Diese Umfrage ist abgelaufen.",
        "stopped": "Die Umfrage wurde beendet.",
    },
    "et": {
        "intro": "Aitäh kõne eest!",
        "thanks": "Aitäh vastuste eest!",
        "reprompt": "Palun vastake numbriga {min} kuni {max}.",
        "expired": "See küsitlus on aegunud.",
        "stopped": "Küsitlus on lõppenud.",
    },
}
NOTE = {
    "fr": "Comment évaluez-vous notre support ?",
    "de": "Wie bewerten Sie unseren Support?",
    "et": "Hinne?",
}
LABELS = {
    "fr": {1: "pas du tout satisfait", 2: "peu satisfait", 3: "neutre", 4: "satisfait", 5: "très satisfait"},
    "de": {1: "gar nicht zufrieden", 2: "wenig zufrieden", 3: "neutral", 4: "zufrieden", 5: "sehr zufrieden"},
    "et": {1: "halb", 2: "kehv", 3: "keskmine", 4: "hea", 5: "väga hea"},
}
RECOMMEND = {
    "fr": "Nous recommanderiez-vous à un ami ?",
    "de": "Würden Sie uns weiterempfehlen?",
    "et": "Kas soovitaksite meid?",
}
ENDS = {
    "fr": {0: "pas du tout probable", 10: "très probable"},
    "de": {0: "gar nicht wahrscheinlich", 10: "sehr wahrscheinlich"},
    "et": {0: "üldse mitte", 10: "kindlasti"},
}
COMMENT = {"fr": "Un commentaire ?", "de": "Ein Kommentar?", "et": "Kommentaar?"}


@dataclass(frozen=True)
class Case:
    """A flow with French and the language its keypad instructions must come in."""

    flow: str
    languages: tuple[str, ...]
    ui: str

    def ui_text(self, key: str, **fields: object) -> str:
        return CATALOGUE[key][self.ui].format(**fields)


# French only: the instructions in English. German first: the instructions in German.
CASES = [Case("appel", ("fr",), "en"), Case("appel-de", ("de", "fr"), "de")]
ESTONIAN = Case("kone", ("et",), "en")  # no Twilio voice speaks Estonian


def flow_definition(case: Case) -> dict[str, Any]:
    """A 1-5 rating with a label on every key, a 0-10 recommendation, an optional comment."""
    langs = case.languages
    return {
        "id": case.flow,
        "version": 1,
        "title": "Appel",
        "languages": list(langs),
        "default_language": langs[0],
        "texts": {lang: TEXTS[lang] for lang in langs},
        "questions": [
            {
                "id": "note",
                "kind": "rating",
                "metric": "csat",
                "scale": {"min": 1, "max": 5, "best": "high"},
                "prompt": {lang: NOTE[lang] for lang in langs},
                "labels": {lang: LABELS[lang] for lang in langs},
            },
            {
                "id": "recommandation",
                "kind": "nps",
                "metric": "nps",
                "scale": {"min": 0, "max": 10, "best": "high"},
                "prompt": {lang: RECOMMEND[lang] for lang in langs},
                "labels": {lang: ENDS[lang] for lang in langs},
            },
            {
                "id": "commentaire",
                "kind": "text",
                "optional": True,
                "prompt": {lang: COMMENT[lang] for lang in langs},
            },
        ],
    }


@pytest.fixture(params=CASES, ids=[c.flow for c in CASES])
def case(request: pytest.FixtureRequest) -> Case:
    found: Case = request.param
    return found


@pytest.fixture
async def tw(
    service: Service, fake_twilio: FakeTwilioApi, clock: Clock, tmp_path: Path
) -> AsyncIterator[Harness]:
    """The app with Twilio on against the fake, over the built-in flows and the three test flows."""
    folder = tmp_path / "flows"
    folder.mkdir()
    for each in (*CASES, ESTONIAN):
        (folder / f"{each.flow}.yaml").write_text(
            yaml.safe_dump(flow_definition(each), allow_unicode=True), encoding="utf-8"
        )
    svc = Service(settings=service.settings, db=service.db, flows=load_flows([folder]), clock=clock)
    await svc.record_flows()
    # No throttle: a test calls the same number more than once.
    settings = {**twilio_settings(fake_twilio), "throttle_days": 0}
    async with running_app(svc, clock, **settings) as (app, client, running):
        yield Harness(app, client, fake_twilio, running, count(1))


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if anything was logged at ERROR (a route's exception is logged, not raised)."""
    caplog.set_level(logging.INFO)
    yield
    assert [] == [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def called(tw: Harness, flow: str) -> Call:
    """A French voice survey triggered as the API does, and the call the scheduler placed for it."""
    request = SurveyRequest(ticket_id="T-1", channel="voice", to=CUSTOMER, flow=flow, language="fr")
    made = await trigger(tw.service, request, channels=tw.channels, link_for=lambda *_: None)
    assert made.survey_id is not None
    await Scheduler(tw.service, tw.channels, worker="test").run_once()
    [placed] = tw.fake.calls_made()
    assert ("fr", CUSTOMER) == (made.language, placed.params["To"])
    return Call(tw, made.survey_id)


def voices(root: ET.Element) -> set[tuple[str | None, str | None]]:
    """The (voice, language) of every <Say> in a TwiML reply."""
    return {(say.get("voice"), say.get("language")) for say in root.iter("Say")}


def spoken_in(root: ET.Element) -> tuple[set[tuple[str | None, str | None]], str | None]:
    """The voices of a reply's <Say>s and the language its <Gather> recognises (None: no Gather)."""
    gather = root.find("Gather")
    return voices(root), None if gather is None else gather.get("language")


async def stored(service: Service) -> list[tuple[object, ...]]:
    async with service.db.read() as conn:
        rows = await conn.execute(
            sa.select(answers.c.question_id, answers.c.score, answers.c.text).order_by(answers.c.id)
        )
        return [tuple(r) for r in rows]


async def closed(service: Service, survey_id: int) -> tuple[str, str | None]:
    async with service.db.read() as conn:
        row = (
            await conn.execute(
                sa.select(surveys.c.status, surveys.c.closed_reason).where(surveys.c.id == survey_id)
            )
        ).one()
    return str(row.status), row.closed_reason


FRENCH_VOICE = {("Polly.Celine", "fr-FR")}


async def test_french_call_is_spoken_and_understood_in_french(
    tw: Harness, case: Case, no_errors: None
) -> None:
    """Every Say and Gather in fr-FR with Céline; "quatre" and key 9 stored; instructions in the UI language."""
    call = await called(tw, case.flow)
    root = await call.answer()
    press = " ".join(case.ui_text("voice.press", value=v, label=label) for v, label in LABELS["fr"].items())
    assert [TEXTS["fr"]["intro"], f"{NOTE['fr']} {press} {case.ui_text('voice.say')}"] == said(root)
    gather = root.find("Gather")
    assert gather is not None
    assert (FRENCH_VOICE, "fr-FR", "dtmf speech") == (
        voices(root),
        gather.get("language"),
        gather.get("input"),
    )

    # Words that are no number: asked again, in French, by the French voice.
    root = await call.reply(SpeechResult="Très bien")
    reprompt = TEXTS["fr"]["reprompt"].format(min=1, max=5)
    assert [reprompt, f"{NOTE['fr']} {press} {case.ui_text('voice.say')}"] == said(root)
    assert (FRENCH_VOICE, "fr-FR") == spoken_in(root)

    root = await call.reply(SpeechResult="Quatre.")
    keys = case.ui_text("voice.keys", min=0, max=10)
    assert [f"{RECOMMEND['fr']} {keys} {case.ui_text('voice.say')}"] == said(root)
    assert (FRENCH_VOICE, "fr-FR") == spoken_in(root)
    asked_recommendation = call.action

    root = await call.reply(Digits="9")
    assert [f"{COMMENT['fr']} {case.ui_text('voice.speak')}"] == said(root)
    assert (FRENCH_VOICE, "fr-FR") == spoken_in(root)
    # Twilio retrying the key press: the open question again, still French.
    answered_action, call.action = call.action, asked_recommendation
    again = await call.reply(Digits="9")
    assert ([f"{COMMENT['fr']} {case.ui_text('voice.speak')}"], FRENCH_VOICE) == (said(again), voices(again))

    call.action = answered_action
    root = await call.reply(SpeechResult="Rien à ajouter.")
    assert ([TEXTS["fr"]["thanks"]], FRENCH_VOICE, True) == (
        said(root),
        voices(root),
        root.find("Hangup") is not None,
    )
    assert [("note", 4, None), ("recommandation", 9, None), ("commentaire", None, "Rien à ajouter.")] == (
        await stored(tw.service)
    )
    assert ("completed", None) == await closed(tw.service, call.survey_id)


@pytest.mark.parametrize(
    ("speech", "score", "comment"),
    [
        ("Neuf sur dix.", 9, None),
        ("zéro", 0, None),
        ("Dix !", 10, None),
        ("huit, c'était rapide", 8, "c'était rapide"),
    ],
)
async def test_spoken_french_numbers_on_the_zero_to_ten_question(
    tw: Harness, speech: str, score: int, comment: str | None, no_errors: None
) -> None:
    """French number words as Twilio transcribes them are scores on 0-10: fractions, accents, a comment."""
    call = await called(tw, "appel")
    await call.answer()
    await call.reply(Digits="2")
    await call.reply(SpeechResult=speech)
    assert [("note", 2, None), ("recommandation", score, comment)] == await stored(tw.service)


async def test_a_language_without_a_voice_is_never_read_by_another_voice(
    tw: Harness, no_errors: None
) -> None:
    """An Estonian survey that reached a call: nothing is said, the call ends, the survey fails saying why."""
    created = await create_survey(
        tw.service.db,
        tw.service.flows,
        NewSurvey(ESTONIAN.flow, "voice", CUSTOMER, ticket="T-1", language="et"),
        now=tw.service.clock(),
        ttl=tw.service.survey_ttl,
    )
    assert "et" == created.language
    root = await Call(tw, created.survey_id).answer()
    assert ([], True) == (said(root), root.find("Hangup") is not None)
    assert ("failed", cannot_speak("et")) == await closed(tw.service, created.survey_id)
    assert [] == await stored(tw.service)


# --- the table of voices ------------------------------------------------------------------


def test_voices_keep_german_and_english_and_add_six_languages() -> None:
    """de and en keep their voices; each language's locale is its own (fr -> fr-FR, pt -> pt-PT)."""
    assert {
        "de": ("Polly.Vicki", "de-DE"),
        "en": ("Polly.Joanna", "en-US"),
        "es": ("Polly.Lucia", "es-ES"),
        "fr": ("Polly.Celine", "fr-FR"),
        "it": ("Polly.Carla", "it-IT"),
        "nl": ("Polly.Lotte", "nl-NL"),
        "pl": ("Polly.Ewa", "pl-PL"),
        "pt": ("Polly.Ines", "pt-PT"),
    } == VOICES


def test_cannot_speak_names_the_language_and_the_ones_that_can() -> None:
    """speakable is true for the table's languages only; the refusal says which language and what is allowed."""
    assert (True, True, False, False, False) == tuple(
        speakable(code) for code in ("fr", "pl", "et", "FR", None)
    )
    assert (None, None) == (cannot_speak("fr"), cannot_speak("de"))
    assert (
        "the voice channel has no voice for language 'et'; it speaks de, en, es, fr, it, nl, pl, pt: "
        "choose one of these or another channel"
    ) == cannot_speak("et")


FOUR = {
    "de": "vier",
    "en": "four",
    "es": "cuatro",
    "fr": "quatre",
    "it": "quattro",
    "nl": "vier",
    "pl": "cztery",
    "pt": "quatro",
}


def test_every_voice_language_has_its_spoken_numbers() -> None:
    """A spoken "four" in each language a call can be in reads as 4 for a survey in that language."""
    assert set(VOICES) == set(FOUR)
    assert dict.fromkeys(FOUR, 4) == {
        code: parse_score(word, 1, 5, language=code).score for code, word in FOUR.items()
    }
