"""Usage: python -m bench [--rows 1000000] [--surveys 10000] [--open 100000] [--out BENCHMARKS.md]

Runs every benchmark and writes their figures, with the machine they ran on, to BENCHMARKS.md.
The PostgreSQL figures need AFTERWORD_BENCH_DATABASE_URL (or AFTERWORD_TEST_DATABASE_URL);
that database's public schema is dropped and recreated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from bench.cpu import run as run_cpu
from bench.cpu import write as write_cpu
from bench.memory import run as run_memory
from bench.pacing import run as run_pacing
from bench.report_bench import run as run_report_bench
from bench.startup import run as run_startup
from bench.throughput import run as run_throughput
from bench.workers import run as run_workers

TABLE = ["| figure | ours | ceiling | ratio | target |", "| --- | --- | --- | --- | --- |"]


def _memory_gib() -> float:
    pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return pages * size / 2**30


# Measured on this machine, before and after each change; kept here (not re-measured) because
# "before" is code that no longer exists. CPU is the server process's user + system time.
PROFILE = """### Profiling the answer path (pyinstrument, py-spy)

| figure | before | after |
| --- | --- | --- |
| `handle()` in-process, 900 answers one after another, SQLite (session 2) | 170/s | 205/s |
| webhooks on SQLite, 16 at a time: answers/s, p50, p99 (session 2) | 105/s, 32 ms, 1,857 ms | 106/s, p99 193 ms |
| server CPU per answer webhook, SQLite (session 3; load average 4–5 from other work) | 7.54 ms | 3.67 ms |
| server CPU per answer webhook, PostgreSQL (session 3, same conditions) | 7.01 ms | 5.38 ms |
| one write transaction of 6 statements on SQLite, through aiosqlite vs in one trip to a thread | 10.1 ms | 1.1 ms |
| `GET /api/report`-sized report at 10,000 answers, in-process (session 3) | 184 ms | 74 ms |
| the same report, in-process (session 4, quiet machine) | 36 ms | 15 ms |
| its by-agent histogram over a year of 100,000 answers, SQLite's plan vs the covering index (session 4) | 320 ms | 31 ms |
| one t quantile, p = 0.975, df 100–160 (session 4) | 76 µs | 46 µs |
| `import_csv` of 1,000,000 answers, in-process (session 4) | 77.6 s | 66.0 s |

What dominated, and what was done:

1. **Session 2.** SQLAlchemy compiled the answers INSERT on every answer (a multi-row VALUES
   has no cache key: "[no key]" in the engine log), and SQLite writers polled the busy
   handler, which sleeps between tries. Answers now go in as executemany parameters of one
   cached statement, and this process's SQLite writers queue on an asyncio lock.
2. **Session 3, thread hops.** aiosqlite hands every cursor, execute, fetch and close to its
   thread separately and wakes the event loop for each: about 1.3 ms per statement under load.
   The answer transaction is now plain SQLAlchemy run by `Database.transact`: on SQLite in one
   trip to a writer thread with the standard sqlite3 driver, on PostgreSQL via `run_sync`.
3. **Session 3, statement building.** The answer path's and the report's statements are built
   once with bind parameters; SQLAlchemy memoizes a statement object's cache key, so it no
   longer rebuilds and re-keys them for every answer or report.
4. **Session 3, HTTP.** uvicorn parses HTTP with httptools instead of pure-Python h11, the
   provider webhooks are matched first, and a sender's number is normalised once per process.
5. **Session 3, report.** The Student t quantile for CES intervals started Newton's method at
   the middle of its bracket and chased rounding noise at the end: 7–33 evaluations of the
   incomplete beta per quantile. It now starts from the Cornish-Fisher expansion (df ≥ 30) and
   stops after a step below 1e-13 of t: 1–2 evaluations for the df a report meets.
6. **Session 4, report.** After `afterword import` runs ANALYZE, SQLite planned the by-agent
   histogram through the `answered_at` index, reading every table row and sorting them, not
   the covering index made for it; the report's SQLite statements now name that index with
   `INDEXED BY`. Newton's method for the t quantile stops once a step is below 1e-7 of t (the
   error left is about the step squared), and from df 5,000 the expansion alone is exact to
   1e-15 for |z| ≤ 5. Report results become JSON with a shallow copy, not `asdict`'s deep one.
7. **Session 4, import.** A checking pass parsed every row only for the insert pass to parse
   it again; the `answered_at` indexes were updated row by row; the index builds ran under
   the 64 MiB import cache, which made them slower. Now one pass (a bad row rolls the
   transaction back), all seven read indexes rebuilt at the end with SQLite's own cache."""


async def _timed(name: str, work: Callable[[], Awaitable[list[str]]]) -> list[str]:
    started = time.perf_counter()
    rows = await work()
    print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    print("\n".join(rows), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="answers to import (default 1,000,000)")
    parser.add_argument(
        "--surveys", type=int, default=10_000, help="due Telegram surveys to send (default 10,000)"
    )
    parser.add_argument(
        "--open", type=int, default=100_000, help="open surveys for the larger memory run (default 100,000)"
    )
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="where to write the figures")
    args = parser.parse_args()
    pg_url = os.environ.get("AFTERWORD_BENCH_DATABASE_URL") or os.environ.get("AFTERWORD_TEST_DATABASE_URL")
    cpus = os.cpu_count()
    startup_rows = asyncio.run(_timed("command start-up", run_startup))
    answer_rows = asyncio.run(_timed("answer throughput", lambda: run_throughput(pg_url)))
    worker_rows = asyncio.run(_timed("several workers", lambda: run_workers(pg_url)))
    pacing_rows = asyncio.run(_timed("send pacing", lambda: run_pacing(args.surveys)))
    memory_rows = asyncio.run(_timed("memory", lambda: run_memory(1_000, args.open)))
    report_rows = asyncio.run(_timed("report", lambda: run_report_bench(args.rows)))
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench`; every figure is from one run on the machine named here.",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpus} CPUs, {_memory_gib():.0f} GiB memory, {platform.platform()}",
        f"- Python {platform.python_version()}",
        "",
        "## Command start-up",
        "",
        "CPU time (user + system) of whole processes, as a multiple of `python -c pass` with the same",
        "interpreter: each round runs the commands one after another, and the ratio is the",
        "median of the rounds' ratios (bench/startup.py).",
        "",
        *TABLE,
        *startup_rows,
        "",
        "## Answer throughput",
        "",
        f"The load generator runs on the same {cpus} cores as the server: it caps the bare route",
        "too, which is why every figure is a ratio to that ceiling, measured in the same run.",
        "",
        *TABLE,
        *answer_rows,
        "",
        "### Several workers (PostgreSQL)",
        "",
        "`afterword serve --workers N` against the bare route served by as many uvicorn workers. This machine",
        f"has {cpus} cores, shared by the workers, PostgreSQL and the load generator: beyond {cpus}",
        "processes there is no core left to add.",
        "",
        *TABLE,
        *worker_rows,
        "",
        PROFILE,
        "",
        "## Send pacing",
        "",
        "Due Telegram surveys sent by `afterword worker` on SQLite to a fake Bot API on 127.0.0.1",
        "that answers 429 to any message beyond 30 in a second.",
        "",
        *TABLE,
        *pacing_rows,
        "",
        "## Memory",
        "",
        "Resident memory of `afterword serve` (SQLite, one process) after the same workload,",
        "with few and with many open surveys in the database.",
        "",
        *TABLE,
        *memory_rows,
        "",
        "## Import and report on SQLite",
        "",
        "The report is timed in-process (the builder `afterword report` runs, and the API route",
        "through httpx's ASGI transport), so the CLI's start-up is not counted.",
        "",
        *TABLE,
        *report_rows,
    ]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    write_cpu(args.out, asyncio.run(_timed("CPU", lambda: run_cpu(pg_url, rows=args.rows))))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
