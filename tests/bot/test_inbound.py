"""The one inbound path and survey creation, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from bot.errors import ContactOptedOut
from bot.inbound import Inbound, handle
from bot.service import Service
from bot.store.db import Database
from bot.store.tables import answers, contacts, surveys
from bot.surveys import NewSurvey, create_survey
from flows.loader import load_flows
from tests.support import Clock

PHONE = "+4915112345678"


async def _create(service: Service, **kw: object) -> int:
    params: dict[str, object] = {
        "flow_id": "support-csat",
        "channel": "sms",
        "address": PHONE,
        "language": "de",
    }
    params.update(kw)
    created = await create_survey(
        service.db,
        service.flows,
        NewSurvey(**params),
        now=service.clock(),
        ttl=service.survey_ttl,  # type: ignore[arg-type]
    )
    return created.survey_id


def _msg(service: Service, text: str | None = None, **kw: object) -> Inbound:
    params: dict[str, object] = {
        "channel": "sms",
        "address": PHONE,
        "received_at": service.clock(),
        "text": text,
    }
    params.update(kw)
    return Inbound(**params)  # type: ignore[arg-type]


async def _rows(service: Service, query: sa.Select[tuple[object, ...]]) -> list[tuple[object, ...]]:
    async with service.db.read() as conn:
        return [tuple(r) for r in (await conn.execute(query)).all()]


async def test_full_survey_stores_every_answer_with_segments(service: Service) -> None:
    """A completed support-csat survey stores three scores and the comment, with ticket and agent copied in."""
    survey_id = await _create(service, ticket="T-1", agent="anna", team="blue")
    for text in ["2", "1", "2", "sehr freundlich"]:
        await handle(service.db, service.flows, _msg(service, text))
    rows = await _rows(
        service,
        sa.select(answers.c.question_id, answers.c.score, answers.c.text, answers.c.agent, answers.c.ticket)
        .where(answers.c.survey_id == survey_id)
        .order_by(answers.c.id),
    )
    assert [
        ("satisfaction", 2, None, "anna", "T-1"),
        ("resolution", 1, None, "anna", "T-1"),
        ("speed", 2, None, "anna", "T-1"),
        ("comment", None, "sehr freundlich", "anna", "T-1"),
    ] == rows
    status = await _rows(service, sa.select(surveys.c.status, surveys.c.completed_at))
    assert [("completed", service.clock())] == status


async def test_repeated_provider_event_is_stored_once(service: Service) -> None:
    """The same provider event delivered twice stores one answer and the second is reported as a duplicate."""
    await _create(service)
    first = await handle(service.db, service.flows, _msg(service, "2", provider="twilio", event_id="SM1"))
    second = await handle(service.db, service.flows, _msg(service, "2", provider="twilio", event_id="SM1"))
    assert ("answered", "duplicate") == (first.outcome, second.outcome)
    assert [(1,)] == await _rows(service, sa.select(sa.func.count()).select_from(answers))


async def test_concurrent_answers_to_one_question_store_one(service: Service) -> None:
    """Two taps on the same question arriving together store one answer; the other is 'already answered'."""
    await _create(service)
    tap = _msg(service, choice=1, question_id="satisfaction")
    results = await asyncio.gather(*(handle(service.db, service.flows, tap) for _ in range(2)))
    assert ["already_answered", "answered"] == sorted(r.outcome for r in results)
    assert [("satisfaction", 1)] == await _rows(service, sa.select(answers.c.question_id, answers.c.score))


async def test_concurrent_duplicate_events_store_one(service: Service) -> None:
    """A webhook retried while the first delivery is still being handled stores one answer."""
    await _create(service)
    retry = _msg(service, "3", provider="twilio", event_id="SM42")
    results = await asyncio.gather(*(handle(service.db, service.flows, retry) for _ in range(3)))
    assert ["answered", "duplicate", "duplicate"] == sorted(r.outcome for r in results)
    assert [(1,)] == await _rows(service, sa.select(sa.func.count()).select_from(answers))


async def test_survey_continues_after_restart(service: Service, clock: Clock) -> None:
    """A new process on the same database continues at question 2 after question 1 was answered."""
    survey_id = await _create(service)
    await handle(service.db, service.flows, _msg(service, "2"))
    await service.db.dispose()

    restarted = Service(
        settings=service.settings, db=Database(service.settings.database), flows=load_flows(), clock=clock
    )
    try:
        handled = await handle(restarted.db, restarted.flows, _msg(restarted, "1"))
        assert ("answered", "speed") == (handled.outcome, handled.prompts[-1].question_id)
        rows = await _rows(
            restarted, sa.select(answers.c.question_id).where(answers.c.survey_id == survey_id)
        )
        assert [("satisfaction",), ("resolution",)] == sorted(rows, reverse=True)
    finally:
        await restarted.close()


async def test_state_holds_the_conversation_and_the_columns_the_lifecycle(service: Service) -> None:
    """The state JSON has no status, language or expiry; an older state holding them still loads and is
    answered in the column's language, and the column's status decides (the stale "active" in it does not)."""
    survey_id = await _create(service, language="en")
    [(state,)] = await _rows(service, sa.select(surveys.c.state))
    assert isinstance(state, dict)
    assert ["attempts", "question", "scores"] == sorted(state)
    old = {**state, "language": "de", "status": "active", "expires_at": None}
    await service.db.run(sa.update(surveys).where(surveys.c.id == survey_id).values(state=old))
    handled = await handle(service.db, service.flows, _msg(service, "2"))
    expected = (
        "answered",
        "en",
        service.flows["support-csat"].question("resolution").text_for("en", {"satisfaction": 2}),
    )
    assert expected == (handled.outcome, handled.language, handled.prompts[-1].text)
    await service.db.run(sa.update(surveys).where(surveys.c.id == survey_id).values(status="incomplete"))
    closed = await handle(service.db, service.flows, _msg(service, "1", survey_id=survey_id))
    assert ("closed", "incomplete") == (closed.outcome, closed.status)
    assert [("satisfaction", 2)] == await _rows(service, sa.select(answers.c.question_id, answers.c.score))


async def test_expired_survey_answers_with_expired_text(service: Service, clock: Clock) -> None:
    """An answer after the survey's time to live gets the expired text, stores nothing and marks it expired."""
    await _create(service)
    clock.advance(hours=service.settings.survey_ttl_hours + 1)
    handled = await handle(service.db, service.flows, _msg(service, "2"))
    assert ("expired", "expired") == (handled.outcome, handled.prompts[0].kind)
    assert [("expired",)] == await _rows(service, sa.select(surveys.c.status))
    assert [(0,)] == await _rows(service, sa.select(sa.func.count()).select_from(answers))


async def test_stop_ends_survey_and_keeps_earlier_answers(service: Service) -> None:
    """'abbrechen' ends the survey politely; the answer given before it stays stored."""
    await _create(service)
    await handle(service.db, service.flows, _msg(service, "1"))
    handled = await handle(service.db, service.flows, _msg(service, "abbrechen"))
    assert ("stopped", "stopped") == (handled.outcome, handled.prompts[0].kind)
    assert [("stopped",)] == await _rows(service, sa.select(surveys.c.status))
    assert [("satisfaction", 1)] == await _rows(service, sa.select(answers.c.question_id, answers.c.score))


async def test_message_without_open_survey_is_not_stored(service: Service) -> None:
    """A message from a contact with no open survey changes nothing."""
    handled = await handle(service.db, service.flows, _msg(service, "5"))
    assert ("no_survey", ()) == (handled.outcome, handled.prompts)
    assert [(0,)] == await _rows(service, sa.select(sa.func.count()).select_from(answers))


async def test_same_ticket_and_flow_returns_existing_survey(service: Service) -> None:
    """Triggering the same ticket and flow twice creates one survey."""
    first = await _create(service, ticket="T-7")
    second = await create_survey(
        service.db,
        service.flows,
        NewSurvey(flow_id="support-csat", channel="sms", address=PHONE, ticket="T-7"),
        now=service.clock(),
        ttl=service.survey_ttl,
    )
    assert (first, False, ()) == (second.survey_id, second.created, second.prompts)
    assert [(1,)] == await _rows(service, sa.select(sa.func.count()).select_from(surveys))


async def test_concurrent_triggers_for_one_ticket_create_one_survey(service: Service) -> None:
    """Two triggers for the same ticket racing each other end with one survey."""
    new = NewSurvey(flow_id="nps", channel="sms", address=PHONE, ticket="T-9")
    results = await asyncio.gather(
        *(
            create_survey(service.db, service.flows, new, now=service.clock(), ttl=service.survey_ttl)
            for _ in range(2)
        )
    )
    assert 1 == len({r.survey_id for r in results})
    assert [True, False] == sorted((r.created for r in results), reverse=True)


async def test_newer_survey_closes_the_older_open_one(service: Service) -> None:
    """A new survey for a contact marks the contact's open one incomplete, and replies go to the new one."""
    older = await _create(service, ticket="T-1")
    newer = await _create(service, ticket="T-2", flow_id="nps")
    handled = await handle(service.db, service.flows, _msg(service, "9"))
    assert newer == handled.survey_id
    rows = await _rows(service, sa.select(surveys.c.id, surveys.c.status).order_by(surveys.c.id))
    assert [(older, "incomplete"), (newer, "active")] == rows


async def test_opted_out_contact_gets_no_survey(service: Service) -> None:
    """A contact who opted out cannot be sent a survey."""
    await _create(service, ticket="T-1")
    await service.db.run(sa.update(contacts).values(opted_out_at=service.clock()))
    with pytest.raises(ContactOptedOut):
        await _create(service, ticket="T-2")


async def test_web_token_names_its_survey(service: Service) -> None:
    """An inbound that carries a survey token answers that survey, whoever the contact is."""
    created = await create_survey(
        service.db,
        service.flows,
        NewSurvey(flow_id="nps", channel="web"),
        now=service.clock(),
        ttl=service.survey_ttl,
    )
    handled = await handle(
        service.db,
        service.flows,
        Inbound(
            channel="web", address="", received_at=service.clock(), choice=10, survey_token=created.token
        ),
    )
    assert ("answered", created.survey_id) == (handled.outcome, handled.survey_id)
    assert [("recommend", 10)] == await _rows(service, sa.select(answers.c.question_id, answers.c.score))
