"""The web survey and the dashboard in-process: pages, answers, login, CSRF, throttling, export."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from bot.service import Service
from bot.store.tables import answers, login_failures
from bot.triggers import SurveyRequest, trigger
from bot.web.auth import set_web_login
from tests.support import Clock, running_app

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@dataclass
class Web:
    """The app and an in-process client (which keeps cookies, like a browser)."""

    app: FastAPI
    client: httpx.AsyncClient
    service: Service

    async def survey(self, language: str = "de", flow: str = "support-csat", ticket: str = "T-1") -> str:
        request = SurveyRequest(ticket_id=ticket, channel="web", language=language, flow=flow, agent="anna")
        made = await trigger(self.service, request, channels={"web": None}, link_for=lambda _c, t: f"/s/{t}")
        assert made.link is not None
        return made.link

    async def csrf(self, path: str) -> str:
        found = CSRF.search((await self.client.get(path)).text)
        assert found is not None
        return found.group(1)

    async def log_in(self, password: str = PASSWORD, login: str = "anna") -> httpx.Response:
        token = await self.csrf("/dashboard/login")
        return await self.client.post(
            "/dashboard/login", data={"csrf": token, "login": login, "password": password}
        )


@pytest.fixture
async def web(service: Service, clock: Clock) -> AsyncIterator[Web]:
    """The app with no provider configured (web links only) and a manager login."""
    async with running_app(service, clock, public_base_url="http://testserver") as (app, client, svc):
        await set_web_login(svc.db, login="anna", password=PASSWORD, role="manager", name="Anna", now=clock())
        yield Web(app, client, svc)


async def stored(service: Service) -> list[tuple[object, ...]]:
    async with service.db.read() as conn:
        rows = await conn.execute(
            sa.select(answers.c.question_id, answers.c.score, answers.c.text).order_by(answers.c.id)
        )
        return [tuple(r) for r in rows]


async def test_survey_page_has_a_button_per_point_with_its_label(web: Web) -> None:
    """The first page shows the intro, the question as a legend, and five labelled buttons, in German."""
    page = (await web.client.get(await web.survey())).text
    assert '<html lang="de">' in page
    assert "Vielen Dank für Ihren Kontakt!" in page
    assert "Frage 1 von 4" in page
    assert 5 == len(re.findall(r'<button type="submit" name="choice" value="\d"', page))
    assert 'aria-label="1 – Sehr zufrieden"' in page
    assert (False, False) == ("<script" in page, "https://" in page)  # no JavaScript, nothing from elsewhere


async def test_whole_web_survey_and_no_second_answer(web: Web) -> None:
    """Answers go through the inbound path; a completed link shows thanks and stores nothing more."""
    link = await web.survey(language="en")
    for data in ({"question": "satisfaction", "choice": "2"}, {"question": "resolution", "choice": "1"},
                 {"question": "speed", "choice": "3"}, {"question": "comment", "text": "Quick, thanks"}):  # fmt: skip
        response = await web.client.post(link, data=data)
        assert (303, link) == (response.status_code, response.headers["location"])
    done = (await web.client.get(link)).text
    again = await web.client.post(link, data={"question": "satisfaction", "choice": "5"})
    assert "Thank you for your answers!" in done
    assert 303 == again.status_code
    assert [
        ("satisfaction", 2, None),
        ("resolution", 1, None),
        ("speed", 3, None),
        ("comment", None, "Quick, thanks"),
    ] == (await stored(web.service))


async def test_empty_comment_skips_and_nps_shows_eleven_points(web: Web) -> None:
    """0-10 shows eleven buttons with the end labels under them; an empty optional comment is a skip."""
    link = await web.survey(flow="nps", language="en")
    page = (await web.client.get(link)).text
    assert 11 == len(re.findall(r'name="choice" value="\d+"', page))
    assert (True, True) == ("not at all likely" in page, "extremely likely" in page)
    await web.client.post(link, data={"question": "recommend", "choice": "10"})
    await web.client.post(link, data={"question": "reason", "text": "  "})
    assert "Thank you for your answers!" in (await web.client.get(link)).text
    assert [("recommend", 10, None)] == await stored(web.service)


async def test_unknown_token_is_a_plain_404(web: Web) -> None:
    """An unknown token gets 404 with the same page as any other unknown token."""
    first = await web.client.get("/s/nope")
    second = await web.client.get("/s/" + "x" * 22)
    assert (404, 404, first.text) == (first.status_code, second.status_code, second.text)


async def test_expired_link_shows_the_expired_text(web: Web, clock: Clock) -> None:
    """After 48 hours the page shows the flow's expired text and takes no answer."""
    link = await web.survey()
    clock.advance(hours=49)
    assert "Diese Umfrage ist leider abgelaufen." in (await web.client.get(link)).text
    await web.client.post(link, data={"question": "satisfaction", "choice": "1"})
    assert [] == await stored(web.service)


async def test_dashboard_needs_login_and_shows_the_answer(web: Web) -> None:
    """Without a session the dashboard redirects to login; after login it shows the scores and the comment."""
    link = await web.survey()
    for data in ({"question": "satisfaction", "choice": "2"}, {"question": "resolution", "choice": "5"},
                 {"question": "speed", "choice": "2"}, {"question": "comment", "text": "Zu langsam"}):  # fmt: skip
        await web.client.post(link, data=data)
    web.service.clock.advance(minutes=1)  # type: ignore[attr-defined]
    assert "/dashboard/login" == (await web.client.get("/dashboard")).headers["location"]
    logged = await web.log_in()
    cookie = logged.headers["set-cookie"]
    assert (303, True, True) == (logged.status_code, "HttpOnly" in cookie, "SameSite=lax" in cookie)
    page = (await web.client.get("/dashboard")).text
    # One customer, one observation: CSAT is the satisfaction answer 2 (of the two best) →
    # 100 %, n=1; resolution (5) and speed (2) are listed per question, not counted in it.
    assert "100.0 %, n=1 (too few for an interval)" in page
    assert "66.7 %" not in page  # the three CSAT questions are not pooled into one number
    assert '<th scope="row">resolution</th><td>CSAT</td><td>0.0 %, n=1' in page
    assert (True, True) == ("Zu langsam" in page, 'class="detractor"' in page)
    chart = await web.client.get("/dashboard/chart.png")
    assert (200, b"\x89PNG") == (chart.status_code, chart.content[:4])


async def test_csv_export_has_every_answer(web: Web) -> None:
    """The export is CSV with a header and one row per answer."""
    link = await web.survey()
    await web.client.post(link, data={"question": "satisfaction", "choice": "1"})
    web.service.clock.advance(minutes=1)  # type: ignore[attr-defined]
    await web.log_in()
    export = await web.client.get("/dashboard/export.csv")
    lines = export.text.splitlines()
    assert ("text/csv; charset=utf-8", 2) == (export.headers["content-type"], len(lines))
    assert lines[0].startswith("answered_at,ticket,agent,team,channel")
    assert ",T-1,anna,,web,support-csat,de,satisfaction,csat,1,1,5,low," in lines[1]


async def test_csv_export_has_a_column_per_metadata_key(web: Web) -> None:
    """Survey metadata is exported as `metadata.<key>` columns, keys sorted; nested values as JSON."""
    for ticket, meta in (("T-1", {"order": "A-77", "priority": 2}), ("T-2", {"tags": ["vip", "eü"]})):
        request = SurveyRequest(ticket_id=ticket, channel="web", metadata=meta)
        made = await trigger(web.service, request, channels={"web": None}, link_for=lambda _c, t: f"/s/{t}")
        assert made.link is not None
        await web.client.post(made.link, data={"question": "satisfaction", "choice": "2"})
    web.service.clock.advance(minutes=1)  # type: ignore[attr-defined]
    await web.log_in()
    export = await web.client.get("/dashboard/export.csv")
    table = list(csv.DictReader(io.StringIO(export.text)))
    keys = ("ticket", "metadata.order", "metadata.priority", "metadata.tags")
    assert [("T-1", "A-77", "2", ""), ("T-2", "", "", '["vip", "eü"]')] == [
        tuple(row[k] for k in keys) for row in table
    ]
    assert list(table[0])[-4:] == ["text", "metadata.order", "metadata.priority", "metadata.tags"]


async def test_login_form_without_csrf_token_is_refused(web: Web) -> None:
    """A login post without the form's CSRF token (another site's form) gets 403."""
    response = await web.client.post("/dashboard/login", data={"login": "anna", "password": PASSWORD})
    assert (403, None) == (response.status_code, response.cookies.get("aw_session"))


async def test_failed_logins_are_throttled(web: Web) -> None:
    """After five wrong passwords even the right one is refused with 429 for a while."""
    codes = [(await web.log_in(password="wrong password!")).status_code for _ in range(5)]
    blocked = await web.log_in()
    assert ([401] * 5, 429) == (codes, blocked.status_code)
    assert 0 < int(blocked.headers["Retry-After"]) <= 15 * 60


async def test_logout_needs_the_session_csrf_and_ends_the_session(web: Web) -> None:
    """Logout without the session's CSRF token is refused; with it the session ends."""
    await web.log_in()
    page = (await web.client.get("/dashboard")).text
    token = CSRF.search(page)
    assert token is not None
    refused = await web.client.post("/dashboard/logout", data={"csrf": "forged"})
    done = await web.client.post("/dashboard/logout", data={"csrf": token.group(1)})
    assert (403, 303) == (refused.status_code, done.status_code)
    assert "/dashboard/login" == (await web.client.get("/dashboard")).headers["location"]


async def test_start_page_try_creates_a_web_survey(web: Web) -> None:
    """Without providers the start page offers a survey for yourself; the form opens it."""
    token = await web.csrf("/")
    response = await web.client.post("/try", data={"csrf": token, "flow": "nps", "language": "en"})
    assert (303, True) == (response.status_code, response.headers["location"].startswith("/s/"))
    assert "How likely are you to recommend us" in (await web.client.get(response.headers["location"])).text


@pytest.mark.parametrize("language", ["de", "en"])
async def test_survey_page_has_no_stop_hint(web: Web, language: str) -> None:
    """The web page shows the intro without "reply stop": it has buttons, and nobody types there."""
    page = (await web.client.get(await web.survey(language=language))).text
    intro = web.service.flows["support-csat"].texts[language].intro
    words = re.sub(r"<[^>]+>", " ", page).lower()
    assert (True, False, False, False) == (
        intro in page,
        "stop" in words,
        "reply" in words,
        "abbrechen" in words,
    )


async def test_dashboard_links_to_answering_a_survey_yourself(web: Web) -> None:
    """After login the dashboard offers "Answer a survey yourself"; following it leads to a survey page."""
    await web.log_in()
    dashboard = (await web.client.get("/dashboard")).text
    links = re.findall(r'<a [^>]*href="([^"]+)"[^>]*>Answer a survey yourself</a>', dashboard)
    assert ["/#try", "/#try"] == links  # in the header, and in the empty breakdown
    start = (await web.client.get(links[0].split("#")[0])).text
    assert 'id="try"' in start
    token = await web.csrf("/")
    opened = await web.client.post("/try", data={"csrf": token}, follow_redirects=True)
    assert (200, "/s/", True) == (opened.status_code, opened.url.path[:3], "Frage 1 von 4" in opened.text)


async def test_dashboard_offers_no_self_survey_when_providers_are_on(service: Service, clock: Clock) -> None:
    """With a provider configured the start page takes no self-made surveys, so the dashboard does not link there."""
    twilio = {
        "twilio_account_sid": "AC" + "0" * 32,
        "twilio_auth_token": "t" * 32,
        "twilio_from_number": "+4930901820",
    }
    async with running_app(service, clock, public_base_url="http://testserver", **twilio) as (
        app,
        client,
        svc,
    ):
        await set_web_login(svc.db, login="anna", password=PASSWORD, role="manager", name="Anna", now=clock())
        await Web(app, client, svc).log_in()
        dashboard = (await client.get("/dashboard")).text
    assert (True, False) == ("Log out" in dashboard, "Answer a survey yourself" in dashboard)


FORMULAS = ['=HYPERLINK("http://evil.example","klick")', "+cmd|' /C calc'!A0", "@SUM(1+1)*cmd", "-2+3"]


async def test_csv_export_is_safe_against_formulas_and_line_breaks(web: Web) -> None:
    """Comments with =, +, @, - at the start and with CR or LF open as text, one row per answer.

    OWASP's CSV-injection rule: a leading ' before such a cell. A bare CR used to go out
    unquoted and split the row; every field with CR or LF is quoted now.
    """
    comments = [*FORMULAS, "erste Zeile\rzweite Zeile", "line one\nline two\r\nthree"]
    for i, comment in enumerate(comments):
        link = await web.survey(ticket=f"T-{i}")
        for question in ("satisfaction", "resolution", "speed"):
            await web.client.post(link, data={"question": question, "choice": "4"})
        await web.client.post(link, data={"question": "comment", "text": comment})
    web.service.clock.advance(minutes=1)  # type: ignore[attr-defined]
    await web.log_in()
    export = await web.client.get("/dashboard/export.csv")
    rows = list(csv.DictReader(io.StringIO(export.text, newline="")))
    texts = [row["text"] for row in rows if row["question_id"] == "comment"]
    assert (4 * len(comments), len(comments)) == (len(rows), len(texts))
    assert ["'" + f for f in FORMULAS] == texts[: len(FORMULAS)]
    assert ["erste Zeile\rzweite Zeile", "line one\nline two\r\nthree"] == texts[len(FORMULAS) :]
    assert all(not cell.startswith(("=", "+", "@", "-")) for row in rows for cell in row.values() if cell)


@pytest.mark.parametrize(
    ("trusted", "counted"),
    [
        ({}, ["127.0.0.1"] * 5),  # the header is a client's claim: without a trusted proxy, ignored
        ({"trusted_proxies": "127.0.0.1"}, [f"198.51.100.{n}" for n in range(5)]),
    ],
)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_failed_logins_count_the_address_a_trusted_proxy_saw(
    service: Service, clock: Clock, trusted: dict[str, str], counted: list[str]
) -> None:
    """X-Forwarded-For names the address only behind a proxy in TRUSTED_PROXIES.

    The in-process client connects from 127.0.0.1, as a reverse proxy on the same machine would.
    uvicorn's default believed the header from 127.0.0.1, so any client could choose the address
    that the login throttle counted, or lock out an address it did not own (issue 16).
    """
    async with running_app(service, clock, public_base_url="http://testserver", **trusted) as (
        _,
        client,
        svc,
    ):
        await set_web_login(svc.db, login="anna", password=PASSWORD, role="manager", name="Anna", now=clock())
        web = Web(_, client, svc)
        for n in range(5):
            token = await web.csrf("/dashboard/login")
            await client.post(
                "/dashboard/login",
                data={"csrf": token, "login": "anna", "password": "not the password"},
                headers={"X-Forwarded-For": f"203.0.113.9, 198.51.100.{n}"},
            )
        async with svc.db.read() as conn:
            found = list(
                (await conn.execute(sa.select(login_failures.c.ip).order_by(login_failures.c.id))).scalars()
            )
    assert counted == found


@pytest.mark.parametrize(
    ("headers", "trusted", "status"),
    [
        ({}, {}, 303),  # from this machine: the first manager login is made
        ({"X-Forwarded-For": "203.0.113.9"}, {}, 403),  # through a proxy here that is not trusted
        ({"X-Real-IP": "203.0.113.9"}, {}, 403),
        ({"X-Forwarded-For": "203.0.113.9"}, {"trusted_proxies": "127.0.0.1"}, 403),  # a visitor elsewhere
    ],
)
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_first_login_only_from_this_machine_not_through_a_proxy(
    service: Service, clock: Clock, headers: dict[str, str], trusted: dict[str, str], status: int
) -> None:
    """/setup makes the first manager login only for a visitor on this machine.

    With X-Forwarded-For no longer believed by default, a reverse proxy on the same machine
    would make every visitor look local; a forwarded request is therefore never local unless a
    trusted proxy says the client itself is.
    """
    async with running_app(service, clock, public_base_url="http://testserver", **trusted) as (
        app,
        client,
        svc,
    ):
        token = await Web(app, client, svc).csrf("/")
        response = await client.post(
            "/setup", data={"csrf": token, "login": "root", "password": PASSWORD}, headers=headers
        )
    assert status == response.status_code
