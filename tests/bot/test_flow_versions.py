"""Editing a flow while surveys are open: a survey finishes on the flow version it started with.

Each test writes flow files into a folder, builds a service over the test database with them
(as `serve` does after a restart), and answers over SMS (signed Twilio webhooks), Telegram
(updates to the webhook) and the web link, all in-process.
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from itertools import count
from pathlib import Path
from typing import Any, Protocol

import pytest
import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Connection

from bot.flow_versions import UNAVAILABLE
from bot.inbound import Inbound, handle
from bot.service import Service
from bot.settings import load_settings
from bot.store.tables import answers, flow_versions, surveys
from bot.surveys import Created, NewSurvey, create_survey
from bot.triggers import SurveyRequest, trigger
from flows.loader import BUILTIN_DIR, load_flows
from flows.schema import Flow, Question
from tests.bot import test_telegram as telegram
from tests.bot import test_twilio as twilio
from tests.cli import invoke
from tests.fakes.telegram import FakeBotApi
from tests.fakes.twilio import FakeTwilioApi
from tests.support import Clock, environment, running_app

FLOW = "support-csat"
Definition = dict[str, Any]


def builtin() -> Definition:
    """support-csat as its built-in file says (version 1)."""
    data: Definition = yaml.safe_load((BUILTIN_DIR / f"{FLOW}.yaml").read_text(encoding="utf-8"))
    return data


def _question(qid: str, scale: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": qid,
        "kind": "rating",
        "metric": "csat",
        "scale": scale,
        "prompt": {"de": f"Frage {qid}?", "en": f"Question {qid}?"},
    }


def insert_before(data: Definition) -> None:
    data["questions"].insert(0, _question("first_contact", {"min": 1, "max": 3, "best": "low"}))


def remove(data: Definition) -> None:
    data["questions"] = [q for q in data["questions"] if q["id"] != "resolution"]


def reorder(data: Definition) -> None:
    questions = data["questions"]
    questions[1], questions[2] = questions[2], questions[1]  # speed before resolution


def change_scale(data: Definition) -> None:
    for question in data["questions"]:
        if question["id"] == "resolution":
            question["scale"] = {"min": 0, "max": 10, "best": "high"}
            question.pop("labels")


EDITS: dict[str, Callable[[Definition], None]] = {
    "insert-before": insert_before,
    "remove": remove,
    "reorder": reorder,
    "change-of-scale": change_scale,
}


def write_flow(folder: Path, data: Definition) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{FLOW}.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return folder


def edited(edit: str, version: int = 2) -> Definition:
    data = copy.deepcopy(builtin())
    EDITS[edit](data)
    data["version"] = version
    return data


async def service_with(base: Service, folder: Path, clock: Clock) -> Service:
    """A service over ``base``'s database with the flows of ``folder``, recorded as `serve` records them."""
    svc = Service(settings=base.settings, db=base.db, flows=load_flows([folder]), clock=clock)
    await svc.record_flows()
    return svc


async def sms_survey_on_v1(service: Service, clock: Clock, tmp_path: Path) -> tuple[Service, Created]:
    """Version 1 of the flow (the built-in one, written to a folder) and an open SMS survey of it."""
    v1 = await service_with(service, write_flow(tmp_path / "v1", builtin()), clock)
    return v1, await create_survey(
        v1.db,
        v1.flows,
        NewSurvey(FLOW, "sms", "+4915112345678", ticket="T-1"),
        now=clock(),
        ttl=v1.survey_ttl,
    )


def reply_for(question: Question) -> str:
    """A valid typed answer: the second point of a scale, or a comment."""
    scale = question.answer_scale
    return "ok" if scale is None else str(scale.min + 1)


async def asked(service: Service, survey_id: int) -> list[tuple[object, ...]]:
    """Each stored answer of the survey: question id, score and the scale it was asked with."""
    async with service.db.read() as conn:
        rows = await conn.execute(
            sa.select(
                answers.c.question_id,
                answers.c.score,
                answers.c.scale_min,
                answers.c.scale_max,
                answers.c.scale_best,
            )
            .where(answers.c.survey_id == survey_id)
            .order_by(answers.c.id)
        )
        return [tuple(r) for r in rows]


def expected(flow: Flow) -> list[tuple[object, ...]]:
    """The answers ``asked`` holds after every question of ``flow`` got ``reply_for``."""
    rows: list[tuple[object, ...]] = []
    for q in flow.questions:
        scale = q.answer_scale
        if scale is None:
            rows.append((q.id, None, None, None, None))
        else:
            rows.append((q.id, scale.min + 1, scale.min, scale.max, scale.best))
    return rows


async def survey_row(service: Service, survey_id: int) -> tuple[object, ...]:
    async with service.db.read() as conn:
        row = (
            await conn.execute(
                sa.select(surveys.c.status, surveys.c.flow_version).where(surveys.c.id == survey_id)
            )
        ).one()
    return tuple(row)


class Driver(Protocol):
    """One channel: start a survey for the customer, and reply to its current question."""

    async def start(self, ticket: str) -> int: ...

    async def reply(self, text: str) -> None: ...


class Sms:
    def __init__(self, h: twilio.Harness) -> None:
        self.h = h

    async def start(self, ticket: str) -> int:
        return await self.h.start("sms", ticket=ticket)

    async def reply(self, text: str) -> None:
        await self.h.sms(text)


class Telegram:
    def __init__(self, h: telegram.Harness) -> None:
        self.h = h

    async def start(self, ticket: str) -> int:
        return await telegram.survey_for(self.h, ticket=ticket)

    async def reply(self, text: str) -> None:
        assert 200 == (await self.h.say(telegram.CUSTOMER, text)).status_code


class WebLink:
    def __init__(self, service: Service, client: Any, links: list[str]) -> None:
        self.service, self.client, self.links = service, client, links  # links: kept across restarts

    @property
    def link(self) -> str:
        return self.links[-1]

    async def start(self, ticket: str) -> int:
        request = SurveyRequest(ticket_id=ticket, channel="web", language="de", flow=FLOW, agent="anna")
        made = await trigger(self.service, request, channels={"web": None}, link_for=lambda _c, t: f"/s/{t}")
        assert made.link is not None
        self.links.append(made.link)
        assert made.survey_id is not None
        return made.survey_id

    async def reply(self, text: str) -> None:
        page = (await self.client.get(self.link)).text
        found = re.search(r'name="question" value="([^"]+)"', page)
        assert found is not None, page
        data = {"question": found.group(1), **({"text": text} if text == "ok" else {"choice": text})}
        assert 303 == (await self.client.post(self.link, data=data)).status_code


Channel = Callable[[Service, Clock], Any]


@pytest.fixture(params=["sms", "telegram", "web"])
def channel(
    request: pytest.FixtureRequest, fake_twilio: FakeTwilioApi, fake_telegram: FakeBotApi
) -> Callable[[Service, Clock], Any]:
    """Runs the app over a service and gives the channel's driver."""
    sids, updates = count(1), count(1000, 1000)  # each delivery its own id, across restarts
    links: list[str] = []

    @asynccontextmanager
    async def drive(svc: Service, clock: Clock) -> AsyncIterator[Driver]:
        if request.param == "sms":
            async with running_app(svc, clock, **twilio.twilio_settings(fake_twilio)) as (app, client, s):
                yield Sms(twilio.Harness(app, client, fake_twilio, s, sids))
        elif request.param == "telegram":
            settings = telegram.telegram_settings(fake_telegram)
            async with running_app(svc, clock, **settings) as (app, client, s):
                yield Telegram(telegram.Harness(app, client, fake_telegram, s, next_update=next(updates)))
        else:
            async with running_app(svc, clock, public_base_url="http://testserver") as (_app, client, s):
                yield WebLink(s, client, links)

    return drive


@pytest.mark.parametrize("edit", list(EDITS))
async def test_open_survey_finishes_on_its_version(
    edit: str, channel: Any, service: Service, clock: Clock, tmp_path: Path
) -> None:
    """Started on version 1, answered once, then the flow is edited to version 2 and the service
    restarted: the survey is asked and stored as version 1; a new survey uses version 2."""
    v1 = await service_with(service, write_flow(tmp_path / "v1", builtin()), clock)
    async with channel(v1, clock) as driver:
        first = await driver.start("T-1")
        await driver.reply("2")
    v2 = await service_with(service, write_flow(tmp_path / "v2", edited(edit)), clock)
    old, new = v1.flows[FLOW], v2.flows[FLOW]
    assert (1, 2) == (old.version, new.version)
    async with channel(v2, clock) as driver:
        for question in old.questions[1:]:
            await driver.reply(reply_for(question))
        clock.advance(minutes=1)
        second = await driver.start("T-2")
        for question in new.questions:
            await driver.reply(reply_for(question))

    assert ("completed", 1) == await survey_row(service, first)
    assert expected(old) == await asked(service, first)
    assert ("completed", 2) == await survey_row(service, second)
    assert expected(new) == await asked(service, second)


async def test_a_changed_file_with_the_same_version_warns_and_keeps_the_recorded_definition(
    service: Service, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Reordered without raising `version`: a WARNING names the flow and says to raise it, and
    the open survey (and a new one) go on with the definition recorded for version 1."""
    v1, made = await sms_survey_on_v1(service, clock, tmp_path)
    caplog.set_level(logging.WARNING)
    changed = Service(
        settings=service.settings,
        db=service.db,
        flows=load_flows([write_flow(tmp_path / "same", edited("reorder", version=1))]),
        clock=clock,
    )
    warnings = await changed.record_flows()
    assert 1 == len(warnings)
    assert f"flow {FLOW} changed (questions) but its version is still 1" in warnings[0]
    assert "raise `version` to 2" in warnings[0]
    assert warnings[0] in [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert changed.flows[FLOW] == v1.flows[FLOW]  # the recorded definition, not the file

    for question in v1.flows[FLOW].questions:
        inbound = Inbound("sms", "+4915112345678", clock(), text=reply_for(question))
        await handle(changed.db, changed.flows, inbound)
    assert expected(v1.flows[FLOW]) == await asked(service, made.survey_id)


async def test_service_open_warns_at_start(
    service: Service, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`serve`, `worker`, `trigger` and `chat` open the service: the warning comes at start."""
    await service_with(service, write_flow(tmp_path / "v1", builtin()), clock)
    folder = write_flow(tmp_path / "same", edited("remove", version=1))
    settings = load_settings(_env_file=None, database_url=service.settings.database_url, flows_dir=[folder])
    caplog.set_level(logging.WARNING)
    opened = await Service.open(settings)
    await opened.close()
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(FLOW in m and "raise `version` to 2" in m for m in warned), warned


async def test_a_survey_whose_version_cannot_be_served_is_closed_as_unavailable(
    service: Service, clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No stored definition of its version: closed as `unavailable` with the reason logged, nothing stored."""
    _v1, made = await sms_survey_on_v1(service, clock, tmp_path)
    await service.db.run(sa.delete(flow_versions).where(flow_versions.c.version == 1))
    v2 = await service_with(service, write_flow(tmp_path / "v2", edited("insert-before")), clock)
    caplog.set_level(logging.WARNING)
    handled = await handle(v2.db, v2.flows, Inbound("sms", "+4915112345678", clock(), text="2"))
    assert ("closed", UNAVAILABLE) == (handled.outcome, handled.status)
    assert (UNAVAILABLE, 1) == await survey_row(service, made.survey_id)
    assert [] == await asked(service, made.survey_id)
    assert f"flow {FLOW} version 1 has no valid stored definition" in caplog.text


async def test_a_state_saved_with_a_position_is_read_with_its_own_version(
    service: Service, clock: Clock, tmp_path: Path
) -> None:
    """A database from before question ids: `position` 1 is version 1's second question, even
    when the loaded flow (version 2) has another question there."""
    _v1, made = await sms_survey_on_v1(service, clock, tmp_path)

    def with_position(conn: Connection) -> None:
        state = conn.execute(sa.select(surveys.c.state).where(surveys.c.id == made.survey_id)).scalar_one()
        old = {k: v for k, v in state.items() if k != "question"} | {
            "position": 1,
            "scores": {"satisfaction": 2},
        }
        conn.execute(sa.update(surveys).where(surveys.c.id == made.survey_id).values(state=old))

    await service.db.transact(with_position)
    v2 = await service_with(service, write_flow(tmp_path / "v2", edited("insert-before")), clock)
    await handle(v2.db, v2.flows, Inbound("sms", "+4915112345678", clock(), text="1"))
    assert [("resolution", 1, 1, 5, "low")] == await asked(service, made.survey_id)


def test_flows_check_warns_against_a_database(service: Service, clock: Clock, tmp_path: Path) -> None:
    """`flows check` compares with DATABASE_URL's recorded versions: a changed file keeping its version warns."""
    env = environment(service.settings.database_url)
    same = write_flow(tmp_path / "same", edited("reorder", version=1))
    raised = write_flow(tmp_path / "raised", edited("reorder", version=2))

    before = invoke(["flows", "check", str(same)], env)  # nothing recorded yet: nothing to say
    assert (0, "") == (before.code, before.stderr)

    import asyncio

    asyncio.run(_record(service, tmp_path / "v1"))
    warned = invoke(["flows", "check", str(same)], env)
    fine = invoke(["flows", "check", str(raised)], env)
    assert 0 == warned.code
    assert f"warning: flow {FLOW} changed (questions) but its version is still 1" in warned.stderr
    assert "raise `version` to 2" in warned.stderr
    assert (0, "") == (fine.code, fine.stderr)


async def _record(base: Service, folder: Path) -> None:
    from bot.store.db import Database

    db = Database(base.settings.database)
    try:
        svc = Service(settings=base.settings, db=db, flows=load_flows([write_flow(folder, builtin())]))
        await svc.record_flows()
    finally:
        await db.dispose()


def test_flows_check_says_nothing_without_a_database(tmp_path: Path) -> None:
    """No database at DATABASE_URL: nothing about versions, and no database is made."""
    missing = tmp_path / "none.db"
    env = environment(f"sqlite+aiosqlite:///{missing}")
    result = invoke(["flows", "check", str(write_flow(tmp_path / "f", edited("remove", version=1)))], env)
    assert (0, "", False) == (result.code, result.stderr, missing.exists())
