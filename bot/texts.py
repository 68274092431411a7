"""Every customer- and staff-facing UI string, in one catalogue, and ``text()`` to get one.

A flow carries its own texts (intro, questions, thanks ...) in the languages it declares.
What a channel adds around them (Telegram's greeting, the SMS skip hint, the web page's
buttons, the spoken keypad instructions) lives here, keyed ``<channel>.<name>``, one entry
per key with every shipped language side by side. So do the staff texts, keyed
``staff.<room>.<name>``: reports (the CLI's table and Markdown, Telegram's /report, the
dashboard), detractor alerts, the dashboard's pages and Telegram's staff replies. Their
language is the staff member's (bot.staff_language), and ``staff_text()``, ``decimal()`` and
``day()`` write them, their numbers (a decimal comma in German) and their dates. JSON and CSV
output is an interface and is never translated.

``text(key, language, fallback=...)`` never fails for a language: a flow may speak French
while the catalogue ships German and English only, so it tries ``language``, then
``fallback`` (the flow's default language), then English. A key that is not in the
catalogue is a programming error and raises KeyError; tests/bot/test_texts.py checks that
every key has every language in LANGUAGES.

Why a Python module rather than gettext or Babel: the catalogue is small (a few dozen
strings), changes with the code that shows it and is reviewed in the same diff, is checked
by mypy and the tests like any other code, and needs no extraction or compile step and no
.mo files in the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
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
    # --- Staff texts: `staff.<room>.<name>`, de and en, in the staff member's language -----------
    # (bot.staff_language decides which). Metric names (CSAT, NPS, CES, CSI, SCI) stay as they are.
    # Reports (bot.report_format): the CLI's table and Markdown, Telegram's /report, the dashboard.
    "staff.report.no_answers": {"de": "keine Antworten", "en": "no answers"},
    "staff.report.cell": {"de": "{value} [{low}; {high}], n={n}", "en": "{value} [{low}, {high}], n={n}"},
    "staff.report.cell_few": {
        "de": "{value} [{low}; {high}], n={n} (wenige)",
        "en": "{value} [{low}, {high}], n={n} (few)",
    },
    "staff.report.cell_no_interval": {
        "de": "{value}, n={n} (zu wenige für ein Intervall)",
        "en": "{value}, n={n} (too few for an interval)",
    },
    "staff.report.target_met": {"de": "erreicht {target}", "en": "met {target}"},
    "staff.report.target_missed": {"de": "verfehlt {target}", "en": "missed {target}"},
    "staff.report.not_certain": {"de": "{verdict} (nicht sicher)", "en": "{verdict} (not certain)"},
    "staff.report.significant": {"de": "{delta} signifikant", "en": "{delta} significant"},
    "staff.report.noise": {"de": "{delta} (Zufall)", "en": "{delta} (noise)"},
    "staff.report.csi_missing": {"de": "keine Antworten für {questions}", "en": "no answers for {questions}"},
    "staff.report.none": {"de": "(keine)", "en": "(none)"},
    "staff.report.period": {"de": "Zeitraum {period}", "en": "Period {period}"},
    "staff.report.rule": {"de": "(CSAT-Regel {rule})", "en": "(CSAT rule {rule})"},
    "staff.report.overall": {"de": "Gesamt", "en": "Overall"},
    "staff.report.by": {"de": "Nach {key}", "en": "By {key}"},
    "staff.report.each_question": {"de": "Je Frage", "en": "Each question"},
    "staff.report.column_metric": {"de": "Kennzahl", "en": "metric"},
    "staff.report.column_value": {"de": "Wert (95-%-KI), n", "en": "value (95 % CI), n"},
    "staff.report.column_target": {"de": "Ziel", "en": "target"},
    "staff.report.column_change": {"de": "Änderung zum Vorzeitraum", "en": "change vs previous"},
    "staff.report.column_question": {"de": "Frage", "en": "question"},
    "staff.report.column_mean": {"de": "Mittelwert (95-%-KI)", "en": "mean (95 % CI)"},
    "staff.report.response_rate": {
        "de": "Rücklauf: {completion_rate} % abgeschlossen, {answer_rate} % beantwortet ({completed} und "
        "{answered} von {delivered} zugestellten Umfragen; {not_delivered} von {sent} nicht zugestellt)",
        "en": "Response rate: {completion_rate} % completed, {answer_rate} % answered ({completed} and "
        "{answered} of {delivered} surveys delivered; {not_delivered} of {sent} not delivered)",
    },
    "staff.report.comments": {
        "de": "Neueste Kommentare (Kritiker zuerst):",
        "en": "Latest comments (detractors first):",
    },
    "staff.report.detractor": {"de": "Kritiker", "en": "detractor"},
    "staff.report.footnote": {
        "de": "Eine Antwort je Kunde und Kennzahl (die Leitfrage des Flows). 95-%-Intervalle in Klammern; "
        "(wenige): weniger als 30 Antworten, (zu wenige): weniger als 5, kein Intervall.",
        "en": "One answer per customer and metric (the flow's headline question). 95 % intervals in "
        "brackets; (few): fewer than 30 answers, (too few): fewer than 5, no interval.",
    },
    "staff.report.chart_title": {
        "de": "CSAT und NPS, letzte {days} Tage",
        "en": "CSAT and NPS, last {days} days",
    },
    # What a report is grouped or bucketed by (--by, --trend), as a heading or a column.
    "staff.by.agent": {"de": "Agent", "en": "agent"},
    "staff.by.team": {"de": "Team", "en": "team"},
    "staff.by.channel": {"de": "Kanal", "en": "channel"},
    "staff.by.flow": {"de": "Flow", "en": "flow"},
    "staff.by.language": {"de": "Sprache", "en": "language"},
    "staff.by.question": {"de": "Frage", "en": "question"},
    "staff.by.day": {"de": "Tag", "en": "day"},
    "staff.by.week": {"de": "Woche", "en": "week"},
    "staff.by.month": {"de": "Monat", "en": "month"},
    # The Secure Customer Index's bands (scoring.metrics.SciBand).
    "staff.sci.at_risk": {"de": "gefährdet", "en": "at_risk"},
    "staff.sci.neutral": {"de": "neutral", "en": "neutral"},
    "staff.sci.secure": {"de": "sicher", "en": "secure"},
    # Telegram's staff commands (/report, /survey); `{moment}` is a date and time.
    "staff.telegram.refusal": {
        "de": "Dieser Befehl ist leider nur für das Support-Team.",
        "en": "Sorry, this command is only for the support team.",
    },
    "staff.telegram.report_usage": {
        "de": "Aufruf: /report [7d|30d|90d] [by agent|team|channel]\nBeispiel: /report 30d by agent",
        "en": "Usage: /report [7d|30d|90d] [by agent|team|channel]\nExample: /report 30d by agent",
    },
    "staff.telegram.survey_usage": {
        "de": "Aufruf: /survey <Ticket> [Flow] [Sprache]\nBeispiel: /survey T-1042 support-csat de",
        "en": "Usage: /survey <ticket> [flow] [language]\nExample: /survey T-1042 support-csat de",
    },
    "staff.telegram.bad_period": {
        "de": "{word} ist kein Zeitraum wie 7d, 30d oder 90d",
        "en": "{word} is not a period such as 7d, 30d or 90d",
    },
    "staff.telegram.bad_by": {"de": "erlaubt sind {choices}", "en": "say {choices}"},
    "staff.telegram.report_title": {
        "de": "Afterword-Bericht, letzte {days} Tage",
        "en": "Afterword report, last {days} days",
    },
    "staff.telegram.versus": {"de": "(gegenüber den {days} Tagen davor)", "en": "(vs previous {days} days)"},
    "staff.telegram.all_answers": {"de": "(alle Antworten)", "en": "(all its answers)"},
    "staff.telegram.answered": {
        "de": "Beantwortet: {answered} von {delivered} zugestellten Umfragen ({rate} %)",
        "en": "Answered: {answered} of {delivered} surveys delivered ({rate} %)",
    },
    "staff.telegram.chart_caption": {
        "de": "Verlauf je {bucket}, schattiert: 95-%-Intervall",
        "en": "Trend by {bucket}, shaded: 95 % interval",
    },
    "staff.telegram.unknown_flow": {
        "de": "Unbekannter Flow {flow}. Flows: {flows}",
        "en": "Unknown flow {flow}. Flows: {flows}",
    },
    "staff.telegram.no_language": {
        "de": "Flow {flow} hat keine Sprache {language}. Sprachen: {languages}",
        "en": "Flow {flow} has no language {language}. Languages: {languages}",
    },
    "staff.telegram.survey_link": {
        "de": "Umfrage zu Ticket {ticket} ({flow}):\n{link}\n\nFügen Sie den Link in Ihre Antwort ein. "
        "Der erste Chat, der ihn öffnet, antwortet; er läuft am {moment} ab.",
        "en": "Survey for ticket {ticket} ({flow}):\n{link}\n\nPaste the link into your reply. "
        "The first chat that opens it answers; it expires {moment}.",
    },
    "staff.telegram.survey_exists": {
        "de": "Ticket {ticket} hat schon eine Umfrage {flow} (Status {status}):\n{link}",
        "en": "Ticket {ticket} already has a {flow} survey (status {status}):\n{link}",
    },
    # Detractor alerts in the alert chat (bot.alerts), in STAFF_LANGUAGE.
    "staff.alert.detractor": {
        "de": "⚠️ Kritische Bewertung: {metric} {score} auf der Skala {min}–{max}",
        "en": "⚠️ Detractor: {metric} {score} on {min}–{max}",
    },
    "staff.alert.ticket": {"de": "Ticket: {ticket}", "en": "Ticket: {ticket}"},
    "staff.alert.no_ticket": {"de": "(kein Ticket)", "en": "(no ticket)"},
    "staff.alert.agent": {"de": "Agent: {agent}", "en": "Agent: {agent}"},
    "staff.alert.agent_team": {"de": "Agent: {agent} (Team {team})", "en": "Agent: {agent} (team {team})"},
    "staff.alert.channel": {"de": "Kanal: {channel}", "en": "Channel: {channel}"},
    "staff.alert.comment": {"de": "Kommentar: „{text}“", "en": "Comment: “{text}”"},
    "staff.alert.follow_up": {
        "de": "💬 Kommentar zu Ticket {ticket} ({agent}): „{text}“",
        "en": "💬 Comment on ticket {ticket} ({agent}): “{text}”",
    },
    "staff.alert.no_agent": {"de": "kein Agent", "en": "no agent"},
    # The dashboard, its login and the start page (bot.web.dashboard, bot/web/templates).
    "staff.dashboard.title": {"de": "Afterword-Dashboard", "en": "Afterword dashboard"},
    "staff.dashboard.try_yourself": {
        "de": "Selbst eine Umfrage beantworten",
        "en": "Answer a survey yourself",
    },
    "staff.dashboard.log_out": {"de": "Abmelden", "en": "Log out"},
    "staff.dashboard.filters": {"de": "Filter", "en": "Filters"},
    "staff.dashboard.period": {"de": "Zeitraum", "en": "Period"},
    "staff.dashboard.last_days": {"de": "letzte {days} Tage", "en": "last {days} days"},
    "staff.dashboard.breakdown": {"de": "Aufschlüsseln nach", "en": "Breakdown by"},
    "staff.dashboard.show": {"de": "Anzeigen", "en": "Show"},
    "staff.dashboard.export": {"de": "Antworten exportieren (CSV)", "en": "Export answers (CSV)"},
    "staff.dashboard.scores": {"de": "Kennzahlen", "en": "Scores"},
    "staff.dashboard.target": {"de": "Ziel: {target}", "en": "Target: {target}"},
    "staff.dashboard.change": {
        "de": "Änderung zum Vorzeitraum: {change}",
        "en": "Change vs previous period: {change}",
    },
    "staff.dashboard.trend": {"de": "Verlauf", "en": "Trend"},
    "staff.dashboard.chart_alt": {
        "de": "CSAT und NPS im Zeitraum, mit 95-%-Intervallbändern und Ziellinien",
        "en": "CSAT and NPS over the period, with 95 % interval bands and target lines",
    },
    "staff.dashboard.no_answers": {
        "de": "Keine Antworten in diesem Zeitraum.",
        "en": "No answers in this period.",
    },
    "staff.dashboard.try_hint": {
        "de": "{link}, um sie hier gezählt zu sehen.",
        "en": "{link} to see one counted here.",
    },
    "staff.dashboard.try_link": {
        "de": "Beantworten Sie selbst eine Umfrage",
        "en": "Answer a survey yourself",
    },
    "staff.dashboard.questions_note": {
        "de": "Alle Antworten auf jede Bewertungsfrage; die Karten oben zählen eine Antwort je Kunde.",
        "en": "All answers to each rating question; the cards above count one answer per customer.",
    },
    "staff.dashboard.no_ratings": {
        "de": "Keine Bewertungen in diesem Zeitraum.",
        "en": "No rating answers in this period.",
    },
    "staff.dashboard.response_rate": {"de": "Rücklauf", "en": "Response rate"},
    "staff.dashboard.rate": {
        "de": "{answer_rate} % beantwortet, {completion_rate} % abgeschlossen ({answered} und {completed} "
        "von {delivered} zugestellten Umfragen; {not_delivered} nicht zugestellt).",
        "en": "{answer_rate} % answered, {completion_rate} % completed ({answered} and {completed} of "
        "{delivered} surveys delivered; {not_delivered} not delivered).",
    },
    "staff.dashboard.no_surveys": {
        "de": "Keine Umfragen in diesem Zeitraum verschickt.",
        "en": "No surveys sent in this period.",
    },
    "staff.dashboard.comments": {
        "de": "Neueste Kommentare, Kritiker zuerst",
        "en": "Latest comments, detractors first",
    },
    "staff.dashboard.no_comments": {
        "de": "Keine Kommentare in diesem Zeitraum.",
        "en": "No comments in this period.",
    },
    "staff.dashboard.bad_choice": {
        "de": "{value} ist keins von {choices}",
        "en": "{value} is not one of {choices}",
    },
    "staff.dashboard.login_title": {"de": "Anmelden – Afterword", "en": "Log in – Afterword"},
    "staff.dashboard.login_heading": {
        "de": "Afterword – Anmeldung fürs Team",
        "en": "Afterword – staff login",
    },
    "staff.dashboard.login": {"de": "Login", "en": "Login"},
    "staff.dashboard.password": {"de": "Passwort", "en": "Password"},
    "staff.dashboard.log_in": {"de": "Anmelden", "en": "Log in"},
    "staff.dashboard.no_login": {
        "de": "Noch kein Login? Legen Sie einen an mit {command}.",
        "en": "No login yet? Create one with {command}.",
    },
    "staff.dashboard.throttled": {
        "de": "Zu viele fehlgeschlagene Anmeldungen. Versuchen Sie es in {minutes} min wieder.",
        "en": "Too many failed logins. Try again in {minutes} min.",
    },
    "staff.dashboard.wrong_password": {
        "de": "Login oder Passwort ist falsch.",
        "en": "Login or password is wrong.",
    },
    "staff.dashboard.forbidden_title": {"de": "Nicht erlaubt", "en": "Forbidden"},
    "staff.dashboard.forbidden": {
        "de": "Dieses Formular ist abgelaufen oder hier nicht erlaubt. Laden Sie die Seite neu und "
        "versuchen Sie es noch einmal.",
        "en": "This form has expired or is not allowed here. Reload the page and try again.",
    },
    "staff.dashboard.setup_title": {"de": "Einrichtung", "en": "Setup"},
    "staff.dashboard.running": {"de": "Afterword läuft", "en": "Afterword is running"},
    "staff.dashboard.about": {
        "de": "Afterword fragt Kunden, wie ein Kontakt mit dem Support war, und zeigt dem Team, wo es steht.",
        "en": "Afterword asks customers how a support contact went and shows the team how it is doing.",
    },
    "staff.dashboard.channels_on": {"de": "Aktive Kanäle: {channels}.", "en": "Channels on: {channels}."},
    "staff.dashboard.no_provider": {
        "de": "Noch ist kein Anbieter eingerichtet (Telegram, Twilio), daher laufen Umfragen als Web-Links.",
        "en": "No provider is configured yet (Telegram, Twilio), so surveys run as web links.",
    },
    "staff.dashboard.create_login": {"de": "Login anlegen", "en": "Create your login"},
    "staff.dashboard.new_password": {
        "de": "Passwort (mindestens 10 Zeichen)",
        "en": "Password (at least 10 characters)",
    },
    "staff.dashboard.create_submit": {
        "de": "Login anlegen und Dashboard öffnen",
        "en": "Create login and open the dashboard",
    },
    "staff.dashboard.create_hint": {
        "de": "Legen Sie einen Dashboard-Login an mit {command}.",
        "en": "Create a dashboard login with {command}.",
    },
    "staff.dashboard.flow": {"de": "Flow", "en": "Flow"},
    "staff.dashboard.language": {"de": "Sprache", "en": "Language"},
    "staff.dashboard.start_survey": {"de": "Umfrage starten", "en": "Start a survey"},
    "staff.dashboard.then": {"de": "Danach", "en": "Then"},
    "staff.dashboard.then_text": {
        "de": "{dashboard}, um die Antwort gezählt zu sehen, oder lesen Sie die {docs}.",
        "en": "{dashboard} to see the answer counted, or read the {docs}.",
    },
    "staff.dashboard.open_dashboard": {"de": "Öffnen Sie das Dashboard", "en": "Open the dashboard"},
    "staff.dashboard.api_docs": {"de": "API-Dokumentation", "en": "API documentation"},
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


def staff_text(key: str, language: str, /, **fields: object) -> str:
    """The staff text ``key`` in ``language`` (de or en, else English), with ``fields`` filled in."""
    template = text(key, language, fallback=LAST_RESORT)
    return template.format(**fields) if fields else template


def decimal(value: float, spec: str, language: str) -> str:
    """``value`` formatted by ``spec`` ('.1f', '+.1f', '' for as it is), with a decimal comma in German.

    English keeps the point: 72.5 → '72.5' (en), '72,5' (de).
    """
    written = format(value, spec)
    return written.replace(".", ",") if language == "de" else written


def day(iso: str, language: str) -> str:
    """A day 'YYYY-MM-DD' (or the start of an ISO timestamp) as staff read it: '2026-10-03', '03.10.2026'.

    Anything that is not a date is returned as it is.
    """
    try:
        found = date.fromisoformat(iso[:10])
    except ValueError:
        return iso
    return found.strftime("%d.%m.%Y") if language == "de" else found.isoformat()


def moment(when: datetime, language: str) -> str:
    """A UTC time as staff read it: '2026-10-03 14:05 UTC', '03.10.2026 14:05 UTC'."""
    return when.strftime("%d.%m.%Y %H:%M UTC" if language == "de" else "%Y-%m-%d %H:%M UTC")


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
