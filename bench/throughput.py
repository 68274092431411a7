"""Answer throughput: signed Twilio SMS webhooks completing whole 3-question surveys.

A load generator on 127.0.0.1 (async httpx, this process) sends each customer's three
answers in turn, many customers at once, to `afterword serve` with one uvicorn worker.
The ceiling is the same generator against a bare FastAPI route that reads the form and
returns constant TwiML (bench/bare.py), run in the same way in the same run.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from bench.common import Load, signed_sms
from bot.service import Service
from bot.settings import load_settings
from bot.store.tables import answers
from bot.surveys import NewSurvey, create_survey

HERE = Path(__file__).parent
AFTERWORD = str(Path(sys.executable).parent / "afterword")
ACCOUNT, TOKEN, SENDER = "AC" + "0" * 32, "bench-auth-token", "+4930901820"
CUSTOMERS = 400
CONCURRENCY = 16
ROUNDS = 3
REPLIES = ("2", "1", "2")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _numbers() -> list[str]:
    return [f"+49151{20_000_000 + i}" for i in range(CUSTOMERS)]


async def _load(base: str) -> Load:
    """Every customer answers three questions in turn; CONCURRENCY customers at a time."""
    return await signed_sms(base, _numbers(), REPLIES, token=TOKEN, to=SENDER, concurrency=CONCURRENCY)


async def open_surveys(service: Service) -> None:
    """One sent 3-question SMS survey for each of the CUSTOMERS numbers, in German."""
    now = datetime.now(UTC)
    for i, number in enumerate(_numbers()):
        await create_survey(
            service.db,
            service.flows,
            NewSurvey("bench-three", "sms", number, ticket=f"B-{i}", language="de"),
            now=now,
            ttl=timedelta(hours=48),
        )


def serve_env(database_url: str, port: int) -> dict[str, str]:
    """The environment of `afterword serve` in these benchmarks: Twilio on with a made-up account."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "TELEGRAM_", "DATABASE_URL"))},
        "DATABASE_URL": database_url,
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_FROM_NUMBER": SENDER,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "FLOWS_DIR": str(HERE / "flows"),
        "LOG_LEVEL": "WARNING",
        "PORT": str(port),
    }


async def _serve(args: list[str], env: dict[str, str], cwd: Path, port: int) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(*args, env=env, cwd=cwd, stderr=asyncio.subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            try:
                await client.get(f"http://127.0.0.1:{port}/healthz")
                return proc
            except httpx.TransportError:
                await asyncio.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{args} did not come up")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), 30)


async def bare() -> Load:
    """The ceiling: the same load against a route that does nothing but read the form."""
    port = _port()
    args = [sys.executable, "-m", "uvicorn", "bench.bare:app", "--port", str(port), "--log-level", "warning"]
    proc = await _serve(args, dict(os.environ), HERE.parent, port)
    try:
        return await _load(f"http://127.0.0.1:{port}")
    finally:
        await _stop(proc)


async def _reset_postgres(url: str) -> None:
    engine = create_async_engine(make_url(url))
    async with engine.begin() as conn:
        await conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
        await conn.exec_driver_sql("CREATE SCHEMA public")
    await engine.dispose()


async def ours(database_url: str | None) -> tuple[Load, int]:
    """Afterword with one uvicorn worker on SQLite (None) or the given PostgreSQL URL; (load, answers stored)."""
    with tempfile.TemporaryDirectory() as tmp:
        url = database_url or f"sqlite+aiosqlite:///{tmp}/bench.db"
        port = _port()
        env = serve_env(url, port)
        if database_url:
            await _reset_postgres(database_url)
        settings = load_settings(_env_file=None, database_url=url, flows_dir=[HERE / "flows"])
        service = await Service.open(settings, create=True) if not database_url else None
        if service is None:
            from bot.store.db import Database

            await Database(settings.database).upgrade()
            service = await Service.open(settings)
        await open_surveys(service)
        proc = await _serve([AFTERWORD, "serve"], env, Path(tmp), port)
        try:
            load = await _load(f"http://127.0.0.1:{port}")
        finally:
            await _stop(proc)
        async with service.db.read() as conn:
            stored = (await conn.execute(sa.select(sa.func.count()).select_from(answers))).scalar_one()
        await service.close()
        return load, int(stored)


async def run(pg_url: str | None) -> list[str]:
    """The table rows: ours on SQLite (and PostgreSQL when a URL is given) against the bare route.

    On a small shared machine one run of either can be off by a third, so each backend runs
    ROUNDS times, each run next to a run of the bare route, and the medians are compared.
    """
    rows = []
    for name, url in (("SQLite", None), ("PostgreSQL", pg_url)):
        if name == "PostgreSQL" and not url:
            rows.append(
                "| answers/s, PostgreSQL | not run: set AFTERWORD_BENCH_DATABASE_URL | – | – | at least 0.5 |"
            )
            continue
        pairs = []
        for _ in range(ROUNDS):
            ceiling = await bare()
            load, stored = await ours(url)
            if stored != load.requests:
                raise RuntimeError(f"{name}: {load.requests} answers sent but {stored} stored")
            pairs.append((load, ceiling))
        load = _median(p[0] for p in pairs)
        ceiling = _median(p[1] for p in pairs)
        each = ", ".join(f"{mine.rate / base.rate:.2f}" for mine, base in pairs)
        rows.append(
            f"| answers/s over signed SMS webhooks, {CUSTOMERS} whole 3-question surveys, {CONCURRENCY} at a time, "
            f"{name}, 1 uvicorn worker, median of {ROUNDS} runs | {load.cell()} "
            f"| bare FastAPI route, constant TwiML: {ceiling.cell()} "
            f"| {load.rate / ceiling.rate:.2f} (each run: {each}) | at least 0.5 |"
        )
    return rows


def _median(loads: Iterable[Load]) -> Load:
    """The run with the median rate (ROUNDS is odd)."""
    ordered = sorted(loads, key=lambda load: load.rate)
    return ordered[len(ordered) // 2]
