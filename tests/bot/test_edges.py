"""Inputs at the edge (issue 16): each one an attack run answered with a 500 now gets a 4xx naming
the field, or is stored without what no column holds, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from itertools import count
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from bot.apikeys import create_key
from bot.service import Service
from bot.store.tables import answers, contacts, inbound_events, surveys
from bot.texts import CATALOGUE
from bot.triggers import SurveyRequest, trigger
from tests.bot.test_limits import Body
from tests.bot.test_telegram import SECRET, telegram_settings
from tests.bot.test_twilio import CUSTOMER, Harness, twilio_settings
from tests.cli import invoke
from tests.fakes.telegram import FakeBotApi, callback_update, message_update
from tests.fakes.twilio import FakeTwilioApi
from tests.support import Clock, running_app

HOOK_SECRET = "hook-secret-123"
TOO_BIG = [2**31, 2**63, 10**30]  # past PostgreSQL's integer, SQLite's integer, and both


@pytest.fixture
async def app(
    service: Service, fake_twilio: FakeTwilioApi, clock: Clock
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Service]]:
    """The app with Twilio on against the fake, the helpdesk hooks on, and web links."""
    settings = {**twilio_settings(fake_twilio), "hooks_secret": HOOK_SECRET}
    async with running_app(service, clock, **settings) as running:
        yield running


@pytest.fixture
def tw(app: tuple[FastAPI, httpx.AsyncClient, Service], fake_twilio: FakeTwilioApi) -> Harness:
    """Signed Twilio webhooks to the app."""
    return Harness(app[0], app[1], fake_twilio, app[2], count(1))


@pytest.fixture
async def key(app: tuple[FastAPI, httpx.AsyncClient, Service], clock: Clock) -> str:
    """An API key of the app."""
    return await create_key(app[2].db, "edges", now=clock())


async def rows(service: Service, table: sa.Table) -> int:
    async with service.db.read() as conn:
        found: int = (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()
    return found


async def texts(service: Service) -> list[str | None]:
    async with service.db.read() as conn:
        return list((await conn.execute(sa.select(answers.c.text).order_by(answers.c.id))).scalars())


async def web_link(service: Service) -> str:
    request = SurveyRequest(ticket_id="T-web", channel="web", language="de", agent="anna")
    made = await trigger(service, request, channels={"web": None}, link_for=lambda _c, t: f"/s/{t}")
    assert made.link is not None
    return made.link


def field(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, response.json()["error"]["field"]


# --- the web survey ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/s/%00", "/s/%C3%A9t%C3%A9", "/s/" + "a" * 65, "/s/a%20b"])
async def test_a_token_of_another_shape_is_404(
    app: tuple[FastAPI, httpx.AsyncClient, Service], path: str
) -> None:
    """A token that is not 1 to 64 URL-safe characters is the plain 404, for a look and an answer."""
    client = app[1]
    shown = await client.get(path)
    answered = await client.post(path, data={"question": "satisfaction", "choice": "1"})
    assert (404, 404) == (shown.status_code, answered.status_code)


async def test_a_web_comment_with_nul_is_kept_without_it(
    app: tuple[FastAPI, httpx.AsyncClient, Service],
) -> None:
    """NUL and other control characters are dropped from a comment; the rest of it is stored."""
    client, service = app[1], app[2]
    link = await web_link(service)
    for data in ({"question": "satisfaction", "choice": "2"}, {"question": "resolution", "choice": "1"},
                 {"question": "speed", "choice": "3"}, {"question": "comment", "text": "gut\x00 gemacht\x07\ttoll"}):  # fmt: skip
        response = await client.post(link, data=data)
        assert 303 == response.status_code, response.text
    assert [None, None, None, "gut gemacht\ttoll"] == await texts(service)


# --- the JSON API and the helpdesk hooks ----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"ticket_id": "T\x00"}, "ticket_id"),
        ({"agent": "an\x00na"}, "agent"),
        ({"team": "\x1b[31m"}, "team"),
        ({"metadata": {"note": "a\x00b"}}, "metadata.note"),
        ({"metadata": {"items": [{"x": "ok"}, {"x": "\x00"}]}}, "metadata.items[1].x"),
        ({"metadata": {"ke\x00y": 1}}, "metadata.ke\\x00y"),  # escaped, as every field sent back
    ],
)
async def test_api_text_with_nul_is_422_naming_the_field(
    app: tuple[FastAPI, httpx.AsyncClient, Service], key: str, body: dict[str, Any], expected: str
) -> None:
    """A NUL or control character in any text of a trigger is refused naming the field; nothing stored."""
    client, service = app[1], app[2]
    payload = {"ticket_id": "T-1", "channel": "web", **body}
    response = await client.post("/api/surveys", json=payload, headers={"Authorization": f"Bearer {key}"})
    assert (422, expected) == field(response)
    assert 0 == await rows(service, surveys)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"ticket_id": "T-1", "channel": "web", "metadata": {"x": NaN}}', "metadata.x"),
        ('{"ticket_id": "T-1", "channel": "web", "metadata": {"\\ud800": 1}}', "metadata.\\ud800"),
        ('{"ticket_id": "T-\\udfff", "channel": "web"}', "ticket_id"),
        ('{"ticket_id": "T-1", "channel": "web", "\\ud800": 1}', "body"),  # pydantic: not a str key
        ('{"ticket_id": "T-1", "channel": "web", "metadata": ' + "[" * 40 + "]" * 40 + "}", "metadata"),
        ("[" * 100_000 + "]" * 100_000, "body"),
        ('{"ticket_id": "T-1",', "body"),
        ("\xff\xfe", "body"),
    ],
)
async def test_api_body_json_cannot_show_is_422(
    app: tuple[FastAPI, httpx.AsyncClient, Service], key: str, raw: str, expected: str
) -> None:
    """NaN, lone surrogates, deep nesting and broken JSON are 422 naming the field, escaped."""
    client, service = app[1], app[2]
    content = raw.encode("latin-1") if raw == "\xff\xfe" else raw.encode()
    response = await client.post(
        "/api/surveys",
        content=content,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert (422, expected) == (response.status_code, response.json()["error"]["field"][: len(expected)])
    assert 0 == await rows(service, surveys)


@pytest.mark.parametrize(
    ("ticket", "expected"),
    [
        ({"requester": {"name": "n" * 129, "phone": CUSTOMER}}, "ticket.requester.name"),
        ({"id": "1" * 129}, "ticket.id"),
        ({"id": 10**200}, "ticket.id"),
        ({"assignee": {"name": "a" * 129}}, "ticket.assignee.name"),
        ({"group": {"name": "g\x00"}}, "ticket.group.name"),
        ({"id": "T\x00"}, "ticket.id"),
        ({"requester": {"name": "Kim", "phone": "+" + "4" * 200}}, "ticket.requester.phone"),
    ],
)
async def test_hook_fields_over_their_column_or_with_nul_are_422(
    app: tuple[FastAPI, httpx.AsyncClient, Service], ticket: dict[str, Any], expected: str
) -> None:
    """Each helpdesk field is at most 128 characters without NUL; past that 422 names its path, nothing is stored."""
    client, service = app[1], app[2]
    payload = {"ticket": {"id": "4711", "status": "solved", "requester": {"phone": CUSTOMER}, **ticket}}
    response = await client.post("/hooks/zendesk", json=payload, headers={"X-Afterword-Secret": HOOK_SECRET})
    assert (422, expected) == field(response)
    assert (
        "128 characters" in response.json()["error"]["message"]
        or "NUL" in response.json()["error"]["message"]
    )
    assert 0 == await rows(service, surveys)


async def test_a_hook_body_nested_past_the_parser_is_422(
    app: tuple[FastAPI, httpx.AsyncClient, Service],
) -> None:
    """JSON nested 100,000 deep (under the body cap) is refused as not JSON, not a 500."""
    response = await app[1].post(
        "/hooks/zendesk", content=b"[" * 100_000 + b"]" * 100_000, headers={"X-Afterword-Secret": HOOK_SECRET}
    )
    assert (422, "$") == field(response)


@pytest.mark.parametrize("survey_id", TOO_BIG)
async def test_survey_ids_past_the_column_are_404(
    app: tuple[FastAPI, httpx.AsyncClient, Service], key: str, survey_id: int
) -> None:
    """GET /api/surveys/{id} with an id no row can have is 404 naming survey_id."""
    response = await app[1].get(f"/api/surveys/{survey_id}", headers={"Authorization": f"Bearer {key}"})
    assert (404, "survey_id") == field(response)


@pytest.mark.parametrize(("query", "expected"), [("to=9999-12-31", "to"), ("from=0001-01-01", "from"), ("from=1999-12-31&to=2000-01-02", "from"), ("from=2000-01-01&to=2101-01-01", "to")])  # fmt: skip
async def test_report_days_outside_2000_to_2100_are_400(
    app: tuple[FastAPI, httpx.AsyncClient, Service], key: str, query: str, expected: str
) -> None:
    """/api/report takes days from 2000-01-01 to 2100-12-31 and names the field and range otherwise."""
    response = await app[1].get(f"/api/report?{query}", headers={"Authorization": f"Bearer {key}"})
    assert (400, expected) == field(response)
    assert "between 2000-01-01 and 2100-12-31" in response.json()["error"]["message"]


async def test_report_over_the_whole_range_is_served(
    app: tuple[FastAPI, httpx.AsyncClient, Service], key: str
) -> None:
    """The first and last allowed days make a report (its previous period reaches back before 2000)."""
    response = await app[1].get(
        "/api/report?from=2000-01-01&to=2100-12-31", headers={"Authorization": f"Bearer {key}"}
    )
    assert (200, "2100-12-31") == (response.status_code, response.json()["period"]["last_day"])


def test_report_cli_with_a_day_out_of_range_is_one_line(cli_env: dict[str, str]) -> None:
    """`afterword report --to 9999-12-31` exits 2 with one line naming the option and the range."""
    result = invoke(["report", "--to", "9999-12-31"], cli_env)
    assert (2, "Error: to: 9999-12-31 is not between 2000-01-01 and 2100-12-31") == (
        result.code,
        result.stderr.strip(),
    )


# --- authentication before the body -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/api/surveys", b'{"ticket_id": 5, "channel": "fax"}'),
        ("/api/surveys", b"not json at all"),
        ("/api/surveys", b"[" * 100_000),
        ("/hooks/zendesk", b"not json at all"),
    ],
)
async def test_a_keyless_request_gets_401_whatever_its_body(
    app: tuple[FastAPI, httpx.AsyncClient, Service], path: str, content: bytes
) -> None:
    """Without a key the answer is 401, never a 422 that describes the body."""
    response = await app[1].post(path, content=content, headers={"Content-Type": "application/json"})
    assert (401, "Authorization") == field(response)


async def test_a_keyless_body_is_never_read(app: tuple[FastAPI, httpx.AsyncClient, Service]) -> None:
    """A 900 kB keyless POST (under the 1 MiB cap) is answered 401 without its body being pulled."""
    body = Body(900, 1024, b"[")
    response = await app[1].post("/api/surveys", content=body, headers={"content-length": str(900 * 1024)})
    assert 401 == response.status_code
    assert body.pulled <= 1  # httpx may have the first chunk ready; the app reads none of it


async def test_a_keyed_bad_body_is_still_422_naming_the_field(
    app: tuple[FastAPI, httpx.AsyncClient, Service], key: str
) -> None:
    """With a key, a body that does not fit the schema is 422 naming the field, as before."""
    response = await app[1].post(
        "/api/surveys",
        json={"ticket_id": "T-1", "channel": "fax"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert (422, "channel") == field(response)
    assert 422 == response.status_code


async def test_the_docs_still_show_the_trigger_body(app: tuple[FastAPI, httpx.AsyncClient, Service]) -> None:
    """POST /api/surveys documents its JSON body in the OpenAPI schema, with its fields."""
    schema = (await app[1].get("/openapi.json")).json()
    body = schema["paths"]["/api/surveys"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"ticket_id", "channel"} == set(body["required"])


# --- Twilio -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"MessageSid": "SM" + "a" * 300}, "MessageSid"),
        ({"MessageSid": "SM\x001"}, "MessageSid"),
        ({"From": "+49" + "1" * 300}, "From"),
        ({"From": "+4915112345678\x00"}, "From"),
        ({"Body": "x" * 5000}, "Body"),
    ],
)
async def test_twilio_fields_past_their_column_are_400(
    tw: Harness, params: dict[str, str], expected: str
) -> None:
    """A signed SMS webhook with a field no column can hold is 400 naming it; no event is recorded."""
    form = {"From": CUSTOMER, "To": "+4930901820", "Body": "1", "MessageSid": "SM1", **params}
    response = await tw.post("/twilio/sms", form)
    assert (400, expected) == field(response)
    assert 0 == await rows(tw.service, inbound_events)


async def test_an_sms_with_nul_is_answered_without_it(tw: Harness) -> None:
    """NUL in an SMS Body is dropped: the rating counts and the comment is stored without it."""
    await tw.start("sms")
    for text in ("2\x00", "1", "2", "Sehr\x00 nett"):
        await tw.sms(text)
    async with tw.service.db.read() as conn:
        stored = (await conn.execute(sa.select(answers.c.score, answers.c.text).order_by(answers.c.id))).all()
    assert [(2, None), (1, None), (2, None), (None, "Sehr nett")] == [tuple(r) for r in stored]


@pytest.mark.parametrize(
    "path",
    [
        *(f"/twilio/status?survey={n}" for n in TOO_BIG),
        *(f"/twilio/voice?survey={n}" for n in TOO_BIG),
        *(f"/twilio/voice/status?survey={n}" for n in TOO_BIG),
        *(f"/twilio/voice/answer?survey={n}&q=satisfaction&n=0" for n in TOO_BIG),
        "/twilio/voice/answer?survey=1&q=%00&n=0",
        "/twilio/voice/answer?survey=1&q=" + "q" * 65 + "&n=0",
        f"/twilio/voice/answer?survey=1&q=satisfaction&n={2**63}",
    ],
)
async def test_signed_callbacks_with_ids_past_the_column_are_422(tw: Harness, path: str) -> None:
    """Survey ids, question ids and attempts in our callback URLs are checked before any work: 422."""
    response = await tw.post(path, {"CallSid": "CA1", "MessageSid": "SM1", "To": CUSTOMER, "Digits": "1"})
    assert 422 == response.status_code
    assert response.json()["error"]["field"] in ("survey", "q", "n")


async def test_an_unreadable_to_with_error_21610_is_204(tw: Harness) -> None:
    """The opted-out error for a To that is no phone number opts nobody out and is no 500."""
    params = {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "21610", "To": "not a number"}
    response = await tw.post("/twilio/status?survey=1", params)
    assert (204, 0) == (response.status_code, await rows(tw.service, contacts))


async def opted_out(service: Service) -> bool:
    async with service.db.read() as conn:
        found = (
            await conn.execute(sa.select(contacts.c.opted_out_at).where(contacts.c.address == CUSTOMER))
        ).one()
    return found.opted_out_at is not None


async def test_a_replayed_start_after_stop_changes_nothing(tw: Harness) -> None:
    """START, STOP, then the START replayed with its MessageSid: the customer stays opted out."""
    start, stop = "SM" + "1" * 32, "SM" + "2" * 32
    await tw.sms("START", sid=start)
    await tw.sms("STOP", sid=stop)
    await tw.sms("START", sid=start)  # a replay: the same signed request again
    replayed = await opted_out(tw.service)
    await tw.sms("STOP", sid=stop)
    await tw.sms("START", sid="SM" + "3" * 32)  # a new START still opts in
    assert (True, False) == (replayed, await opted_out(tw.service))


async def test_a_stop_with_nul_is_still_a_stop(tw: Harness) -> None:
    """ "STOP" with a NUL after it is the opt-out keyword, not an answer."""
    await tw.sms("STOP\x00")
    assert await opted_out(tw.service)


# --- Telegram -----------------------------------------------------------------------------


@pytest.fixture
async def tg(
    service: Service, fake_telegram: FakeBotApi, clock: Clock
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Service]]:
    """The app with the Telegram bot on, against the fake Bot API."""
    async with running_app(service, clock, **telegram_settings(fake_telegram)) as running:
        yield running


async def post_update(client: httpx.AsyncClient, update: Any) -> httpx.Response:
    """Post ``update`` as JSON with ASCII escapes (so lone surrogates get through), with the secret."""
    content = json.dumps(update).encode() if not isinstance(update, bytes) else update
    return await client.post(
        "/telegram/webhook", content=content, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
    )


MESSAGE = message_update(1, 5001, "hi")["message"]


@pytest.mark.parametrize(
    "update",
    [
        {"update_id": 1, "message": "x"},
        {"update_id": "x"},
        {"update_id": True},
        {"update_id": 2**64},
        {"update_id": 1, "message": {**MESSAGE, "chat": {"id": 2**64, "type": "private"}}},
        {"update_id": 1, "message": {"chat": 5}},
        {"update_id": 1, "message": {**MESSAGE, "date": 10**30}},
        {"update_id": 1, "message": {**MESSAGE, "date": "yesterday"}},
        {"update_id": 1, "callback_query": []},
        {"update_id": 1, "callback_query": {"id": 1}},
        {
            "update_id": 1,
            "callback_query": {**callback_update(1, 5001, 1, "a:1:q:1")["callback_query"], "data": True},
        },
        {"update_id": 1, "message": {**MESSAGE, "text": 5}},
        {"update_id": None},
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
async def test_malformed_telegram_updates_are_400(
    tg: tuple[FastAPI, httpx.AsyncClient, Service], update: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """An update with the right secret that is not a Telegram update is 400 naming the field; nothing is logged as an error."""
    response = await post_update(tg[1], update)
    assert (400, True) == (response.status_code, bool(response.json()["error"]["field"]))
    assert [] == [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_telegram_text_with_nul_or_a_lone_surrogate_is_stored_without_it(
    tg: tuple[FastAPI, httpx.AsyncClient, Service], caplog: pytest.LogCaptureFixture
) -> None:
    """A typed comment keeps everything but NUL and lone surrogates; no handler error is logged."""
    app, client, service = tg
    request = SurveyRequest(ticket_id="T-tg", channel="telegram", language="de", agent="anna")
    made = await trigger(service, request, channels=app.state.channels, link_for=lambda _c, token: token)
    assert made.link is not None
    said = [f"/start {made.link}", "2", "1\x00", "2", "gut\x00 \ud800gemacht"]
    for i, text in enumerate(said):
        assert 200 == (await post_update(client, message_update(10 + i, 5001, text))).status_code
    assert [None, None, None, "gut gemacht"] == await texts(service)
    assert [] == [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("text", ["/start %00", "/start " + "a" * 65, "/start \ud800"])
async def test_a_telegram_start_token_of_another_shape_is_unknown(
    tg: tuple[FastAPI, httpx.AsyncClient, Service],
    fake_telegram: FakeBotApi,
    text: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """/start with a token we never make is answered "unknown" without a database error."""
    response = await post_update(tg[1], message_update(20, 5001, text.replace("%00", "\x00")))
    replies = [c.params["text"] for c in fake_telegram.sent("sendMessage")]
    assert (200, [CATALOGUE["telegram.unknown"]["de"]]) == (response.status_code, replies)
    assert [] == [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("survey_id", TOO_BIG)
async def test_a_button_naming_a_survey_past_the_column_stores_nothing(
    tg: tuple[FastAPI, httpx.AsyncClient, Service], survey_id: int, caplog: pytest.LogCaptureFixture
) -> None:
    """A tap whose data names a survey id no row can have is answered and stores nothing."""
    update = callback_update(30, 5001, 1, f"a:{survey_id}:satisfaction:1")
    response = await post_update(tg[1], update)
    assert (200, 0) == (response.status_code, await rows(tg[2], answers))
    assert [] == [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
