"""Memory: resident memory of `afterword serve` with few and with many open surveys (issue 8).

Usage: python -m bench.memory [--small 1000] [--large 100000]

For each size N a fresh SQLite database gets N open SMS surveys, each in the state the
scheduler leaves it in after sending its first question: active, sent, with a pending
expiry and a pending reminder job and its done send job. One survey goes through the real
path (`create_survey` with a send time, then one scheduler pass delivering to an in-process
outbox); the other N - 1 are copies of its rows, bulk-inserted with executemany. Then
`afterword serve` (one uvicorn worker, no child process) gets the same fixed workload for
every N: start-up, a few scheduler polls, the same 200 surveys answered whole over signed
Twilio SMS webhooks, a few `GET /api/report` and `GET /healthz`. Its VmRSS and VmHWM (the
peak) are read from /proc/<pid>/status before it is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from twilio.request_validator import RequestValidator

from bench.throughput import ACCOUNT, AFTERWORD, HERE, REPLIES, SENDER, TOKEN, _port, _serve, _stop
from bot.apikeys import create_key
from bot.channels.base import Channel
from bot.scheduler import Scheduler
from bot.service import Service
from bot.settings import Settings, load_settings
from bot.store.tables import answers, contacts, jobs, surveys
from bot.surveys import NewSurvey, create_survey
from flows.engine import Prompt

FLOW = "bench-three"
ANSWERED = 200  # surveys answered whole in the workload, the same ones for every N
CONCURRENCY = 8
REPORTS = 3
POLL_SECONDS = 0.2
SETTLE_SECONDS = 3.0  # about 15 scheduler polls
REMINDER_HOURS = 24  # no reminder is due while the bench runs
CHUNK = 10_000  # rows per executemany
STATUS_KEYS = ("VmRSS", "VmHWM")
TARGET = "within 10 % (ratio ≤ 1.10)"


def _address(i: int) -> str:
    return f"+49151{20_000_000 + i}"


class _Outbox(Channel):
    """Takes the scheduler's SMS deliveries in-process, so that the first survey is sent for real."""

    name: ClassVar[str] = "sms"

    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Prompt, ...]]] = []

    async def deliver(
        self, address: str, prompts: Sequence[Prompt], language: str, *, survey_id: int | None = None
    ) -> None:
        self.sent.append((address, tuple(prompts)))


@dataclass(frozen=True)
class Sample:
    """What one size measured: memory in KiB, the database file, the time to fill it."""

    surveys: int
    started: dict[str, int]  # /proc status after start-up and the first polls
    ended: dict[str, int]  # /proc status after the workload
    db_bytes: int
    fill_seconds: float


def _settings(url: str) -> Settings:
    # Quiet hours off: the first survey is sent at once whatever time the bench runs.
    return load_settings(
        _env_file=None,
        database_url=url,
        flows_dir=[HERE / "flows"],
        quiet_hours="off",
        reminder_after_hours=REMINDER_HOURS,
    )


def _stored(table: sa.Table) -> sa.TableClause:
    """``table`` without column types: rows are read and written as SQLite stores them.

    Copying the first survey's stored values skips SQLAlchemy's per-row type processing
    (datetimes, JSON), which took most of the time to make 100,000 surveys.
    """
    return sa.table(table.name, *(sa.column(c.name) for c in table.columns))


async def _first(service: Service) -> dict[str, Any]:
    """One survey through create_survey and a scheduler pass; its contact, survey and job rows as stored."""
    await create_survey(
        service.db,
        service.flows,
        NewSurvey(FLOW, "sms", _address(0), ticket="M-0", language="de"),
        now=service.clock(),
        ttl=service.survey_ttl,
        send_at=service.clock(),
    )
    outbox = _Outbox()
    claimed = await Scheduler(service, {"sms": outbox}).run_once()
    if claimed != 1 or len(outbox.sent) != 1:
        raise RuntimeError(f"the scheduler claimed {claimed} job(s) and sent {len(outbox.sent)}")
    async with service.db.read() as conn:
        survey = (await conn.execute(sa.select(surveys))).one()
        kinds = sorted((j.kind, j.status) for j in await conn.execute(sa.select(jobs)))
        first = {
            name: [dict(r._mapping) for r in await conn.execute(sa.select(_stored(table)))]
            for name, table in (("contact", contacts), ("survey", surveys), ("jobs", jobs))
        }
    expected = [("expire", "pending"), ("reminder", "pending"), ("send", "done")]
    if survey.status != "active" or survey.sent_at is None or kinds != expected:
        raise RuntimeError(f"the first survey is {survey.status} with jobs {kinds}, not open and sent")
    return {"contact": first["contact"][0], "survey": first["survey"][0], "jobs": first["jobs"]}


def _copy_chunk(
    conn: Connection,
    contact: dict[str, Any],
    survey: dict[str, Any],
    job_rows: list[dict[str, Any]],
    numbers: range,
) -> None:
    """The copies numbered ``numbers``: their contacts, surveys and jobs, in one transaction."""
    conn.execute(
        sa.insert(_stored(contacts)),
        [{**contact, "id": contact["id"] + i, "address": _address(i)} for i in numbers],
    )
    conn.execute(
        sa.insert(_stored(surveys)),
        [
            {
                **survey,
                "id": survey["id"] + i,
                "contact_id": contact["id"] + i,
                "token": secrets.token_urlsafe(16),
                "ticket": f"M-{i}",
            }
            for i in numbers
        ],
    )
    conn.execute(
        sa.insert(_stored(jobs)),
        [{**j, "survey_id": survey["id"] + i} for i in numbers for j in job_rows],
    )


async def _copies(service: Service, first: dict[str, Any], n: int) -> None:
    """Surveys 1 … n-1 as copies of the first, each with its own contact, token and ticket."""
    contact, survey = first["contact"], first["survey"]
    job_rows = [{k: v for k, v in j.items() if k != "id"} for j in first["jobs"]]
    for start in range(1, n, CHUNK):
        numbers = range(start, min(start + CHUNK, n))
        await service.db.transact(_copy_chunk, contact, survey, job_rows, numbers)


async def _fill(url: str, n: int) -> tuple[float, str]:
    """A migrated database with n open surveys; (seconds taken, an API key)."""
    started = time.perf_counter()
    service = await Service.open(_settings(url), create=True)
    try:
        first = await _first(service)
        await _copies(service, first, n)
        fill_seconds = time.perf_counter() - started
        now = service.clock()
        async with service.db.read() as conn:
            open_now = (
                await conn.execute(
                    sa.select(sa.func.count())
                    .select_from(surveys)
                    .where(
                        surveys.c.status == "active",
                        surveys.c.sent_at.is_not(None),
                        surveys.c.expires_at > now,
                    )
                )
            ).scalar_one()
            pending = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(jobs).where(jobs.c.status == "pending")
                )
            ).scalar_one()
        if (open_now, pending) != (n, 2 * n):
            raise RuntimeError(f"{open_now} open surveys and {pending} pending jobs, not {n} and {2 * n}")
        key = await create_key(service.db, "bench-memory", now=now)
    finally:
        await service.close()
    return fill_seconds, key


async def _answer(base: str) -> None:
    """The first ANSWERED contacts answer their survey whole, CONCURRENCY at a time."""
    validator = RequestValidator(TOKEN)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def customer(client: httpx.AsyncClient, n: int) -> None:
        async with gate:
            for i, text in enumerate(REPLIES):
                params = {
                    "From": _address(n),
                    "To": SENDER,
                    "Body": text,
                    "MessageSid": f"SM{n:016d}{i:016d}",
                }
                signature = validator.compute_signature(f"{base}/twilio/sms", params)
                response = await client.post(
                    f"{base}/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}
                )
                response.raise_for_status()

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(customer(client, n) for n in range(ANSWERED)))


async def _reports(base: str, key: str, n: int) -> None:
    """GET /api/report a few times (each counts all n surveys as sent) and GET /healthz."""
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
        for _ in range(REPORTS):
            response = await client.get(f"{base}/api/report")
            response.raise_for_status()
            sent = response.json()["response_rate"]["sent"]
            if sent != n:
                raise RuntimeError(f"the report counts {sent} surveys sent, not {n}")
        (await client.get(f"{base}/healthz")).raise_for_status()


def _status(pid: int) -> dict[str, int]:
    """STATUS_KEYS of /proc/<pid>/status, in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        key, _, value = line.partition(":")
        if key in STATUS_KEYS:
            found[key] = int(value.split()[0])
    return found


def _children(pid: int) -> list[int]:
    """Processes whose parent is pid."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text(encoding="ascii", errors="replace")
        except OSError:  # the process ended while we looked
            continue
        if int(text.rpartition(")")[2].split()[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _check_server(pid: int) -> None:
    """The process spawned is the one serving: `afterword serve` itself, with no worker child."""
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    if not any(part.endswith(b"afterword") for part in cmdline) or b"serve" not in cmdline:
        raise RuntimeError(f"process {pid} is {cmdline}, not afterword serve")
    if children := _children(pid):
        raise RuntimeError(f"afterword serve ({pid}) has child processes {children}: measure those too")


def _db_bytes(tmp: Path) -> int:
    return sum(p.stat().st_size for p in tmp.glob("memory.db*"))


async def measure(n: int) -> Sample:
    """n open surveys in a fresh SQLite database, then `afterword serve` under the fixed workload."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        url = f"sqlite+aiosqlite:///{tmp / 'memory.db'}"
        fill_seconds, key = await _fill(url, n)
        db_bytes = _db_bytes(tmp)
        port = _port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("TWILIO_", "TELEGRAM_", "DATABASE_URL", "HOOKS_"))
            },
            "DATABASE_URL": url,
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_FROM_NUMBER": SENDER,
            "PUBLIC_BASE_URL": base,
            "FLOWS_DIR": str(HERE / "flows"),
            "LOG_LEVEL": "WARNING",
            "PORT": str(port),
            "WORKER_POLL_SECONDS": str(POLL_SECONDS),
            "REMINDER_AFTER_HOURS": str(REMINDER_HOURS),
        }
        proc = await _serve([AFTERWORD, "serve"], env, tmp, port)
        try:
            _check_server(proc.pid)
            await asyncio.sleep(SETTLE_SECONDS)
            started = _status(proc.pid)
            await _answer(base)
            await _reports(base, key, n)
            await asyncio.sleep(SETTLE_SECONDS)
            _check_server(proc.pid)
            ended = _status(proc.pid)
        finally:
            await _stop(proc)
        await _check_answers(url)
    return Sample(n, started, ended, db_bytes, fill_seconds)


async def _check_answers(url: str) -> None:
    service = await Service.open(_settings(url), migrate_sqlite=False)
    try:
        async with service.db.read() as conn:
            stored = (await conn.execute(sa.select(sa.func.count()).select_from(answers))).scalar_one()
            done = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(surveys).where(surveys.c.status == "completed")
                )
            ).scalar_one()
    finally:
        await service.close()
    if (stored, done) != (ANSWERED * len(REPLIES), ANSWERED):
        raise RuntimeError(f"{stored} answers and {done} completed surveys stored after the workload")


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.1f} MiB"


def rows(small: Sample, large: Sample) -> list[str]:
    """The BENCHMARKS.md rows: the large size against the small one."""
    work = (
        f"{ANSWERED} whole 3-question surveys over signed SMS webhooks, {REPORTS} × GET /api/report, "
        "SQLite, 1 uvicorn worker"
    )

    def row(figure: str, key: str, when: str, target: str) -> str:
        big, little = getattr(large, when)[key], getattr(small, when)[key]
        return (
            f"| {figure} | {large.surveys:,} open surveys: {_mib(big)} | "
            f"{small.surveys:,} open surveys: {_mib(little)} | {big / little:.2f} | {target} |"
        )

    return [
        row(f"resident memory (VmRSS) of `afterword serve` after {work}", "VmRSS", "ended", TARGET),
        row(f"peak resident memory (VmHWM) of `afterword serve`, {work}", "VmHWM", "ended", TARGET),
        row("VmRSS after start-up and 3 s of scheduler polls, before the workload", "VmRSS", "started", "–"),
        f"| SQLite file with the open surveys (3 jobs each): size, and the time to make it "
        f"| {large.surveys:,}: {large.db_bytes / 2**20:,.1f} MiB, {large.fill_seconds:.1f} s "
        f"| {small.surveys:,}: {small.db_bytes / 2**20:,.1f} MiB, {small.fill_seconds:.1f} s | – | – |",
    ]


async def run(small: int = 1_000, large: int = 100_000) -> list[str]:
    """The memory rows: `afterword serve` with ``large`` open surveys against ``small``."""
    if not ANSWERED <= small <= large:
        raise ValueError(f"need {ANSWERED} ≤ small ≤ large, got {small} and {large}")
    return rows(await measure(small), await measure(large))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--small", type=int, default=1_000, help="open surveys of the baseline (default 1,000)"
    )
    parser.add_argument(
        "--large", type=int, default=100_000, help="open surveys to compare (default 100,000)"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    print("\n".join(asyncio.run(run(args.small, args.large))), flush=True)
    print(f"took {time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
