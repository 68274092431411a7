"""Least privilege: an agent's dashboard, CSV export and Telegram /report hold only their own answers;
a manager's hold everyone's."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from bot.importer import import_csv
from bot.reports import build_report, report_query
from bot.service import Service
from bot.staff import add_staff
from bot.web.auth import set_web_login
from tests.bot.test_telegram import AGENT, MANAGER, Harness
from tests.bot.test_telegram import tg as tg  # the fixture, shared with test_telegram.py
from tests.support import Clock, running_app

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ANNA_SAYS, BEN_SAYS = "Anna solved it at once", "Ben never called back"


async def two_agents(service: Service, tmp_path: Path, anna: str = "anna", ben: str = "ben") -> None:
    """Imported answers of two agents, each with a CSAT score and a comment, a day old."""
    day = (service.clock() - timedelta(days=1)).isoformat()
    path = tmp_path / "answers.csv"
    path.write_text(
        "response_id,submitted_at,metric,score,agent,comment\n"
        f"r1,{day},csat,5,{anna},{ANNA_SAYS}\n"
        f"r2,{day},csat,1,{ben},{BEN_SAYS}\n"
        f"r3,{day},csat,2,{ben},\n",
        encoding="utf-8",
    )
    assert 3 == (await import_csv(service.db, path)).added


@dataclass
class Desk:
    """The dashboard app; each login gets a client of its own (it keeps its session cookie)."""

    app: FastAPI
    service: Service

    @asynccontextmanager
    async def signed_in(self, login: str) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            found = CSRF.search((await client.get("/dashboard/login")).text)
            assert found is not None
            form = {"csrf": found.group(1), "login": login, "password": PASSWORD}
            assert 303 == (await client.post("/dashboard/login", data=form)).status_code
            yield client


@pytest.fixture
async def desk(service: Service, clock: Clock, tmp_path: Path) -> AsyncIterator[Desk]:
    """A manager "maria", an agent login "anna" without a name and one "b.smith" named ben."""
    async with running_app(service, clock, public_base_url="http://testserver") as (app, _, svc):
        for login, role, name in (
            ("maria", "manager", None),
            ("anna", "agent", None),
            ("b.smith", "agent", "ben"),
        ):
            await set_web_login(svc.db, login=login, password=PASSWORD, role=role, name=name, now=clock())
        await two_agents(svc, tmp_path)
        yield Desk(app, svc)


def exported(response: httpx.Response) -> list[tuple[str, str, str]]:
    """(agent, score, text) of each row of a CSV export."""
    return [(r["agent"], r["score"], r["text"]) for r in csv.DictReader(io.StringIO(response.text))]


async def test_an_agent_dashboard_shows_only_their_own_answers(desk: Desk) -> None:
    """An agent's dashboard shows their own score, group and comment and none of another agent's;
    the manager's shows both."""
    pages = {}
    for login in ("anna", "b.smith", "maria"):
        async with desk.signed_in(login) as client:
            page = await client.get("/dashboard?since=7d&by=agent")
            assert 200 == page.status_code
            pages[login] = page.text
    seen = {login: (ANNA_SAYS in text, BEN_SAYS in text) for login, text in pages.items()}
    assert {"anna": (True, False), "b.smith": (False, True), "maria": (True, True)} == seen
    assert "n=1" in pages["anna"]
    assert "n=2" in pages["b.smith"]
    assert "n=3" in pages["maria"]


async def test_an_agent_exports_only_their_own_answers(desk: Desk) -> None:
    """The CSV export of an agent holds their rows only, named by their staff name; a manager's all."""
    found = {}
    for login in ("anna", "b.smith", "maria"):
        async with desk.signed_in(login) as client:
            found[login] = exported(await client.get("/dashboard/export.csv?since=7d"))
    assert {
        "anna": [("anna", "5", ANNA_SAYS)],
        "b.smith": [("ben", "1", BEN_SAYS), ("ben", "2", "")],
        "maria": [("anna", "5", ANNA_SAYS), ("ben", "1", BEN_SAYS), ("ben", "2", "")],
    } == found


async def test_an_agent_chart_is_drawn_from_their_answers(desk: Desk) -> None:
    """An agent's trend chart is served (a PNG), built from the same filtered report."""
    async with desk.signed_in("anna") as client:
        chart = await client.get("/dashboard/chart.png?since=7d")
    assert (200, b"\x89PNG") == (chart.status_code, chart.content[:4])


async def test_the_report_builder_filters_every_part_by_agent(service: Service, tmp_path: Path) -> None:
    """build_report for one agent counts, groups and quotes only that agent's answers."""
    await two_agents(service, tmp_path)
    now = service.clock()
    own = await build_report(service.db, report_query(now=now, since="7d", by="agent", agent="ben"))
    everyone = await build_report(service.db, report_query(now=now, since="7d", by="agent"))
    assert (2, ["ben"], [BEN_SAYS]) == (
        own.csat.n,
        [g.key for g in own.groups],
        [c.text for c in own.comments],
    )
    assert (3, ["anna", "ben"]) == (everyone.csat.n, [g.key for g in everyone.groups])
    nobody = await build_report(service.db, report_query(now=now, since="7d", agent="carl"))
    assert (0, []) == (nobody.csat.n, nobody.comments)


async def test_telegram_report_of_an_agent_holds_only_their_answers(tg: Harness, tmp_path: Path) -> None:
    """An agent's /report by agent lists only them (by their Telegram name, as /survey stores it);
    a manager added with a name sees every agent."""
    await two_agents(tg.service, tmp_path, anna="Kim")  # the fake's users are called Kim
    await tg.say(AGENT, "/report 7d by agent", user_id=AGENT, language_code="en")
    await add_staff(tg.service.db, telegram_id=MANAGER, role="manager", name="Maria", now=tg.service.clock())
    await tg.say(MANAGER, "/report 7d by agent", user_id=MANAGER, language_code="en")
    agent_text = tg.to_chat(AGENT)[-1].params["text"]
    manager_text = tg.to_chat(MANAGER)[-1].params["text"]
    assert ("• Kim: CSAT 100.0 %" in agent_text, "• ben:" in agent_text) == (True, False)
    assert ("• Kim: CSAT 100.0 %" in manager_text, "• ben:" in manager_text) == (True, True)
