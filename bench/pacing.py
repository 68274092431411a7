"""Send pacing: due Telegram surveys sent by `afterword worker` to a Bot API that enforces 30/s.

Usage: python -m bench.pacing [--surveys 10000]

The fake Bot API (tests/fakes/telegram.py) runs in this process on 127.0.0.1 and answers a
31st message within any second with Telegram's 429. The surveys go to distinct chats, due
now, with quiet hours off, so the worker is never told to wait by anything but the rate.
The achieved rate is (messages - 1) / (last arrival - first arrival), on the fake's clock.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.service import Service
from bot.settings import load_settings
from bot.store.tables import contacts, jobs, surveys
from bot.triggers import SurveyRequest, trigger
from tests.fakes.telegram import FakeBotApi

AFTERWORD = str(Path(sys.executable).parent / "afterword")
LIMIT = 30  # messages per second, Telegram's overall limit
FIRST_CHAT = 100_000_000
START_SECONDS = 60  # for the worker to start and send its first message
TARGET = "within 5 % of 30/s (0.95–1.0), no 429"


@dataclass(frozen=True)
class Pacing:
    """What one run measured."""

    surveys: int
    created_seconds: float  # to create the due surveys, before the worker starts
    arrivals: list[float]  # when the fake accepted each sendMessage, time.monotonic()
    too_many_requests: int

    @property
    def seconds(self) -> float:
        return self.arrivals[-1] - self.arrivals[0]

    @property
    def rate(self) -> float:
        return (len(self.arrivals) - 1) / self.seconds

    def row(self) -> str:
        return (
            f"| Telegram sends, {self.surveys:,} due surveys, `afterword worker`, fake Bot API enforcing "
            f"{LIMIT} messages/s | {self.rate:.2f}/s over {self.seconds:,.0f} s, "
            f"{self.too_many_requests} × 429 | {LIMIT}/s | {self.rate / LIMIT:.3f} | {TARGET} |"
        )


async def _create(service: Service, count: int) -> None:
    """``count`` Telegram surveys to distinct chats, due now, each with its send job.

    The first comes through the trigger every API call uses; the others are copies of its rows
    with their own chat, token and ticket, written in one transaction: one trigger at a time
    takes about 10 ms on SQLite, which would make 10,000 take longer than sending them.
    """
    request = SurveyRequest(ticket_id="P-0", channel="telegram", to=str(FIRST_CHAT))
    first = await trigger(service, request, channels={"telegram": object()}, link_for=lambda *_: None)
    assert first.survey_id is not None
    await service.db.transact(_copy, first.survey_id, count)


def _copy(conn: Connection, survey_id: int, count: int) -> None:
    survey = conn.execute(sa.select(surveys).where(surveys.c.id == survey_id)).one()._asdict()
    contact = conn.execute(sa.select(contacts).where(contacts.c.id == survey["contact_id"])).one()._asdict()
    job = conn.execute(sa.select(jobs).where(jobs.c.survey_id == survey_id)).one()._asdict()
    numbers = range(1, count)
    conn.execute(
        sa.insert(contacts), [{**contact, "id": None, "address": str(FIRST_CHAT + i)} for i in numbers]
    )
    contact_ids = dict(conn.execute(sa.select(contacts.c.address, contacts.c.id)).all())
    conn.execute(
        sa.insert(surveys),
        [
            {
                **survey,
                "id": None,
                "token": secrets.token_urlsafe(16),
                "ticket": f"P-{i}",
                "contact_id": contact_ids[str(FIRST_CHAT + i)],
            }
            for i in numbers
        ],
    )
    survey_ids = dict(conn.execute(sa.select(surveys.c.ticket, surveys.c.id)).all())
    conn.execute(sa.insert(jobs), [{**job, "id": None, "survey_id": survey_ids[f"P-{i}"]} for i in numbers])


async def _sent(service: Service) -> int:
    async with service.db.read() as conn:
        query = sa.select(sa.func.count()).select_from(surveys).where(surveys.c.sent_at.is_not(None))
        return int((await conn.execute(query)).scalar_one())


async def _wait_for_sends(
    service: Service, fake: FakeBotApi, count: int, worker: asyncio.subprocess.Process, log: Path
) -> None:
    """Until the fake accepted ``count`` messages and the worker recorded them; RuntimeError if it dies or stalls."""
    deadline = time.monotonic() + START_SECONDS + 2 * count / LIMIT
    # The worker records a send after Telegram answered, so the database is the last to know.
    while (accepted := len(fake.message_arrivals)) < count or await _sent(service) < count:
        if worker.returncode is not None:
            tail = (await asyncio.to_thread(log.read_text, encoding="utf-8", errors="replace"))[-2000:]
            raise RuntimeError(f"the worker exited ({worker.returncode}) after {accepted} sends:\n{tail}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {accepted} of {count} messages arrived in time")
        await asyncio.sleep(0.2)


async def measure(surveys: int = 10_000) -> Pacing:
    """Create the due surveys, run one worker until all are sent, and read the fake's record."""
    with tempfile.TemporaryDirectory() as tmp, FakeBotApi() as fake:
        fake.limit_rate(LIMIT)
        url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        service = await Service.open(
            load_settings(_env_file=None, database_url=url, flows_dir=[]), create=True
        )
        try:
            started = time.perf_counter()
            await _create(service, surveys)
            created = time.perf_counter() - started
            env = {
                **{
                    k: v
                    for k, v in os.environ.items()
                    if not k.startswith(("DATABASE_URL", "TELEGRAM_", "TWILIO_", "QUIET_", "SEND_RATE_"))
                },
                "DATABASE_URL": url,
                "TELEGRAM_BOT_TOKEN": fake.token,
                "TELEGRAM_API_BASE_URL": fake.base_url,
                "QUIET_HOURS": "off",  # the worker reads the real clock: no send may wait for morning
                "LOG_LEVEL": "WARNING",
            }
            log = Path(tmp) / "worker.log"
            with log.open("w") as sink:
                worker = await asyncio.create_subprocess_exec(
                    AFTERWORD, "worker", env=env, cwd=tmp, stdout=asyncio.subprocess.DEVNULL, stderr=sink
                )
                try:
                    await _wait_for_sends(service, fake, surveys, worker, log)
                finally:
                    if worker.returncode is None:
                        worker.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(worker.wait(), 30)
            recorded = await _sent(service)
        finally:
            await service.close()
        arrivals = fake.message_arrivals
        if (recorded, len(arrivals)) != (surveys, surveys):
            raise RuntimeError(
                f"{surveys} due surveys: the fake accepted {len(arrivals)} messages, {recorded} are marked sent"
            )
        return Pacing(surveys, created, arrivals, fake.too_many_requests)


async def run(surveys: int = 10_000) -> list[str]:
    """The table row for BENCHMARKS.md."""
    return [(await measure(surveys)).row()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--surveys", type=int, default=10_000, help="due surveys to send (default 10,000)")
    args = parser.parse_args()
    pacing = asyncio.run(measure(args.surveys))
    print(pacing.row())
    print(
        f"created {pacing.surveys:,} due surveys in {pacing.created_seconds:.1f} s; "
        f"sent in {pacing.seconds:.1f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
