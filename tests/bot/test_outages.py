"""Outages on the inbound path (issue 18): a webhook whose work failed answers 5xx, so the provider
sends it again, and the request sent again is processed exactly once, on SQLite and PostgreSQL.

The database is made really unavailable, not mocked: a PostgreSQL database refuses connections
(ALLOW_CONNECTIONS false, its sessions ended); a SQLite file is taken away, with a folder left in
its place that SQLite cannot open ("unable to open database file"), after every connection to it
was closed. Telegram and Twilio are the fakes at the HTTP boundary, talked to by the real clients.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from itertools import count

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

from bot.apikeys import create_key
from bot.errors import (
    AfterwordError,
    ApiKeyError,
    ChannelUnavailable,
    ConfigError,
    ContactOptedOut,
    DatabaseUnavailable,
    DeliveryFailed,
    ImportFailed,
    ImportFileUnreadable,
    InboundFailed,
    InputError,
    InvalidPhone,
    OpenSurveysFull,
    ReportError,
    SchemaOutdated,
    SurveyError,
    TriggerError,
)
from bot.scheduler import Scheduler
from bot.service import Service
from bot.store.db import Database, sqlite_path
from bot.store.tables import answers, inbound_events, jobs, surveys
from bot.surveys import NewSurvey, create_survey
from bot.web.app import RETRY_AFTER_SECONDS, install_error_handlers
from tests.bot.test_telegram import CUSTOMER as CHAT
from tests.bot.test_telegram import MANAGER, SECRET, button, survey_for, telegram_settings
from tests.bot.test_telegram import Harness as TelegramHarness
from tests.bot.test_twilio import CUSTOMER as PHONE
from tests.bot.test_twilio import Harness as TwilioHarness
from tests.bot.test_twilio import twilio_settings
from tests.fakes.telegram import FakeBotApi, callback_update, message_update
from tests.fakes.twilio import FakeTwilioApi
from tests.support import Clock, running_app, service_with_password

# Given in the PostgreSQL URL (the test server trusts local connections, so it is not checked):
# it must show up in no response and no log line of an outage.
DB_PASSWORD = "db-pw-never-shown-4711"
# A new contact refused, and taken back: (the statements that refuse, the ones that stop it).
REFUSE_CONTACTS = {
    "sqlite": (
        [
            "CREATE TRIGGER refuse_contacts BEFORE INSERT ON contacts BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        ],
        ["DROP TRIGGER refuse_contacts"],
    ),
    "postgresql": (
        [
            "CREATE FUNCTION refuse_write() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'disk full'; END $$",
            "CREATE TRIGGER refuse_contacts BEFORE INSERT ON contacts FOR EACH ROW EXECUTE FUNCTION refuse_write()",
        ],
        ["DROP TRIGGER refuse_contacts ON contacts", "DROP FUNCTION refuse_write()"],
    ),
}


@asynccontextmanager
async def database_down(db: Database) -> AsyncIterator[None]:
    """The database unavailable to ``db`` inside the block, as in a real outage, and back after it."""
    path = sqlite_path(db.url)
    if path is not None:
        # Close every connection first: an open one would go on using the file it has open.
        await db.dispose()
        # The file with its WAL and shared-memory files, if any were left.
        moved = [(p, p.with_name(p.name + ".aside")) for p in (path, *path.parent.glob(path.name + "-*"))]
        for source, target in moved:
            source.rename(target)
        path.mkdir()  # where the file was, something SQLite cannot open (nor make a new empty database at)
        try:
            yield
        finally:
            path.rmdir()
            for source, target in moved:
                target.rename(source)
        return
    name = db.url.database
    admin_url = db.url.set(drivername="postgresql", database="postgres", password=None)
    admin = await asyncpg.connect(admin_url.render_as_string(hide_password=False))
    try:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        yield
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()


@asynccontextmanager
async def contacts_refused(db: Database) -> AsyncIterator[None]:
    """A new contact refused by the database itself (a trigger standing in for a full disk).

    The database stays reachable all the while, so a handler's transactions before the refused
    one commit: an outage, which stops them all, cannot show that nothing was recorded early.
    """
    refuse, allow = REFUSE_CONTACTS[db.dialect]

    def run(conn: sa.Connection, statements: list[str]) -> None:
        for statement in statements:
            conn.exec_driver_sql(statement)

    await db.transact(run, refuse)
    try:
        yield
    finally:
        await db.transact(run, allow)


@pytest.fixture
async def service(db_url: str, clock: Clock) -> AsyncIterator[Service]:
    """The shared fixture's service, with a password in a PostgreSQL URL (see DB_PASSWORD)."""
    async with service_with_password(db_url, clock, DB_PASSWORD) as svc:
        yield svc


@pytest.fixture
async def tg(service: Service, fake_telegram: FakeBotApi, clock: Clock) -> AsyncIterator[TelegramHarness]:
    """The app with the Telegram bot against the fake; no alert chat, so nothing polls the database."""
    settings = {k: v for k, v in telegram_settings(fake_telegram).items() if k != "telegram_alert_chat_id"}
    async with running_app(service, clock, **settings) as (app, client, svc):
        yield TelegramHarness(app, client, fake_telegram, svc)


@pytest.fixture
async def tw(service: Service, fake_twilio: FakeTwilioApi, clock: Clock) -> AsyncIterator[TwilioHarness]:
    async with running_app(service, clock, **twilio_settings(fake_twilio)) as (app, client, svc):
        yield TwilioHarness(app, client, fake_twilio, svc, count(1))


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of ours and of the libraries on the path; the database password in none of them.

    Not the root logger: a fake server of an earlier test, still stopping, would log into this one.
    """
    for name in ("bot", "telegram", "httpx", "sqlalchemy", "asyncpg", "aiosqlite"):
        caplog.set_level(logging.DEBUG, logger=name)
    yield caplog
    assert DB_PASSWORD not in caplog.text


def assert_try_later(response: httpx.Response) -> None:
    """503 with Retry-After in the app's error shape, telling nothing of the database."""
    assert (503, str(RETRY_AFTER_SECONDS)) == (response.status_code, response.headers.get("Retry-After"))
    error = response.json()["error"]
    assert (None, True) == (error["field"], error["message"].startswith("the database is unavailable"))
    for hidden in (DB_PASSWORD, "postgresql", "sqlite", "afterword.db"):
        assert hidden not in response.text


async def answers_stored(service: Service) -> list[tuple[object, ...]]:
    async with service.db.read() as conn:
        query = sa.select(answers.c.question_id, answers.c.score, answers.c.text).order_by(answers.c.id)
        return [tuple(r) for r in await conn.execute(query)]


async def events(service: Service) -> list[str]:
    async with service.db.read() as conn:
        return list(await conn.scalars(sa.select(inbound_events.c.event_id).order_by(inbound_events.c.id)))


# --- Telegram -----------------------------------------------------------------------------


async def test_telegram_tap_during_an_outage_is_stored_once_when_redelivered(
    tg: TelegramHarness, logs: pytest.LogCaptureFixture
) -> None:
    """503 while the database is down; the same update after it is back stores the answer and asks
    the next question, and a third delivery stores nothing and asks it again (a provider sends an
    update again only when it did not get our reply)."""
    await survey_for(tg)
    call, message_id = tg.question(CHAT)
    update = callback_update(
        tg.update_id(), CHAT, message_id, button(call, 4), message_text=call.params["text"]
    )
    async with database_down(tg.service.db):
        with pytest.raises(DatabaseUnavailable):
            await tg.service.db.ping()
        failed = await tg.post(update)
    assert_try_later(failed)
    assert ([], 1) == (tg.fake.sent("answerCallbackQuery"), len(tg.to_chat(CHAT)))
    assert "POST /telegram/webhook answered 503: cannot reach the database" in logs.text

    for _ in range(2):
        assert 200 == (await tg.post(update)).status_code
    assert [("satisfaction", 4, None)] == await answers_stored(tg.service)
    sent = tg.to_chat(CHAT)
    assert 3 == len(sent)  # the first question, then the second, and the second again
    assert ["Konnte unser Kundenservice Ihr Problem lösen?"] * 2 == [
        c.params["text"].split("\n")[0] for c in sent[1:]
    ]
    assert [str(update["update_id"])] == await events(tg.service)


async def test_telegram_start_during_an_outage_opens_the_survey_when_redelivered(
    tg: TelegramHarness, logs: pytest.LogCaptureFixture
) -> None:
    """/start <token> that met a database outage answers 503; Telegram's next try opens the survey."""
    created = await create_survey(
        tg.service.db,
        tg.service.flows,
        NewSurvey("support-csat", "telegram", ticket="T-7"),
        now=tg.service.clock(),
        ttl=tg.service.survey_ttl,
    )
    update = message_update(tg.update_id(), CHAT, f"/start {created.token}", language_code="en")
    async with database_down(tg.service.db):
        assert_try_later(await tg.post(update))
    assert [] == tg.to_chat(CHAT)

    for _ in range(2):
        assert 200 == (await tg.post(update)).status_code
    sent = tg.to_chat(CHAT)
    assert 1 == len(sent)
    assert "How satisfied were you" in sent[0].params["text"]
    assert [str(update["update_id"])] == await events(tg.service)


async def test_telegram_start_whose_work_failed_is_done_when_redelivered(
    tg: TelegramHarness, logs: pytest.LogCaptureFixture
) -> None:
    """/start <token> whose transaction the database refused (reachable all the while) answers 500
    and records nothing, so the same update_id sent again opens the survey: the update is recorded
    with the work, not before it."""
    created = await create_survey(
        tg.service.db,
        tg.service.flows,
        NewSurvey("support-csat", "telegram", ticket="T-8"),
        now=tg.service.clock(),
        ttl=tg.service.survey_ttl,
    )
    update = message_update(tg.update_id(), CHAT, f"/start {created.token}", language_code="en")
    async with contacts_refused(tg.service.db):
        failed = await tg.post(update)
        assert ([], []) == (await events(tg.service), tg.to_chat(CHAT))
    assert 500 == failed.status_code
    assert {"field": None, "message": "the request failed on our side; try again later"} == failed.json()[
        "error"
    ]
    assert f"telegram event {update['update_id']} failed" in logs.text  # logged with its cause

    assert 200 == (await tg.post(update)).status_code
    async with tg.service.db.read() as conn:
        status = (await conn.execute(sa.select(surveys.c.status, surveys.c.contact_id))).one()
    assert ("active", True) == (status.status, status.contact_id is not None)
    assert 1 == len(tg.to_chat(CHAT))
    assert "How satisfied were you" in tg.to_chat(CHAT)[0].params["text"]
    assert [str(update["update_id"])] == await events(tg.service)


async def test_report_is_given_once_after_an_outage_and_after_a_failed_reply(
    tg: TelegramHarness, logs: pytest.LogCaptureFixture
) -> None:
    """/report only reads, so its update is recorded after the reply went out: an outage (503) or a
    Bot API that failed the reply (500) leaves no record, and Telegram's next try gets the report, once."""
    outage = message_update(tg.update_id(), MANAGER, "/report 7d", user_id=MANAGER, language_code="en")
    async with database_down(tg.service.db):
        assert_try_later(await tg.post(outage))
    tg.fake.fail_next("sendMessage", error_code=500)
    reply_failed = message_update(tg.update_id(), MANAGER, "/report 30d", user_id=MANAGER, language_code="en")
    assert 500 == (await tg.post(reply_failed)).status_code
    assert ([], []) == (tg.to_chat(MANAGER), await events(tg.service))

    for update in (outage, reply_failed, outage, reply_failed):
        assert 200 == (await tg.post(update)).status_code
    assert [
        "<b>Afterword report, last 7 days</b>",
        "<b>Afterword report, last 30 days</b>",
    ] == [c.params["text"].split(" (", 1)[0] for c in tg.to_chat(MANAGER)]
    assert sorted(str(u["update_id"]) for u in (outage, reply_failed)) == sorted(await events(tg.service))


async def test_telegram_webhook_still_refuses_what_is_not_an_update(tg: TelegramHarness) -> None:
    """A body Telegram's library cannot read is the sender's error (400), not ours (5xx)."""
    response = await tg.client.post(
        "/telegram/webhook",
        json={"update_id": 1, "message": {"message_id": 1}},  # no date, no chat
        headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
    )
    assert (400, "body") == (response.status_code, response.json()["error"]["field"])


# --- Twilio -------------------------------------------------------------------------------


async def test_sms_during_an_outage_is_stored_once_when_redelivered(
    tw: TwilioHarness, logs: pytest.LogCaptureFixture
) -> None:
    """503 (not an empty TwiML 200, not a traceback) while the database is down; the same MessageSid
    after it is back stores the answer and gets the next question; again, it stores nothing and
    gets the same question."""
    await tw.start("sms")
    reply = {"From": PHONE, "To": "+4930901820", "Body": "2", "MessageSid": "SM" + "7" * 32}
    async with database_down(tw.service.db):
        failed = await tw.post("/twilio/sms", reply)
    assert_try_later(failed)
    assert "POST /twilio/sms answered 503: cannot reach the database" in logs.text

    retried = await tw.post("/twilio/sms", reply)
    assert (200, "application/xml") == (retried.status_code, retried.headers["content-type"])
    questions = [m.text for m in ET.fromstring(retried.text).iter("Message")]
    assert [
        "Konnte unser Kundenservice Ihr Problem lösen?\n1 = Zu 100% ... 5 = Gar nicht gelöst"
    ] == questions
    again = await tw.post("/twilio/sms", reply)
    assert questions == [m.text for m in ET.fromstring(again.text).iter("Message")]
    assert [("satisfaction", 2, None)] == await answers_stored(tw.service)
    assert [reply["MessageSid"]] == await events(tw.service)


async def test_api_route_without_a_catch_answers_503_in_an_outage(
    tw: TwilioHarness, logs: pytest.LogCaptureFixture
) -> None:
    """GET /api/surveys/{id} catches no database error: the app's handler answers 503 for it."""
    key = await create_key(tw.service.db, "helpdesk", now=tw.service.clock())
    async with database_down(tw.service.db):
        response = await tw.client.get("/api/surveys/1", headers={"Authorization": f"Bearer {key}"})
    assert_try_later(response)
    assert key not in logs.text


# --- One handler per class of the error tree ------------------------------------------------


def _raising(error: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise error

    return app


_DB_URL = f"postgresql+asyncpg://afterword:{DB_PASSWORD}@db.internal/afterword"
_SHOWN_URL = make_url(_DB_URL).render_as_string(hide_password=True)


ERRORS: list[tuple[Exception, int, str | None]] = [
    (InputError("login", "use 1 to 64 letters"), 422, "login"),
    (ReportError("since", "'lastweek' is not a period"), 422, "since"),
    (TriggerError("to", "not a Telegram chat id"), 422, "to"),
    (ApiKeyError("name", "already taken"), 422, "name"),
    (OpenSurveysFull("sms", 3), 409, "to"),
    (InvalidPhone("12", "too short"), 422, None),
    (SurveyError("cannot be continued"), 422, None),
    (ContactOptedOut("sms", "+49151****678"), 409, None),
    (ImportFailed("answers.csv", ["row 2: no ticket"], 1), 422, None),
    (ImportFileUnreadable("answers.csv", "not UTF-8"), 422, None),
    (DatabaseUnavailable(_SHOWN_URL, "connection refused"), 503, None),
    (SchemaOutdated(_SHOWN_URL, "0010", "0011"), 503, None),
    (ChannelUnavailable("telegram", "cannot reach the Telegram Bot API"), 503, None),
    (DeliveryFailed("sms", 21211, "The 'To' number +4915112345678 is invalid", permanent=True), 502, None),
    (ConfigError("PUBLIC_BASE_URL", "not set"), 500, None),
    (InboundFailed("telegram", "42"), 500, None),
    (AfterwordError("something of ours"), 500, None),
    (
        OperationalError("SELECT * FROM surveys WHERE token = ?", ("tok-secret-123",), Exception("gone")),
        503,
        None,
    ),
    (IntegrityError("INSERT INTO answers", ("tok-secret-123",), Exception("UNIQUE failed")), 500, None),
    (RuntimeError("a bug"), 500, None),
]


@pytest.mark.parametrize(
    ("error", "status", "field"), ERRORS, ids=[type(error).__name__ for error, _, _ in ERRORS]
)
async def test_each_error_class_gets_its_status(
    error: Exception, status: int, field: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """A route that lets an error escape: 4xx says what was wrong, 5xx says nothing of the server;
    every one in the shape {"error": {"field", "message"}}, 503 with Retry-After."""
    caplog.set_level(logging.DEBUG, logger="bot")
    transport = httpx.ASGITransport(app=_raising(error), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/boom")
    body = response.json()
    assert (status, ["error"], field) == (response.status_code, list(body), body["error"]["field"])
    assert (status == 503) == ("Retry-After" in response.headers)
    if status < 500:
        assert body["error"]["message"] == getattr(error, "message", str(error))
    for hidden in (
        "db.internal",
        DB_PASSWORD,
        "+4915112345678",
        "tok-secret-123",
        "a bug",
        "PUBLIC_BASE_URL",
    ):
        assert hidden not in response.text
    for hidden in (DB_PASSWORD, "tok-secret-123"):
        assert hidden not in caplog.text


def test_every_class_of_the_error_tree_is_checked_above() -> None:
    """A new class of bot.errors gets its status on purpose: add it to ERRORS with the one it must have."""

    def tree(cls: type[Exception]) -> Iterator[type[Exception]]:
        yield cls
        for sub in cls.__subclasses__():
            yield from tree(sub)

    checked = {type(error) for error, _, _ in ERRORS}
    assert set() == {cls for cls in tree(AfterwordError) if cls.__module__ == "bot.errors"} - checked


# --- A reply lost after the answer was stored (issue 18: the next question is never lost) ----------


def _sent_to(tg: TelegramHarness) -> list[tuple[bool, str]]:
    return [
        (c.failed, c.params["text"])
        for c in tg.fake.calls_to("sendMessage")
        if c.params.get("chat_id") == CHAT
    ]


async def _pass(tg: TelegramHarness, **advance: float) -> int:
    tg.service.clock.advance(**advance)  # type: ignore[attr-defined]
    return await Scheduler(tg.service, tg.app.state.channels, worker="test").run_once()


async def test_tap_while_the_bot_api_fails_is_stored_once_and_the_next_question_follows(
    tg: TelegramHarness,
) -> None:
    """The Bot API fails the next question's send: the tap is stored with its outbox job, and the
    scheduler sends the next question once the grace has passed, with Telegram never sending the
    update again; a redelivery of the update anyway stores nothing more."""
    await survey_for(tg)
    call, message_id = tg.question(CHAT)
    update = callback_update(
        tg.update_id(), CHAT, message_id, button(call, 4), message_text=call.params["text"]
    )
    tg.fake.fail_next("sendMessage", error_code=502, description="Bad Gateway")
    first = await tg.post(update)
    assert (200, [("satisfaction", 4, None)]) == (first.status_code, await answers_stored(tg.service))
    assert (0, [False, True]) == (await _pass(tg, seconds=30), [failed for failed, _ in _sent_to(tg)])
    assert 1 == await _pass(tg, seconds=31)  # OUTBOX_GRACE has passed: the scheduler sends it
    sent = _sent_to(tg)
    assert [False, True, False] == [failed for failed, _ in sent]
    assert "Konnte unser Kundenservice Ihr Problem lösen?" in sent[2][1]
    assert (200, 3) == ((await tg.post(update)).status_code, len(_sent_to(tg)) - 1)
    assert [("satisfaction", 4, None)] == await answers_stored(tg.service)


async def test_reply_waits_out_a_longer_outage_and_is_sent_once(tg: TelegramHarness) -> None:
    """The Bot API down at the tap and at the scheduler's first try: the job is retried after its
    back-off and sent once; a reply sent at once leaves its job done and the scheduler sends nothing."""
    await survey_for(tg)
    call, message_id = tg.question(CHAT)
    tg.fake.fail_next("sendMessage", error_code=502, description="Bad Gateway", times=2)
    tap = callback_update(tg.update_id(), CHAT, message_id, button(call, 2), message_text=call.params["text"])
    assert 200 == (await tg.post(tap)).status_code
    await _pass(tg, seconds=61)  # the second failure: put back to try later
    assert [False, True, True] == [failed for failed, _ in _sent_to(tg)]
    await _pass(tg, seconds=10)  # after the first back-off (5 s)
    await _pass(tg, minutes=10)
    sent = _sent_to(tg)
    assert [False, True, True, False] == [failed for failed, _ in sent]
    assert "Konnte unser Kundenservice Ihr Problem lösen?" in sent[3][1]
    call, message_id = tg.question(CHAT)
    tap = callback_update(tg.update_id(), CHAT, message_id, button(call, 1), message_text=call.params["text"])
    assert 200 == (await tg.post(tap)).status_code
    await _pass(tg, minutes=5)
    async with tg.service.db.read() as conn:
        replies = (
            (await conn.execute(sa.select(jobs.c.status).where(jobs.c.kind == "reply").order_by(jobs.c.id)))
            .scalars()
            .all()
        )
    assert (["done", "done"], 5) == (list(replies), len(_sent_to(tg)))


async def test_last_sms_answer_sent_again_gets_the_thanks_again(tw: TwilioHarness) -> None:
    """The answer that completed the survey, sent again by Twilio: nothing stored twice, the thanks again."""
    await tw.start("sms")
    for text in ("2", "1", "2"):
        await tw.sms(text)
    last = "SM" + "9" * 32
    thanks = await tw.sms("Alles gut", sid=last)
    again = await tw.sms("Alles gut", sid=last)
    assert (1, thanks) == (len(thanks), again)
    assert 4 == len(await answers_stored(tw.service))
