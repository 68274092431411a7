"""CPU per answer, per survey created and sent, and per imported answer, each beside its floor (issue 20).

Usage: python -m bench.cpu [--rounds 3] [--surveys 300] [--rows 1000000] [--workers 1] [--profile FILE] [--out BENCHMARKS.md]

On a shared machine CPU milliseconds move least, so the server's CPU (utime + stime in
/proc/<pid>/stat, of the process and its children) is read before and after each phase.
For SQLite and for PostgreSQL (AFTERWORD_BENCH_DATABASE_URL or AFTERWORD_TEST_DATABASE_URL;
that database's public schema is dropped and recreated) the rounds alternate:

- Afterword: `afterword serve` on a fresh database, its Twilio REST client sending to the fake
  Twilio API (tests/fakes/twilio.py) in this process. Phase one: --surveys `POST /api/surveys`
  of support-csat by SMS, 16 at a time, until the server's scheduler has sent every one (its
  send job done). Phase two: every customer answers the four questions in turn, each a signed
  `POST /twilio/sms` answered with TwiML, 16 customers at a time. On PostgreSQL the CPU of
  PostgreSQL's own processes (the shared ones and the backends of the bench's database) is read
  over the same phases and stated apart.
- The bare route (bench/bare.py) under uvicorn as bench/throughput.py starts it, sent the same
  signed form posts: its CPU per request is the floor of both ratios.

Then, on SQLite, `afterword import` of --rows answers (the CSV of bench/report_bench.py) into a
fresh migrated database, alternating with a plain executemany of the same rows into another,
which drops and rebuilds the answers' read indexes as the importer does. --profile FILE records
the answer phase of one more SQLite round with py-spy (not counted; `pip install py-spy`): a
flame graph for FILE.svg, collapsed stacks otherwise. Prints the lines; with --out, writes them
as a section of that file.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url

from bench.common import Load, Meter, PostgresCpu, signed_sms, write_section
from bench.report_bench import write_csv
from bench.throughput import (
    ACCOUNT,
    AFTERWORD,
    CONCURRENCY,
    HERE,
    SENDER,
    TOKEN,
    _port,
    _reset_postgres,
    _serve,
    _stop,
    serve_env,
)
from bench.workers import _all_serving
from bot.apikeys import create_key
from bot.importer import BATCH, DEFAULT_SCALES
from bot.store.db import Database
from bot.store.tables import READ_INDEXES, answers, jobs
from tests.fakes.twilio import FakeTwilioApi

FLOW = "support-csat"
REPLIES = ("2", "1", "2", "Alles gut, danke")  # its three ratings and the optional comment
SECTION = "## CPU per answer, per survey and per import"


def _numbers(count: int) -> list[str]:
    return [f"+49151{30_000_000 + i}" for i in range(count)]


@dataclass(frozen=True)
class Afterword:
    """One round of `afterword serve`: CPU seconds per phase, of the server and of PostgreSQL."""

    surveys: int
    send: tuple[float, float]
    answer: tuple[float, float]
    load: Load
    backends: tuple[int, int]  # PostgreSQL backends of the bench's database started in each phase

    def per_survey(self) -> float:
        return self.send[0] / self.surveys

    def per_answer(self) -> float:
        return self.answer[0] / self.load.requests


@dataclass(frozen=True)
class Bare:
    """One round of the bare route: its CPU seconds over the same signed posts."""

    cpu: float
    load: Load

    def per_request(self) -> float:
        return self.cpu / self.load.requests


async def _create(base: str, key: str, numbers: Sequence[str]) -> None:
    """One SMS survey of FLOW for each number through the API, CONCURRENCY at a time."""
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    headers = {"Authorization": f"Bearer {key}"}

    async def one(client: httpx.AsyncClient, n: int, number: str) -> None:
        body = {"ticket_id": f"T-{n}", "channel": "sms", "to": number, "flow": FLOW, "language": "de"}
        async with gate:
            response = await client.post(f"{base}/api/surveys", json=body)
        if response.status_code != 201:
            raise RuntimeError(
                f"POST /api/surveys for {number}: {response.status_code} {response.text[:300]}"
            )

    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=30) as client:
        await asyncio.gather(*(one(client, n, number) for n, number in enumerate(numbers)))


async def _sends_done(db: Database) -> int:
    async with db.read() as conn:
        query = sa.select(sa.func.count()).where(jobs.c.kind == "send", jobs.c.status == "done")
        return int((await conn.execute(query)).scalar_one())


async def _all_sent(db: Database, fake: FakeTwilioApi, count: int, proc: asyncio.subprocess.Process) -> None:
    """Wait until every survey's send job is done: the fake is watched first, so the database is asked only at the end."""
    deadline = time.monotonic() + 120 + count / 5

    def check() -> None:
        if proc.returncode is not None or time.monotonic() > deadline:
            failed = [call.status for call in fake.calls if call.failed][:10]
            raise RuntimeError(
                f"{len(fake.messages())} messages to the fake for {count} surveys; failed requests: {failed}"
            )

    while len({call.params["To"] for call in fake.messages()}) < count:
        check()
        await asyncio.sleep(0.05)
    while await _sends_done(db) < count:
        check()
        await asyncio.sleep(0.05)


async def _profiler(pid: int, out: Path) -> asyncio.subprocess.Process:
    """py-spy recording ``pid`` into ``out`` until it is sent SIGINT."""
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        raise RuntimeError("--profile: py-spy is not installed; pip install py-spy")
    style = "flamegraph" if out.suffix == ".svg" else "raw"
    args = [py_spy, "record", "--pid", str(pid), "--output", str(out), "--format", style, "--rate", "200"]
    spy = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.DEVNULL)
    await asyncio.sleep(1.5)  # attached before the first answer
    return spy


async def ours(pg_url: str | None, count: int, workers: int = 1, profile: Path | None = None) -> Afterword:
    """Afterword on a fresh database: ``count`` surveys created and sent, then all their answers."""
    numbers = _numbers(count)
    with tempfile.TemporaryDirectory() as tmp, FakeTwilioApi(ACCOUNT, TOKEN) as fake:
        url = pg_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
        if pg_url:
            await _reset_postgres(pg_url)
        db = Database(make_url(url))
        try:
            await db.upgrade()
            key = await create_key(db, "bench", now=datetime.now(UTC))
            port = _port()
            env = serve_env(url, port) | {
                "TWILIO_API_BASE_URL": fake.base_url,
                "QUIET_HOURS": "off",  # the server reads the real clock: no send may wait for morning
                "SEND_RATE_SMS": "1000",  # pacing would make the phase long, not its CPU different
            }
            processes = workers if pg_url else 1  # SQLite serves one process
            postgres = PostgresCpu(str(make_url(pg_url).database)) if pg_url else None
            watcher = asyncio.create_task(postgres.watch()) if postgres else None
            proc = await _serve([AFTERWORD, "serve", "--workers", str(processes)], env, Path(tmp), port)
            try:
                if processes > 1:
                    await _all_serving(proc, port, processes)
                base = f"http://127.0.0.1:{port}"
                meter = Meter(proc.pid, postgres)
                before, started = meter.read(), postgres.backends if postgres else 0
                await _create(base, key, numbers)
                await _all_sent(db, fake, count, proc)
                send = meter.since(before)
                spy = await _profiler(proc.pid, profile) if profile else None
                before, sent = meter.read(), postgres.backends if postgres else 0
                load = await signed_sms(
                    base, numbers, REPLIES, token=TOKEN, to=SENDER, concurrency=CONCURRENCY
                )
                answer = meter.since(before)
                answered = postgres.backends if postgres else 0
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    await asyncio.wait_for(spy.wait(), 60)
            finally:
                await _stop(proc)
                if watcher is not None:
                    watcher.cancel()
            async with db.read() as conn:
                stored = (await conn.execute(sa.select(sa.func.count()).select_from(answers))).scalar_one()
        finally:
            await db.dispose()
    if stored != load.requests:
        raise RuntimeError(f"{load.requests} answers posted but {stored} stored")
    return Afterword(count, send, answer, load, (sent - started, answered - sent))


async def bare(count: int, workers: int = 1) -> Bare:
    """The floor: bench/bare.py under uvicorn, sent the same signed posts as Afterword's answers."""
    port = _port()
    args = [sys.executable, "-m", "uvicorn", "bench.bare:app", "--port", str(port), "--log-level", "warning"]
    args += ["--workers", str(workers)] if workers > 1 else []
    proc = await _serve(args, dict(os.environ), HERE.parent, port)
    try:
        if workers > 1:
            await _all_serving(proc, port, workers)
        meter = Meter(proc.pid, None)
        before = meter.read()
        base = f"http://127.0.0.1:{port}"
        load = await signed_sms(
            base, _numbers(count), REPLIES, token=TOKEN, to=SENDER, concurrency=CONCURRENCY
        )
        cpu, _ = meter.since(before)
    finally:
        await _stop(proc)
    return Bare(cpu, load)


# -- import ------------------------------------------------------------------------------------


def _executemany(conn: Connection, path: Path) -> int:
    """The rows import_csv stores from ``path``, by plain executemany; the read indexes dropped and rebuilt as it does.

    The CSV is read with csv.reader, each row turned into the stored values (default scale,
    UTC time as SQLAlchemy writes it to SQLite, headline for a response's first row of a
    metric) and inserted BATCH rows per executemany, in one transaction, under the importer's
    64 MiB page cache; then the seven read indexes built with SQLite's own cache, and ANALYZE.
    """
    columns = (
        "response_id, question_id, metric, score, scale_min, scale_max, scale_best, answered_at, "
        "agent, team, channel, flow_id, language, headline"
    )
    insert = f"INSERT INTO answers ({columns}) VALUES ({', '.join('?' * 14)})"
    for index in READ_INDEXES:
        index.drop(conn)
    seen: set[tuple[str, str]] = set()
    added = 0
    conn.exec_driver_sql("PRAGMA cache_size=-65536")  # as bot.importer's _import_cache
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        at = {name: i for i, name in enumerate(next(reader))}
        r_id, r_at, r_metric, r_score = at["response_id"], at["submitted_at"], at["metric"], at["score"]
        r_agent, r_team, r_channel = at["agent"], at["team"], at["channel"]
        batch = []
        for row in reader:
            metric = row[r_metric]
            low, high, best = DEFAULT_SCALES[metric]
            when = datetime.fromisoformat(row[r_at]).astimezone(UTC)
            first = (row[r_id], metric) not in seen
            seen.add((row[r_id], metric))
            batch.append(
                (row[r_id], metric, metric, int(row[r_score]), low, high, best, f"{when:%Y-%m-%d %H:%M:%S.%f}",
                 row[r_agent], row[r_team], row[r_channel], "import", "und", first)
            )  # fmt: skip
            if len(batch) == BATCH:
                conn.exec_driver_sql(insert, batch)
                added += len(batch)
                batch = []
        if batch:
            conn.exec_driver_sql(insert, batch)
            added += len(batch)
    conn.exec_driver_sql("PRAGMA cache_size=-2000")
    for index in READ_INDEXES:
        index.create(conn)
    conn.exec_driver_sql("ANALYZE answers")
    return added


# What both ways must leave behind, the same: rows, scores, headlines, times and indexes.
_SUMMARY = (
    "SELECT count(*), sum(score), sum(headline), min(answered_at), max(answered_at), "
    "(SELECT group_concat(name) FROM (SELECT name FROM sqlite_master WHERE tbl_name = 'answers' ORDER BY name)) "
    "FROM answers"
)


@dataclass(frozen=True)
class Imported:
    """One import: wall and CPU seconds."""

    wall: float
    cpu: float


async def _migrated(path: Path) -> Database:
    db = Database(make_url(f"sqlite+aiosqlite:///{path}"))
    await db.upgrade()
    return db


async def _summary(db: Database) -> tuple[object, ...]:
    async with db.read() as conn:
        return tuple((await conn.exec_driver_sql(_SUMMARY)).one())


async def import_command(csv_path: Path) -> tuple[Imported, tuple[object, ...]]:
    """`afterword import` of ``csv_path`` into a fresh migrated SQLite file; the whole command's CPU."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "import.db"
        db = await _migrated(target)
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "FLOWS_DIR"))}
            env |= {"DATABASE_URL": f"sqlite+aiosqlite:///{target}", "LOG_LEVEL": "WARNING"}
            children = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            command = await asyncio.create_subprocess_exec(
                AFTERWORD,
                "import",
                str(csv_path),
                env=env,
                cwd=tmp,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await command.communicate()  # its progress bar, or why it failed
            if command.returncode != 0:
                tail = err.decode(errors="replace")[-2000:]
                raise RuntimeError(f"`afterword import` exited with {command.returncode}: {tail}")
            wall = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)  # counts a child once it was waited for
            cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
            return Imported(wall, cpu), await _summary(db)
        finally:
            await db.dispose()


async def executemany(csv_path: Path) -> tuple[Imported, tuple[object, ...]]:
    """The floor: the same rows by plain executemany into a fresh migrated SQLite file, in this process."""
    with tempfile.TemporaryDirectory() as tmp:
        db = await _migrated(Path(tmp) / "floor.db")
        try:
            cpu, started = time.process_time(), time.perf_counter()
            await db.transact(_executemany, csv_path)
            measured = Imported(time.perf_counter() - started, time.process_time() - cpu)
            return measured, await _summary(db)
        finally:
            await db.dispose()


async def imports(rows: int, rounds: int) -> tuple[list[Imported], list[Imported]]:
    """``rounds`` imports of ``rows`` answers and as many executemany floors, alternating."""
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        csv_path = tmp / "answers.csv"
        write_csv(csv_path, rows)
        commands, floors = [], []
        for _ in range(rounds):
            command, stored = await import_command(csv_path)
            floor, floored = await executemany(csv_path)
            if stored != floored or stored[0] != rows:
                raise RuntimeError(
                    f"`afterword import` left {stored}, executemany {floored}, for {rows} rows"
                )
            commands.append(command)
            floors.append(floor)
    return commands, floors


# -- the lines -------------------------------------------------------------------------------


def _ms(seconds: Sequence[float]) -> str:
    """Median and range of ``seconds``, in milliseconds."""
    low, mid, high = (1000 * x for x in (min(seconds), statistics.median(seconds), max(seconds)))
    digits = 2 if mid < 10 else 1
    return f"{mid:.{digits}f} ms ({low:.{digits}f}–{high:.{digits}f})"


def _s(seconds: Sequence[float]) -> str:
    """Median and range of ``seconds``."""
    digits = 2 if statistics.median(seconds) < 10 else 1
    return f"{statistics.median(seconds):.{digits}f} s ({min(seconds):.{digits}f}–{max(seconds):.{digits}f})"


def _ratio(ours: Sequence[float], floor: Sequence[float]) -> str:
    """The ratio of the medians, then each round's."""
    each = ", ".join(f"{a / b:.1f}" for a, b in zip(ours, floor, strict=True))
    return f"{statistics.median(ours) / statistics.median(floor):.1f}× (each round: {each})"


def backend_lines(name: str, rounds: Sequence[tuple[Afterword, Bare]]) -> list[str]:
    """The lines of one backend from its rounds."""
    answer = [mine.per_answer() for mine, _ in rounds]
    survey = [mine.per_survey() for mine, _ in rounds]
    floor = [base.per_request() for _, base in rounds]
    first = rounds[0][0]
    target = "2.0×" if name == "SQLite" else "2.5×"
    lines = [
        f"- CPU per answer, {name}: {_ms(answer)} = {_ratio(answer, floor)} the bare route's "
        f"{_ms(floor)} per request; target at most {target}",
        f"- CPU per survey created and sent, {name}: {_ms(survey)} = {_ratio(survey, floor)} the bare "
        "route's CPU per request; target at most 8×",
    ]
    if name == "PostgreSQL":
        own_answer = _ms([mine.answer[1] / mine.load.requests for mine, _ in rounds])
        own_survey = _ms([mine.send[1] / mine.surveys for mine, _ in rounds])
        started = "; ".join(f"{mine.backends[0]} and {mine.backends[1]}" for mine, _ in rounds)
        lines.append(
            f"- PostgreSQL's own processes, beside the above and not in its ratios: {own_answer} per answer, "
            f"{own_survey} per survey created and sent; new backends in the two phases of each round: {started}"
        )
    rates = [mine.load.rate for mine, _ in rounds]
    bare_rates = [base.load.rate for _, base in rounds]
    lines.append(
        f"- answers/s in the same rounds, {name}: {statistics.median(rates):,.0f}/s = "
        f"{statistics.median(rates) / statistics.median(bare_rates):.2f}× the bare route's "
        f"{statistics.median(bare_rates):,.0f}/s ({first.surveys:,} customers × {len(REPLIES)} answers)"
    )
    return lines


def import_lines(rows: int, commands: Sequence[Imported], floors: Sequence[Imported]) -> list[str]:
    """The import's lines: wall time and CPU, each beside the executemany floor."""
    walls, floor_walls = [c.wall for c in commands], [f.wall for f in floors]
    cpus, floor_cpus = [c.cpu for c in commands], [f.cpu for f in floors]
    return [
        f"- import of {rows:,} answers, SQLite, wall time: `afterword import` {_s(walls)} = "
        f"{_ratio(walls, floor_walls)} a plain executemany's {_s(floor_walls)}; target at most 2×",
        f"- import of {rows:,} answers, SQLite, CPU: `afterword import` {_s(cpus)} = "
        f"{_ratio(cpus, floor_cpus)} the executemany's {_s(floor_cpus)}",
    ]


async def run(
    pg_url: str | None,
    *,
    rounds: int = 3,
    surveys: int = 300,
    rows: int = 1_000_000,
    workers: int = 1,
    profile: Path | None = None,
) -> list[str]:
    """Every line of the section: both backends' rounds, then the import."""
    load_before = os.getloadavg()[0]
    lines = []
    for name, url in (("SQLite", None), ("PostgreSQL", pg_url)):
        if name == "PostgreSQL" and not url:
            lines.append("- PostgreSQL: not run; set AFTERWORD_BENCH_DATABASE_URL")
            continue
        done = []
        for _ in range(rounds):  # interleaved, so a change in the machine's load hits both alike
            mine = await ours(url, surveys, workers)
            done.append((mine, await bare(surveys, workers)))
        found = backend_lines(name, done)
        print("\n".join(found), flush=True)
        lines += found
    if profile is not None:
        await ours(None, surveys, profile=profile)
        print(f"profile of one more SQLite round's answers: {profile}", flush=True)
    commands, floors = await imports(rows, rounds)
    lines += import_lines(rows, commands, floors)
    return [
        f"- {os.cpu_count()} CPUs; 1-minute load average {load_before:.1f} before the runs, "
        f"{os.getloadavg()[0]:.1f} after; {rounds} rounds of {surveys:,} surveys, "
        f"{'1 process' if workers == 1 else f'{workers} processes on PostgreSQL'}",
        *lines,
    ]


def write(path: Path, lines: Sequence[str]) -> None:
    """The lines as this benchmark's section of ``path`` (BENCHMARKS.md)."""
    intro = [
        "Server CPU (user + system, from /proc) over each phase, divided by what the phase did, beside",
        "the bare route (bench/bare.py) sent the same signed form posts; ratios of the medians, and",
        "ranges over the interleaved rounds (bench/cpu.py). A survey created and sent is one",
        "`POST /api/surveys` of support-csat by SMS and the scheduler's send to a fake Twilio API in",
        "the benchmark's process; an answer is one signed `POST /twilio/sms` answered with TwiML. The",
        "import's floor reads the same CSV and executemany's the same rows into the same schema,",
        "dropping and rebuilding the same indexes, in the benchmark's process.",
        "",
    ]
    write_section(path, SECTION, [*intro, *lines])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per backend (default 3)")
    parser.add_argument("--surveys", type=int, default=300, help="SMS surveys per round (default 300)")
    parser.add_argument("--rows", type=int, default=1_000_000, help="answers to import (default 1,000,000)")
    parser.add_argument(
        "--workers", type=int, default=1, help="`afterword serve --workers` on PostgreSQL (default 1)"
    )
    parser.add_argument("--profile", type=Path, help="py-spy record of one more SQLite round's answers")
    parser.add_argument("--out", type=Path, help="write the lines as a section of this file (BENCHMARKS.md)")
    args = parser.parse_args()
    for flag in ("rounds", "surveys", "rows", "workers"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag}: {getattr(args, flag)} is not a count; use 1 or more")
    pg_url = os.environ.get("AFTERWORD_BENCH_DATABASE_URL") or os.environ.get("AFTERWORD_TEST_DATABASE_URL")
    lines = asyncio.run(
        run(
            pg_url,
            rounds=args.rounds,
            surveys=args.surveys,
            rows=args.rows,
            workers=args.workers,
            profile=args.profile,
        )
    )
    print("\n".join(lines))
    if args.out is not None:
        write(args.out, lines)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
