"""Sends are at most once: a send left mid-way is settled, never repeated, and the send rate
holds across processes. The scheduler runs in-process against the fake Twilio REST API, and
as `afterword worker` processes for the SIGKILL test."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url

from bot.apikeys import create_key
from bot.channels.base import Channel, Delivered, Outgoing
from bot.channels.sms import segments
from bot.phones import mask
from bot.scheduler import BATCH, Scheduler, batch_size, reserve_slot
from bot.service import Service, utc_now
from bot.store.db import Database
from bot.store.tables import jobs, surveys
from bot.triggers import SurveyRequest, trigger
from tests.bot.test_twilio import twilio_process_env, twilio_settings
from tests.cli import workers
from tests.fakes.twilio import FakeTwilioApi
from tests.support import BACKENDS, Clock, environment, running_app

CUSTOMER = "+4915112345678"
STOPPED = "sent, unconfirmed: worker stopped during the send"


@dataclass
class Sends:
    """The app's service and channels with Twilio on against the fake, and the test's clock."""

    service: Service
    channels: Mapping[str, Channel]
    fake: FakeTwilioApi
    clock: Clock
    client: httpx.AsyncClient

    async def delivery(self, survey_id: int) -> Any:
        """What GET /api/surveys/{id} says of the survey's send."""
        key = await create_key(self.service.db, f"reader-{survey_id}", now=self.clock())
        shown = await self.client.get(f"/api/surveys/{survey_id}", headers={"Authorization": f"Bearer {key}"})
        return shown.json()["delivery"]

    async def survey(self, number: str = CUSTOMER, ticket: str = "T-1") -> int:
        """A due SMS survey, as the API makes it."""
        request = SurveyRequest(ticket_id=ticket, channel="sms", to=number)
        made = await trigger(self.service, request, channels=self.channels, link_for=lambda *_: None)
        assert made.survey_id is not None
        return made.survey_id

    async def tick(self, **advance: float) -> int:
        """Move the clock, then run one scheduler pass."""
        if advance:
            self.clock.advance(**advance)
        return await Scheduler(self.service, self.channels, worker="test").run_once()

    async def job(self, kind: str = "send") -> Any:
        async with self.service.db.read() as conn:
            query = sa.select(jobs).where(jobs.c.kind == kind).order_by(jobs.c.id)
            return (await conn.execute(query)).one()

    async def kinds(self) -> list[str]:
        async with self.service.db.read() as conn:
            return sorted((await conn.execute(sa.select(jobs.c.kind))).scalars())

    async def sent_at(self, survey_id: int) -> Any:
        async with self.service.db.read() as conn:
            query = sa.select(surveys.c.sent_at).where(surveys.c.id == survey_id)
            return (await conn.execute(query)).scalar_one()


@pytest.fixture
async def sends(service: Service, fake_twilio: FakeTwilioApi, clock: Clock) -> AsyncIterator[Sends]:
    """SMS on against the fake Twilio, at a rate that never makes a test wait."""
    settings = {**twilio_settings(fake_twilio), "send_rate_sms": 1000}
    async with running_app(service, clock, **settings) as (app, client, svc):
        yield Sends(svc, app.state.channels, fake_twilio, clock, client)


class StopsAfterSending(Channel):
    """The real SMS channel, then a worker that never comes back: as if it died once Twilio took the send."""

    name: ClassVar[str] = "sms"

    def __init__(self, real: Channel) -> None:
        self.real = real
        self.sent = asyncio.Event()

    async def deliver(self, outgoing: Outgoing) -> Delivered:
        await self.real.deliver(outgoing)
        self.sent.set()
        await asyncio.Event().wait()  # until the test cancels the pass
        return Delivered()


async def test_send_left_mid_way_is_settled_as_unconfirmed_and_not_sent_again(
    sends: Sends, caplog: pytest.LogCaptureFixture
) -> None:
    """A send whose worker stopped mid-way stays `sending`; after its lease it is done, unconfirmed, not re-sent."""
    survey_id = await sends.survey()
    started = sends.clock()
    stops = StopsAfterSending(sends.channels["sms"])
    dying = asyncio.create_task(Scheduler(sends.service, {"sms": stops}, worker="dies").run_once())
    await asyncio.wait_for(stops.sent.wait(), 30)
    dying.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await dying
    delivered = [m.sid for m in sends.fake.messages()]
    await sends.tick(minutes=1)  # the lease (2 min) still runs: nobody touches the job
    assert ("sending", 1) == ((await sends.job()).status, len(delivered))

    caplog.set_level(logging.WARNING, logger="bot.scheduler")
    await sends.tick(minutes=2)
    job = await sends.job()
    assert (delivered, "done", STOPPED) == (
        [m.sid for m in sends.fake.messages()],
        job.status,
        job.result["outcome"],
    )
    assert (started, ["expire", "reminder", "send"]) == (await sends.sent_at(survey_id), await sends.kinds())
    assert {"outcome": STOPPED, "provider_id": None, "reason": None} == await sends.delivery(survey_id)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [(True, True, False)] == [
        (f"job {job.id} (send): survey {survey_id} by sms" in m, mask(CUSTOMER) in m, CUSTOMER in m)
        for m in warned
    ]


# A database trigger that refuses to record sent_at: the step after a successful delivery fails
# for a real reason, in the database, not by replacing any of our functions.
REFUSE_SENT_AT = {
    "sqlite": [
        "CREATE TRIGGER refuse_sent_at BEFORE UPDATE OF sent_at ON surveys "
        "BEGIN SELECT RAISE(ABORT, 'sent_at refused by the test'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION refuse_sent_at() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'sent_at refused by the test'; END $$",
        "CREATE TRIGGER refuse_sent_at BEFORE UPDATE OF sent_at ON surveys "
        "FOR EACH ROW EXECUTE FUNCTION refuse_sent_at()",
    ],
}
ALLOW_SENT_AT = {
    "sqlite": ["DROP TRIGGER refuse_sent_at"],
    "postgresql": ["DROP TRIGGER refuse_sent_at ON surveys", "DROP FUNCTION refuse_sent_at()"],
}


async def _execute(db: Database, statements: list[str]) -> None:
    def execute(conn: Connection) -> None:
        for statement in statements:
            conn.exec_driver_sql(statement)

    await db.transact(execute)


async def test_error_after_delivery_never_sends_again(sends: Sends) -> None:
    """A send whose recording failed stays `sending`: later passes send nothing, and it is settled as unconfirmed."""
    db = sends.service.db
    survey_id = await sends.survey()
    await _execute(db, REFUSE_SENT_AT[db.dialect])
    await sends.tick()
    delivered = [m.sid for m in sends.fake.messages()]
    await sends.tick(seconds=30)
    await sends.tick(seconds=30)
    job = await sends.job()
    assert ("sending", 1, delivered) == (job.status, len(delivered), [m.sid for m in sends.fake.messages()])
    assert job.last_error.startswith(f"delivered ({','.join(delivered)}), not recorded: ")

    await _execute(db, ALLOW_SENT_AT[db.dialect])
    await sends.tick(minutes=2)
    job = await sends.job()
    assert (delivered, "done", True) == (
        [m.sid for m in sends.fake.messages()],
        job.status,
        job.result["outcome"].startswith("sent, unconfirmed: delivered ("),
    )
    assert await sends.sent_at(survey_id) is not None


async def test_recorded_send_keeps_the_provider_ids(sends: Sends) -> None:
    """A send is recorded with the SIDs of the messages Twilio created, and queues its expiry and reminder."""
    survey_id = await sends.survey()
    await sends.tick()
    job = await sends.job()
    sids = [m.sid for m in sends.fake.messages()]
    assert ("done", "sent", ",".join(sids), 1) == (
        job.status,
        job.result["outcome"],
        job.result["provider_id"],
        len(sids),
    )
    assert (sends.clock(), ["expire", "reminder", "send"]) == (
        await sends.sent_at(survey_id),
        await sends.kinds(),
    )
    assert {"outcome": "sent", "provider_id": ",".join(sids), "reason": None} == await sends.delivery(
        survey_id
    )


async def test_two_schedulers_racing_for_one_job_send_it_once(sends: Sends) -> None:
    """A worker whose claim ran out while it waited for its slot loses the job to the one that claimed it again."""
    await sends.survey()
    slow = replace(sends.service, settings=sends.service.settings.model_copy(update={"send_rate_sms": 1}))
    await reserve_slot(slow.db, "twilio-messages", 1)  # the first worker's slot is a second away
    first = asyncio.create_task(Scheduler(slow, sends.channels, worker="first").run_once())
    while (await sends.job()).attempts == 0:  # until the first worker claimed it
        assert not first.done(), first.result()
        await asyncio.sleep(0.01)
    later = replace(slow, clock=Clock(sends.clock() + timedelta(minutes=3)))  # its lease has run out by then
    await Scheduler(later, sends.channels, worker="second").run_once()
    await first
    job = await sends.job()
    sids = sorted(m.sid for m in sends.fake.messages())
    assert ("done", "second", 1, sids) == (
        job.status,
        job.result["worker"],
        len(sids),
        sorted(job.result["provider_id"].split(",")),
    )


async def test_send_that_could_not_connect_is_tried_again(service: Service, clock: Clock) -> None:
    """A refused connection sent nothing, so the send is put back to try later, not settled."""
    with FakeTwilioApi() as fake:
        gone = fake.base_url
    settings = {**twilio_settings(fake), "twilio_api_base_url": gone, "send_rate_sms": 1000}
    async with running_app(service, clock, **settings) as (app, client, svc):
        h = Sends(svc, app.state.channels, fake, clock, client)
        await h.survey()
        await h.tick()
        job = await h.job()
    assert ("pending", 1, None, True) == (
        job.status,
        job.attempts,
        job.locked_until,
        job.due_at > clock(),
    )


async def test_slots_are_spaced_by_the_rate_across_connections(db_url: str) -> None:
    """Two connections taking turns get slots exactly 1/rate apart; another provider's slots are its own."""
    first, second = Database(make_url(db_url)), Database(make_url(db_url))
    try:
        before = time.time()
        slots = []
        for i in range(6):
            slots.append(await reserve_slot((first, second)[i % 2], "twilio-messages", 0.5))
        other = await reserve_slot(second, "telegram", 0.5)
    finally:
        await first.dispose()
        await second.dispose()
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(slots)]
    assert ([2.0] * 5, True, True) == (gaps, slots[0] >= before, other < slots[1])


async def test_a_send_takes_a_slot_per_sms_segment(sends: Sends) -> None:
    """SEND_RATE_SMS counts segments, as Twilio's pace does: the intro and question go as one message of
    two segments here, so the next slot is two intervals after the send's."""
    await sends.survey()
    one_per_second = replace(
        sends.service, settings=sends.service.settings.model_copy(update={"send_rate_sms": 1})
    )
    before = time.time()
    await Scheduler(one_per_second, sends.channels, worker="test").run_once()  # the first slot: no wait
    after = time.time()
    following = await reserve_slot(sends.service.db, "twilio-messages", 1)
    [message] = sends.fake.messages()
    parts, _ = segments(message.params["Body"])
    assert (2, True) == (parts, before + parts <= following <= after + parts)


@pytest.mark.parametrize(
    ("slowest", "expected"), [(None, BATCH), (2.0, BATCH), (1.0, 30), (0.25, 7), (0.1, 3), (0.001, 1)]
)
def test_batch_fits_half_a_lease_at_the_slowest_rate(slowest: float | None, expected: int) -> None:
    """A pass claims what the slowest rate sends in half a lease (a minute) at 2 messages a send, 1 to BATCH."""
    assert expected == batch_size(slowest)


# --- processes ----------------------------------------------------------------------------

SURVEYS = 500


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("db_url", [BACKENDS[1]], indirect=True)
async def test_a_worker_killed_mid_run_sends_nothing_twice(
    service: Service, fake_twilio: FakeTwilioApi, tmp_path: Path
) -> None:
    """Two workers share 500 due surveys, one is SIGKILLed, a later pass finishes: no number gets a survey twice.

    The other worker is stopped (SIGTERM) at the same moment. The later pass runs in-process
    with a clock 3 minutes ahead, where the workers' leases have run out, instead of waiting
    2 real minutes for them.
    """
    numbers = [f"+49151{30_000_000 + i}" for i in range(SURVEYS)]
    for i, number in enumerate(numbers):
        request = SurveyRequest(ticket_id=f"K-{i}", channel="sms", to=number)
        await trigger(service, request, channels={"sms": object()}, link_for=lambda *_: None)
    env = twilio_process_env(
        environment(service.settings.database_url), fake_twilio, SEND_RATE_SMS="40", LOG_LEVEL="WARNING"
    )
    async with workers(2, env, tmp_path) as (started, logs):
        deadline = time.monotonic() + 60
        while len(fake_twilio.messages()) < SURVEYS // 4:  # about a quarter of the surveys (one message each)
            assert time.monotonic() < deadline, [log.read_text() for log in logs]
            assert all(w.returncode is None for w in started), [log.read_text() for log in logs]
            await asyncio.sleep(0.05)
        started[0].send_signal(signal.SIGKILL)
        started[1].send_signal(signal.SIGTERM)

    later = Clock(utc_now() + timedelta(minutes=3))
    settings = {**twilio_settings(fake_twilio), "send_rate_sms": 1000, "quiet_hours": "off"}
    async with running_app(service, later, **settings) as (app, _client, svc):
        for _ in range(2 * SURVEYS // BATCH):  # bounded: a pass that leaves work undone fails below
            await Scheduler(svc, app.state.channels, worker="later").run_once()
            if not await _unsettled(service):
                break

    per_number = Counter(m.params["To"] for m in fake_twilio.messages())
    async with service.db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(jobs.c.status, jobs.c.result, surveys.c.sent_at, surveys.c.id)
                .join(surveys, surveys.c.id == jobs.c.survey_id)
                .where(jobs.c.kind == "send")
            )
        ).all()
    sids = {m.sid: m.params["To"] for m in fake_twilio.messages()}
    outcomes = Counter(row.result["outcome"].split(":")[0] for row in rows)
    assert (SURVEYS, {"done"}, True) == (
        len(rows),
        {row.status for row in rows},
        max(per_number.values()) <= 1,
    )
    assert set(outcomes) <= {"sent", "sent, unconfirmed"}, outcomes
    assert all(row.sent_at is not None for row in rows)
    for row in rows:  # a confirmed send is the only message that number got
        if row.result["outcome"] == "sent":
            numbers_sent = {sids[sid] for sid in row.result["provider_id"].split(",")}
            assert (1, 1) == (len(numbers_sent), per_number[numbers_sent.pop()]), row


async def _unsettled(service: Service) -> int:
    async with service.db.read() as conn:
        query = sa.select(sa.func.count()).where(jobs.c.kind == "send", jobs.c.status != "done")
        return int((await conn.execute(query)).scalar_one())
