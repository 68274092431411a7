"""Usage: python -m bench [--rows 1000000] [--out BENCHMARKS.md]

Runs every benchmark and writes their figures, with the machine they ran on, to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from bench.report_bench import run as run_report_bench


def _memory_gib() -> float:
    pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return pages * size / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="answers to import (default 1,000,000)")
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="where to write the figures")
    args = parser.parse_args()
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
        "## Import and report on SQLite",
        "",
        "| figure | ours | ceiling | ratio | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    args.out.write_text("\n".join(header + rows) + "\n", encoding="utf-8")
    print("\n".join(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
