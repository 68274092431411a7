"""`afterword import`: answers collected with other tools, from CSV, all or nothing."""

from __future__ import annotations

import codecs
import csv
import io
import itertools
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from bot.errors import ImportFailed, ImportFileUnreadable
from bot.store.db import Database, upsert_insert
from bot.store.tables import READ_INDEXES, answers

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
# --encoding names and their codecs: UTF-8 (Excel's "CSV UTF-8", with or without a byte order
# mark) and the single-byte encodings Excel writes as plain "CSV" in western Europe.
ENCODINGS = {"utf-8": "utf-8-sig", "cp1252": "cp1252", "latin-1": "latin-1", "iso-8859-15": "iso8859-15"}
# Python's own name of each codec (codecs.lookup) → the --encoding name; so aliases work too.
_ENCODING_NAMES = {
    "utf-8": "utf-8",
    "utf-8-sig": "utf-8",
    "cp1252": "cp1252",
    "iso8859-1": "latin-1",
    "iso8859-15": "iso-8859-15",
}
DELIMITERS = (",", ";", "\t")


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
        raise _BadRow("response_id: empty; every row needs the response id of its respondent")
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


def encoding_name(name: str) -> str:
    """The --encoding name for ``name`` or an alias of it (utf8, windows-1252, latin1); ValueError
    naming the allowed ones otherwise. Only encodings Excel and its peers write are allowed, so a
    typo cannot turn every umlaut into mojibake."""
    try:
        found = _ENCODING_NAMES.get(codecs.lookup(name).name)
    except LookupError:
        found = None
    if found is None:
        raise ValueError(f"{name!r} is not one of {', '.join(ENCODINGS)}")
    return found


def check_file(path: Path, encoding: str = "utf-8") -> None:
    """Read the header and first row of ``path`` as import_csv does; ImportFileUnreadable if it
    cannot be read, so the CLI fails on a bad file before it opens the database."""
    rows = read_rows(path, encoding)
    try:
        next(rows, None)
    finally:
        rows.close()


def read_rows(path: Path, encoding: str = "utf-8") -> Generator[tuple[int, dict[str, str]], None, None]:
    """(line number, row) for each data row, streamed; ImportFileUnreadable on a bad file as a whole.

    UTF-8 may start with a byte order mark (Excel's "CSV UTF-8" does); it is dropped. Columns may
    be separated by ``,``, ``;`` (Excel in Germany) or tab: the first line decides.
    """
    name = encoding_name(encoding)
    try:
        binary = path.open("rb")
    except OSError as exc:
        raise ImportFileUnreadable(str(path), f"cannot read the file: {exc.strerror}") from exc
    with binary:
        _check_bom(path, binary.peek(4)[:4], name)
        text = io.TextIOWrapper(binary, encoding=ENCODINGS[name], newline="")
        reader: csv.DictReader[str] | None = None
        try:
            first = text.readline()
            reader = csv.DictReader(itertools.chain([first], text), delimiter=_delimiter(first))
            _check_header(path, reader)
            for row in reader:
                yield reader.line_num, row
        except UnicodeDecodeError as exc:
            raise ImportFileUnreadable(str(path), _undecodable(path, name)) from exc
        except csv.Error as exc:
            line = reader.line_num if reader is not None else 1
            raise ImportFileUnreadable(str(path), f"line {line}: not valid CSV: {exc}") from exc


def _check_bom(path: Path, head: bytes, name: str) -> None:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ImportFileUnreadable(
            str(path), 'UTF-16 text (Excel\'s "Unicode Text"); save it as "CSV UTF-8" and import that'
        )
    if head.startswith(codecs.BOM_UTF8) and name != "utf-8":
        raise ImportFileUnreadable(
            str(path),
            f"starts with a UTF-8 byte order mark, so it is UTF-8, not {name}: leave out --encoding",
        )


def _delimiter(first: str) -> str:
    """The separator that makes the most known column names of the header line; ``,`` on a tie.

    Judged on the header, not on rows, so commas inside a ``;`` file's comments do not mislead it.
    """
    known = set(REQUIRED + OPTIONAL)

    def hits(delimiter: str) -> int:
        names = next(csv.reader([first], delimiter=delimiter), [])
        return sum(name.strip() in known for name in names)

    return max(DELIMITERS, key=hits)


def _check_header(path: Path, reader: csv.DictReader[str]) -> None:
    header = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = header  # "score " from a hand-edited header is still score
    if not any(header):
        raise ImportFileUnreadable(
            str(path), f"the file is empty; its first line must name the columns {', '.join(REQUIRED)}"
        )
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        found = ", ".join(header)
        found = found if len(found) <= 80 else found[:79] + "…"
        raise ImportFileUnreadable(
            str(path),
            f"missing column(s) {', '.join(missing)} (the first line has: {found}); the columns are: "
            f"{', '.join(REQUIRED + OPTIONAL)}, separated by , or ; or tab",
        )


def _undecodable(path: Path, name: str) -> str:
    """Where the first byte that is not ``name`` text is. Found again in binary, line by line,
    because the text layer decodes ahead in chunks and cannot say where it stopped."""
    codec = "utf-8" if name == "utf-8" else ENCODINGS[name]
    if name == "utf-8":
        hint = 'save it as "CSV UTF-8", or name its encoding, e.g. --encoding cp1252'
    else:
        hint = f"name its encoding with --encoding ({', '.join(ENCODINGS)})"
    label = "UTF-8" if name == "utf-8" else name
    offset = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode(codec)
            except UnicodeDecodeError as exc:
                where = f"byte 0x{line[exc.start]:02x} on line {number}, offset {offset + exc.start}"
                return f"not {label} text ({where}); {hint}"
            offset += len(line)
    return f"not {label} text; {hint}"


async def import_csv(
    db: Database,
    path: Path,
    *,
    skip_bad: bool = False,
    progress: Callable[[int, int], None] | None = None,
    rebuild_from: int = REBUILD_INDEXES_FROM,
    encoding: str = "utf-8",
) -> ImportResult:
    """Import answers from ``path`` in one transaction; response ids seen before are not added again.

    The file is read once, in batches, so memory stays flat on large files. A bad row without
    ``skip_bad`` stops the inserts; the rest of the file is still read to report its problems,
    and then the transaction is rolled back, so nothing is stored.
    """
    lines = _count_lines(path)  # progress total and the rebuild choice; quoted newlines count too
    rebuild = db.is_sqlite and lines >= rebuild_from
    return await db.transact(_import, db.dialect, path, encoding, skip_bad, progress, lines, rebuild)


def _import(
    conn: Connection,
    dialect: str,
    path: Path,
    encoding: str,
    skip_bad: bool,
    progress: Callable[[int, int], None] | None,
    lines: int,
    rebuild: bool,
) -> ImportResult:
    problems: list[str] = []
    bad = rows = done = 0
    count = sa.select(sa.func.count()).select_from(answers)
    stmt = upsert_insert(dialect, answers).on_conflict_do_nothing(
        index_elements=["response_id", "question_id"]
    )
    last_id = sa.select(sa.func.coalesce(sa.func.max(answers.c.id), 0))
    before = conn.execute(count).scalar_one()
    first_new = conn.execute(last_id).scalar_one() + 1
    if rebuild:  # inside the transaction: a failed import leaves the indexes as they were
        _drop_read_indexes(conn)
    with _import_cache(conn):
        batch: list[dict[str, Any]] = []
        for line, row in read_rows(path, encoding):
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
                conn.execute(stmt, batch)
                done += len(batch)
                if progress is not None:
                    progress(done, lines)
                batch = []
        if bad and not skip_bad:
            raise ImportFailed(str(path), problems, bad)  # rolls the transaction back
        if batch:
            conn.execute(stmt, batch)
        if progress is not None:
            progress(done + len(batch), done + len(batch))
    conn.execute(_MARK_HEADLINES, {"first_new": first_new})
    if rebuild:
        # Built with SQLite's own 2 MiB cache: with 64 MiB the seven builds took 25 s instead
        # of 17 s for a million answers.
        _create_read_indexes(conn)
    added = conn.execute(count).scalar_one() - before
    if added >= ANALYZE_AFTER:
        # Fresh statistics for the planner, in the same transaction.
        conn.exec_driver_sql("ANALYZE answers")
    return ImportResult(rows, added, rows - bad - added, bad, tuple(problems))


def _mark_headlines() -> sa.Update:
    """The first added row of each response and metric is its headline, unless one was there before.

    One respondent is one observation (see migration 0008): a response with several CSAT
    questions counts once in CSAT, through its first row in the file; the others are
    reported per question. Rows are numbered in file order, so "first" is the lowest id.
    The responses that had a headline before are read once (NOT IN), not looked up per row:
    SQLite answered a correlated NOT EXISTS from the report index, 4.5 s for 5,000 rows.
    """
    a, b = answers.alias("a"), answers.alias("b")
    had_one = sa.select(b.c.response_id, b.c.metric).where(
        b.c.id < sa.bindparam("first_new"), b.c.headline, b.c.response_id.is_not(None)
    )
    firsts = (
        sa.select(sa.func.min(a.c.id))
        .where(
            a.c.id >= sa.bindparam("first_new"),
            a.c.response_id.is_not(None),
            sa.tuple_(a.c.response_id, a.c.metric).not_in(had_one),
        )
        .group_by(a.c.response_id, a.c.metric)
    )
    return answers.update().where(answers.c.id.in_(firsts)).values(headline=True)


_MARK_HEADLINES = _mark_headlines()


def _count_lines(path: Path) -> int:
    """Lines after the header, counted in binary (a tenth of a second per million)."""
    try:
        with path.open("rb") as handle:
            newlines = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError as exc:  # before the transaction: a missing file never touches the database
        raise ImportFileUnreadable(str(path), f"cannot read the file: {exc.strerror}") from exc
    return max(newlines - 1, 0)


@contextmanager
def _import_cache(conn: Connection) -> Iterator[None]:
    """64 MiB of SQLite page cache while importing, so index upkeep stays in memory; then
    SQLite's 2 MiB again, because the connection goes back to the pool with its setting."""
    if conn.dialect.name != "sqlite":
        yield
        return
    conn.exec_driver_sql("PRAGMA cache_size=-65536")
    try:
        yield
    finally:
        conn.exec_driver_sql("PRAGMA cache_size=-2000")


def _drop_read_indexes(conn: sa.Connection) -> None:
    for index in READ_INDEXES:
        index.drop(conn)


def _create_read_indexes(conn: sa.Connection) -> None:
    for index in READ_INDEXES:
        index.create(conn)
