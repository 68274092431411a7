"""Shared fixtures: a migrated database on SQLite and, where configured, on PostgreSQL."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings

from bot.logs import DATABASE_LOGGERS
from bot.service import Service
from bot.settings import Settings, load_settings
from bot.store.db import Database
from flows.loader import load_flows
from tests.databases import PostgresTemplate, SqliteTemplate
from tests.fakes.telegram import FakeBotApi
from tests.fakes.twilio import FakeTwilioApi
from tests.support import BACKENDS, PG_URL, Clock, environment

# Hypothesis: `dev` (the default, and `make test-fast`) tries few examples for a quick edit
# loop; `ci` (`make test`, `--hypothesis-profile=ci`) tries many. Neither has a deadline or the
# too-slow health check: both measure the machine's speed, and a busy machine must not fail a test.
_UNTIMED = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
hypothesis_settings.register_profile("dev", max_examples=20, **_UNTIMED)  # type: ignore[arg-type]
hypothesis_settings.register_profile("ci", max_examples=300, **_UNTIMED)  # type: ignore[arg-type]
# `fuzz` (`make fuzz`): many more examples, for tests/bot/test_fuzz.py, which shares them among its routes.
hypothesis_settings.register_profile("fuzz", max_examples=5000, **_UNTIMED)  # type: ignore[arg-type]
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# The loggers that `install_logging` (run by an in-process `serve` or `worker`) changes.
_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", *DATABASE_LOGGERS)


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Each test ends with the loggers as it found them: a `serve` run in-process installs a
    root handler at LOG_LEVEL, which would print later tests' httpx lines into their stderr."""
    saved = {
        name: (logging.getLogger(name).level, list(logging.getLogger(name).handlers)) for name in _LOGGERS
    }
    yield
    for name, (level, handlers) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> SqliteTemplate:
    """A SQLite file migrated once for this test process."""
    return SqliteTemplate(tmp_path_factory.mktemp("template"))


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[PostgresTemplate]:
    """A PostgreSQL database migrated once for this test process; dropped with the others at the end."""
    if not PG_URL:
        pytest.skip("AFTERWORD_TEST_DATABASE_URL is not set (CI sets it; see .ci/run)")
    template = PostgresTemplate(PG_URL)
    yield template
    template.drop_all()


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database at the newest schema with no rows, on each backend in turn."""
    if request.param == "sqlite":
        template: SqliteTemplate = request.getfixturevalue("sqlite_template")
        return template.migrated(tmp_path)
    postgres: PostgresTemplate = request.getfixturevalue("postgres_template")
    return await postgres.migrated()


@pytest.fixture(params=BACKENDS)
async def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database without any table (a SQLite file not made yet), on each backend in turn."""
    if request.param == "sqlite":
        return SqliteTemplate.empty(tmp_path)
    postgres: PostgresTemplate = request.getfixturevalue("postgres_template")
    return await postgres.empty()


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Settings for a test: its own database, no `.env` read."""
    return load_settings(_env_file=None, database_url=db_url, flows_dir=[])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def service(settings: Settings, clock: Clock) -> AsyncIterator[Service]:
    """A migrated database, the built-in flows and a hand-moved clock."""
    svc = Service(settings=settings, db=Database(settings.database), flows=load_flows(), clock=clock)
    yield svc
    await svc.close()


@pytest.fixture
def cli_env(db_url: str) -> dict[str, str]:
    """Environment for running the `afterword` script against the test database."""
    return environment(db_url)


@pytest.fixture
def in_tmp_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The test runs in its own folder: no `.env` of the repository is read, files land there."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port something already listens on: a `serve` that wrongly got as far as binding fails, not hangs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port: int = sock.getsockname()[1]
        yield port


@pytest.fixture
def fake_telegram() -> Iterator[FakeBotApi]:
    """A fake Telegram Bot API on 127.0.0.1 that the real library talks to."""
    fake = FakeBotApi()
    fake.start()
    yield fake
    fake.stop(wait=False)


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilioApi]:
    """A fake Twilio REST API on 127.0.0.1 that the real twilio client talks to."""
    fake = FakeTwilioApi()
    fake.start()
    yield fake
    fake.stop(wait=False)
