"""Shared fixtures: a migrated database on SQLite and, where configured, on PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.db import Database
from bot.service import Service
from bot.settings import Settings, load_settings
from flows.loader import load_flows
from tests.fakes.telegram import FakeBotApi
from tests.fakes.twilio import FakeTwilioApi
from tests.support import BACKENDS, PG_URL, Clock, reset_postgres


@pytest.fixture(params=BACKENDS)
async def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database URL, on each backend in turn."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'afterword.db'}"
    if not PG_URL:
        pytest.skip("AFTERWORD_TEST_DATABASE_URL is not set (CI sets it; see .ci/run)")
    await reset_postgres(PG_URL)
    return PG_URL


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """Settings for a test: its own database, no `.env` read."""
    return load_settings(_env_file=None, database_url=db_url, flows_dir=[])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def service(settings: Settings, clock: Clock) -> AsyncIterator[Service]:
    """A migrated database, the built-in flows and a hand-moved clock."""
    db = Database(settings.database)
    await db.upgrade()
    svc = Service(settings=settings, db=db, flows=load_flows(), clock=clock)
    yield svc
    await svc.close()


@pytest.fixture
def cli_env(db_url: str) -> dict[str, str]:
    """Environment for running the `afterword` script against the test database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "FLOWS_DIR"))}
    env["DATABASE_URL"] = db_url
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def fake_telegram() -> Iterator[FakeBotApi]:
    """A fake Telegram Bot API on 127.0.0.1 that the real library talks to."""
    with FakeBotApi() as fake:
        yield fake


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilioApi]:
    """A fake Twilio REST API on 127.0.0.1 that the real twilio client talks to."""
    with FakeTwilioApi() as fake:
        yield fake
