"""No secret in the logs: whole Telegram and SMS surveys logged at DEBUG by every library, and
nothing in the output that would let a reader use the bot, Twilio, a survey link or a number."""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from bot.apikeys import create_key
from bot.logs import install_logging, library_levels, redact
from bot.service import Service
from bot.settings import Settings, load_settings
from bot.store.tables import inbound_events, surveys
from bot.web.auth import set_web_login
from tests.bot.test_telegram import CUSTOMER as CHAT
from tests.bot.test_telegram import LINK, Harness, survey_for
from tests.bot.test_telegram import tg as tg  # the fixture, shared with test_telegram.py
from tests.bot.test_twilio import CUSTOMER as PHONE
from tests.bot.test_twilio import Harness as TwilioHarness
from tests.bot.test_twilio import tw as tw  # the fixture, shared with test_twilio.py
from tests.fakes.telegram import FakeBotApi
from tests.support import Clock, running_app

# A token of the real shape (<bot id>:<35 characters>), so the generic pattern is exercised too.
BOT_TOKEN = "7012345678:AAH4xQ9vK2mZp0Lr8sT3uW6yB1cD5eF7gHj"
MASKED_PHONE = "+49151****678"
LIBRARIES = ("telegram", "httpx", "httpcore", "uvicorn", "uvicorn.access", "uvicorn.error", "twilio", "bot")


@pytest.fixture
def fake_telegram() -> Iterator[FakeBotApi]:
    """The fake Bot API, answering to a token shaped like a real one."""
    fake = FakeBotApi(token=BOT_TOKEN)
    fake.start()
    yield fake
    fake.stop(wait=False)


@pytest.fixture
def log() -> Iterator[io.StringIO]:
    """What the product's logging set-up writes, at DEBUG, with every library logger on.

    The settings are given again when the test knows its secrets; the root logger's level
    and handlers are put back afterwards.
    """
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    uvicorn = {name: list(logging.getLogger(name).handlers) for name in ("uvicorn", "uvicorn.access")}
    levels = {name: logging.getLogger(name).level for name in LIBRARIES}
    for name in LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG)
    out = io.StringIO()
    yield out
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    for name, handlers in uvicorn.items():
        logging.getLogger(name).handlers[:] = handlers


def logging_for(settings: Settings, out: io.StringIO) -> None:
    """The product's set-up at DEBUG for ``settings``, writing to ``out``."""
    install_logging(settings.model_copy(update={"log_level": "DEBUG"}), stream=out)


async def all_tokens(service: Service) -> list[str]:
    async with service.db.read() as conn:
        return list((await conn.execute(sa.select(surveys.c.token))).scalars())


async def test_whole_telegram_survey_logs_no_token(tg: Harness, log: io.StringIO) -> None:
    """A deep-linked and a pushed Telegram survey log neither the bot token nor a survey token, nor
    python-telegram-bot's DEBUG lines with the customer's chat id, name and text."""
    logging_for(tg.service.settings, log)
    await tg.say(222, "/survey T-9", first_name="Anna", user_id=222)
    match = LINK.search(tg.to_chat(222)[-1].params["text"])
    assert match is not None
    await tg.say(CHAT, f"/start {match.group(1)}", language_code="en")
    for value in (1, 2, 1):
        await tg.tap(CHAT, value, language_code="en")
    await tg.say(CHAT, "Thanks, all good", language_code="en")
    await survey_for(tg, chat=CHAT + 1)
    for text in ("2", "1", "2", "fine"):
        await tg.say(CHAT + 1, text)

    text = log.getvalue()
    tokens = await all_tokens(tg.service)
    # httpx's INFO line names each call; python-telegram-bot's DEBUG lines (whole updates and
    # calls, with chat ids, names and texts) stay out even at DEBUG (bot.logs.PERSONAL_LOGGERS).
    assert (2, True, False) == (len(tokens), "sendMessage" in text, "Calling Bot API endpoint" in text)
    assert [] == [t for t in (BOT_TOKEN, BOT_TOKEN.split(":")[1], *tokens) if t in text]


async def test_whole_sms_survey_logs_no_secret_and_masks_the_number(
    tw: TwilioHarness, log: io.StringIO
) -> None:
    """An SMS survey through the signed webhook logs the number masked and no auth token or survey token."""
    logging_for(tw.service.settings, log)
    await tw.start("sms")
    for text in ("2", "eins", "2 - ging so", "Sehr nett"):
        await tw.sms(text)
    token = (await all_tokens(tw.service))[0]

    text = log.getvalue()
    assert (True, True) == ("/twilio/sms" in text, MASKED_PHONE in text)
    assert [] == [s for s in (PHONE, PHONE[1:], tw.fake.auth_token, token) if s in text]


def test_exception_with_the_token_is_logged_redacted(log: io.StringIO) -> None:
    """A traceback whose message holds the bot token, a survey link and a number is logged without them."""
    settings = load_settings(_env_file=None, flows_dir=[], telegram_bot_token="123:short-but-secret")
    logging_for(settings, log)
    try:
        raise RuntimeError(f"POST /bot123:short-but-secret/getMe for {PHONE} at /s/AbCdEfGhIjKlMnOpQrStUv")
    except RuntimeError:
        logging.getLogger("telegram.ext").exception("failed with %s", "123:short-but-secret")

    text = log.getvalue()
    assert (False, False, False) == ("short-but-secret" in text, PHONE in text, "AbCdEf" in text)
    assert re.search(r"RuntimeError: POST /bot\[secret\]/getMe for \+49151\*\*\*\*678 at /s/…", text), text


def test_uvicorn_access_log_hides_the_survey_token(
    log: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    """uvicorn's access log, set up as `serve` sets it up, shows /s/… for a survey page."""
    import uvicorn

    uvicorn.Config(lambda: None, log_level="debug")  # configures uvicorn's loggers, as in `serve`
    logging_for(load_settings(_env_file=None, flows_dir=[]), log)
    access = logging.getLogger("uvicorn.access")
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/s/AbCdEfGhIjKlMnOpQrStUv", "1.1", 200)
    assert '127.0.0.1:5000 - "GET /s/… HTTP/1.1" 200' in capsys.readouterr().out


def test_redact_finds_any_bot_token_and_survey_link() -> None:
    """Without settings, a bot token of Telegram's shape, survey links and numbers are still removed."""
    assert (
        "GET https://api.telegram.org/bot[secret]/getMe https://t.me/x?start=… /s/… +49151****678"
        == redact(
            f"GET https://api.telegram.org/{'bot' + BOT_TOKEN}/getMe https://t.me/x?start=Ab_1-c /s/Zz9 {PHONE}"
        )
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_api_key_and_passwords_are_not_logged(service: Service, clock: Clock, log: io.StringIO) -> None:
    """An API call with its key, dashboard logins (a wrong and a right password) at DEBUG log none of them."""
    password, wrong = "correct horse battery", "a wrong horse battery"
    async with running_app(service, clock, public_base_url="http://testserver") as (_, client, svc):
        logging_for(svc.settings, log)
        key = await create_key(svc.db, "helpdesk", now=clock())
        made = await client.post(
            "/api/surveys",
            json={"ticket_id": "T-1", "channel": "web", "language": "en"},
            headers={"Authorization": f"Bearer {key}"},
        )
        await set_web_login(svc.db, login="anna", password=password, role="manager", name=None, now=clock())
        for guess in (wrong, password):
            page = (await client.get("/dashboard/login")).text
            csrf = re.search(r'name="csrf" value="([^"]+)"', page)
            assert csrf is not None
            await client.post(
                "/dashboard/login", data={"csrf": csrf.group(1), "login": "anna", "password": guess}
            )
        logging.getLogger("bot").debug("headers: Authorization: Bearer %s; key %s", key, key)
    text = log.getvalue()
    assert (201, True) == (made.status_code, "/api/surveys" in text)
    assert [] == [s for s in (key, key[3:], password, wrong) if s in text]


def test_database_password_is_redacted(log: io.StringIO) -> None:
    """A DATABASE_URL's password in a message (a driver's error, say) is logged as [secret]."""
    url = "postgresql+asyncpg://afterword:pg-s3cret-pass@db.internal:5432/afterword"
    logging_for(load_settings(_env_file=None, flows_dir=[], database_url=url), log)
    logging.getLogger("bot").error("cannot connect to %s", url)
    assert ("pg-s3cret-pass" in log.getvalue(), "afterword:[secret]@db.internal" in log.getvalue()) == (
        False,
        True,
    )


async def test_a_database_error_carries_no_value_of_its_statement(service: Service, clock: Clock) -> None:
    """A failed statement's error, which is logged with its traceback, names none of its values
    (a survey token, a number, a comment): the engines hide parameters."""
    secret = "token-never-in-an-error-4711"
    event = sa.insert(inbound_events).values(provider="twilio", event_id=secret, received_at=clock())
    await service.db.run(event)
    with pytest.raises(sa.exc.IntegrityError) as refused:
        await service.db.run(event)  # the same event again: the unique constraint refuses it
    assert (secret in str(refused.value), "hidden" in str(refused.value)) == (False, True)


@pytest.mark.parametrize(
    ("level", "twilio", "telegram", "database"),
    [
        ("INFO", "WARNING", "INFO", "WARNING"),
        ("DEBUG", "DEBUG", "INFO", "WARNING"),
        ("ERROR", "ERROR", "ERROR", "ERROR"),
    ],
)
def test_library_loggers_keep_their_floor(level: str, twilio: str, telegram: str, database: str) -> None:
    """twilio's ten INFO lines per REST call only at DEBUG; python-telegram-bot never below INFO (whole
    updates); the database libraries never below WARNING (query parameters)."""
    library_levels(logging.getLevelName(level))
    found = [
        logging.getLevelName(logging.getLogger(name).level)
        for name in (
            "twilio.async_http_client",
            "twilio.http_client",
            "telegram",
            "aiosqlite",
            "sqlalchemy.engine",
        )
    ]
    library_levels(logging.WARNING)
    assert [twilio, twilio, telegram, database, database] == found
