"""A fuzz of every HTTP input (issue 16): random requests to the JSON API, the helpdesk hooks, the
Twilio webhooks (correctly signed), the Telegram webhook (with the secret) and the web survey.

Whatever comes in, the answer is never a 5xx and nothing is logged as an error: a bad input is
a 4xx naming it, or is stored without what no column holds. Each test keeps one app and one
database for all its examples, so later requests meet what earlier ones stored.

The profile's max_examples is shared among the seven tests below, on each backend: `ci` (300)
runs 42 each, `dev` 5 each, and `make fuzz` (profile `fuzz`, 5,000) 714 each.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

from bot.apikeys import create_key
from bot.channels.base import Outgoing
from bot.service import Service
from bot.surveys import NewSurvey, create_survey
from bot.triggers import SurveyRequest, trigger
from tests.bot.test_telegram import SECRET, telegram_settings
from tests.bot.test_twilio import CUSTOMER, PUBLIC, SENDER, twilio_settings
from tests.fakes.telegram import FakeBotApi, callback_update, message_update
from tests.fakes.twilio import FakeTwilioApi
from tests.support import Clock, running_app

TESTS = 7  # the tests below, which share the profile's examples
CHAT = 5001
HOOK_SECRET = "hook-secret-123"
GENERIC_MAP = '{"ticket_id": "data.ticket.id", "phone": "data.customer.phone", "agent": "data.agent"}'

FUZZ = settings(
    max_examples=max(5, settings.default.max_examples // TESTS),
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
    deadline=None,
)

# --- strategies -------------------------------------------------------------------------------

# The values an attack tries first, beside whatever Hypothesis makes up.
NASTY = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\x1b[31m",
    "\u202e",
    "😀",
    "é",
    "STOP",
    "START",
    "HELP",
    "1",
    "0",
    "-1",
    "skip",
    CUSTOMER,
    "+4915112345678\x00",
    "whatsapp:" + CUSTOMER,
    "{{ticket.id}}",
    "2026-11-23",
    "9999-12-31",
    "0001-01-01",
    str(2**31),
    str(2**63),
    str(10**30),
    "NaN",
    "Infinity",
]
# Any code point but surrogates: what a form or a URL can carry (they are sent as UTF-8).
FORM_TEXT = st.one_of(
    st.sampled_from(NASTY),
    st.builds(
        lambda c, n: c * n, st.sampled_from("9x\x00é"), st.sampled_from([65, 129, 256, 300, 4097, 5000])
    ),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.text(alphabet=string.printable, max_size=300),
    st.builds(lambda c, n: c * n, st.characters(codec="utf-8"), st.integers(0, 6000)),
)
# JSON strings may also carry lone surrogates ("\ud800"), which json.dumps escapes.
JSON_TEXT = st.one_of(FORM_TEXT, st.text(alphabet=st.characters(exclude_categories=()), max_size=20))
INTS = st.one_of(
    st.integers(),
    st.sampled_from([0, 1, -1, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63) - 1]),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, st.floats(), JSON_TEXT)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(JSON_TEXT, inner, max_size=4),
    max_leaves=12,
)
# A query value: a number of any size, or any text short enough for a URL (httpx allows 64 kB).
URL_TEXT = FORM_TEXT.map(lambda text: text[:1000])
QUERY = st.one_of(INTS.map(str), URL_TEXT)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``strategy``, or a random JSON value in its place."""
    return st.one_of(strategy, JSON)


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


def mangled(update: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """``update`` (a JSON object) with one of its fields, at any depth, replaced by a random JSON value."""
    paths: list[tuple[str, ...]] = []

    def walk(value: Any, path: tuple[str, ...]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                paths.append((*path, key))
                walk(item, (*path, key))

    walk(update, ())
    if not paths:
        return st.just(update)

    def replace(path: tuple[str, ...], value: Any) -> dict[str, Any]:
        copy = json.loads(json.dumps(update))
        target = copy
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        return copy

    return st.builds(replace, st.sampled_from(paths), JSON)


# --- the app ------------------------------------------------------------------------------------


@dataclass
class Fuzz:
    """The app with every input on: Twilio, Telegram, hooks, an API key, and open surveys to answer."""

    app: FastAPI
    client: httpx.AsyncClient
    service: Service
    key: str
    token: str  # a web survey's
    sms_survey: int
    validator: RequestValidator

    async def send(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """The request; its answer must not be a 5xx (an exception in the app fails the test too)."""
        response = await self.client.request(method, url, **kw)
        assert response.status_code < 500, (method, url, response.status_code, response.text[:500])
        return response

    async def twilio(self, path: str, query: dict[str, str], form: dict[str, str]) -> httpx.Response:
        """POST ``form`` signed as Twilio signs it, over PUBLIC_BASE_URL + path + query."""
        url = f"{path}?{urlencode(query)}" if query else path
        signature = self.validator.compute_signature(PUBLIC + url, form)
        response = await self.send("POST", url, data=form, headers={"X-Twilio-Signature": signature})
        assert 403 != response.status_code, "the signature must match: the fuzz would test nothing"
        return response


@pytest.fixture
async def fuzz(
    service: Service, fake_twilio: FakeTwilioApi, fake_telegram: FakeBotApi, clock: Clock
) -> AsyncIterator[Fuzz]:
    configured = {
        **twilio_settings(fake_twilio),
        **telegram_settings(fake_telegram),
        "hooks_secret": HOOK_SECRET,
        "hooks_generic_map": GENERIC_MAP,
    }
    async with running_app(service, clock, **configured) as (app, client, svc):
        key = await create_key(svc.db, "fuzz", now=clock())
        request = SurveyRequest(ticket_id="T-web", channel="web")
        made = await trigger(svc, request, channels=app.state.channels, link_for=lambda _c, token: token)
        assert made.link is not None
        sms = await create_survey(
            svc.db,
            svc.flows,
            NewSurvey("support-csat", "sms", CUSTOMER, ticket="T-sms"),
            now=clock(),
            ttl=svc.survey_ttl,
        )
        await app.state.channels["sms"].deliver(
            Outgoing(CUSTOMER, sms.prompts, sms.language, survey_id=sms.survey_id)
        )
        chat = await create_survey(
            svc.db,
            svc.flows,
            NewSurvey("nps", "telegram", str(CHAT), ticket="T-tg"),
            now=clock(),
            ttl=svc.survey_ttl,
        )
        await app.state.telegram.customers.show(CHAT, chat.prompts, chat.language, chat.survey_id)
        yield Fuzz(app, client, svc, key, made.link, sms.survey_id, RequestValidator(fake_twilio.auth_token))


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """The log, to check after each example that nothing was logged as an error."""
    caplog.set_level(logging.WARNING)
    return caplog


def assert_nothing_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]
    caplog.clear()
    assert [] == errors


# --- the JSON API ---------------------------------------------------------------------------------

TRIGGER = st.fixed_dictionaries(
    {
        "ticket_id": st.builds(lambda n: f"T-{n}", st.integers(0, 50)) | maybe(FORM_TEXT),
        "channel": st.sampled_from(["web", "sms", "whatsapp", "voice", "telegram", "fax"]) | JSON,
    },
    optional={
        "to": maybe(st.sampled_from([CUSTOMER, str(CHAT), "+4930901820", "0000"]) | FORM_TEXT),
        "agent": maybe(FORM_TEXT),
        "team": maybe(FORM_TEXT),
        "language": maybe(st.sampled_from(["de", "en", "fr"]) | FORM_TEXT),
        "flow": maybe(st.sampled_from(["support-csat", "nps", "nope"]) | FORM_TEXT),
        "delay": maybe(st.sampled_from(["90s", "15m", "1h", "2d", "31d", "99999d"]) | FORM_TEXT),
        "send_at": maybe(st.datetimes().map(lambda d: d.isoformat() + "+00:00") | FORM_TEXT),
        "metadata": JSON,
    },
)


@FUZZ
@given(
    body=st.one_of(TRIGGER, JSON, st.binary(max_size=200)),
    keyed=st.booleans(),
)
async def test_api_surveys_never_fails(
    fuzz: Fuzz, no_errors: pytest.LogCaptureFixture, body: Any, keyed: bool
) -> None:
    """POST /api/surveys with any body, with and without a key: 2xx or 4xx, never 5xx."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {
        "Content-Type": "application/json",
        **({"Authorization": f"Bearer {fuzz.key}"} if keyed else {}),
    }
    response = await fuzz.send("POST", "/api/surveys", content=content, headers=headers)
    assert keyed or 401 == response.status_code
    assert_nothing_logged(no_errors)


REPORT = optional(
    since=st.sampled_from(["7d", "30d", "9999d", "0d"]) | QUERY,
    **{"from": st.dates().map(str) | QUERY, "to": st.dates().map(str) | QUERY},
    by=st.sampled_from(["agent", "team", "channel", "flow", "language", "question"]) | QUERY,
    trend=st.sampled_from(["day", "week", "month"]) | QUERY,
    rule=st.sampled_from(["top1", "top2"]) | QUERY,
)


@FUZZ
@given(survey_id=QUERY, query=REPORT)
async def test_api_reads_never_fail(
    fuzz: Fuzz, no_errors: pytest.LogCaptureFixture, survey_id: str, query: dict[str, Any]
) -> None:
    """GET /api/surveys/{any id} and /api/report with any query: never a 5xx."""
    headers = {"Authorization": f"Bearer {fuzz.key}"}
    await fuzz.send("GET", f"/api/surveys/{quote(survey_id, safe='')}", headers=headers)
    await fuzz.send("GET", "/api/report?" + urlencode(query), headers=headers)
    assert_nothing_logged(no_errors)


# --- the helpdesk hooks ------------------------------------------------------------------------

PHONE = st.sampled_from([CUSTOMER, "+49 151 12345678"]) | FORM_TEXT
NAMES = st.sampled_from(["Anna", "Team 1"]) | FORM_TEXT | INTS
ZENDESK = st.fixed_dictionaries(
    {
        "ticket": st.fixed_dictionaries(
            {"id": FORM_TEXT | INTS, "status": st.sampled_from(["solved", "Gelöst", "open"]) | FORM_TEXT},
            optional={
                "requester": optional(
                    name=NAMES, phone=PHONE, locale=st.sampled_from(["de", "English"]) | FORM_TEXT
                ),
                "assignee": optional(name=NAMES),
                "group": optional(name=NAMES),
            },
        )
    }
)
FRESHDESK = st.fixed_dictionaries(
    {
        "freshdesk_webhook": st.fixed_dictionaries(
            {
                "ticket_id": FORM_TEXT | INTS,
                "ticket_status": st.sampled_from(["Resolved", "Open"]) | FORM_TEXT,
            },
            optional={
                "ticket_contact_mobile": PHONE,
                "ticket_contact_phone": PHONE,
                "ticket_agent_name": NAMES,
                "ticket_group_name": NAMES,
                "ticket_contact_language": FORM_TEXT,
                "ticket_contact_name": NAMES,
            },
        )
    }
)
GENERIC = st.fixed_dictionaries(
    {"data": optional(ticket=optional(id=FORM_TEXT | INTS), customer=optional(phone=PHONE), agent=NAMES)}
)
HOOKS = [("zendesk", ZENDESK), ("freshdesk", FRESHDESK), ("generic", GENERIC)]


@FUZZ
@given(
    target=st.sampled_from(HOOKS).flatmap(
        lambda hook: st.tuples(st.just(hook[0]), st.one_of(hook[1], hook[1].flatmap(mangled), JSON))
    )
)
async def test_hooks_never_fail(
    fuzz: Fuzz, no_errors: pytest.LogCaptureFixture, target: tuple[str, Any]
) -> None:
    """Each helpdesk hook with any payload, with the secret: 2xx or 4xx, never 5xx."""
    source, payload = target
    await fuzz.send(
        "POST",
        f"/hooks/{source}",
        content=json.dumps(payload).encode(),
        headers={"X-Afterword-Secret": HOOK_SECRET, "Content-Type": "application/json"},
    )
    assert_nothing_logged(no_errors)


# --- Twilio -------------------------------------------------------------------------------------

SID = st.one_of(st.builds(lambda n: f"SM{n:032x}", st.integers(0, 2**128 - 1)), FORM_TEXT)
TWILIO_FORM = optional(
    From=st.sampled_from([CUSTOMER, "whatsapp:" + CUSTOMER]) | FORM_TEXT,
    To=st.sampled_from([CUSTOMER, SENDER]) | FORM_TEXT,
    Body=FORM_TEXT,
    MessageSid=SID,
    CallSid=SID,
    AccountSid=SID,
    MessageStatus=st.sampled_from(["delivered", "failed", "undelivered"]) | FORM_TEXT,
    ErrorCode=st.sampled_from(["21610", "30003"]) | FORM_TEXT,
    CallStatus=st.sampled_from(["completed", "busy", "in-progress"]) | FORM_TEXT,
    AnsweredBy=st.sampled_from(["human", "machine_start"]) | FORM_TEXT,
    Digits=st.sampled_from(["1", "5#", "10"]) | FORM_TEXT,
    SpeechResult=FORM_TEXT,
).flatmap(
    lambda form: st.dictionaries(FORM_TEXT.filter(lambda k: k not in form), FORM_TEXT, max_size=3).map(
        lambda more: {**form, **more}
    )
)
SURVEY = st.one_of(st.just("{survey}"), QUERY)
TWILIO_PATHS = st.one_of(
    st.tuples(st.just("/twilio/sms"), optional(survey=SURVEY)),
    st.tuples(st.just("/twilio/status"), optional(survey=SURVEY)),
    st.tuples(st.just("/twilio/voice"), optional(survey=SURVEY)),
    st.tuples(st.just("/twilio/voice/status"), optional(survey=SURVEY)),
    st.tuples(
        st.just("/twilio/voice/answer"),
        optional(survey=SURVEY, q=st.sampled_from(["satisfaction", "comment"]) | QUERY, n=QUERY),
    ),
)


@FUZZ
@given(target=TWILIO_PATHS, form=TWILIO_FORM)
async def test_twilio_webhooks_never_fail(
    fuzz: Fuzz, no_errors: pytest.LogCaptureFixture, target: tuple[str, dict[str, str]], form: dict[str, str]
) -> None:
    """Every Twilio webhook, correctly signed, with any form and query: never a 5xx."""
    path, query = target
    query = {k: v.replace("{survey}", str(fuzz.sms_survey)) for k, v in query.items()}
    await fuzz.twilio(path, query, form)
    assert_nothing_logged(no_errors)


# --- Telegram ------------------------------------------------------------------------------------

UPDATE_ID = st.integers(1, 2**62) | INTS
MESSAGES = st.builds(
    lambda update_id, chat, text: message_update(update_id, chat, text, user_id=abs(chat) or 1),
    UPDATE_ID,
    st.one_of(st.just(CHAT), st.integers(-(2**63), 2**63 - 1)),
    JSON_TEXT.map(lambda t: t or "x")
    | st.sampled_from(["/start", "/skip", "/stop", "/report", "/survey"]).flatmap(
        lambda c: JSON_TEXT.map(lambda t: f"{c} {t}")
    ),
)
BUTTONS = st.builds(
    lambda update_id, chat, data: callback_update(update_id, chat, 1, data, user_id=chat),
    UPDATE_ID,
    st.just(CHAT) | st.integers(1, 2**40),
    st.one_of(
        st.builds(
            lambda s, q, v: f"a:{s}:{q}:{v}", INTS, st.sampled_from(["recommend", "reason"]) | JSON_TEXT, INTS
        ),
        JSON_TEXT,
    ),
)


@FUZZ
@given(
    update=st.one_of(MESSAGES, BUTTONS, (MESSAGES | BUTTONS).flatmap(mangled), JSON, st.binary(max_size=100))
)
async def test_telegram_webhook_never_fails(
    fuzz: Fuzz, no_errors: pytest.LogCaptureFixture, update: Any
) -> None:
    """The Telegram webhook with the secret and any body: 200 or 400, never a 5xx or a logged error."""
    content = update if isinstance(update, bytes) else json.dumps(update).encode()
    response = await fuzz.send(
        "POST", "/telegram/webhook", content=content, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET}
    )
    assert response.status_code in (200, 400), response.text
    assert_nothing_logged(no_errors)


# --- the web survey ------------------------------------------------------------------------------


@FUZZ
@given(
    token=st.one_of(st.just("{token}"), URL_TEXT),
    form=optional(
        question=st.sampled_from(["satisfaction", "resolution", "speed", "comment"]) | FORM_TEXT,
        choice=QUERY,
        text=FORM_TEXT,
        action=st.sampled_from(["skip"]) | FORM_TEXT,
    ),
)
async def test_web_survey_never_fails(
    fuzz: Fuzz, no_errors: pytest.LogCaptureFixture, token: str, form: dict[str, str]
) -> None:
    """GET and POST /s/{any token} with any form: never a 5xx."""
    path = "/s/" + quote(token.replace("{token}", fuzz.token), safe="")
    await fuzz.send("GET", path)
    await fuzz.send("POST", path, data=form)
    assert_nothing_logged(no_errors)


@FUZZ
@given(path=URL_TEXT, body=st.binary(max_size=200))
async def test_unknown_paths_and_bodies_never_fail(
    fuzz: Fuzz, no_errors: pytest.LogCaptureFixture, path: str, body: bytes
) -> None:
    """Any path with any body, without credentials: never a 5xx."""
    await fuzz.send("POST", "/" + quote(path, safe="/").lstrip("/"), content=body)
    assert_nothing_logged(no_errors)
