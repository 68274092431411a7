"""Test doubles and helpers shared by the test modules."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from bot.service import Service
from bot.settings import load_settings
from bot.web.app import create_app

PG_URL = os.environ.get("AFTERWORD_TEST_DATABASE_URL")
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param(
        "postgresql",
        id="postgresql",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(
                not PG_URL, reason="AFTERWORD_TEST_DATABASE_URL is not set (CI sets it; see .ci/run)"
            ),
        ],
    ),
]


@dataclass
class Clock:
    """A clock the test moves by hand."""

    now: datetime = field(default_factory=lambda: datetime(2026, 11, 23, 10, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


def environment(url: str) -> dict[str, str]:
    """This process's environment with DATABASE_URL set to ``url``, no FLOWS_DIR of the caller's, and a
    neutral locale (the CLI's report follows LC_ALL/LC_MESSAGES/LANG; tests assert its English text)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "FLOWS_DIR", "LC_ALL", "LC_MESSAGES", "STAFF_LANGUAGE"))
    }
    env["DATABASE_URL"] = url
    env["LANG"] = "C.UTF-8"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@asynccontextmanager
async def running_app(
    base: Service, clock: Clock, **settings: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient, Service]]:
    """The web app over ``base``'s database with extra ``settings``, its lifespan run, and a client.

    The scheduler is left out: tests that need it run its passes themselves, with the clock.
    """
    configured = load_settings(
        _env_file=None, database_url=base.settings.database_url, flows_dir=[], **settings
    )
    service = Service(settings=configured, db=base.db, flows=base.flows, clock=clock)
    app = create_app(configured, service, scheduler=False)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        yield app, client, service


@asynccontextmanager
async def service_with_password(db_url: str, clock: Clock, password: str) -> AsyncIterator[Service]:
    """A service on ``db_url`` whose PostgreSQL URL carries ``password`` (trust auth ignores it), so
    a test can look for the password where it must never appear (logs, error messages)."""
    from sqlalchemy.engine import make_url

    from bot.store.db import Database
    from flows.loader import load_flows

    url = make_url(db_url)
    if url.get_backend_name() == "postgresql":
        url = url.set(password=password)
    settings = load_settings(
        _env_file=None, database_url=url.render_as_string(hide_password=False), flows_dir=[]
    )
    svc = Service(settings=settings, db=Database(settings.database), flows=load_flows(), clock=clock)
    try:
        yield svc
    finally:
        await svc.close()
