"""Command start-up: CPU of `afterword --help` and `afterword report` against `python -c pass`.

Usage: python -m bench.startup [--rounds 15] [--answers 300]

CPU is the user + system time of each child process, read as the difference of
getrusage(RUSAGE_CHILDREN) around it, so neither wall-clock waits nor this process count.
Each round runs the commands one after another (paired runs): a busy moment on a
shared machine then slows all of a round alike, and each round gives its own ratios.
A first round, not counted, fills the bytecode caches (in a temporary folder, so that
they are there even where PYTHONDONTWRITEBYTECODE is set, as after an install). The database is a SQLite file of a
few hundred answers made with `afterword import`, which also migrates it.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

PYTHON = sys.executable
AFTERWORD = str(Path(sys.executable).parent / "afterword")
ROUNDS = 15
ANSWERS = 300
HELP_TARGET = 15.0  # × the CPU of `python -c pass`
REPORT_TARGET = 30.0


@dataclass(frozen=True)
class Command:
    """One measured command line and the ceiling (× python -c pass) it is held to."""

    label: str
    argv: tuple[str, ...]
    target: float | None = None


# What `afterword report` cannot do without: the database layer, its SQLite driver, the settings
# and the CLI library, imported and nothing else. Shown beside the report as its floor.
REPORT_LIBRARIES = "import sqlalchemy.ext.asyncio, aiosqlite, pydantic_settings, typer"


def commands() -> tuple[Command, ...]:
    """The baseline first, then the commands measured against it."""
    return (
        Command("`python -c pass`", (PYTHON, "-c", "pass")),
        Command("`afterword --help`", (AFTERWORD, "--help"), HELP_TARGET),
        Command("`afterword report --format json`", (AFTERWORD, "report", "--format", "json"), REPORT_TARGET),
        Command(
            f"`python -c '{REPORT_LIBRARIES}'` (the report's libraries alone)",
            (PYTHON, "-c", REPORT_LIBRARIES),
        ),
    )


def write_answers(path: Path, count: int, now: datetime, seed: int = 11) -> None:
    """``count`` answers over the last 60 days (this report's period and the previous one)."""
    rnd = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["response_id", "submitted_at", "metric", "score", "agent"])
        for i in range(count):
            metric = ("csat", "nps", "ces")[i % 3]
            score = {"csat": rnd.randint(1, 5), "nps": rnd.randint(0, 10), "ces": rnd.randint(1, 7)}[metric]
            at = now - timedelta(seconds=rnd.randrange(60 * 86400))
            out.writerow([f"r{i}", at.isoformat(), metric, score, f"agent-{i % 5}"])


def _environment(folder: Path) -> dict[str, str]:
    """DATABASE_URL in ``folder``, and bytecode caches there too, written even if the caller's are off."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "FLOWS_DIR", "PYTHONDONTWRITEBYTECODE"))
    }
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
    env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
    return env


def _cpu_of(argv: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    """User + system seconds of one run of ``argv``; a failed run stops the benchmark."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stderr}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(rounds: int = ROUNDS, answers: int = ANSWERS) -> dict[str, list[float]]:
    """CPU seconds of each command, one list per command with one entry per round."""
    with tempfile.TemporaryDirectory(prefix="afterword-startup-") as tmp:
        folder = Path(tmp)  # also the working directory: no .env of the caller's is read
        env = _environment(folder)
        write_answers(folder / "answers.csv", answers, datetime.now(UTC))
        for setup in (["db", "upgrade"], ["import", "answers.csv"]):  # import makes no database
            subprocess.run([AFTERWORD, *setup], env=env, cwd=folder, check=True, stdout=subprocess.DEVNULL)
        cpu: dict[str, list[float]] = {c.label: [] for c in commands()}
        for round_ in range(rounds + 1):
            for command in commands():
                took = _cpu_of(command.argv, env, folder)
                if round_:  # round 0 only warms the caches
                    cpu[command.label].append(took)
    return cpu


def rows(cpu: dict[str, list[float]], answers: int = ANSWERS) -> list[str]:
    """BENCHMARKS.md table rows: each command's median CPU, and its ratio to `python -c pass`."""
    base_label, *_ = cpu
    base = cpu[base_label]
    base_cell = f"{base_label}: {statistics.median(base) * 1000:.0f} ms"
    lines = []
    for command in commands()[1:]:
        runs = cpu[command.label]
        ratios = [ours / bare for ours, bare in zip(runs, base, strict=True) if bare > 0]
        where = f", SQLite with {answers} answers" if "report --format" in command.label else ""
        lines.append(
            f"| CPU (user + system) of {command.label}{where}, median of {len(runs)} paired runs "
            f"| {statistics.median(runs) * 1000:.0f} ms | {base_cell} "
            f"| {statistics.median(ratios):.1f}× (ratio of medians "
            f"{statistics.median(runs) / statistics.median(base):.1f}×) "
            f"| {f'≤ {command.target:g}×' if command.target else '–'} |"
        )
    return lines


async def run(rounds: int = ROUNDS, answers: int = ANSWERS) -> list[str]:
    """The rows of the "Command start-up" table."""
    return rows(await asyncio.to_thread(measure, rounds, answers), answers)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"paired rounds (default {ROUNDS})")
    parser.add_argument(
        "--answers", type=int, default=ANSWERS, help=f"answers in the database (default {ANSWERS})"
    )
    args = parser.parse_args()
    print("\n".join(rows(measure(args.rounds, args.answers), args.answers)))


if __name__ == "__main__":
    main()
