"""Several `afterword worker` processes against one PostgreSQL: every survey is sent exactly once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.service import Service
from bot.store.tables import jobs
from bot.triggers import SurveyRequest, trigger
from tests.bot.test_twilio import twilio_process_env
from tests.cli import workers
from tests.fakes.twilio import FakeTwilioApi
from tests.support import environment

SURVEYS = 1000


@pytest.mark.slow
async def test_two_workers_send_each_of_1000_due_surveys_exactly_once(
    service: Service, fake_twilio: FakeTwilioApi, tmp_path: Path
) -> None:
    """Two worker processes share 1,000 due surveys: each number gets its two messages once, and both worked."""
    if service.db.is_sqlite:
        pytest.skip("several workers need PostgreSQL; with SQLite Afterword runs as one process")
    numbers = [f"+49151{10_000_000 + i}" for i in range(SURVEYS)]
    for i, number in enumerate(numbers):
        request = SurveyRequest(ticket_id=f"T-{i}", channel="sms", to=number)
        await trigger(service, request, channels={"sms": object()}, link_for=lambda *_: None)

    env = twilio_process_env(
        environment(service.settings.database_url),
        fake_twilio,
        SEND_RATE_SMS="300",  # slow enough that one worker alone would take seconds: both get work
        LOG_LEVEL="WARNING",
    )
    async with workers(2, env, tmp_path) as (started, logs):
        # Until every send job is recorded done; the workers are stopped before counting, so
        # a second send of any survey would have reached the fake by then.
        deadline = time.monotonic() + 300
        while await _sends_done(service) < SURVEYS:
            assert time.monotonic() < deadline, f"{len(fake_twilio.messages())} sent; " + logs[0].read_text()
            assert all(w.returncode is None for w in started), [log.read_text() for log in logs]
            await asyncio.sleep(0.2)
    codes = [w.returncode for w in started]

    per_number = Counter(m.params["To"] for m in fake_twilio.messages())
    assert ({1}, SURVEYS) == (set(per_number.values()), len(per_number))  # one message each
    async with service.db.read() as conn:
        results = await conn.execute(
            sa.select(jobs.c.result).where(jobs.c.kind == "send", jobs.c.status == "done")
        )
        by_worker = Counter(result["worker"] for (result,) in results)
    assert (2, SURVEYS) == (len(by_worker), sum(by_worker.values())), by_worker
    assert [0, 0] == codes, [log.read_text() for log in logs]


async def _sends_done(service: Service) -> int:
    async with service.db.read() as conn:
        done = sa.select(sa.func.count()).where(jobs.c.kind == "send", jobs.c.status == "done")
        return int((await conn.execute(done)).scalar_one())
