"""Usage: AFTERWORD_BENCH_DATABASE_URL=postgresql+asyncpg://… python -m bench.workers

Answer throughput with 1, 2 and 4 processes on PostgreSQL: `afterword serve --workers N`
against the bare route served by `uvicorn --workers N`, with the load generator of
bench/throughput.py (this process, on the same cores as the servers). The database's
public schema is dropped and recreated. Prints the rows for BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench.throughput import (
    AFTERWORD,
    CONCURRENCY,
    CUSTOMERS,
    HERE,
    Load,
    _load,
    _port,
    _reset_postgres,
    _serve,
    _stop,
    open_surveys,
    serve_env,
)
from bot.service import Service
from bot.settings import load_settings
from bot.store.db import Database
from bot.store.tables import answers

PROCESSES = (1, 2, 4)
CORES = os.cpu_count() or 1


def _workers(pid: int) -> list[int]:
    """The uvicorn worker processes under ``pid`` (multiprocessing's resource tracker left out)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            with contextlib.suppress(OSError):  # gone meanwhile
                if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                    found.append(int(child))
    return found


def _holders(port: int, pids: list[int]) -> set[int]:
    """Which of ``pids`` hold an established connection to ``port`` right now (Linux /proc)."""
    owner = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owner[target[len("socket:[") : -1]] = pid
    held = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state, inode = (line.split()[i] for i in (1, 3, 9))
            if int(local.rsplit(":", 1)[1], 16) == port and state == "01" and inode in owner:
                held.add(owner[inode])
    return held


async def _all_serving(proc: asyncio.subprocess.Process, port: int, processes: int) -> list[int]:
    """Wait until each of the ``processes`` workers has taken a connection and answered on it; their pids.

    /healthz answers as soon as the first worker is up; measuring then would count the
    others' start-up against them.
    """
    if processes == 1:
        return [proc.pid]
    # The workers share one listening socket and asyncio accepts a whole burst at once, so one
    # burst often lands on one or two of them: count every worker that answered in any burst.
    answered: set[int] = set()
    pids: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if _workers(proc.pid) != pids:  # started, or replaced: count again
            pids, answered = _workers(proc.pid), set()
        clients = [httpx.AsyncClient(timeout=10) for _ in range(4 * processes)]
        try:
            await asyncio.gather(*(c.get(f"http://127.0.0.1:{port}/healthz") for c in clients))
            answered |= _holders(port, pids)
            if len(pids) == processes and set(pids) == answered:
                return pids
        finally:
            for client in clients:
                await client.aclose()
        await asyncio.sleep(0.5)
    raise RuntimeError(
        f"not all {processes} workers answered within 120 s; answered: {sorted(answered)} of {pids}"
    )


def _cpu_seconds(pids: list[int]) -> float:
    """User and system CPU time the processes ``pids`` used so far (/proc/PID/stat fields 14 and 15)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Measured:
    """One load run, and the cores the server processes and the load generator kept busy meanwhile."""

    load: Load
    server_cores: float
    generator_cores: float

    def cell(self) -> str:
        return (
            f"{self.load.cell()}; CPU: server {self.server_cores:.1f}, "
            f"load generator {self.generator_cores:.1f} of {CORES} cores"
        )


async def _measure(proc: asyncio.subprocess.Process, port: int, processes: int) -> Measured:
    """The load of bench/throughput.py once all workers serve; refused if uvicorn replaced one meanwhile."""
    pids = await _all_serving(proc, port, processes)
    server, generator = _cpu_seconds(pids), time.process_time()
    load = await _load(f"http://127.0.0.1:{port}")
    server, generator = _cpu_seconds(pids) - server, time.process_time() - generator
    if processes > 1 and _workers(proc.pid) != pids:
        raise RuntimeError(f"uvicorn replaced a worker during the run: {pids} became {_workers(proc.pid)}")
    return Measured(load, server / load.seconds, generator / load.seconds)


async def bare(processes: int) -> Measured:
    """The ceiling: the bare route (bench/bare.py) under `uvicorn --workers N`."""
    port = _port()
    args = [sys.executable, "-m", "uvicorn", "bench.bare:app", "--port", str(port)]
    args += ["--workers", str(processes), "--log-level", "warning"]
    proc = await _serve(args, dict(os.environ), HERE.parent, port)
    try:
        return await _measure(proc, port, processes)
    finally:
        await _stop(proc)


async def ours(pg_url: str, processes: int) -> tuple[Measured, int]:
    """`afterword serve --workers N` on a fresh PostgreSQL schema; (load, answers stored)."""
    port = _port()
    env = serve_env(pg_url, port)
    await _reset_postgres(pg_url)
    settings = load_settings(_env_file=None, database_url=pg_url, flows_dir=[HERE / "flows"])
    await Database(settings.database).upgrade()
    service = await Service.open(settings)
    try:
        await open_surveys(service)
        with tempfile.TemporaryDirectory() as tmp:
            proc = await _serve([AFTERWORD, "serve", "--workers", str(processes)], env, Path(tmp), port)
            try:
                measured = await _measure(proc, port, processes)
            finally:
                await _stop(proc)
        async with service.db.read() as conn:
            stored = (await conn.execute(sa.select(sa.func.count()).select_from(answers))).scalar_one()
    finally:
        await service.close()
    return measured, int(stored)


async def run(pg_url: str | None) -> list[str]:
    """The table rows: answers/s with 1, 2 and 4 processes on PostgreSQL against the bare route."""
    target = f"at least 0.5; {CORES} cores, so more than {CORES} processes add no CPU"
    if not pg_url:
        return [
            "| answers/s with 1, 2 and 4 `afterword serve` processes, PostgreSQL | "
            f"not run: set AFTERWORD_BENCH_DATABASE_URL | – | – | {target} |"
        ]
    rows = []
    for processes in PROCESSES:
        ceiling = await bare(processes)
        measured, stored = await ours(pg_url, processes)
        sent = measured.load.requests
        if stored != sent:
            raise RuntimeError(f"--workers {processes}: {sent} answers sent but {stored} stored")
        rows.append(
            f"| answers/s over signed SMS webhooks, {CUSTOMERS} whole 3-question surveys, {CONCURRENCY} at a time, "
            f"PostgreSQL, `afterword serve --workers {processes}`; {CORES} cores, shared with the load generator "
            f"| {measured.cell()}; {stored:,} of {sent:,} answers stored "
            f"| bare FastAPI route, constant TwiML, `uvicorn --workers {processes}`: {ceiling.cell()} "
            f"| {measured.load.rate / ceiling.load.rate:.2f} | {target} |"
        )
    return rows


def main() -> None:
    """Print the rows, and how busy the machine was while they ran."""
    pg_url = os.environ.get("AFTERWORD_BENCH_DATABASE_URL") or os.environ.get("AFTERWORD_TEST_DATABASE_URL")
    before = os.getloadavg()[0]
    rows = asyncio.run(run(pg_url))
    # Other work on the machine moves every figure: say how busy it was.
    print(
        f"{CORES} cores; 1-minute load average {before:.1f} before the runs, {os.getloadavg()[0]:.1f} after"
    )
    print("| figure | ours | ceiling | ratio | target |")
    print("| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
