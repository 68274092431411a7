"""`afterword import`: CSV answers, all or nothing, never twice."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.errors import ImportFailed
from bot.importer import BATCH, import_csv
from bot.service import Service
from bot.tables import answers

HEADER = "response_id,submitted_at,metric,score,agent,comment,scale_min,scale_max,best\n"


def write(tmp_path: Path, body: str, header: str = HEADER, encoding: str = "utf-8") -> Path:
    path = tmp_path / "answers.csv"
    path.write_bytes((header + body).encode(encoding))
    return path


async def count(service: Service) -> int:
    async with service.db.read() as conn:
        return int((await conn.execute(sa.select(sa.func.count()).select_from(answers))).scalar_one())


def index_names(sync: sa.Connection) -> set[str]:
    return {i["name"] for i in sa.inspect(sync).get_indexes("answers") if i["name"]}


async def test_import_stores_rows_with_scales_and_defaults(service: Service, tmp_path: Path) -> None:
    """Rows are stored with their scale; csat defaults to 1-5 best high, a school grade row keeps best low."""
    path = write(
        tmp_path,
        "r1,2026-11-20T10:00:00Z,csat,5,anna,,,,\n"
        "r2,2026-11-20T11:00:00+01:00,csat,1,ben,prima,1,5,low\n"
        "r3,2026-11-21,nps,9,anna,,,,\n",
    )
    result = await import_csv(service.db, path)
    assert (3, 3, 0, 0) == (result.rows, result.added, result.already_there, result.skipped_bad)
    async with service.db.read() as conn:
        rows = (
            await conn.execute(
                sa.select(
                    answers.c.response_id,
                    answers.c.score,
                    answers.c.scale_min,
                    answers.c.scale_max,
                    answers.c.scale_best,
                    answers.c.text,
                    answers.c.answered_at,
                ).order_by(answers.c.response_id)
            )
        ).all()
    assert [
        ("r1", 5, 1, 5, "high", None, "2026-11-20T10:00:00+00:00"),
        ("r2", 1, 1, 5, "low", "prima", "2026-11-20T10:00:00+00:00"),
        ("r3", 9, 0, 10, "high", None, "2026-11-21T00:00:00+00:00"),
    ] == [(*r[:6], r[6].isoformat()) for r in rows]


async def test_importing_the_same_file_twice_adds_nothing(service: Service, tmp_path: Path) -> None:
    """Response ids seen before are not added again."""
    path = write(tmp_path, "r1,2026-11-20T10:00:00Z,csat,5,,,,,\nr2,2026-11-20T10:00:00Z,ces,6,,,,,\n")
    await import_csv(service.db, path)
    again = await import_csv(service.db, path)
    assert (0, 2, 2) == (again.added, again.already_there, await count(service))


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("r9,2026-11-20T10:00:00Z,csat,6,,,,,", "line 3: score: 6 is outside the csat scale 1-5"),
        ("r9,yesterday,csat,4,,,,,", "line 3: submitted_at: 'yesterday' is not an ISO 8601 date"),
        ("r9,2026-11-20,csat,four,,,,,", "line 3: score: 'four' is not a whole number"),
        ("r9,2026-11-20,nsp,4,,,,,", "line 3: metric: 'nsp' is not one of csat, nps, ces"),
        ("r9,2026-11-20,csat,4,,,1,5,best", "line 3: best: 'best' is not high or low"),
        (",2026-11-20,csat,4,,,,,", "line 3: response_id: empty"),
    ],
)
async def test_bad_row_stores_nothing_and_names_line_and_reason(
    service: Service, tmp_path: Path, row: str, message: str
) -> None:
    """One bad row stops the whole import with its line and reason; nothing is stored."""
    path = write(tmp_path, f"r1,2026-11-20T10:00:00Z,csat,5,,,,,\n{row}\n")
    with pytest.raises(ImportFailed) as failed:
        await import_csv(service.db, path)
    assert (1, True) == (failed.value.total, failed.value.problems[0].startswith(message))
    assert 0 == await count(service)


async def test_skip_bad_imports_the_good_rows(service: Service, tmp_path: Path) -> None:
    """With skip_bad the good rows are stored and the bad ones reported."""
    path = write(tmp_path, "r1,2026-11-20T10:00:00Z,csat,5,,,,,\nr2,2026-11-20T10:00:00Z,nps,11,,,,,\n")
    result = await import_csv(service.db, path, skip_bad=True)
    assert (1, 1, ("line 3: score: 11 is outside the nps scale 0-10",)) == (
        result.added,
        result.skipped_bad,
        result.problems,
    )


async def test_wrong_encoding_and_missing_columns_are_one_clear_error(
    service: Service, tmp_path: Path
) -> None:
    """A non-UTF-8 file and a file without the required columns fail with one message each."""
    latin = write(tmp_path, "r1,2026-11-20,csat,5,jürgen,,,,\n", encoding="latin-1")
    with pytest.raises(ImportFailed, match="not UTF-8 text"):
        await import_csv(service.db, latin)
    missing = write(tmp_path, "r1,2026-11-20,5\n", header="response_id,submitted_at,score\n")
    with pytest.raises(ImportFailed, match="missing column\\(s\\) metric"):
        await import_csv(service.db, missing)
    assert 0 == await count(service)


async def test_large_import_rebuilds_read_indexes(service: Service, tmp_path: Path) -> None:
    """An import past the rebuild threshold leaves every index of answers in place on SQLite and PostgreSQL."""

    async with service.db.read() as conn:
        before = await conn.run_sync(index_names)
    path = write(tmp_path, "".join(f"r{i},2026-11-20T10:00:00Z,nps,{i % 11},,,,,\n" for i in range(30)))
    result = await import_csv(service.db, path, rebuild_from=10)
    async with service.db.read() as conn:
        after = await conn.run_sync(index_names)
    assert (30, before) == (result.added, after)
    assert {"ix_answers_report", "ix_answers_report_agent", "ix_answers_comments"} <= after


async def test_bad_row_after_stored_batches_rolls_everything_back(service: Service, tmp_path: Path) -> None:
    """A bad row after a whole batch went in, with the indexes dropped for the rebuild: nothing stays."""

    async with service.db.read() as conn:
        before = await conn.run_sync(index_names)
    good = "".join(f"r{i},2026-11-20T10:00:00Z,csat,{i % 5 + 1},,,,,\n" for i in range(BATCH + 5))
    path = write(tmp_path, good + "bad,2026-11-20T10:00:00Z,csat,9,,,,,\n")
    with pytest.raises(ImportFailed) as failed:
        await import_csv(service.db, path, rebuild_from=10)
    async with service.db.read() as conn:
        after = await conn.run_sync(index_names)
    assert (1, f"line {BATCH + 7}: score: 9 is outside the csat scale 1-5") == (
        failed.value.total,
        failed.value.problems[0],
    )
    assert (0, before) == (await count(service), after)


async def test_progress_ends_at_the_rows_stored(service: Service, tmp_path: Path) -> None:
    """Progress counts whole batches against the file's lines, and ends at the rows stored."""
    path = write(
        tmp_path, "".join(f"r{i},2026-11-20T10:00:00Z,nps,{i % 11},,,,,\n" for i in range(BATCH + 3))
    )
    seen: list[tuple[int, int]] = []
    await import_csv(service.db, path, progress=lambda done, total: seen.append((done, total)))
    assert [(BATCH, BATCH + 3), (BATCH + 3, BATCH + 3)] == seen
