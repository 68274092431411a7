"""Every customer-facing UI string of the channels, in one catalogue, and ``text()`` to get one.

A flow carries its own texts (intro, questions, thanks ...) in the languages it declares.
What a channel adds around them (Telegram's greeting, the SMS skip hint, the web page's
buttons, the spoken keypad instructions) lives here, keyed ``<channel>.<name>``, one entry
per key with every shipped language side by side.

``text(key, language, fallback=...)`` never fails for a language: a flow may speak French
while the catalogue ships German and English only, so it tries ``language``, then
``fallback`` (the flow's default language), then English. A key that is not in the
catalogue is a programming error and raises KeyError; tests/bot/test_texts.py checks that
every key has every language in LANGUAGES.

Why a Python module rather than gettext or Babel: the catalogue is small (a few dozen
strings), changes with the code that shows it and is reviewed in the same diff, is checked
by mypy and the tests like any other code, and needs no extraction or compile step and no
.mo files in the package. Staff-facing texts (reports, alerts, dashboard, CLI) are not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import sqlalchemy as sa

from bot.store.tables import surveys

if TYPE_CHECKING:
    from bot.service import Service

# The languages every key has; the last resort of every lookup is English.
LANGUAGES = ("de", "en")
LAST_RESORT = "en"

CATALOGUE: Mapping[str, Mapping[str, str]] = {
    # Telegram: replies to /start, to buttons and to messages without an open survey.
    "telegram.already": {
        "de": "Schon beantwortet, danke!",
        "en": "Already answered, thank you!",
    },
    "telegram.closed": {
        "de": "Diese Umfrage ist bereits geschlossen.",
        "en": "This survey is already closed.",
    },
    "telegram.used": {
        "de": "Dieser Umfrage-Link wurde schon in einem anderen Chat geöffnet.",
        "en": "This survey link was already opened in another chat.",
    },
    "telegram.unknown": {
        "de": "Diesen Umfrage-Link kennen wir leider nicht.",
        "en": "Sorry, we do not know this survey link.",
    },
    "telegram.hello": {
        "de": (
            "Hallo! Nach einem Kontakt mit unserem Support fragen wir hier kurz, wie es war. "
            "Gerade ist keine Umfrage für Sie offen."
        ),
        "en": (
            "Hello! After a contact with our support team we ask here how it went. "
            "There is no survey open for you right now."
        ),
    },
    "telegram.skip": {
        "de": "(/skip überspringt diese Frage)",
        "en": "(/skip skips this question)",
    },
    # SMS and WhatsApp: the answer to HELP, and the line under an optional question.
    "sms.help": {
        "de": "Kurze Umfrage nach Ihrem Kontakt mit unserem Support. Antworten Sie mit einer Zahl. "
        "STOP: keine Umfragen mehr.",
        "en": "A short survey after your contact with our support team. Reply with a number. "
        "STOP: no more surveys.",
    },
    "sms.skip": {
        "de": "Optional: weiter = überspringen.",
        "en": "Optional: reply skip to skip.",
    },
    # Voice: how to answer a question by key or by voice ({value}, {label}, {min}, {max}).
    "voice.press": {
        "de": "Drücken Sie {value} für {label}.",
        "en": "Press {value} for {label}.",
    },
    "voice.keys": {
        "de": "Tippen Sie eine Zahl von {min} bis {max} und dann die Rautetaste.",
        "en": "Enter a number from {min} to {max}, then the hash key.",
    },
    "voice.say": {
        "de": "Oder sagen Sie die Zahl.",
        "en": "Or say the number.",
    },
    "voice.speak": {
        "de": "Bitte sprechen Sie nach dem Ton. Wenn Sie nichts sagen möchten, warten Sie einfach.",
        "en": "Please speak after the tone. If you would rather not, just wait.",
    },
    # Web: the survey page ({n}, {total}) and its messages.
    "web.title": {
        "de": "Kurze Umfrage",
        "en": "A short survey",
    },
    "web.progress": {
        "de": "Frage {n} von {total}",
        "en": "Question {n} of {total}",
    },
    "web.send": {
        "de": "Absenden",
        "en": "Send",
    },
    "web.skip": {
        "de": "Überspringen",
        "en": "Skip",
    },
    "web.closed": {
        "de": "Diese Umfrage ist bereits geschlossen. Vielen Dank!",
        "en": "This survey is already closed. Thank you!",
    },
    "web.missing": {
        "de": "Diese Seite gibt es nicht.",
        "en": "This page does not exist.",
    },
    # Console (`afterword chat`): the skip hint and the line when input runs out.
    "console.skip": {
        "de": "optional – Enter zum Überspringen",
        "en": "optional – press Enter to skip",
    },
    "console.paused": {
        "de": "Umfrage pausiert. `afterword chat` setzt sie fort.",
        "en": "Survey paused. Run `afterword chat` again to continue.",
    },
}


def text(key: str, language: str | None, *, fallback: str) -> str:
    """The UI string ``key`` in ``language``, else in ``fallback`` (the flow's default language), else English.

    Never raises for a language; KeyError for a key the catalogue does not have.
    """
    entry = CATALOGUE[key]
    for code in (language, fallback, LAST_RESORT):
        if code is not None and code in entry:
            return entry[code]
    raise KeyError(f"{key}: no {LAST_RESORT!r} text")  # the tests make sure every key has one


def default_language(service: Service) -> str:
    """The default flow's default language: the fallback where no survey (or its flow) is known."""
    flow = service.flows.get(service.settings.default_flow)
    return flow.default_language if flow is not None else LAST_RESORT


async def survey_fallback(service: Service, survey_id: int | None, language: str | None) -> str:
    """The fallback for a survey's UI strings: its flow's default language.

    The database is asked only when ``language`` is one the catalogue does not ship: for de
    and en the fallback is never read, so the usual answer costs no query. Without a survey,
    or with a flow version no longer known, the default flow's default language.
    """
    if survey_id is None or language in LANGUAGES:
        return default_language(service)
    async with service.db.read() as conn:
        row = (
            await conn.execute(
                sa.select(surveys.c.flow_id, surveys.c.flow_version).where(surveys.c.id == survey_id)
            )
        ).one_or_none()
        if row is None:
            return default_language(service)
        flow = service.flow_for(row.flow_id, row.flow_version) or await service.book.version_async(
            conn, row.flow_id, row.flow_version
        )
    return flow.default_language if flow is not None else default_language(service)
