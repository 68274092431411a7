"""Nothing secret leaks: whole SMS and Telegram surveys with every logger at DEBUG (the database's
too, and SQLAlchemy's echo), settings' repr, configuration errors, /healthz; no alert without a sender.

tests/bot/test_log_secrets.py checks the redaction itself; here every library's logger, the
root at DEBUG and a handler that keeps every record as formatted, through the product's own
set-up (bot.logs.install_logging), against every secret a run holds at once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import sqlalchemy as sa

from bot.apikeys import create_key
from bot.errors import ConfigError
from bot.logs import install_logging
from bot.service import Service
from bot.settings import Settings, load_settings
from bot.store.db import Database
from bot.store.tables import jobs, surveys
from flows.loader import load_flows
from tests.bot.test_log_secrets import BOT_TOKEN
from tests.bot.test_log_secrets import fake_telegram as fake_telegram  # a token of the real shape
from tests.bot.test_telegram import CUSTOMER as CHAT
from tests.bot.test_telegram import LINK
from tests.bot.test_telegram import Harness as TelegramHarness
from tests.bot.test_telegram import tg as tg  # the fixture, shared with test_telegram.py
from tests.bot.test_twilio import CUSTOMER as PHONE
from tests.bot.test_twilio import Harness as TwilioHarness
from tests.bot.test_twilio import tw as tw  # the fixture, shared with test_twilio.py
from tests.support import Clock, running_app, service_with_password

DB_PASSWORD = "db-pw-never-logged-0815"
# Every logger a line can come from on the answer path, the database drivers' among them.
LOGGERS = (
    "bot",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
    "httpx",
    "httpcore",
    "telegram",
    "twilio",
    "sqlalchemy.engine",
    "sqlalchemy.pool",
    "aiosqlite",
    "asyncpg",
)


class Captured(logging.Handler):
    """Keeps every record it handles, as its formatter made it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture
async def service(db_url: str, clock: Clock) -> AsyncIterator[Service]:
    """The shared fixture's service, with a password in a PostgreSQL URL (trust auth ignores it)."""
    async with service_with_password(db_url, clock, DB_PASSWORD) as svc:
        yield svc


@pytest.fixture
def captured() -> Iterator[Captured]:
    """A handler on the root logger, every logger at DEBUG; levels and handlers put back afterwards."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    levels = {name: logging.getLogger(name).level for name in LOGGERS}
    uvicorn = {name: list(logging.getLogger(name).handlers) for name in LOGGERS if name.startswith("uvicorn")}
    root.setLevel(logging.DEBUG)
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG)
    handler = Captured()
    root.addHandler(handler)
    yield handler
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    for name, handlers in uvicorn.items():
        logging.getLogger(name).handlers[:] = handlers


def product_logging(settings: Settings) -> None:
    """install_logging at DEBUG over the captured handler, then SQLAlchemy's echo turned on.

    install_logging keeps the drivers at WARNING (their DEBUG lines are rows: tokens, numbers);
    statements at INFO, as `echo=True` logs them, are allowed: the engines hide their parameters.
    """
    install_logging(settings.model_copy(update={"log_level": "DEBUG"}))
    logging.getLogger("sqlalchemy.engine").setLevel(logging.INFO)


def leaks(text: str, *secrets: str) -> list[str]:
    """The secrets (each at least six characters long) found in ``text``."""
    assert all(len(secret) >= 6 for secret in secrets)
    return [secret for secret in secrets if secret in text]


async def survey_tokens(service: Service) -> list[str]:
    async with service.db.read() as conn:
        return list((await conn.execute(sa.select(surveys.c.token))).scalars())


async def test_whole_sms_survey_logs_nothing_secret(tw: TwilioHarness, captured: Captured) -> None:
    """An SMS survey, and an API call with a key, logged at DEBUG by every library (SQLAlchemy's
    statements too) hold no raw number, Twilio auth token, API key, survey token or database password."""
    product_logging(tw.service.settings)
    key = await create_key(tw.service.db, "helpdesk", now=tw.service.clock())
    made = await tw.client.post(
        "/api/surveys",
        json={"ticket_id": "T-9", "channel": "web", "language": "en"},
        headers={"Authorization": f"Bearer {key}"},
    )
    await tw.start("sms")
    for text in ("5", "eins", "2 - ging so", "Sehr unfreundlich"):
        await tw.sms(text)

    tokens = await survey_tokens(tw.service)
    text = captured.text
    assert (201, 2, True, True) == (made.status_code, len(tokens), "/twilio/sms" in text, "SELECT" in text)
    assert [] == leaks(text, PHONE, PHONE[1:], tw.fake.auth_token, key, key[3:], DB_PASSWORD, *tokens)


async def test_whole_telegram_survey_logs_nothing_secret(tg: TelegramHarness, captured: Captured) -> None:
    """A deep-linked Telegram survey with a detractor's alert, logged at DEBUG by every library,
    holds no bot token, survey token or database password."""
    product_logging(tg.service.settings)
    await tg.say(222, "/survey T-9", first_name="Anna", user_id=222)
    match = LINK.search(tg.to_chat(222)[-1].params["text"])
    assert match is not None
    await tg.say(CHAT, f"/start {match.group(1)}", language_code="en")
    for value in (5, 2, 1):  # 5 is the worst satisfaction: a detractor
        await tg.tap(CHAT, value, language_code="en")
    await tg.say(CHAT, "Nobody listened", language_code="en")
    await tg.wait(lambda: bool(tg.to_chat(-100777)))  # the detractor's alert went out

    tokens = await survey_tokens(tg.service)
    text = captured.text
    assert (1, True, True) == (len(tokens), "sendMessage" in text, "SELECT" in text)
    assert [] == leaks(text, BOT_TOKEN, BOT_TOKEN.split(":")[1], DB_PASSWORD, *tokens)


async def test_no_alert_is_queued_without_an_alert_chat(tw: TwilioHarness) -> None:
    """Without TELEGRAM_ALERT_CHAT_ID nobody sends alerts, so a detractor's answer queues none."""
    await tw.start("sms")
    for text in ("5", "5", "5", "Schlecht"):  # the worst of each: a detractor
        await tw.sms(text)
    async with tw.service.db.read() as conn:
        kinds = list((await conn.execute(sa.select(jobs.c.kind))).scalars())
    assert [] == [kind for kind in kinds if kind.startswith("alert")]


def test_settings_repr_and_str_hide_every_secret() -> None:
    """repr() and str() of the settings show the database URL without its password and no token."""
    secrets = {
        "database_url": f"postgresql+asyncpg://afterword:{DB_PASSWORD}@db.internal:5432/afterword",
        "telegram_bot_token": BOT_TOKEN,
        "telegram_webhook_secret": "webhook-secret-4711",
        "twilio_auth_token": "twilio-auth-token-4711",
        "hooks_secret": "hooks-secret-4711",
    }
    settings = load_settings(_env_file=None, flows_dir=[], **secrets)
    shown = repr(settings) + str(settings)
    assert [] == leaks(shown, DB_PASSWORD, *list(secrets.values())[1:])
    assert "postgresql+asyncpg://afterword:***@db.internal:5432/afterword" in repr(settings)
    assert secrets["database_url"] == settings.database_url  # the code that connects gets it whole


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+asyncpg://afterword:{DB_PASSWORD}@db.internal/",  # no database name
        f"postgresql+asyncpg://afterword:{DB_PASSWORD}@db.internal:port/afterword",  # unreadable
    ],
)
def test_a_bad_database_url_is_named_without_its_password(url: str) -> None:
    """The error for a DATABASE_URL that cannot be used names the key and the URL, not its password."""
    with pytest.raises(ConfigError) as refused:
        load_settings(_env_file=None, flows_dir=[], database_url=url)
    error = refused.value
    chain = f"{error} {error.__cause__} {error.__context__ if not error.__suppress_context__ else ''}"
    assert ("DATABASE_URL", [], True) == (
        error.key,
        leaks(chain, DB_PASSWORD),
        "afterword:***@" in str(error),
    )


async def test_healthz_of_an_unreachable_database_shows_no_password(clock: Clock, taken_port: int) -> None:
    """/healthz answers 503 naming the database without its password when it cannot be reached."""
    url = f"postgresql+asyncpg://afterword:{DB_PASSWORD}@127.0.0.1:{taken_port}/afterword"
    settings = load_settings(_env_file=None, database_url=url, flows_dir=[])
    base = Service(settings=settings, db=Database(settings.database), flows=load_flows(), clock=clock)
    try:
        async with running_app(base, clock) as (_, client, _svc):
            health = await client.get("/healthz")
    finally:
        await base.close()
    assert (503, "unavailable", []) == (
        health.status_code,
        health.json()["database"]["status"],
        leaks(health.text, DB_PASSWORD),
    )
