"""`afterword demo`: months of made-up surveys in a SQLite file of its own, through the real paths."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from bot.cli.demo import AGENTS, build_demo, timeline_end
from bot.store.tables import answers, jobs, staff, surveys
from bot.web.auth import verify_password
from tests.cli import invoke, query
from tests.support import environment

# Each demo takes seconds to build: these run in `make test`, not in the fast lane.
pytestmark = pytest.mark.slow

NOW = datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
PASSWORD = "correct horse battery"


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


def _rows(path: Path, stmt: sa.Select[Any]) -> list[tuple[Any, ...]]:
    return asyncio.run(query(_url(path), stmt))


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default demo (four months, seed 1), built once for the module."""
    path = tmp_path_factory.mktemp("demo") / "afterword-demo.db"
    asyncio.run(build_demo(path, now=NOW, login=("demo", PASSWORD)))
    return path


def test_demo_has_agents_teams_channels_and_every_metric(demo_db: Path) -> None:
    """Six agents in three teams, five channels, three flows in German and English, CSAT, NPS and CES."""
    found = {
        "agents": _rows(demo_db, sa.select(answers.c.agent).distinct().order_by(answers.c.agent)),
        "teams": _rows(demo_db, sa.select(answers.c.team).distinct().order_by(answers.c.team)),
        "channels": _rows(demo_db, sa.select(answers.c.channel).distinct().order_by(answers.c.channel)),
        "flows": _rows(demo_db, sa.select(answers.c.flow_id).distinct().order_by(answers.c.flow_id)),
        "languages": _rows(demo_db, sa.select(answers.c.language).distinct().order_by(answers.c.language)),
        "metrics": _rows(
            demo_db, sa.select(answers.c.metric).distinct().where(answers.c.metric.is_not(None))
        ),
    }
    assert {
        "agents": sorted((a.name,) for a in AGENTS),
        "teams": [("Billing",), ("Support",), ("Technik",)],
        "channels": [("sms",), ("telegram",), ("voice",), ("web",), ("whatsapp",)],
        "flows": [("ces",), ("nps",), ("support-csat",)],
        "languages": [("de",), ("en",)],
        "metrics": sorted([("csat",), ("nps",), ("ces",)]),
    } == {key: sorted(value) if key == "metrics" else value for key, value in found.items()}


def test_demo_spans_four_months_and_ends_settled(demo_db: Path) -> None:
    """Surveys sent over four months up to three days ago; no send, reminder or expiry is left to do."""
    ((first, last),) = _rows(
        demo_db, sa.select(sa.func.min(surveys.c.sent_at), sa.func.max(surveys.c.sent_at))
    )
    open_jobs = _rows(
        demo_db,
        sa.select(jobs.c.kind).where(
            jobs.c.status == "pending", jobs.c.kind.in_(("send", "reminder", "expire"))
        ),
    )
    open_surveys = _rows(demo_db, sa.select(surveys.c.id).where(surveys.c.status.in_(("pending", "active"))))
    end = timeline_end(NOW)
    assert (True, True, [], []) == (
        timedelta(days=115) < last - first < timedelta(days=125),
        end - timedelta(days=4) < last < end - timedelta(days=2),
        open_jobs,
        open_surveys,
    )


def test_demo_statuses_make_the_response_rate_meaningful(demo_db: Path) -> None:
    """Completed, expired (unanswered or half answered), undelivered, unanswered calls, stopped: all occur."""
    statuses = {status for (status,) in _rows(demo_db, sa.select(surveys.c.status).distinct())}
    answered_but_expired = _rows(
        demo_db,
        sa.select(sa.func.count()).where(
            surveys.c.status == "expired", sa.exists().where(answers.c.survey_id == surveys.c.id)
        ),
    )[0][0]
    assert ({"completed", "expired", "failed", "no_answer", "stopped", "incomplete"}, True) == (
        statuses,
        answered_but_expired > 0,
    )


def test_demo_agents_differ(demo_db: Path) -> None:
    """Anna's customers are the most satisfied; Oliver's give the most NPS detractors."""
    csat_top2 = sa.func.avg(sa.case((answers.c.score <= 2, 1.0), else_=0.0))
    by_agent = dict(
        _rows(
            demo_db,
            sa.select(answers.c.agent, csat_top2)
            .where(answers.c.question_id == "satisfaction")
            .group_by(answers.c.agent),
        )
    )
    detractors = dict(
        _rows(
            demo_db,
            sa.select(answers.c.agent, sa.func.avg(sa.case((answers.c.score <= 6, 1.0), else_=0.0)))
            .where(answers.c.metric == "nps")
            .group_by(answers.c.agent),
        )
    )
    assert ("Anna", "Oliver") == (
        max(by_agent, key=by_agent.__getitem__),
        max(detractors, key=detractors.__getitem__),
    )


def test_demo_has_comments_in_german_and_english(demo_db: Path) -> None:
    """Customers left comments in both languages."""
    counts = dict(
        _rows(
            demo_db,
            sa.select(answers.c.language, sa.func.count())
            .where(answers.c.text.is_not(None))
            .group_by(answers.c.language),
        )
    )
    assert (True, True) == (counts.get("de", 0) >= 20, counts.get("en", 0) >= 10)


def test_demo_login_is_a_manager(demo_db: Path) -> None:
    """The login asked for is a manager with the password given."""
    rows = _rows(demo_db, sa.select(staff.c.web_login, staff.c.role, staff.c.password_hash))
    assert [("demo", "manager", True)] == [
        (login, role, verify_password(h, PASSWORD)) for login, role, h in rows
    ]


def test_report_on_the_demo(demo_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`afterword report --format json` on the demo file shows all three metrics and a response rate."""
    monkeypatch.chdir(tmp_path)  # no .env of the repository
    shown = invoke(
        ["report", "--since", "365d", "--by", "agent", "--format", "json"], environment(_url(demo_db))
    )
    assert 0 == shown.code, shown.stderr
    data = json.loads(shown.stdout)
    rate = data["response_rate"]
    assert (True, True, True, 6, True, True) == (
        data["csat"]["n"] > 300,
        data["nps"]["n"] > 100,
        data["ces"]["n"] > 50,
        len(data["groups"]),
        rate["not_delivered"] > 0,
        0 < rate["answered"] < rate["delivered"],
    )


def _dump(path: Path) -> list[list[tuple[Any, ...]]]:
    return [
        _rows(
            path,
            sa.select(surveys.c.ticket, surveys.c.status, surveys.c.sent_at, surveys.c.agent).order_by(
                surveys.c.id
            ),
        ),
        _rows(
            path,
            sa.select(
                answers.c.ticket,
                answers.c.question_id,
                answers.c.score,
                answers.c.text,
                answers.c.answered_at,
            ).order_by(answers.c.id),
        ),
    ]


def test_same_seed_same_database(tmp_path: Path) -> None:
    """The same seed on the same day gives the same surveys and answers; another seed does not."""
    for name, seed in (("a.db", 7), ("b.db", 7), ("c.db", 8)):
        asyncio.run(build_demo(tmp_path / name, now=NOW, months=1, seed=seed))
    a, b, c = (_dump(tmp_path / name) for name in ("a.db", "b.db", "c.db"))
    assert (True, False) == (a == b, a == c)


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_demo_refuses_an_existing_file(
    cli_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An existing file is left alone without --force: one line naming it, exit 1."""
    monkeypatch.chdir(tmp_path)
    there = tmp_path / "mine.db"
    there.write_bytes(b"precious")
    ran = invoke(["demo", "--database", str(there)], cli_env)
    assert (1, [f"Error: --database: {there} is there already; add --force to replace it"], b"precious") == (
        ran.code,
        ran.stderr.strip().splitlines(),
        there.read_bytes(),
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_demo_refuses_the_real_database(cli_env: dict[str, str], db_url: str) -> None:
    """`--force` on DATABASE_URL's own file is refused: the demo never replaces real answers."""
    real = db_url.removeprefix("sqlite+aiosqlite:///")
    ran = invoke(["demo", "--database", real, "--force"], cli_env)
    assert (2, True, True) == (
        ran.code,
        "DATABASE_URL's database" in ran.stderr,
        Path(real).stat().st_size > 0,
    )
