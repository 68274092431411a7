"""Staff texts in German and English: /report, the detractor alert, the dashboard and `afterword report`.

Each staff member reads them in their own language (`staff add --lang`), else their client's
(Telegram's language_code, the browser's Accept-Language, the terminal's LANG), else
STAFF_LANGUAGE (default en). The alert chat, read by the whole team, takes STAFF_LANGUAGE.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from bot.errors import ConfigError
from bot.report_format import change_cell, metric_cell, target_cell
from bot.service import Service
from bot.settings import load_settings
from bot.staff import add_staff, set_web_login_language
from bot.staff_language import accepted, from_locale, shipped, staff_language
from bot.store.tables import staff
from bot.texts import CATALOGUE, LANGUAGES, day, decimal
from bot.triggers import SurveyRequest, trigger
from bot.web.auth import set_web_login
from scoring.report import Change, CsatScore, NpsScore, TargetCheck
from tests.bot import test_telegram as telegram
from tests.cli import invoke, query
from tests.fakes.telegram import FakeBotApi
from tests.support import Clock, running_app

MANAGER = telegram.MANAGER
PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')

# --- choosing the language ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("de-DE,de;q=0.9", "de"),
        ("en-US,en;q=0.9,de;q=0.8", "en"),
        ("fr-FR,fr;q=0.9,de;q=0.8,en;q=0.7", "de"),  # French is not shipped: the next one is
        ("en;q=0.5,de;q=0.8", "de"),  # by q-value, not by position
        ("de;q=0,en", "en"),  # q=0: not this one
        ("DE-at", "de"),
        ("de;q=abc,en;q=0.2", "en"),  # a malformed q-value names nothing
        ("*", None),
        ("fr", None),
        ("", None),
        (None, None),
    ],
)
def test_accept_language_is_read_by_q_value(header: str | None, expected: str | None) -> None:
    """The browser's most preferred of de and en, by q-value; None when it names neither."""
    assert expected == accepted(header)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"LANG": "de_DE.UTF-8"}, "de"),
        ({"LANG": "en_GB.UTF-8"}, "en"),
        ({"LANG": "C"}, None),
        ({"LANG": "C.UTF-8"}, None),
        ({"LANG": "POSIX"}, None),
        ({}, None),
        ({"LANG": "fr_FR.UTF-8"}, None),
        ({"LANG": "de_DE.UTF-8", "LC_MESSAGES": "en_US.UTF-8"}, "en"),
        ({"LANG": "en_US.UTF-8", "LC_MESSAGES": "de_AT.UTF-8", "LC_ALL": "C"}, None),  # LC_ALL wins
        ({"LANG": "C", "LC_ALL": "de_CH.UTF-8"}, "de"),
    ],
)
def test_terminal_locale_follows_posix_order(environ: dict[str, str], expected: str | None) -> None:
    """LC_ALL, then LC_MESSAGES, then LANG: the first set decides; C and POSIX name no language."""
    assert expected == from_locale(environ)


def test_own_language_first_then_client_then_default() -> None:
    """The first signal naming de or en wins; Telegram's 'de-CH' is German; none falls back."""
    assert ["de", "en", "de", "en", "de"] == [
        staff_language("de", "en", default="en"),
        staff_language(None, "en-GB", default="de"),
        staff_language(None, "de-CH", default="en"),
        staff_language("fr", None, default="en"),
        staff_language(None, None, default="de"),
    ]
    assert (None, "de") == (shipped("xx"), shipped("de_DE.UTF-8"))


def test_staff_language_setting_is_de_or_en() -> None:
    """STAFF_LANGUAGE defaults to en, takes de, and refuses anything else naming the key and values."""
    assert ("en", "de") == (
        load_settings(_env_file=None).staff_language,
        load_settings(_env_file=None, staff_language="DE").staff_language,
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, staff_language="fr")
    assert ("STAFF_LANGUAGE", True) == (
        caught.value.key,
        "'de'" in caught.value.message and "'en'" in caught.value.message,
    )


def test_every_staff_key_has_german_and_english() -> None:
    """Every staff.* key has a non-empty de and en text, and German differs where it is a sentence."""
    keys = [key for key in CATALOGUE if key.startswith("staff.")]
    assert len(keys) > 50
    assert [] == [key for key in keys if set(CATALOGUE[key]) != set(LANGUAGES)]
    assert [] == [key for key in keys if not all(t.strip() for t in CATALOGUE[key].values())]


def test_numbers_and_dates_follow_the_language() -> None:
    """German writes a decimal comma, '[low; high]' and DD.MM.YYYY; English is as it always was."""
    few = CsatScore.model_construct(value=72.5, ci95_low=61.25, ci95_high=80.6, n=12, too_few=True)
    nps = NpsScore.model_construct(value=-44.1, ci95_low=None, ci95_high=None, n=3, too_few=True)
    assert (
        "72,5 % [61,2; 80,6], n=12 (wenige)",
        "72.5 % [61.2, 80.6], n=12 (few)",
        "-44,1, n=3 (zu wenige für ein Intervall)",
        "keine Antworten",
    ) == (
        metric_cell("csat", few, "de"),
        metric_cell("csat", few, "en"),
        metric_cell("nps", nps, "de"),
        metric_cell("csat", CsatScore.model_construct(value=None), "de"),
    )
    assert ("03.10.2026", "2026-10-03", "+60,0", "82,5") == (
        day("2026-10-03", "de"),
        day("2026-10-03T09:00:00+00:00", "en"),
        decimal(60.0, "+.1f", "de"),
        decimal(82.5, "", "de"),
    )


def test_target_and_change_cells_in_german() -> None:
    """'verfehlt 80 (nicht sicher)' and '+60,0 (Zufall)' in German, as before in English."""
    item = CsatScore.model_construct(
        value=60.0,
        target=TargetCheck.model_construct(target=80.0, met=False, certain=False),
        change=Change.model_construct(delta=60.0, significant=False),
    )
    assert ("verfehlt 80 (nicht sicher)", "+60,0 (Zufall)", "missed 80 (not certain)", "+60.0 (noise)") == (
        target_cell(item, "de"),
        change_cell(item, "de"),
        target_cell(item),
        change_cell(item),
    )


# --- Telegram: /report and the alert --------------------------------------------------------


@pytest.fixture
async def tg(service: Service, fake_telegram: FakeBotApi, clock: Clock) -> AsyncIterator[telegram.Harness]:
    """The Telegram harness of test_telegram (STAFF_LANGUAGE not set: en)."""
    async with running_app(service, clock, **telegram.telegram_settings(fake_telegram)) as (app, client, svc):
        yield telegram.Harness(app, client, fake_telegram, svc)


@pytest.fixture
async def tg_de(service: Service, fake_telegram: FakeBotApi, clock: Clock) -> AsyncIterator[telegram.Harness]:
    """The Telegram harness with STAFF_LANGUAGE=de."""
    settings = {**telegram.telegram_settings(fake_telegram), "staff_language": "de"}
    async with running_app(service, clock, **settings) as (app, client, svc):
        yield telegram.Harness(app, client, fake_telegram, svc)


async def _two_answers(tg: telegram.Harness, clock: Clock) -> None:
    for chat, ticket in ((7001, "T-1"), (7002, "T-2")):
        await telegram.survey_for(tg, chat=chat, ticket=ticket)
        await tg.tap(chat, 2)
    clock.advance(hours=1)


@pytest.mark.parametrize(
    ("language_code", "title", "cell", "group", "caption"),
    [
        ("de", "<b>Afterword-Bericht, letzte 30 Tage</b>", "100,0 %", "<b>Nach Agent</b>", "Verlauf je Tag"),
        (
            "de-AT",
            "<b>Afterword-Bericht, letzte 30 Tage</b>",
            "100,0 %",
            "<b>Nach Agent</b>",
            "Verlauf je Tag",
        ),
        ("en", "<b>Afterword report, last 30 days</b>", "100.0 %", "<b>By agent</b>", "Trend by day"),
    ],
)
async def test_report_follows_the_managers_telegram_language(
    tg: telegram.Harness, clock: Clock, language_code: str, title: str, cell: str, group: str, caption: str
) -> None:
    """A TELEGRAM_STAFF manager gets /report in their Telegram app's language: text, numbers, chart."""
    await _two_answers(tg, clock)
    await tg.say(MANAGER, "/report 30d by agent", user_id=MANAGER, language_code=language_code)
    text = tg.to_chat(MANAGER)[-1].params["text"]
    photos = tg.to_chat(MANAGER, "sendPhoto")
    assert (True, True, True) == (text.startswith(title), f"<b>CSAT</b> {cell}" in text, group in text)
    assert (1, caption) == (len(photos), photos[0].params["caption"].split(",")[0])


async def test_report_follows_the_language_chosen_with_staff_add(tg: telegram.Harness, clock: Clock) -> None:
    """A manager added with language de reads German even from an English Telegram app, and vice versa."""
    await _two_answers(tg, clock)
    now = tg.service.clock()
    await add_staff(tg.service.db, telegram_id=444, role="manager", name="Maria", now=now, language="de")
    await add_staff(tg.service.db, telegram_id=555, role="manager", name="Sam", now=now, language="en")
    await tg.say(444, "/report 7d", user_id=444, language_code="en")
    await tg.say(555, "/report 7d", user_id=555, language_code="de")
    german, english = tg.to_chat(444)[-1].params["text"], tg.to_chat(555)[-1].params["text"]
    assert ("<b>Afterword-Bericht, letzte 7 Tage</b>", "<b>Afterword report, last 7 days</b>") == (
        german.split(" (")[0],
        english.split(" (")[0],
    )
    assert ("Eine Antwort je Kunde" in german, "One answer per customer" in english) == (True, True)


async def test_report_usage_and_refusal_in_german(tg: telegram.Harness) -> None:
    """A German manager's bad argument is explained in German; a German stranger is refused in German."""
    await tg.say(MANAGER, "/report letztewoche", user_id=MANAGER, language_code="de")
    await tg.say(telegram.STRANGER, "/report", language_code="de")
    reply = tg.to_chat(MANAGER)[-1].params["text"]
    assert reply.startswith("period: 'letztewoche' ist kein Zeitraum wie 7d, 30d oder 90d\nAufruf: /report")
    assert ["Dieser Befehl ist leider nur für das Support-Team."] == [
        c.params["text"] for c in tg.to_chat(telegram.STRANGER)
    ]


async def test_without_any_signal_staff_language_decides(tg_de: telegram.Harness, clock: Clock) -> None:
    """A Telegram user who sends no language_code gets STAFF_LANGUAGE (de here)."""
    await _two_answers(tg_de, clock)
    await tg_de.say(MANAGER, "/report", user_id=MANAGER, language_code=None)
    assert tg_de.to_chat(MANAGER)[-1].params["text"].startswith("<b>Afterword-Bericht, letzte 30 Tage</b>")


async def test_detractor_alert_in_german_with_staff_language_de(tg_de: telegram.Harness) -> None:
    """With STAFF_LANGUAGE=de the alert chat gets the alert and its comment follow-up in German."""
    await telegram.survey_for(tg_de)
    await tg_de.tap(telegram.CUSTOMER, 5)
    await tg_de.wait(lambda: len(tg_de.to_chat(telegram.ALERT_CHAT)) == 1)
    alert = tg_de.to_chat(telegram.ALERT_CHAT)[0].params["text"].splitlines()
    assert [
        "⚠️ Kritische Bewertung: CSAT 5 auf der Skala 1–5",
        "Ticket: T-1",
        "Agent: anna",
        "Kanal: telegram",
    ] == alert[:4]
    await tg_de.tap(telegram.CUSTOMER, 1)
    await tg_de.tap(telegram.CUSTOMER, 2)
    await tg_de.say(telegram.CUSTOMER, "Niemand hat zurückgerufen")
    await tg_de.wait(lambda: len(tg_de.to_chat(telegram.ALERT_CHAT)) == 2)
    follow = tg_de.to_chat(telegram.ALERT_CHAT)[1].params["text"]
    assert "💬 Kommentar zu Ticket T-1 (anna): „Niemand hat zurückgerufen“" == follow


async def test_detractor_alert_in_english_by_default(tg: telegram.Harness) -> None:
    """Without STAFF_LANGUAGE the alert is English, whatever the customer's or the staff's language."""
    await telegram.survey_for(tg)
    await tg.tap(telegram.CUSTOMER, 5)
    await tg.wait(lambda: len(tg.to_chat(telegram.ALERT_CHAT)) == 1)
    alert = tg.to_chat(telegram.ALERT_CHAT)[0].params["text"].splitlines()
    assert ["⚠️ Detractor: CSAT 5 on 1–5", "Ticket: T-1", "Agent: anna", "Channel: telegram"] == alert[:4]


# --- the dashboard --------------------------------------------------------------------------


@pytest.fixture
async def web(service: Service, clock: Clock) -> AsyncIterator[httpx.AsyncClient]:
    """The app with web links only, two dashboard logins (anna without a language, dora with de)."""
    async with running_app(service, clock, public_base_url="http://testserver") as (_app, client, svc):
        for login in ("anna", "dora"):
            await set_web_login(
                svc.db, login=login, password=PASSWORD, role="manager", name=login.title(), now=clock()
            )
        assert await set_web_login_language(svc.db, "dora", "de")
        made = await trigger(
            svc,
            SurveyRequest(ticket_id="T-1", channel="web", language="de", agent="anna"),
            channels={"web": None},
            link_for=lambda _c, t: f"/s/{t}",
        )
        assert made.link is not None
        # As in test_web: CSAT 100 %, n=1, and a comment from a detractor (speed 2).
        for data in ({"question": "satisfaction", "choice": "2"}, {"question": "resolution", "choice": "5"},
                     {"question": "speed", "choice": "2"}, {"question": "comment", "text": "Zu langsam"}):  # fmt: skip
            await client.post(made.link, data=data)
        clock.advance(minutes=1)
        yield client


async def _dashboard(client: httpx.AsyncClient, login: str, headers: dict[str, str]) -> tuple[str, str, str]:
    """(login page, dashboard page, the dashboard's Content-Language) for ``login`` with ``headers``."""
    client.cookies.clear()
    form = (await client.get("/dashboard/login", headers=headers)).text
    token = CSRF.search(form)
    assert token is not None
    data = {"csrf": token.group(1), "login": login, "password": PASSWORD}
    assert 303 == (await client.post("/dashboard/login", data=data, headers=headers)).status_code
    page = await client.get("/dashboard", headers=headers)
    return form, page.text, page.headers["content-language"]


async def test_dashboard_in_german_for_a_german_browser(web: httpx.AsyncClient) -> None:
    """Accept-Language: de-DE,de;q=0.9 gives the login page and the dashboard in German, decimal comma."""
    form, page, language = await _dashboard(web, "anna", {"Accept-Language": "de-DE,de;q=0.9"})
    assert ('<html lang="de">', True, "de") == (form.split("\n")[1], ">Anmelden</button>" in form, language)
    assert ('<html lang="de">', True, True, True, True) == (
        page.split("\n")[1],
        "100,0 %, n=1 (zu wenige für ein Intervall)" in page,
        "<h2>Nach Agent</h2>" in page,
        "Abmelden" in page,
        "Kritiker" in page,
    )


async def test_dashboard_in_german_for_a_staff_member_with_language_de(web: httpx.AsyncClient) -> None:
    """dora chose de: her dashboard is German even when her browser asks for English."""
    _, page, language = await _dashboard(web, "dora", {"Accept-Language": "en-US,en;q=0.9"})
    assert ("de", True, False) == (language, "<h2>Nach Agent</h2>" in page, "Log out" in page)


@pytest.mark.parametrize(
    "headers", [{}, {"Accept-Language": "en-US,en;q=0.9,de;q=0.5"}, {"Accept-Language": "fr"}]
)
async def test_dashboard_in_english_otherwise(web: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """No language, an English browser or a French one (not shipped): English, as it always was."""
    form, page, language = await _dashboard(web, "anna", headers)
    assert ("en", True, True, True) == (
        language,
        "100.0 %, n=1 (too few for an interval)" in page,
        "<h2>By agent</h2>" in page,
        "Afterword – staff login" in form,
    )


# --- the command line -----------------------------------------------------------------------


@pytest.fixture
def answered_env(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """cli_env with three imported answers from yesterday (a report looks back from now)."""
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    rows = [f"r{i},anna,{yesterday},csat,{score},{'zu langsam' if score == 1 else ''}" for i, score in
            enumerate((5, 4, 1))]  # fmt: skip
    path = tmp_path / "answers.csv"
    header = "response_id,agent,submitted_at,metric,score,comment\n"
    path.write_text(header + "\n".join(rows) + "\n", encoding="utf-8")
    env = {**cli_env, "COLUMNS": "200", "LANG": "C"}
    env.pop("LC_ALL", None)
    env.pop("LC_MESSAGES", None)
    imported = invoke(["import", str(path)], env)
    assert 0 == imported.code, imported.stderr
    return env


def test_report_follows_lang(answered_env: dict[str, str]) -> None:
    """LANG=de_DE.UTF-8 gives the table in German with a decimal comma; LANG=C in English."""
    german = invoke(["report", "--by", "agent"], {**answered_env, "LANG": "de_DE.UTF-8"})
    english = invoke(["report", "--by", "agent"], answered_env)
    assert (0, 0) == (german.code, english.code), german.stderr + english.stderr
    assert (True, True, True, True) == (
        german.stdout.startswith("Zeitraum "),
        "66,7 %, n=3 (zu wenige für ein Intervall)" in german.stdout,
        "Nach Agent" in german.stdout,
        "Neueste Kommentare (Kritiker zuerst):" in german.stdout,
    )
    assert (True, True, True) == (
        english.stdout.startswith("Period "),
        "66.7 %, n=3 (too few for an interval)" in english.stdout,
        "By agent" in english.stdout,
    )


def test_report_lang_option_wins_and_json_and_csv_do_not_change(answered_env: dict[str, str]) -> None:
    """--lang overrides LANG for the table and Markdown; JSON and CSV are the same in any language."""
    german_md = invoke(["report", "--format", "md", "--lang", "de"], answered_env)
    english_md = invoke(["report", "--format", "md", "--lang", "en"], {**answered_env, "LANG": "de_DE.UTF-8"})
    assert (True, True) == (
        german_md.stdout.startswith("**Zeitraum "),
        english_md.stdout.startswith("**Period "),
    )
    german_csv = invoke(["report", "--format", "csv", "--lang", "de"], answered_env).stdout
    english_csv = invoke(["report", "--format", "csv"], answered_env).stdout
    german, english = (
        json.loads(invoke(["report", "--format", "json"], {**answered_env, "LANG": lang}).stdout)
        for lang in ("de_DE.UTF-8", "C")
    )
    for shown in (german, english):
        del shown["period"]  # the period ends now, a moment later in the second run
    assert (english_csv, english, 66.7) == (german_csv, german, round(german["csat"]["value"], 1))


def test_staff_language_setting_is_the_cli_default(answered_env: dict[str, str]) -> None:
    """With LANG=C the table is in STAFF_LANGUAGE; a bad STAFF_LANGUAGE is refused, naming it."""
    german = invoke(["report"], {**answered_env, "STAFF_LANGUAGE": "de"})
    bad = invoke(["report"], {**answered_env, "STAFF_LANGUAGE": "fr"})
    assert (0, True) == (german.code, german.stdout.startswith("Zeitraum "))
    assert (True, True) == (bad.code != 0, "STAFF_LANGUAGE" in bad.stderr)


def test_report_refuses_an_unknown_lang(answered_env: dict[str, str]) -> None:
    """`report --lang xx` exits 2 naming --lang and the allowed values."""
    result = invoke(["report", "--lang", "xx"], answered_env)
    assert (2, "Error: --lang: 'xx' is not one of de, en") == (result.code, result.stderr.strip())


def test_staff_add_lang_is_stored_listed_and_checked(cli_env: dict[str, str], db_url: str) -> None:
    """`staff add --lang de` stores and lists de; --lang xx is refused naming --lang and de, en."""
    env = {**cli_env, "COLUMNS": "200"}
    refused = invoke(["staff", "add", "--telegram", "123", "--lang", "xx"], env)
    assert (2, "Error: --lang: 'xx' is not one of de, en") == (refused.code, refused.stderr.strip())
    added = invoke(["staff", "add", "--telegram", "123", "--role", "manager", "--lang", "de"], env)
    kept = invoke(["staff", "add", "--telegram", "123", "--role", "agent"], env)  # no --lang: kept
    web_login = invoke(
        ["staff", "add", "--web-login", "dora", "--password-stdin", "--lang", "en"],
        env,
        stdin=PASSWORD + "\n",
    )
    assert ("added: Telegram user 123 is manager, language de", 0, 0) == (
        added.stdout.strip(),
        kept.code,
        web_login.code,
    )
    listed = invoke(["staff", "list"], env).stdout
    assert [["123", "agent", "de", "database"], ["dora", "manager", "en", "database"]] == [
        line.replace("│", " ").split() for line in listed.splitlines() if re.search(r"123|dora", line)
    ]
    stored = asyncio.run(query(db_url, sa.select(staff.c.telegram_id, staff.c.web_login, staff.c.language)))
    assert {(123, None, "de"), (None, "dora", "en")} == set(stored)


async def test_start_page_in_german_for_a_german_browser(web: httpx.AsyncClient) -> None:
    """The start page follows Accept-Language too, its links whole and its text escaped."""
    page = (await web.get("/", headers={"Accept-Language": "de"})).text
    assert (True, True) == (
        "<h1>Afterword läuft</h1>" in page,
        '<a href="/dashboard">Öffnen Sie das Dashboard</a>, um die Antwort gezählt zu sehen' in page,
    )
