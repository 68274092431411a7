"""What several benchmarks share: signed Twilio SMS webhooks as load, CPU time from /proc, sections of BENCHMARKS.md."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from twilio.request_validator import RequestValidator

TICK = os.sysconf("SC_CLK_TCK")
# A PostgreSQL backend's title: "postgres: 15/main: USER DATABASE HOST(PORT) STATE".
BACKEND = re.compile(r"postgres: (?:[^:\s]+: )?\S+ (\S+) (?:\S+\(\d+\)|\[local\])")


@dataclass(frozen=True)
class Load:
    """What one load run measured."""

    requests: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: int) -> float:
        return statistics.quantiles(self.latencies_ms, n=100)[q - 1]

    def cell(self) -> str:
        return f"{self.rate:,.0f}/s (p50 {self.percentile(50):.1f} ms, p99 {self.percentile(99):.1f} ms)"


async def signed_sms(
    base: str, numbers: Sequence[str], replies: Sequence[str], *, token: str, to: str, concurrency: int
) -> Load:
    """Every number sends ``replies`` in turn as signed `POST /twilio/sms`; ``concurrency`` numbers at a time.

    Each request waits for the answer to the one before it, as a customer waits for the next
    question. The signature is Twilio's over ``base`` + path and the form, made with ``token``.
    """
    validator = RequestValidator(token)
    latencies: list[float] = []
    gate = asyncio.Semaphore(concurrency)

    async def customer(client: httpx.AsyncClient, n: int, number: str) -> None:
        async with gate:
            for i, text in enumerate(replies):
                params = {"From": number, "To": to, "Body": text, "MessageSid": f"SM{n:016d}{i:016d}"}
                signature = validator.compute_signature(f"{base}/twilio/sms", params)
                started = time.perf_counter()
                response = await client.post(
                    f"{base}/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}
                )
                latencies.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(customer(client, n, number) for n, number in enumerate(numbers)))
        elapsed = time.perf_counter() - started
    return Load(len(latencies), elapsed, latencies)


def _tree(pid: int) -> list[int]:
    """``pid`` and every process under it (uvicorn's workers with --workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):  # gone meanwhile
            for task in Path(f"/proc/{current}/task").iterdir():
                todo.extend(int(child) for child in (task / "children").read_text().split())
    return found


def _stat(pid: int) -> tuple[int, int] | None:
    """(start time, CPU ticks used so far) of ``pid``: /proc/PID/stat fields 22, and 14 + 15; None once it ended."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[19]), int(fields[11]) + int(fields[12])


def _seconds(pids: Sequence[int]) -> float:
    """User and system CPU the processes ``pids`` used so far; a process that ended is left out."""
    return sum(stat[1] for stat in map(_stat, pids) if stat is not None) / TICK


def _postmaster() -> int:
    """The PostgreSQL server on this machine: the ``postgres`` process whose parent is not one."""
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                if Path(f"/proc/{parent}/comm").read_text().strip() != "postgres":
                    return int(entry.name)
    raise RuntimeError("no PostgreSQL server runs on this machine: its CPU cannot be read from /proc")


class PostgresCpu:
    """CPU seconds of PostgreSQL's processes that work for ``database``: the shared ones and its backends.

    Backends of other databases are left out (tests may use the same server meanwhile). The
    server's connection pool closes connections beyond its size as they come back, so backends
    start and end within a phase: ``watch`` samples them every SAMPLE seconds, and the last
    sample of one that ended still counts.
    """

    SAMPLE = 0.02

    def __init__(self, database: str) -> None:
        self.database = database
        self.postmaster = _postmaster()
        self.ours: set[int] = {self.postmaster}
        self.others: set[int] = set()
        self.seen: dict[tuple[int, int], int] = {}  # (pid, start time) → ticks at the last sample
        self.backends = 0  # backends of ``database`` seen so far

    def _classify(self, pid: int) -> None:
        """Ours or another database's, once the process has set its title (a new one shows the postmaster's)."""
        with contextlib.suppress(OSError):
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if title.startswith("postgres: "):
                backend = BACKEND.match(title)
                if backend is None or backend.group(1) == self.database:
                    self.ours.add(pid)
                    self.backends += backend is not None
                else:
                    self.others.add(pid)

    def seconds(self) -> float:
        """CPU seconds so far, of the processes alive now and the last sample of those that ended."""
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{self.postmaster}/task/{self.postmaster}/children").read_text().split()
            for pid in map(int, children):
                if pid not in self.ours and pid not in self.others:
                    self._classify(pid)
        for pid in list(self.ours):
            stat = _stat(pid)
            if stat is None:
                self.ours.discard(pid)  # ended: its last sample stays in ``seen``
            else:
                self.seen[pid, stat[0]] = stat[1]
        return sum(self.seen.values()) / TICK

    async def watch(self) -> None:
        """Sample until cancelled."""
        while True:
            self.seconds()
            await asyncio.sleep(self.SAMPLE)


class Meter:
    """CPU seconds of a server's processes, and of PostgreSQL's (None: SQLite)."""

    def __init__(self, pid: int, postgres: PostgresCpu | None) -> None:
        self.pid = pid
        self.postgres = postgres

    def read(self) -> tuple[float, float]:
        server = _seconds(_tree(self.pid))
        return server, self.postgres.seconds() if self.postgres else 0.0

    def since(self, before: tuple[float, float]) -> tuple[float, float]:
        server, postgres = self.read()
        return server - before[0], postgres - before[1]


def write_section(path: Path, heading: str, lines: Sequence[str]) -> None:
    """Put ``heading`` and ``lines`` into ``path`` as a section, replacing the one of that heading written before."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    kept = re.sub(rf"\n*{re.escape(heading)}\n.*?(?=\n## |\Z)", "", text, flags=re.DOTALL).rstrip("\n")
    section = "\n".join([heading, "", *lines])
    path.write_text((kept + "\n\n" if kept else "") + section + "\n", encoding="utf-8")
