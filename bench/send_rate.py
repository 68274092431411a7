"""Send rate across workers: two `afterword worker` processes share SEND_RATE_SMS on PostgreSQL.

Usage: AFTERWORD_BENCH_DATABASE_URL=postgresql+asyncpg://… python -m bench.send_rate [--surveys 60] [--out BENCHMARKS.md]

Due SMS surveys (two messages each: the intro and the first question) are sent by two worker
processes with SEND_RATE_SMS=5 to the fake Twilio REST API (tests/fakes/twilio.py), which runs
in this process on 127.0.0.1 and notes when each message arrives (time.time()). The combined
rate is the messages that arrived from the start of the third send (each worker's first send
also opens its HTTP connection, which makes it late) to the start of the last one, over that
time: a send's two messages arrive together, so the last send's would count as a rate. The
rate is shared through the database (bot.scheduler), so the target is at most 5/s; with a
limiter per process, counting sends, it was four times that.

It also measures the at-most-once window: from a send's first request reaching the fake to the
worker's transaction recording it (the job's done_at). A send whose worker dies inside this
window is counted as sent, unconfirmed, whether or not all of it went out. The database's
public schema is dropped and recreated. Prints the rows; with --out, writes them as a section
of that file.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bench.throughput import _reset_postgres
from bot.service import Service
from bot.settings import load_settings
from bot.store.db import Database
from bot.store.tables import contacts, jobs, surveys
from bot.triggers import SurveyRequest, trigger
from tests.fakes.twilio import Call, FakeTwilioApi

AFTERWORD = str(Path(sys.executable).parent / "afterword")
RATE = 5.0  # SEND_RATE_SMS, messages per second for all workers together
WORKERS = 2
SENDER = "+4930901820"
TARGET = "at most 5/s (ratio ≤ 1.01: arrivals jitter by milliseconds)"
SECTION = "## Send rate across workers (PostgreSQL)"


class TimedTwilioApi(FakeTwilioApi):
    """The fake Twilio REST API, noting when each request arrived (epoch seconds)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived: list[tuple[float, Call]] = []
        self._times = threading.Lock()

    def _record(self, call: Call) -> None:
        with self._times:
            self.arrived.append((time.time(), call))
        super()._record(call)


@dataclass(frozen=True)
class SendRate:
    """What one run measured."""

    surveys: int
    arrivals: dict[str, list[float]]  # per number, its messages' arrival times
    by_worker: dict[str, int]  # sends recorded per worker
    windows_ms: list[float]  # per send: first request arrived → the job recorded done

    def rate(self) -> tuple[float, float]:
        """Messages per second between sends, and over what span (seconds).

        From the first message of the send after each worker's first (whose new HTTP
        connection makes it late, which would shorten the span) to the first message of
        the last send, whose own messages arrive together and are left out.
        """
        firsts = sorted(times[0] for times in self.arrivals.values())
        start, end = firsts[WORKERS], firsts[-1]
        within = sum(1 for times in self.arrivals.values() for t in times if start <= t < end)
        return within / (end - start), end - start

    def rows(self) -> list[str]:
        rate, span = self.rate()
        split = " / ".join(str(n) for n in sorted(self.by_worker.values(), reverse=True))
        messages = sum(len(t) for t in self.arrivals.values())
        windows = sorted(self.windows_ms)
        p99 = windows[min(len(windows) - 1, round(0.99 * (len(windows) - 1)))]
        return [
            f"| SMS messages/s, {WORKERS} `afterword worker` processes, SEND_RATE_SMS={RATE:g}, PostgreSQL, "
            f"{self.surveys} due surveys of 2 messages, fake Twilio on 127.0.0.1 "
            f"| {rate:.2f}/s over {span:.1f} s ({messages} messages; sends per worker {split}) "
            f"| {RATE:g}/s | {rate / RATE:.3f} | {TARGET} |",
            f"| at-most-once window: a send's first Twilio request arriving → its transaction recorded, "
            f"same run, {len(windows)} sends | median {statistics.median(windows):.0f} ms, p99 {p99:.0f} ms, "
            f"max {windows[-1]:.0f} ms | – | – | – |",
        ]


def _env(url: str, fake: FakeTwilioApi) -> dict[str, str]:
    kept = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "TWILIO_", "TELEGRAM_", "QUIET_", "SEND_RATE_", "FLOWS_DIR"))
    }
    return {
        **kept,
        "DATABASE_URL": url,
        "TWILIO_ACCOUNT_SID": fake.account_sid,
        "TWILIO_AUTH_TOKEN": fake.auth_token,
        "TWILIO_FROM_NUMBER": SENDER,
        "TWILIO_API_BASE_URL": fake.base_url,
        "PUBLIC_BASE_URL": "https://survey.example.com",
        "QUIET_HOURS": "off",  # the workers read the real clock: no send may wait for morning
        "SEND_RATE_SMS": str(RATE),
        "WORKER_POLL_SECONDS": "0.2",
        "LOG_LEVEL": "WARNING",
    }


async def _done(service: Service) -> int:
    async with service.db.read() as conn:
        query = sa.select(sa.func.count()).where(jobs.c.kind == "send", jobs.c.status == "done")
        return int((await conn.execute(query)).scalar_one())


async def measure(pg_url: str, count: int = 60) -> SendRate:
    """Create ``count`` due SMS surveys, send them with two workers, and read the fake's record."""
    await _reset_postgres(pg_url)
    settings = load_settings(_env_file=None, database_url=pg_url, flows_dir=[])
    await Database(settings.database).upgrade()
    service = await Service.open(settings)
    try:
        for i in range(count):
            request = SurveyRequest(ticket_id=f"R-{i}", channel="sms", to=f"+49151{40_000_000 + i}")
            await trigger(service, request, channels={"sms": object()}, link_for=lambda *_: None)
        with tempfile.TemporaryDirectory() as tmp, TimedTwilioApi() as fake:
            env = _env(pg_url, fake)
            logs = [Path(tmp) / f"worker{n}.log" for n in range(WORKERS)]
            sinks = [log.open("w") for log in logs]
            workers = [
                await asyncio.create_subprocess_exec(
                    AFTERWORD, "worker", env=env, cwd=tmp, stdout=asyncio.subprocess.DEVNULL, stderr=sink
                )
                for sink in sinks
            ]
            try:
                deadline = time.monotonic() + 60 + 3 * count / RATE
                while await _done(service) < count:
                    if any(w.returncode is not None for w in workers) or time.monotonic() > deadline:
                        tails = [log.read_text(errors="replace")[-2000:] for log in logs]
                        raise RuntimeError(f"{await _done(service)} of {count} sent; logs: {tails}")
                    await asyncio.sleep(0.2)
            finally:
                for w in workers:
                    if w.returncode is None:
                        w.send_signal(signal.SIGTERM)
                for w in workers:
                    await asyncio.wait_for(w.wait(), 30)
                for sink in sinks:
                    sink.close()
            arrived = [
                (at, call) for at, call in fake.arrived if call.resource == "Messages" and not call.failed
            ]
        async with service.db.read() as conn:
            rows = (
                await conn.execute(
                    sa.select(contacts.c.address, jobs.c.result, jobs.c.done_at)
                    .join(surveys, surveys.c.id == jobs.c.survey_id)
                    .join(contacts, contacts.c.id == surveys.c.contact_id)
                    .where(jobs.c.kind == "send", jobs.c.status == "done")
                )
            ).all()
    finally:
        await service.close()
    arrivals: dict[str, list[float]] = defaultdict(list)
    for at, call in arrived:
        arrivals[str(call.params["To"])].append(at)
    if len(arrived) != 2 * count or any(len(times) != 2 for times in arrivals.values()):
        raise RuntimeError(
            f"{count} surveys: the fake took {len(arrived)} messages to {len(arrivals)} numbers"
        )
    by_worker = Counter(_worker(row.result) for row in rows)
    windows = [(row.done_at.timestamp() - min(arrivals[row.address])) * 1000 for row in rows]
    return SendRate(count, dict(arrivals), dict(by_worker), windows)


def _worker(result: Any) -> str:
    return str(result.get("worker", "?")) if isinstance(result, dict) else "?"


async def run(pg_url: str | None, count: int = 60) -> list[str]:
    """The table rows for BENCHMARKS.md."""
    if not pg_url:
        return [
            f"| SMS messages/s, {WORKERS} `afterword worker` processes, SEND_RATE_SMS={RATE:g}, PostgreSQL "
            f"| not run: set AFTERWORD_BENCH_DATABASE_URL | {RATE:g}/s | – | {TARGET} |"
        ]
    return (await measure(pg_url, count)).rows()


def write_section(path: Path, rows: list[str]) -> None:
    """Put the rows into ``path`` as this benchmark's section, replacing the one written before."""
    section = "\n".join(
        [
            SECTION,
            "",
            "Two `afterword worker` processes send due SMS surveys to a fake Twilio REST API in the",
            "benchmark's process; the rate is read from the fake's arrival times (bench/send_rate.py).",
            "",
            "| figure | ours | ceiling | ratio | target |",
            "| --- | --- | --- | --- | --- |",
            *rows,
        ]
    )
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    kept = re.sub(rf"\n*{re.escape(SECTION)}\n.*?(?=\n## |\Z)", "", text, flags=re.DOTALL).rstrip("\n")
    path.write_text((kept + "\n\n" if kept else "") + section + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--surveys", type=int, default=60, help="due SMS surveys to send (default 60)")
    parser.add_argument("--out", type=Path, help="write the rows as a section of this file (BENCHMARKS.md)")
    args = parser.parse_args()
    pg_url = os.environ.get("AFTERWORD_BENCH_DATABASE_URL") or os.environ.get("AFTERWORD_TEST_DATABASE_URL")
    rows = asyncio.run(run(pg_url, args.surveys))
    print("\n".join(rows))
    if args.out is not None:
        write_section(args.out, rows)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
