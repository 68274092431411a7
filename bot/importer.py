"""`afterword import`: answers collected with other tools, from CSV, all or nothing."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.db import Database, upsert_insert
from bot.errors import ImportFailed
from bot.tables import READ_INDEXES, answers

REQUIRED = ("response_id", "submitted_at", "metric", "score")
OPTIONAL = (
    "ticket_id",
    "channel",
    "agent",
    "team",
    "flow",
    "language",
    "question",
    "comment",
    "scale_min",
    "scale_max",
    "best",
)
# Default scales when a row names none: csat 1-5 and ces 1-7 with the high end best, nps 0-10.
DEFAULT_SCALES = {"csat": (1, 5, "high"), "nps": (0, 10, "high"), "ces": (1, 7, "high")}
BATCH = 5_000
ANALYZE_AFTER = 10_000
REBUILD_INDEXES_FROM = 50_000  # rows; below this, updating the indexes row by row is cheaper
MAX_REPORTED = 20


@dataclass(frozen=True)
class ImportResult:
    """What an import did."""

    rows: int
    added: int
    already_there: int
    skipped_bad: int
    problems: tuple[str, ...]


class _BadRow(ValueError):
    pass


def parse_row(row: dict[str, str]) -> dict[str, Any]:
    """One CSV row as answer values; raise ValueError naming the column and what is allowed."""
    values = {k: (v or "").strip() for k, v in row.items() if k is not None}
    response_id = values["response_id"]
    if not response_id:
        raise _BadRow("response_id: empty; every row needs a unique response id")
    if len(response_id) > 128:
        raise _BadRow("response_id: longer than 128 characters")
    metric = values["metric"].lower()
    if metric not in DEFAULT_SCALES:
        raise _BadRow(f"metric: {values['metric']!r} is not one of csat, nps, ces")
    answered_at = _timestamp(values["submitted_at"])
    low, high, best = _scale(values, metric)
    score = _int("score", values["score"])
    if not low <= score <= high:
        raise _BadRow(f"score: {score} is outside the {metric} scale {low}-{high}")
    return {
        "response_id": response_id,
        "question_id": values.get("question") or metric,
        "metric": metric,
        "score": score,
        "scale_min": low,
        "scale_max": high,
        "scale_best": best,
        "text": values.get("comment") or None,
        "answered_at": answered_at,
        "ticket": values.get("ticket_id") or None,
        "agent": values.get("agent") or None,
        "team": values.get("team") or None,
        "channel": values.get("channel") or "import",
        "flow_id": values.get("flow") or "import",
        "language": (values.get("language") or "und")[:8],
    }


def _timestamp(raw: str) -> datetime:
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise _BadRow(
            f"submitted_at: {raw!r} is not an ISO 8601 date or time such as 2026-11-23T14:05:00Z"
        ) from exc
    # A time without zone is taken as UTC, the zone Afterword stores.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _int(column: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError as exc:
        raise _BadRow(f"{column}: {raw!r} is not a whole number") from exc


def _scale(values: dict[str, str], metric: str) -> tuple[int, int, str]:
    low, high, best = DEFAULT_SCALES[metric]
    if values.get("scale_min"):
        low = _int("scale_min", values["scale_min"])
    if values.get("scale_max"):
        high = _int("scale_max", values["scale_max"])
    if values.get("best"):
        best = values["best"].lower()
        if best not in ("high", "low"):
            raise _BadRow(f"best: {values['best']!r} is not high or low")
    if low >= high:
        raise _BadRow(f"scale_min/scale_max: {low}-{high} is not a scale (min must be below max)")
    if metric == "nps" and (low, high) != (0, 10):
        raise _BadRow(f"scale_min/scale_max: nps is always 0-10, not {low}-{high}")
    return low, high, best


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row) for each data row; ImportFailed on a bad file as a whole."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ImportFailed(str(path), [f"cannot open: {exc.strerror}"], 1) from exc
    with handle:
        try:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                allowed = ", ".join(REQUIRED + OPTIONAL)
                raise ImportFailed(
                    str(path), [f"missing column(s) {', '.join(missing)}; the columns are: {allowed}"], 1
                )
            for row in reader:
                yield reader.line_num, row
        except UnicodeDecodeError as exc:
            raise ImportFailed(
                str(path),
                [f"not UTF-8 text (byte {exc.object[exc.start]:#x}); save the file as UTF-8 CSV"],
                1,
            ) from exc
        except csv.Error as exc:
            raise ImportFailed(str(path), [f"line {reader.line_num}: not valid CSV: {exc}"], 1) from exc


async def import_csv(
    db: Database,
    path: Path,
    *,
    skip_bad: bool = False,
    progress: Callable[[int, int], None] | None = None,
    rebuild_from: int = REBUILD_INDEXES_FROM,
) -> ImportResult:
    """Import answers from ``path`` in one transaction; response ids seen before are not added again.

    The file is read once, in batches, so memory stays flat on large files. A bad row without
    ``skip_bad`` stops the inserts; the rest of the file is still read to report its problems,
    and then the transaction is rolled back, so nothing is stored.
    """
    lines = _count_lines(path)  # progress total and the rebuild choice; quoted newlines count too
    problems: list[str] = []
    bad = rows = done = 0
    count = sa.select(sa.func.count()).select_from(answers)
    stmt = upsert_insert(db, answers).on_conflict_do_nothing(index_elements=["response_id"])
    rebuild = db.is_sqlite and lines >= rebuild_from
    async with db.write() as conn:
        before = (await conn.execute(count)).scalar_one()
        if rebuild:  # inside the transaction: a failed import leaves the indexes as they were
            await conn.run_sync(_drop_read_indexes)
        async with _import_cache(db, conn):
            batch: list[dict[str, Any]] = []
            for line, row in read_rows(path):
                rows += 1
                try:
                    values = parse_row(row)
                except _BadRow as exc:
                    bad += 1
                    if len(problems) < MAX_REPORTED:
                        problems.append(f"line {line}: {exc}")
                    continue
                if bad and not skip_bad:
                    continue  # nothing will be stored; read on only to count the problems
                batch.append(values)
                if len(batch) == BATCH:
                    await conn.execute(stmt, batch)
                    done += len(batch)
                    if progress is not None:
                        progress(done, lines)
                    batch = []
            if bad and not skip_bad:
                raise ImportFailed(str(path), problems, bad)  # rolls the transaction back
            if batch:
                await conn.execute(stmt, batch)
            if progress is not None:
                progress(done + len(batch), done + len(batch))
        if rebuild:
            # Built with SQLite's own 2 MiB cache: with 64 MiB the seven builds took 25 s instead
            # of 17 s for a million answers.
            await conn.run_sync(_create_read_indexes)
        added = (await conn.execute(count)).scalar_one() - before
        if added >= ANALYZE_AFTER:
            # Fresh statistics for the planner, in the same transaction.
            await conn.exec_driver_sql("ANALYZE answers")
    return ImportResult(rows, added, rows - bad - added, bad, tuple(problems))


def _count_lines(path: Path) -> int:
    """Lines after the header, counted in binary (a tenth of a second per million)."""
    try:
        with path.open("rb") as handle:
            newlines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError:
        return 0  # read_rows reports the file's problem in its own words
    return max(newlines - 1, 0)


@asynccontextmanager
async def _import_cache(db: Database, conn: AsyncConnection) -> AsyncIterator[None]:
    """64 MiB of SQLite page cache while importing, so index upkeep stays in memory; then
    SQLite's 2 MiB again, because the connection goes back to the pool with its setting."""
    if not db.is_sqlite:
        yield
        return
    await conn.exec_driver_sql("PRAGMA cache_size=-65536")
    try:
        yield
    finally:
        await conn.exec_driver_sql("PRAGMA cache_size=-2000")


def _drop_read_indexes(conn: sa.Connection) -> None:
    for index in READ_INDEXES:
        index.drop(conn)


def _create_read_indexes(conn: sa.Connection) -> None:
    for index in READ_INDEXES:
        index.create(conn)
