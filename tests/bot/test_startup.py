"""Start-up: `afterword --help` and `afterword report` import only what they use; which database is opened."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from bot.errors import ConfigError
from bot.settings import load_settings
from bot.store.db import HEAD_REVISION, Database, describe, head_revision
from tests.cli import invoke
from tests.support import environment

CHANNELS_AND_CHART = ("matplotlib", "telegram", "twilio")
DATABASE_AND_WEB = ("sqlalchemy", "pydantic_settings", "fastapi", "uvicorn")
# The `afterword` entry point in a fresh interpreter; what it imported is written to argv[1].
PROBE = """
import json, sys
out, args = sys.argv[1], json.loads(sys.argv[2])
sys.argv = ["afterword", *args]
from bot.cli.main import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
with open(out, "w", encoding="utf-8") as handle:
    json.dump({"code": code, "modules": sorted(sys.modules)}, handle)
"""


def _run(args: list[str], env: dict[str, str], folder: Path) -> dict[str, Any]:
    """Exit code and imported module names of `afterword *args`, run in ``folder``."""
    out = folder / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), json.dumps(args)],
        env=env,
        cwd=folder,  # no .env of the developer's is read
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.exists(), f"the probe failed (exit {done.returncode}):\n{done.stderr}"
    found: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return found


def _under(modules: list[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in packages)


def test_help_imports_no_database_web_chart_or_channel_library(tmp_path: Path) -> None:
    """`afterword --help` exits 0 without importing a chart, channel, database or web library."""
    ran = _run(["--help"], environment(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"), tmp_path)
    assert (0, []) == (ran["code"], _under(ran["modules"], CHANNELS_AND_CHART + DATABASE_AND_WEB))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_report_json_imports_no_chart_or_channel_library(db_url: str, tmp_path: Path) -> None:
    """`afterword report --format json` exits 0 without importing matplotlib, telegram or twilio."""
    ran = _run(["report", "--format", "json"], environment(db_url), tmp_path)
    assert (0, []) == (ran["code"], _under(ran["modules"], CHANNELS_AND_CHART))


# The API's report in a fresh interpreter: bot.web.api and bot.reports imported, a report with a
# trend built and turned into JSON; the JSON's keys and the imported modules go to argv[1].
API_PROBE = """
import asyncio, json, sys
from datetime import UTC, datetime
from sqlalchemy.engine import make_url
import bot.web.api, bot.reports
from bot.store.db import Database

async def build():
    db = Database(make_url(sys.argv[2]))
    try:
        query = bot.reports.report_query(now=datetime.now(UTC), by="agent", trend="week")
        return (await bot.reports.build_report(db, query)).json_data()
    finally:
        await db.dispose()

data = asyncio.run(build())
with open(sys.argv[1], "w", encoding="utf-8") as handle:
    json.dump({"keys": sorted(data), "modules": sorted(sys.modules)}, handle)
"""


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_api_report_json_imports_no_chart_code(db_url: str, tmp_path: Path) -> None:
    """bot.web.api and a JSON report with a trend import neither matplotlib nor scoring.chart."""
    out = tmp_path / "modules.json"
    done = subprocess.run(
        [sys.executable, "-c", API_PROBE, str(out), db_url],
        env=environment(db_url),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.exists(), f"the probe failed (exit {done.returncode}):\n{done.stderr}"
    ran = json.loads(out.read_text(encoding="utf-8"))
    chart = [m for m in ran["modules"] if m.split(".")[0] == "matplotlib" or m == "scoring.chart"]
    assert (True, []) == ("trend" in ran["keys"], chart)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_report_on_a_current_database_neither_migrates_nor_reads_flows(db_url: str, tmp_path: Path) -> None:
    """A report on a database at the newest revision imports neither Alembic nor the flow loader."""
    ran = _run(["report", "--format", "json"], environment(db_url), tmp_path)
    found = [m for m in ran["modules"] if m.split(".")[0] == "alembic" or m == "flows.loader"]
    assert [] == found


def test_head_revision_constant_is_alembics_head() -> None:
    """HEAD_REVISION, which start-up compares with, is the head Alembic finds in the migration files."""
    assert head_revision() == HEAD_REVISION


async def test_sqlite_behind_the_head_is_migrated_on_open(tmp_path: Path) -> None:
    """Database.open brings a SQLite file at an older revision to the newest one."""
    url = make_url(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    old = Database(url)
    await old.upgrade("0005")
    await old.dispose()
    db = await Database.open(url)
    try:
        assert HEAD_REVISION == await db.revision()
    finally:
        await db.dispose()


def _files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


async def test_open_refuses_a_missing_sqlite_file_and_makes_nothing(tmp_path: Path) -> None:
    """Database.open without create names the missing file and the command that makes it, and makes no file."""
    url = make_url(f"sqlite+aiosqlite:///{tmp_path / 'typo.db'}")
    with pytest.raises(ConfigError) as refused:
        await Database.open(url)
    assert (
        "DATABASE_URL",
        f"no SQLite file at {tmp_path / 'typo.db'}; create it with `afterword db upgrade` "
        "(or `afterword serve`), or correct DATABASE_URL",
        [],
    ) == (refused.value.key, refused.value.message, _files(tmp_path))


@pytest.mark.parametrize("create", [False, True])
async def test_open_never_makes_a_missing_folder(tmp_path: Path, create: bool) -> None:
    """A SQLite file in a folder that is not there is refused, even with create: the folder is not made."""
    url = make_url(f"sqlite+aiosqlite:///{tmp_path / 'volume' / 'afterword.db'}")
    with pytest.raises(ConfigError) as refused:
        await Database.open(url, create=create)
    assert (
        f"no folder {tmp_path / 'volume'} for the SQLite file afterword.db; make the folder, or correct DATABASE_URL",
        False,
    ) == (refused.value.message, (tmp_path / "volume").exists())


async def test_open_with_create_makes_and_migrates_a_new_file(tmp_path: Path) -> None:
    """Database.open(create=True), as `serve` calls it, makes a new SQLite file at the newest revision."""
    url = make_url(f"sqlite+aiosqlite:///{tmp_path / 'new.db'}")
    db = await Database.open(url, create=True)
    try:
        assert HEAD_REVISION == await db.revision()
    finally:
        await db.dispose()


def test_describe_names_the_absolute_sqlite_path_or_the_url_without_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """describe() resolves a relative SQLite path against the current folder and masks a PostgreSQL password."""
    monkeypatch.chdir(tmp_path)
    assert [
        f"sqlite {tmp_path / 'afterword.db'}",
        "postgresql+asyncpg://aw:***@db:5432/aw",
        "sqlite in memory",
    ] == [
        describe(make_url("sqlite+aiosqlite:///afterword.db")),
        describe(make_url("postgresql+asyncpg://aw:hunter2@db:5432/aw")),
        describe(make_url("sqlite+aiosqlite://")),
    ]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SURVEY_TTL_HOURS", "inf"),
        ("SURVEY_TTL_HOURS", "nan"),
        ("TARGET_CES", "nan"),
        ("TARGET_CSAT", "inf"),
        ("THROTTLE_DAYS", "99999999999"),
        ("REMINDER_AFTER_HOURS", "1e12"),
        ("SEND_RATE_SMS", "inf"),
        ("WORKER_POLL_SECONDS", "nan"),
    ],
)
def test_settings_refuse_values_that_break_at_run_time(
    key: str, value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Non-finite and absurd numbers are refused with the key named (they validated and broke later)."""
    monkeypatch.chdir(tmp_path)  # no .env of the repository
    monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as refused:
        load_settings(_env_file=None)
    assert key == refused.value.key


def test_unknown_default_flow_refuses_to_start(cli_env: dict[str, str], in_tmp_path: None) -> None:
    """DEFAULT_FLOW=nope: commands that load the flows refuse in one line, not every hook 422 later."""
    ran = invoke(["trigger", "--ticket", "T-1", "--channel", "web"], {**cli_env, "DEFAULT_FLOW": "nope"})
    assert (2, ["Error: DEFAULT_FLOW: no flow 'nope' is loaded; flows: ces, nps, support-csat"]) == (
        ran.code,
        ran.stderr.strip().splitlines(),
    )
