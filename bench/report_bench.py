"""Import N answers into SQLite with `import_csv`, then time the report against the raw GROUP BY."""

from __future__ import annotations

import csv
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bot.apikeys import create_key
from bot.importer import import_csv
from bot.reports import build_report, histogram_query, report_query
from bot.service import Service
from bot.settings import load_settings
from bot.store.db import Database
from bot.store.tables import answers
from bot.web.app import create_app
from flows.loader import load_flows

AGENTS = [f"agent-{i:02d}" for i in range(25)]
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
REPEATS = 5


def write_csv(path: Path, rows: int, seed: int = 7) -> None:
    """``rows`` answers over the last year, a third each CSAT, NPS and CES, 25 agents."""
    rnd = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as handle:
        out = csv.writer(handle)
        out.writerow(["response_id", "submitted_at", "metric", "score", "agent", "team", "channel"])
        for i in range(rows):
            metric = ("csat", "nps", "ces")[i % 3]
            score = {"csat": rnd.randint(1, 5), "nps": rnd.randint(0, 10), "ces": rnd.randint(1, 7)}[metric]
            at = NOW - timedelta(seconds=rnd.randrange(364 * 86400))
            out.writerow([f"r{i}", at.isoformat(), metric, score, rnd.choice(AGENTS), f"team-{i % 4}", "sms"])


async def run(rows: int) -> list[str]:
    """The benchmark rows of the BENCHMARKS.md table: 10 k, 100 k and ``rows`` answers."""
    lines = []
    for size in sorted({n for n in (10_000, 100_000, rows) if n <= rows}):
        lines.extend(await _one(size))
    return lines


async def _one(rows: int) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "answers.csv"
        write_csv(csv_path, rows)
        db = Database(make_url(f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"))
        await db.upgrade()
        started = time.perf_counter()
        result = await import_csv(db, csv_path)
        import_s = time.perf_counter() - started
        assert result.added == rows, result

        query = report_query(now=NOW, since="365d", by="agent")
        period = {"start": query.start, "end": query.end}
        # The ceiling: a plain GROUP BY for the same histograms, planned by SQLite itself.
        a = answers.c
        raw = (
            sa.select(a.agent, a.metric, a.scale_min, a.scale_max, a.scale_best, a.score, sa.func.count())
            .where(a.answered_at >= query.start, a.answered_at < query.end)
            .group_by(a.agent, a.metric, a.scale_min, a.scale_max, a.scale_best, a.score)
        )
        # And the report's own histogram statement alone (INDEXED BY the covering index): what
        # the report spends beyond it is the previous period, the response rate, the SCI, the
        # comments and the scoring.
        own = histogram_query("agent", "sqlite")
        settings = load_settings(_env_file=None, database_url=str(db.url), flows_dir=[])
        service = Service(settings=settings, db=db, flows=load_flows(), clock=lambda: NOW)
        key = await create_key(db, "bench", now=NOW)
        app = create_app(settings, service, scheduler=False)
        report_times: list[float] = []
        api_times: list[float] = []
        raw_times: list[float] = []
        own_times: list[float] = []
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench"
        ) as client:
            for _ in range(REPEATS):
                started = time.perf_counter()
                await build_report(db, query)
                report_times.append(time.perf_counter() - started)
                started = time.perf_counter()
                response = await client.get(
                    "/api/report",
                    params={"since": "365d", "by": "agent"},
                    headers={"Authorization": f"Bearer {key}"},
                )
                response.raise_for_status()
                api_times.append(time.perf_counter() - started)
                for stmt, times in ((raw, raw_times), (own, own_times)):
                    started = time.perf_counter()
                    async with db.read() as conn:
                        (await conn.execute(stmt, period)).all()
                    times.append(time.perf_counter() - started)
        await db.dispose()
    report_s, api_s, raw_s, own_s = min(report_times), min(api_times), min(raw_times), min(own_times)
    lines = [
        f"| import {rows:,} answers (`afterword import`) | {import_s:.1f} s ({rows / import_s:,.0f} rows/s) | – | – | well under 60 s at 1 M |",
    ]
    for name, took in (
        ("report builder (`afterword report --format json` minus start-up)", report_s),
        ("`GET /api/report`", api_s),
    ):
        lines.append(
            f"| {name}, --since 365d --by agent, {rows:,} answers (best of {REPEATS}) | {took * 1000:.0f} ms "
            f"| raw GROUP BY agent, metric, scale, score: {raw_s * 1000:.0f} ms | {took / raw_s:.2f} × raw "
            "| under 1 s at 1 M, at most 1.5 × raw |"
        )
    lines.append(
        f"| the report's own histogram statement alone (covering index), {rows:,} answers | {own_s * 1000:.1f} ms "
        f"| – | report builder = {report_s / own_s:.2f} × it | – |"
    )
    return lines
