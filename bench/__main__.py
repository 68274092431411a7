"""Usage: python -m bench [--rows 1000000] [--out BENCHMARKS.md]

Runs every benchmark and writes their figures, with the machine they ran on, to BENCHMARKS.md.
The PostgreSQL figures need AFTERWORD_BENCH_DATABASE_URL (or AFTERWORD_TEST_DATABASE_URL);
that database's public schema is dropped and recreated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from bench.report_bench import run as run_report_bench
from bench.throughput import run as run_throughput


def _memory_gib() -> float:
    pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return pages * size / 2**30


# Measured in this machine's session of 2026-11-23, before and after the two changes below;
# kept here (not re-measured) because "before" is code that no longer exists.
PROFILE = """### Profiling the answer path (pyinstrument)

| figure | before | after |
| --- | --- | --- |
| `handle()` in-process, 900 answers one after another, SQLite | 170/s | 205/s |
| webhooks on SQLite, 16 at a time: answers/s, p50, p99 (ratio to bare) | 105/s, 32 ms, 1,857 ms (0.40) | see the table above |
| webhooks on PostgreSQL, 16 at a time (ratio to bare) | 132/s, 104 ms, 322 ms (0.50) | see the table above |

What dominated: SQLAlchemy compiling the answers INSERT on every answer (a multi-row
VALUES has no cache key: "[no key]" in the engine log), and on SQLite writers polling the
busy handler, which sleeps between tries and made the p99 almost two seconds. Now the
answers go in as executemany parameters of one cached statement, and this process's SQLite
writers queue on an asyncio lock (other processes still meet BEGIN IMMEDIATE). The queue
trades a higher p50 for a p99 near it."""

NOT_YET = """## Not measured yet

Send pacing against a rate-limiting fake Bot API, memory with 1,000 and 100,000 open
surveys, and throughput with 1, 2 and 4 processes on PostgreSQL are still to be built
(issue 8)."""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="answers to import (default 1,000,000)")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="where to write the figures")
    args = parser.parse_args()
    pg_url = os.environ.get("AFTERWORD_BENCH_DATABASE_URL") or os.environ.get("AFTERWORD_TEST_DATABASE_URL")
    answer_rows = asyncio.run(run_throughput(pg_url))
    rows = asyncio.run(run_report_bench(args.rows))
    header = [
        "# Benchmarks",
        "",
        "Written by `make bench`; every figure is from one run on the machine named here.",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} CPUs, {_memory_gib():.0f} GiB memory, {platform.platform()}",
        f"- Python {platform.python_version()}",
        "",
        "## Answer throughput",
        "",
        "The load generator runs in the same process as `make bench`, on the same 2 cores as the",
        "server: it caps the bare route too, which is why every figure is a ratio to that ceiling.",
        "",
        "| figure | ours | ceiling | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        *answer_rows,
        "",
        PROFILE,
        "",
        "## Import and report on SQLite",
        "",
        "The report is timed in-process (the builder `afterword report` runs, and the API route",
        "through httpx's ASGI transport), so the CLI's start-up is not counted.",
        "",
        "| figure | ours | ceiling | ratio | target |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        NOT_YET,
    ]
    args.out.write_text("\n".join(header) + "\n", encoding="utf-8")
    print("\n".join(answer_rows + rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
