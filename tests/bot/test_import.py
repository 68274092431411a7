"""`afterword import`: CSV answers, all or nothing, never twice."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.errors import ImportFailed, ImportFileUnreadable
from bot.importer import BATCH, check_file, encoding_name, import_csv
from bot.service import Service
from bot.store.tables import answers

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


async def test_missing_columns_name_what_the_first_line_has(service: Service, tmp_path: Path) -> None:
    """A header without the required columns is one error naming them and the columns it has."""
    missing = write(tmp_path, "r1,2026-11-20,5\n", header="response_id,submitted_at,score\n")
    with pytest.raises(ImportFileUnreadable) as failed:
        await import_csv(service.db, missing)
    assert failed.value.reason.startswith(
        "missing column(s) metric (the first line has: response_id, submitted_at, score); the columns are: "
    )
    assert 0 == await count(service)


@pytest.mark.parametrize("kind", ["missing", "directory"])
async def test_a_file_that_cannot_be_opened_is_one_line_naming_it(
    service: Service, tmp_path: Path, kind: str
) -> None:
    """A missing path or a directory is its own error naming the path, not a bad row."""
    path = tmp_path / "nonexist.csv"
    if kind == "directory":
        path.mkdir()
    reason = {"missing": "No such file or directory", "directory": "Is a directory"}[kind]
    with pytest.raises(ImportFileUnreadable) as failed:
        await import_csv(service.db, path, skip_bad=True)
    assert f"{path}: cannot read the file: {reason}" == str(failed.value)


@pytest.mark.parametrize("delimiter", [";", "\t"])
async def test_semicolon_and_tab_files_are_read_with_commas_in_comments(
    service: Service, tmp_path: Path, delimiter: str
) -> None:
    """Excel-DE's ; and tab-separated files are read; commas in their comments stay text."""
    header = delimiter.join(["response_id", "submitted_at", "metric", "score", "comment"]) + "\n"
    body = "".join(
        delimiter.join(cells) + "\n"
        for cells in (
            ["r1", "2026-11-20T10:00:00Z", "csat", "4", "gut, aber 3,5 Tage gewartet"],
            ["r2", "2026-11-20T10:00:00Z", "nps", "9", '"mit ; im Text"'],
        )
    )
    result = await import_csv(service.db, write(tmp_path, body, header=header))
    async with service.db.read() as conn:
        rows = (await conn.execute(sa.select(answers.c.response_id, answers.c.score, answers.c.text))).all()
    assert (2, [("r1", 4, "gut, aber 3,5 Tage gewartet"), ("r2", 9, "mit ; im Text")]) == (
        result.added,
        sorted(tuple(r) for r in rows),
    )


async def test_utf8_byte_order_mark_is_dropped(service: Service, tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" starts with a byte order mark; the first column is still response_id."""
    path = write(tmp_path, "r1,2026-11-20,csat,5,jürgen,,,,\n", header="\ufeff" + HEADER)
    result = await import_csv(service.db, path)
    async with service.db.read() as conn:
        agent = (await conn.execute(sa.select(answers.c.agent))).scalar_one()
    assert (1, "jürgen") == (result.added, agent)


async def test_non_utf8_file_is_refused_naming_the_encoding_line_and_byte(
    service: Service, tmp_path: Path
) -> None:
    """A Windows-1252 file read as UTF-8 is refused with the bad byte, its line and offset, and the fix."""
    path = write(
        tmp_path, "r1,2026-11-20,csat,5,anna,,,,\nr2,2026-11-20,csat,5,jürgen,,,,\n", encoding="cp1252"
    )
    offset = len(HEADER) + len("r1,2026-11-20,csat,5,anna,,,,\nr2,2026-11-20,csat,5,j")
    with pytest.raises(ImportFileUnreadable) as failed:
        await import_csv(service.db, path)
    assert (
        f"not UTF-8 text (byte 0xfc on line 3, offset {offset}); "
        'save it as "CSV UTF-8", or name its encoding, e.g. --encoding cp1252'
    ) == failed.value.reason
    assert 0 == await count(service)


async def test_bad_byte_after_stored_batches_rolls_everything_back(service: Service, tmp_path: Path) -> None:
    """A bad byte far into the file (past the decoder's read-ahead) stores nothing and names its line."""
    good = "".join(f"r{i},2026-11-20T10:00:00Z,csat,{i % 5 + 1},,,,,\n" for i in range(BATCH + 5))
    path = write(tmp_path, good + "bad,2026-11-20T10:00:00Z,csat,3,müller,,,,\n", encoding="latin-1")
    with pytest.raises(ImportFileUnreadable) as failed:
        await import_csv(service.db, path)
    assert (True, 0) == (f"on line {BATCH + 7}," in failed.value.reason, await count(service))


async def test_cp1252_file_is_read_with_its_encoding(service: Service, tmp_path: Path) -> None:
    """--encoding cp1252 reads an Excel "CSV" file from Windows with its umlauts and euro sign."""
    path = write(tmp_path, "r1,2026-11-20,csat,5,jürgen,10 € zurück,,,\n", encoding="cp1252")
    await import_csv(service.db, path, encoding="cp1252")
    async with service.db.read() as conn:
        row = (await conn.execute(sa.select(answers.c.agent, answers.c.text))).one()
    assert ("jürgen", "10 € zurück") == tuple(row)


@pytest.mark.parametrize(
    ("data", "encoding", "reason"),
    [
        (
            codecs.BOM_UTF16_LE + HEADER.encode("utf-16-le"),
            "utf-8",
            'UTF-16 text (Excel\'s "Unicode Text"); save it as "CSV UTF-8" and import that',
        ),
        (
            codecs.BOM_UTF8 + HEADER.encode(),
            "cp1252",
            "starts with a UTF-8 byte order mark, so it is UTF-8, not cp1252: leave out --encoding",
        ),
        (b"", "utf-8", "the file is empty; its first line must name the columns"),
    ],
)
def test_files_that_cannot_be_read_as_given_are_refused(
    tmp_path: Path, data: bytes, encoding: str, reason: str
) -> None:
    """UTF-16, a UTF-8 mark with another encoding named, and an empty file are refused, saying why."""
    path = tmp_path / "answers.csv"
    path.write_bytes(data)
    with pytest.raises(ImportFileUnreadable) as failed:
        check_file(path, encoding)
    assert failed.value.reason.startswith(reason)


def test_encoding_names_take_aliases_and_refuse_the_rest() -> None:
    """Aliases of the allowed encodings are accepted; any other name is refused with the list."""
    names = [encoding_name(n) for n in ("UTF8", "utf-8-sig", "windows-1252", "latin1", "ISO-8859-15")]
    assert ["utf-8", "utf-8", "cp1252", "latin-1", "iso-8859-15"] == names
    with pytest.raises(ValueError, match="is not one of") as refused:
        encoding_name("utf-16")
    assert "'utf-16' is not one of utf-8, cp1252, latin-1, iso-8859-15" == str(refused.value)


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
