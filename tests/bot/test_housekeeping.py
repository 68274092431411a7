"""Retention and housekeeping: RETENTION_DAYS_PII and RETENTION_DAYS_EVENTS, in batches, with the clock moved."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from bot import jobs as job_queue
from bot.errors import ConfigError
from bot.housekeeping import LOGINS, housekeeping, run_due
from bot.inbound import Inbound, handle
from bot.lifecycle import JobKind, JobStatus
from bot.privacy import prune
from bot.scheduler import Scheduler
from bot.service import Service
from bot.settings import load_settings
from bot.store.tables import (
    answers,
    contacts,
    erased_contacts,
    inbound_events,
    jobs,
    login_failures,
    surveys,
    web_sessions,
)
from bot.surveys import NewSurvey, create_survey
from bot.triggers import SurveyRequest, trigger
from bot.web.auth import log_in, set_web_login
from tests.cli import invoke
from tests.support import Clock

OLD, NEW, STOPPED = "+4915111111111", "+4915122222222", "+4915133333333"
PASSWORD = "correct horse battery staple"


async def _answered(service: Service, clock: Clock, phone: str, ticket: str, comment: str) -> None:
    """A CSAT survey to ``phone`` answered by SMS with a comment, each message with its MessageSid."""
    await create_survey(
        service.db,
        service.flows,
        NewSurvey("support-csat", "sms", phone, ticket=ticket, agent="anna", meta={"customer": "Kim"}),
        now=clock(),
        ttl=service.survey_ttl,
    )
    for n, text in enumerate(("2", "1", "2", comment)):
        sid = f"SM{ticket}{n}".ljust(34, "0")
        inbound = Inbound("sms", phone, clock(), text=text, provider="twilio", event_id=sid, keywords=True)
        assert (await handle(service.db, service.flows, inbound)).outcome in ("answered", "completed")


async def _rows(service: Service, *columns: Any) -> list[tuple[Any, ...]]:
    """The columns of every row of their table, in the order the rows were made."""
    async with service.db.read() as conn:
        order = columns[0].table.c.id
        return [tuple(row) for row in await conn.execute(sa.select(*columns).order_by(order))]


async def _count(service: Service, table: sa.Table) -> int:
    async with service.db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one())


async def _world(service: Service, clock: Clock) -> None:
    """368 days ago a survey answered, a login and a failure, a STOP; 28 days ago another survey."""
    await _answered(service, clock, OLD, "T-1", "Damals gut")
    stop = Inbound(
        "sms", STOPPED, clock(), text="STOP", provider="twilio", event_id="SM".ljust(34, "9"), keywords=True
    )
    assert "opted_out" == (await handle(service.db, service.flows, stop)).outcome
    await set_web_login(service.db, login="ana", password=PASSWORD, role="manager", name="Ana", now=clock())
    assert (await log_in(service.db, login="ana", password=PASSWORD, ip="203.0.113.5", now=clock())).ok
    assert not (await log_in(service.db, login="ana", password="wrong", ip="203.0.113.5", now=clock())).ok
    clock.advance(days=3)
    await Scheduler(service, {}, worker="test").run_once()  # the expiry job runs: a finished job
    clock.advance(days=337)
    await _answered(service, clock, NEW, "T-2", "Neulich gut")
    clock.advance(days=28)


async def test_retention_anonymises_old_pii_keeps_scores_and_prunes(service: Service, clock: Clock) -> None:
    """Past RETENTION_DAYS_PII (365) comments and addresses go, scores stay; past 30 days events and jobs go."""
    await _world(service, clock)
    dry = await housekeeping(service, dry_run=True)
    assert 3 == len(await _rows(service, contacts.c.address))  # the dry run changed nothing
    done = await housekeeping(service, dry_run=False)
    # 4 answers of T-1, but only its comment has text; its survey's metadata; the two old contacts;
    # T-1's events and STOP (5), its finished expiry job, and the session and failure of a year ago.
    expected = {"answers": 1, "surveys": 1, "contacts": 2, "inbound_events": 5, "jobs": 1, LOGINS: 2}
    assert (expected, expected) == (done, dry)
    assert [
        ("T-1", "satisfaction", 2, None),
        ("T-1", "resolution", 1, None),
        ("T-1", "speed", 2, None),
        ("T-1", "comment", None, None),
        ("T-2", "satisfaction", 2, None),
        ("T-2", "resolution", 1, None),
        ("T-2", "speed", 2, None),
        ("T-2", "comment", None, "Neulich gut"),
    ] == await _rows(service, answers.c.ticket, answers.c.question_id, answers.c.score, answers.c.text)
    addresses = [address for (address,) in await _rows(service, contacts.c.address)]
    assert (NEW in addresses, OLD in addresses, STOPPED in addresses) == (True, False, False)
    assert [("T-1", None), ("T-2", {"customer": "Kim"})] == await _rows(
        service, surveys.c.ticket, surveys.c.meta
    )
    assert (4, 0, 0) == (
        await _count(service, inbound_events),  # T-2's four messages, 28 days old
        await _count(service, web_sessions),
        await _count(service, login_failures),
    )
    async with service.db.read() as conn:
        left = (await conn.execute(sa.select(jobs.c.status, jobs.c.done_at))).all()
    assert [] == [
        row for row in left if row.status != JobStatus.PENDING and row.done_at < clock() - timedelta(days=30)
    ]
    assert {
        "answers": 0,
        "surveys": 0,
        "contacts": 0,
        "inbound_events": 0,
        "jobs": 0,
        LOGINS: 0,
    } == await housekeeping(service, dry_run=False)


async def test_aged_out_opt_out_still_refuses_a_survey(service: Service, clock: Clock) -> None:
    """A contact who opted out keeps the opt-out when their address ages out: a new trigger is skipped."""
    await _world(service, clock)
    await housekeeping(service, dry_run=False)
    made = await trigger(
        service,
        SurveyRequest(ticket_id="T-9", channel="sms", to=STOPPED),
        channels={"sms": None},
        link_for=lambda c, t: None,
    )
    async with service.db.read() as conn:
        stored = (await conn.execute(sa.select(erased_contacts.c.channel))).scalars().all()
    assert ("skipped", ["sms"]) == (made.status, list(stored))


async def test_redelivery_inside_the_window_is_still_a_duplicate(service: Service, clock: Clock) -> None:
    """A MessageSid seen 29 days ago is still recognised after housekeeping; one of 31 days ago is gone."""
    await _answered(service, clock, NEW, "T-1", "Gut")
    sid = "SMT-10".ljust(34, "0")
    clock.advance(days=29)
    await housekeeping(service, dry_run=False)
    again = Inbound("sms", NEW, clock(), text="2", provider="twilio", event_id=sid, keywords=True)
    assert "duplicate" == (await handle(service.db, service.flows, again)).outcome
    clock.advance(days=2)
    await housekeeping(service, dry_run=False)
    async with service.db.read() as conn:
        ids = (await conn.execute(sa.select(inbound_events.c.event_id))).scalars().all()
    assert [] == list(ids)


async def test_prune_takes_at_most_limit_rows_a_batch(service: Service, clock: Clock) -> None:
    """prune() deletes at most ``limit`` rows of each table per call, oldest first."""
    await _answered(service, clock, NEW, "T-1", "Gut")
    clock.advance(days=40)
    first = await service.db.transact(prune, clock() - timedelta(days=30), 3)
    async with service.db.read() as conn:
        ids = (await conn.execute(sa.select(inbound_events.c.event_id))).scalars().all()
    assert (3, ["SMT-13".ljust(34, "0")]) == (first["inbound_events"], list(ids))


async def test_run_due_runs_once_a_day(service: Service, clock: Clock) -> None:
    """run_due runs when no housekeeping job finished within the last day, and does nothing otherwise."""
    assert None is not await run_due(service)
    await service.db.run(job_queue.job(JobKind.HOUSEKEEPING, now=clock()))
    [job] = await job_queue.claim(service.db, [JobKind.HOUSEKEEPING], now=clock())
    await service.db.run(job_queue.finished(job, now=clock(), result={"done": 1}))
    clock.advance(hours=12)
    skipped = await run_due(service)
    clock.advance(hours=12)
    assert (None, True) == (skipped, await run_due(service) is not None)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("retention_days_pii", 7, "RETENTION_DAYS_PII: 7 days: use 0 (keep for ever) or 30 to 3650 days"),
        (
            "retention_days_events",
            1,
            "RETENTION_DAYS_EVENTS: 1 days: use 0 (keep for ever) or 2 to 3650 days",
        ),
        (
            "retention_days_events",
            4000,
            "RETENTION_DAYS_EVENTS: 4000 days: use 0 (keep for ever) or 2 to 3650 days",
        ),
    ],
)
def test_retention_settings_are_checked(key: str, value: int, message: str) -> None:
    """A retention shorter than its minimum or over ten years is refused, naming the key and the range."""
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, **{key: value})
    assert message == str(caught.value)


def test_retention_defaults() -> None:
    """A year for personal data, 30 days for events and finished jobs; 0 keeps them."""
    defaults = load_settings(_env_file=None)
    never = load_settings(_env_file=None, retention_days_pii=0, retention_days_events=0)
    assert (365, 30, 0, 0) == (
        defaults.retention_days_pii,
        defaults.retention_days_events,
        never.retention_days_pii,
        never.retention_days_events,
    )


async def test_housekeeping_cli_dry_run(service: Service, clock: Clock, cli_env: dict[str, str]) -> None:
    """`afterword housekeeping --dry-run` lists what would go and removes nothing; without it, removes it."""
    clock.now = datetime.now(UTC)  # the command reads the real clock
    await _answered(service, clock, NEW, "T-1", "Gut")
    await service.db.run(
        inbound_events.insert().values(
            provider="twilio", event_id="SMold", received_at=clock() - timedelta(days=400)
        )
    )
    dry = await asyncio.to_thread(invoke, ["housekeeping", "--dry-run"], cli_env)
    kept = await _count(service, inbound_events)
    real = await asyncio.to_thread(invoke, ["housekeeping"], cli_env)
    counts = dict(line.split() for line in real.stdout.splitlines()[1:])
    assert (0, "would change:", 5, 0, "changed:", "1") == (
        dry.code,
        dry.stdout.splitlines()[0],
        kept,
        real.code,
        real.stdout.splitlines()[0],
        counts["inbound_events"],
    )


async def test_the_scheduler_runs_housekeeping_once_a_day(service: Service, clock: Clock) -> None:
    """A started scheduler plans the daily job and runs it (the old comment anonymised, the new kept);
    it queues the next run a day later, and a second start plans no second job."""
    await _world(service, clock)
    scores = await _rows(service, answers.c.score)
    running = asyncio.create_task(Scheduler(service, {}, worker="test").run())
    for _ in range(200):  # until the started scheduler has run the planned job
        if ("done", "housekeeping") in await _rows(service, jobs.c.status, jobs.c.kind):
            break
        await asyncio.sleep(0.05)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    await service.db.transact(Scheduler(service, {}, worker="again")._plan_housekeeping, clock())
    kept = await _rows(service, jobs.c.kind, jobs.c.status, jobs.c.due_at)
    assert [("housekeeping", "done"), ("housekeeping", "pending")] == [
        (kind, status) for kind, status, _ in kept if kind == "housekeeping"
    ]
    assert clock() + timedelta(days=1) == max(due for kind, _, due in kept if kind == "housekeeping")
    comments = [text for (text,) in await _rows(service, answers.c.text) if text is not None]
    assert (["Neulich gut"], scores) == (comments, await _rows(service, answers.c.score))


async def test_two_processes_planning_at_once_leave_one_daily_chain(service: Service, clock: Clock) -> None:
    """Two housekeeping jobs queued together (two processes started at once): one runs, one is skipped,
    and one job is left waiting for the next day, not two."""
    for _ in range(2):
        await service.db.run(job_queue.job(JobKind.HOUSEKEEPING, now=clock()))
    await Scheduler(service, {}, worker="test").run_once()
    kept = await _rows(service, jobs.c.kind, jobs.c.status, jobs.c.due_at, jobs.c.result)
    done = [result for kind, status, _, result in kept if kind == "housekeeping" and status == "done"]
    waiting = [due for kind, status, due, _ in kept if kind == "housekeeping" and status == "pending"]
    assert (2, 1, [clock() + timedelta(days=1)]) == (
        len(done),
        sum("skipped" in result for result in done),
        waiting,
    )
