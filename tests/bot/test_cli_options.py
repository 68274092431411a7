"""Every option and argument of every `afterword` command, each with an effect it must have.

CASES is a table: `afterword ARGV` (after the BEFORE commands, in a folder holding FILES)
exits with CODE, and what OBSERVE reads of the outcome (output, stored rows, a file) is
EXPECTED. A completeness test walks the command tree and names any option, argument or
command that no case exercises and ELSEWHERE does not point to.
"""

from __future__ import annotations

import asyncio
import csv
import functools
import importlib
import io
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
import sqlalchemy as sa
import typer.main
from sqlalchemy.engine import make_url

from bot.cli.main import app
from bot.store.db import describe, head_revision
from bot.store.tables import answers, api_keys, contacts, staff, surveys
from bot.web.app import VERSION
from bot.web.auth import verify_password
from tests.cli import ROOT, Ran, invoke, query, run

NOW = datetime.now(UTC)


def _day(days_ago: int) -> str:
    """The UTC date ``days_ago`` days before NOW, as 2026-11-23."""
    return (NOW - timedelta(days=days_ago)).date().isoformat()


def _at(days_ago: int) -> str:
    return (NOW - timedelta(days=days_ago)).isoformat()


# Five answers: in the last 7 days CSAT 5 (anna) and 4 (ben), NPS 10, CES 6; ten days ago CSAT 3.
# In 30 days CSAT has n=3, 66.7 % on the two best points and 33.3 % on the best one; the CSAT
# mean is 4 and the CES mean 6, so the CSI is 0.5·(4 − 3) + 0.5·(6 − 5) = 1.0 (seed 004).
ANSWERS = (
    "response_id,submitted_at,metric,score,agent\n"
    f"r1,{_at(2)},csat,5,anna\n"
    f"r2,{_at(2)},csat,4,ben\n"
    f"r3,{_at(10)},csat,3,ben\n"
    f"r4,{_at(2)},nps,10,anna\n"
    f"r5,{_at(2)},ces,6,ben\n"
)
FILES = {
    "answers.csv": ANSWERS,
    "bad.csv": "response_id,submitted_at,metric,score\nr1,2026-11-01,csat,4\nr2,2026-11-01,csat,9\n",
    "csi.yaml": (
        "attributes:\n  - {question: csat, weight: 0.5, expected: 3}\n  - {question: ces, weight: 0.5, expected: 5}\n"
    ),
    "broken-csi.yaml": "attributes:\n  - {question: csat, weight: heavy, expected: 2}\n",
}
IMPORTED = (("import", "answers.csv"),)
PASSWORD = "correct horse battery"
# Trigger only queues a survey: Twilio is never called, so made-up credentials do.
TWILIO = {
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "x" * 32,
    "TWILIO_FROM_NUMBER": "+4930901820",
    "PUBLIC_BASE_URL": "https://survey.example.com",
}
# Typer's completion options take the shell as a value when detection is off, as in Typer's own tests.
COMPLETION = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}


@dataclass(frozen=True)
class Outcome:
    """What a case's command left behind, for OBSERVE to read."""

    ran: Ran
    folder: Path
    db_url: str
    env: Mapping[str, str]
    fakes: Mapping[str, Any]

    @functools.cached_property
    def json(self) -> Any:
        return json.loads(self.ran.stdout)

    @property
    def errors(self) -> list[str]:
        return self.ran.stderr.strip().splitlines()

    def rows(self, *columns: Any) -> list[tuple[Any, ...]]:
        """The stored values of ``columns``, in the order of the first table's ids."""
        table = columns[0].table
        return asyncio.run(query(self.db_url, sa.select(*columns).order_by(table.c.id)))

    def again(self, *argv: str) -> Ran:
        """Another command, in the same environment."""
        return invoke(argv, self.env)

    def cells(self) -> list[list[str]]:
        """The body rows of the tables Rich drew on stdout, as their cells."""
        return [
            [cell.strip() for cell in line.split("│")[1:-1]]
            for line in self.ran.stdout.splitlines()
            if line.startswith("│")
        ]


@dataclass(frozen=True)
class Case:
    """`afterword ARGV` after BEFORE: it exits with CODE and OBSERVE of the outcome is EXPECTED."""

    argv: tuple[str, ...]
    observe: Callable[[Outcome], object]
    expected: object
    code: int = 0
    stdin: str = ""
    env: Mapping[str, str] = field(default_factory=dict)  # "{folder}" becomes the test's folder
    fakes: tuple[str, ...] = ()  # "telegram": the fake Bot API, and settings that point at it
    before: tuple[tuple[str, ...], ...] = ()
    bug: str | None = None  # the case fails until this is fixed: a strict xfail

    @property
    def id(self) -> str:
        after = f" after {'; '.join(' '.join(b) for b in self.before)}" if self.before else ""
        return " ".join(self.argv) + after


def _settings_for(name: str, fake: Any) -> dict[str, str]:
    if name == "telegram":
        return {"TELEGRAM_BOT_TOKEN": fake.token, "TELEGRAM_API_BASE_URL": fake.base_url}
    raise AssertionError(f"no fake named {name}")


def _csv_column(o: Outcome, column: str, metric: str) -> list[str]:
    return [
        row[column] for row in csv.DictReader(io.StringIO(o.ran.stdout)) if row["metric"].lower() == metric
    ]


def _md_rows(o: Outcome) -> list[list[str]]:
    """Markdown table rows below the header, as cells."""
    lines = [line for line in o.ran.stdout.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]


def _n(text: str) -> int:
    """The n of a cell such as '66.7 % [20.8, 93.9], n=3*'."""
    found = re.search(r"n=(\d+)", text)
    assert found, text
    return int(found.group(1))


def _first_number(text: str) -> float:
    found = re.search(r"-?\d+(?:\.\d+)?", text)
    assert found, text
    return float(found.group(0))


def _chart(o: Outcome, language: Literal["de", "en"], *report_args: str) -> tuple[int, bool]:
    """How many buckets of `report REPORT_ARGS` have answers, and whether trend.png is exactly their chart."""
    from bot.reports import trend_points
    from scoring.chart import trend_chart
    from scoring.report import Report

    shown = o.again("report", *report_args, "--format", "json")
    assert 0 == shown.code, shown.stderr
    data = json.loads(shown.stdout)
    points = trend_points(Report.model_validate(data))
    drawn = trend_chart(points, targets=data["targets"], language=language)
    answered = sum(p.csat is not None or p.nps is not None for p in points)
    return answered, drawn == (o.folder / "trend.png").read_bytes()


def _demo(o: Outcome, name: str, *columns: Any) -> list[tuple[Any, ...]]:
    """The stored values of ``columns`` in the demo file ``name`` of the test's folder."""
    table = columns[0].table
    url = f"sqlite+aiosqlite:///{o.folder / name}"
    return asyncio.run(query(url, sa.select(*columns).order_by(table.c.id)))


def _wrote(o: Outcome) -> int:
    """How many surveys `demo` says it wrote."""
    found = re.match(r"wrote \S+: (\d+) surveys", o.ran.stdout)
    assert found, o.ran.stdout
    return int(found.group(1))


CASES: list[Case] = [
    # -- afterword ------------------------------------------------------------------------------
    Case(("--version",), lambda o: o.ran.stdout, f"afterword {VERSION}\n"),
    Case(
        ("--verbose", "report", "--format", "json"),
        lambda o: (
            [line.replace(describe(make_url(o.db_url)), "{database}") for line in o.errors],
            o.json["csat"]["n"],
        ),
        (["database: {database}"], 0),
    ),
    Case(
        ("--show-completion", "bash"),
        lambda o: o.ran.stdout.strip().splitlines()[-1],
        "complete -o default -F _afterword_completion afterword",
        env=COMPLETION,
    ),
    Case(
        ("--install-completion", "bash"),
        lambda o: (
            (o.folder / ".bashrc").read_text().strip().replace(str(o.folder), "~"),
            "_AFTERWORD_COMPLETE=complete_bash"
            in (o.folder / ".bash_completions" / "afterword.sh").read_text(),
        ),
        ("source '~/.bash_completions/afterword.sh'", True),
        env={**COMPLETION, "HOME": "{folder}"},
    ),
    # -- serve: what is refused before it starts (a running server: see ELSEWHERE) ----------------
    Case(
        ("serve", "--workers", "0"),
        lambda o: o.errors,
        ["Error: --workers: 0 is not a number of processes; use 1 or more"],
        code=2,
    ),
    Case(
        ("serve", "--workers", "2", "--telegram-polling"),
        lambda o: o.errors,
        ["Error: --workers: only one process may long-poll Telegram; use --workers 1 or the webhook"],
        code=2,
    ),
    # -- chat -------------------------------------------------------------------------------------
    Case(
        ("chat", "--flow", "nps", "--contact", "kim"),
        lambda o: o.rows(answers.c.question_id, answers.c.score, answers.c.text),
        [("recommend", 9, None), ("reason", None, "schnell")],
        stdin="9\nschnell\n",
    ),
    Case(
        ("chat", "--lang", "en", "--contact", "kim"),
        lambda o: (
            o.rows(surveys.c.language),
            o.ran.stdout.count("How satisfied were you with our customer service?"),
        ),
        ([("en",)], 1),
    ),
    Case(
        ("chat", "--ticket", "T-9", "--agent", "anna", "--team", "blue", "--contact", "kim"),
        lambda o: o.rows(surveys.c.ticket, surveys.c.agent, surveys.c.team),
        [("T-9", "anna", "blue")],
    ),
    Case(
        ("chat", "--contact", "kim"),
        lambda o: o.rows(contacts.c.channel, contacts.c.address),
        [("console", "kim")],
    ),
    Case(
        ("chat", "--contact", "kim"),
        lambda o: (len(o.rows(surveys.c.id)), "(resuming survey 1)" in o.ran.stdout),
        (1, True),
        before=(("chat", "--contact", "kim"),),
    ),
    Case(
        ("chat", "--new", "--contact", "kim"),
        lambda o: (len(o.rows(surveys.c.id)), "resuming" in o.ran.stdout),
        (2, False),
        before=(("chat", "--contact", "kim"),),
    ),
    Case(
        ("chat", "--lang", "fr", "--contact", "kim"),
        lambda o: (["'fr'" in line for line in o.errors], o.rows(surveys.c.id)),
        ([True], []),
        code=2,
    ),
    Case(
        ("chat", "--flow", "nps", "--ticket", "T-nps", "--lang", "en", "--contact", "kim"),
        lambda o: (o.errors, o.rows(surveys.c.flow_id, surveys.c.status)),
        (
            [
                "Error: --flow: contact kim has open survey 1 of flow support-csat (no ticket, language de), "
                "not 'nps'; finish it (`afterword chat --contact kim`), or use --new to start a new one "
                "(the open one is then closed as incomplete)"
            ],
            [("support-csat", "active")],
        ),
        code=2,
        before=(("chat", "--contact", "kim"),),
    ),
    Case(
        ("chat", "--flow", "nope", "--contact", "kim"),
        lambda o: (o.errors, o.rows(surveys.c.id)),
        (["Error: --flow: unknown flow 'nope'; flows: ces, nps, support-csat"], []),
        code=2,
    ),
    Case(
        ("chat", "--new", "--flow", "nps", "--ticket", "T-nps", "--lang", "en", "--contact", "kim"),
        lambda o: o.rows(surveys.c.flow_id, surveys.c.ticket, surveys.c.language, surveys.c.status),
        [("support-csat", None, "de", "incomplete"), ("nps", "T-nps", "en", "active")],
        before=(("chat", "--contact", "kim"),),
    ),
    Case(
        ("chat", "--new", "--ticket", "T-1", "--contact", "lea"),
        lambda o: (o.errors, o.rows(surveys.c.ticket, surveys.c.status)),
        (
            [
                "Error: --ticket: ticket T-1 already has survey 1 of flow support-csat (active); "
                "a ticket is surveyed once per flow, so use another --ticket"
            ],
            [("T-1", "active")],
        ),
        code=2,
        before=(("chat", "--ticket", "T-1", "--contact", "kim"),),
    ),
    # -- report -----------------------------------------------------------------------------------
    Case(
        ("report", "--format", "table"),
        lambda o: [(row[0], _n(row[1])) for row in o.cells() if row[0] in ("CSAT", "NPS", "CES")],
        [("CSAT", 3), ("NPS", 1), ("CES", 1)],
        before=IMPORTED,
    ),
    Case(
        ("report", "--format", "json"),
        lambda o: (o.json["csat"]["n"], o.json["nps"]["value"], o.json["ces"]["value"]),
        (3, 100.0, 6.0),
        before=IMPORTED,
    ),
    Case(
        ("report", "--format", "csv"),
        lambda o: [row[:3] + row[4:5] for row in csv.reader(io.StringIO(o.ran.stdout))][:4],
        [
            ["scope", "key", "metric", "n"],
            ["period", "all", "csat", "3"],
            ["period", "all", "nps", "1"],
            ["period", "all", "ces", "1"],
        ],
        before=IMPORTED,
    ),
    Case(
        ("report", "--format", "md"),
        lambda o: [[row[0], _n(row[1])] for row in _md_rows(o) if row[0] in ("CSAT", "NPS", "CES")],
        [["CSAT", 3], ["NPS", 1], ["CES", 1]],
        before=IMPORTED,
    ),
    Case(
        ("report", "--format", "xml"),
        lambda o: o.errors,
        ["Error: --format: 'xml' is not one of table, json, csv, md"],
        code=2,
    ),
    Case(("report", "--since", "7d", "--format", "json"), lambda o: o.json["csat"]["n"], 2, before=IMPORTED),
    Case(
        ("report", "--since", "7d", "--to", _day(8)),
        lambda o: o.errors,
        ["Error: since: give a period ending now (since) or days (from, to), not both"],
        code=2,
    ),
    Case(
        ("report", "--from", _day(12), "--to", _day(8), "--format", "json"),
        lambda o: (o.json["period"]["from"][:10], o.json["period"]["to"][:10], o.json["csat"]["n"]),
        (_day(12), _day(7), 1),
        before=IMPORTED,
    ),
    Case(
        ("report", "--by", "agent", "--format", "json"),
        lambda o: [(g["key"], g["csat"]["n"]) for g in o.json["groups"]],
        [("anna", 1), ("ben", 2)],
        before=IMPORTED,
    ),
    Case(
        ("report", "--trend", "day", "--format", "json"),
        lambda o: (
            o.json["trend_by"],
            [(b["start"], b["csat"]["n"]) for b in o.json["trend"] if b["csat"]["n"]],
            len(o.json["trend"]),  # every day of the 30, empty ones too (a gap in the chart)
        ),
        ("day", [(_day(10), 1), (_day(2), 2)], 31),
        before=IMPORTED,
    ),
    Case(
        ("report", "--rule", "top1", "--format", "json"),
        lambda o: (o.json["rule"], o.json["csat"]["value"]),
        ("top1", pytest.approx(100 / 3, abs=0.05)),
        before=IMPORTED,
    ),
    # --csi: the CSI in every format; a file missing or malformed is one line naming it, exit 2.
    Case(
        ("report", "--csi", "csi.yaml"),
        lambda o: [line for line in o.ran.stdout.splitlines() if line.startswith("CSI:")],
        ["CSI: 1.000"],
        before=IMPORTED,
    ),
    Case(
        ("report", "--csi", "csi.yaml", "--format", "json"),
        lambda o: (o.json.get("csi", {}).get("value"), o.json.get("csi", {}).get("missing")),
        (pytest.approx(1.0), []),
        before=IMPORTED,
    ),
    Case(
        ("report", "--csi", "csi.yaml", "--format", "csv"),
        lambda o: [float(value) for value in _csv_column(o, "value", "csi")],
        [pytest.approx(1.0)],
        before=IMPORTED,
    ),
    Case(
        ("report", "--csi", "csi.yaml", "--format", "md"),
        lambda o: [_first_number(line) for line in o.ran.stdout.splitlines() if line.startswith("- CSI:")],
        [pytest.approx(1.0)],
        before=IMPORTED,
    ),
    Case(
        ("report", "--csi", "missing.yaml"),
        lambda o: ["missing.yaml" in line for line in o.errors],
        [True],
        code=2,
    ),
    Case(
        ("report", "--csi", "broken-csi.yaml"),
        lambda o: ["broken-csi.yaml" in line for line in o.errors],
        [True],
        code=2,
    ),
    # --lang: the table and Markdown in German (LANG is the caller's otherwise); JSON and CSV never change.
    Case(
        ("report", "--lang", "de"),
        lambda o: o.ran.stdout.split()[0],
        "Zeitraum",
        before=IMPORTED,
    ),
    Case(
        ("report", "--lang", "xx"),
        lambda o: o.errors,
        ["Error: --lang: 'xx' is not one of de, en"],
        code=2,
    ),
    # -- chart: trend.png is exactly the chart of the buckets `report` shows for the same options --
    Case(
        ("chart", "--out", "trend.png"),
        lambda o: _chart(o, "en", "--since", "90d", "--trend", "week"),
        (2, True),
        before=IMPORTED,
    ),
    Case(
        ("chart", "--out", "trend.png", "--since", "7d"),
        lambda o: _chart(o, "en", "--since", "7d", "--trend", "week"),
        (1, True),
        before=IMPORTED,
    ),
    Case(
        ("chart", "--out", "trend.png", "--trend", "day"),
        lambda o: _chart(o, "en", "--since", "90d", "--trend", "day"),
        (2, True),
        before=IMPORTED,
    ),
    Case(
        ("chart", "--out", "trend.png", "--lang", "de"),
        lambda o: _chart(o, "de", "--since", "90d", "--trend", "week"),
        (2, True),
        before=IMPORTED,
    ),
    Case(
        ("chart", "--out", "trend.png", "--lang", "fr"),
        lambda o: o.errors,
        ["Error: --lang: 'fr' is not de or en"],
        code=2,
    ),
    # -- import -----------------------------------------------------------------------------------
    Case(
        ("import", "answers.csv"),
        lambda o: (o.ran.stdout, o.rows(answers.c.response_id)),
        ("5 answer(s) added, 0 already there, 0 bad row(s) skipped\n", [(f"r{i}",) for i in range(1, 6)]),
    ),
    Case(
        ("import", "bad.csv", "--skip-bad"),
        lambda o: (o.ran.stdout, o.errors, o.rows(answers.c.response_id)),
        (
            "1 answer(s) added, 0 already there, 1 bad row(s) skipped\n",
            ["skipped line 3: score: 9 is outside the csat scale 1-5"],
            [("r1",)],
        ),
    ),
    Case(
        ("import", "answers.csv", "--encoding", "windows-1252"),
        lambda o: o.ran.stdout,
        "5 answer(s) added, 0 already there, 0 bad row(s) skipped\n",
    ),
    Case(
        ("import", "answers.csv", "--encoding", "utf-16"),
        lambda o: o.errors,
        ["Error: --encoding: 'utf-16' is not one of utf-8, cp1252, latin-1, iso-8859-15"],
        code=2,
    ),
    Case(
        ("import", "nonexist.csv", "--skip-bad"),
        lambda o: o.errors,
        ["Error: nonexist.csv: cannot read the file: No such file or directory"],
        code=1,
    ),
    # -- trigger ----------------------------------------------------------------------------------
    Case(
        ("trigger", "--channel", "web", "--ticket", "T-7"),
        lambda o: (
            o.ran.stdout.splitlines()[0],
            o.ran.stdout.splitlines()[1].startswith("https://survey.example.com/s/"),
            o.rows(surveys.c.channel, surveys.c.ticket),
        ),
        ("created: survey 1 for T-7 (support-csat, active)", True, [("web", "T-7")]),
        env={"PUBLIC_BASE_URL": "https://survey.example.com"},
    ),
    Case(
        ("trigger", "--channel", "sms", "--to", "0151 12345678", "--ticket", "T-2"),
        lambda o: o.rows(contacts.c.channel, contacts.c.address),
        [("sms", "+4915112345678")],
        env=TWILIO,
    ),
    Case(
        ("trigger", "--channel", "web", "--ticket", "T-3", "--agent", "anna", "--team", "blue"),
        lambda o: o.rows(surveys.c.agent, surveys.c.team),
        [("anna", "blue")],
    ),
    Case(
        ("trigger", "--channel", "web", "--ticket", "T-4", "--flow", "nps"),
        lambda o: (o.ran.stdout.splitlines()[0], o.rows(surveys.c.flow_id)),
        ("created: survey 1 for T-4 (nps, active)", [("nps",)]),
    ),
    Case(
        ("trigger", "--channel", "web", "--ticket", "T-5", "--lang", "en"),
        lambda o: o.rows(surveys.c.language),
        [("en",)],
    ),
    Case(
        ("trigger", "--channel", "sms", "--to", "+4915112345678", "--ticket", "T-6", "--delay", "1h"),
        lambda o: (
            [
                round((send - made).total_seconds() / 60)
                for send, made in o.rows(surveys.c.send_at, surveys.c.created_at)
            ],
            bool(re.search(r", send at \d{4}-\d\d-\d\d \d\d:\d\d UTC\)$", o.ran.stdout.splitlines()[0])),
        ),
        ([60], True),
        env=TWILIO,
    ),
    Case(
        ("trigger", "--channel", "web", "--ticket", "T-8", "--delay", "1h"),
        lambda o: (["delay" in line for line in o.errors], o.rows(surveys.c.id)),
        ([True], []),
        code=2,
    ),
    # -- db ---------------------------------------------------------------------------------------
    Case(
        ("db", "upgrade"),
        lambda o: (
            o.ran.stdout.replace(str(o.folder), "{folder}"),
            o.again("db", "status").code,
            (o.folder / "fresh.db").exists(),
        ),
        (f"database sqlite {{folder}}/fresh.db is at revision {head_revision()}\n", 0, True),
        env={"DATABASE_URL": "sqlite+aiosqlite:///fresh.db"},  # a new file in the test's folder
    ),
    Case(
        ("db", "status"),
        lambda o: o.ran.stdout.replace(describe(make_url(o.db_url)), "{database}"),
        "database: {{database}}\ncurrent:  {head}\nneeded:   {head}\n".format(head=head_revision()),
    ),
    # -- flows ------------------------------------------------------------------------------------
    Case(("flows", "list"), lambda o: [row[0] for row in o.cells()], ["ces", "nps", "support-csat"]),
    Case(
        ("flows", "check", "{root}/flows/builtin/nps.yaml", "{root}/flows/builtin/ces.yaml"),
        lambda o: o.ran.stdout,
        "ok: 2 path(s) checked, no problems\n",
    ),
    # -- staff ------------------------------------------------------------------------------------
    Case(
        ("staff", "add", "--telegram", "123", "--role", "agent", "--name", "Anna"),
        lambda o: (o.ran.stdout, o.rows(staff.c.telegram_id, staff.c.role, staff.c.name)),
        ("added: Telegram user 123 is agent\n", [(123, "agent", "Anna")]),
    ),
    Case(
        ("staff", "add", "--web-login", "anna", "--password-stdin"),
        lambda o: (
            o.ran.stdout,
            [
                (login, role, verify_password(hashed, PASSWORD))
                for login, role, hashed in o.rows(staff.c.web_login, staff.c.role, staff.c.password_hash)
            ],
        ),
        ("added: dashboard login anna is manager\n", [("anna", "manager", True)]),
        stdin=f"{PASSWORD}\n",
    ),
    Case(
        ("staff", "add", "--telegram", "5", "--password-stdin"),
        lambda o: (["--password-stdin" in line for line in o.errors], o.rows(staff.c.id)),
        ([True], []),
        code=2,
        stdin=f"{PASSWORD}\n",
    ),
    Case(
        ("staff", "remove", "--telegram", "123"),
        lambda o: (o.ran.stdout, o.rows(staff.c.id)),
        ("removed: Telegram user 123\n", []),
        before=(("staff", "add", "--telegram", "123"),),
    ),
    Case(
        ("staff", "list"),
        lambda o: o.cells(),
        [["123", "", "agent", "Anna", "", "database"]],
        before=(("staff", "add", "--telegram", "123", "--role", "agent", "--name", "Anna"),),
    ),
    Case(
        ("staff", "add", "--telegram", "123", "--lang", "de"),
        lambda o: (o.ran.stdout, o.rows(staff.c.telegram_id, staff.c.language)),
        ("added: Telegram user 123 is manager, language de\n", [(123, "de")]),
    ),
    Case(
        ("staff", "add", "--telegram", "123", "--lang", "xx"),
        lambda o: (o.errors, o.rows(staff.c.id)),
        (["Error: --lang: 'xx' is not one of de, en"], []),
        code=2,
    ),
    # -- telegram ---------------------------------------------------------------------------------
    Case(
        ("telegram", "set-webhook"),
        lambda o: (o.ran.stdout, [call.params["url"] for call in o.fakes["telegram"].sent("setWebhook")]),
        (
            "webhook set: https://survey.example.com/telegram/webhook (updates: message, callback_query)\n",
            ["https://survey.example.com/telegram/webhook"],
        ),
        env={"TELEGRAM_WEBHOOK_SECRET": "s3cret", "PUBLIC_BASE_URL": "https://survey.example.com"},
        fakes=("telegram",),
    ),
    # -- audit ------------------------------------------------------------------------------------
    Case(
        ("audit", "--since", "7d"),
        lambda o: [row[2:] for row in o.cells()],
        [["apikey-create", "apikey:zendesk-prod", "cli"]],
        before=(("apikey", "create", "zendesk-prod"),),
    ),
    # -- apikey -----------------------------------------------------------------------------------
    Case(
        ("apikey", "create", "zendesk-prod"),
        lambda o: (o.ran.stdout.startswith("aw_"), o.rows(api_keys.c.name, api_keys.c.revoked_at)),
        (True, [("zendesk-prod", None)]),
    ),
    Case(
        ("apikey", "list"),
        lambda o: [row[0] for row in o.cells()],
        ["zendesk-prod"],
        before=(("apikey", "create", "zendesk-prod"),),
    ),
    Case(
        ("apikey", "revoke", "zendesk-prod"),
        lambda o: (o.ran.stdout, [revoked is not None for (revoked,) in o.rows(api_keys.c.revoked_at)]),
        ("revoked: zendesk-prod\n", [True]),
        before=(("apikey", "create", "zendesk-prod"),),
    ),
    # -- demo: one month (the default four take longer); tests/bot/test_demo.py checks the data --
    Case(
        ("demo", "--database", "d.db", "--months", "1", "--web-login", "ana", "--password-stdin"),
        lambda o: (
            "dashboard login: ana" in o.ran.stdout,
            PASSWORD in o.ran.stdout,
            [
                (login, verify_password(h, PASSWORD))
                for login, h in _demo(o, "d.db", staff.c.web_login, staff.c.password_hash)
            ],
            25
            <= (
                max(d for (d,) in _demo(o, "d.db", surveys.c.sent_at))
                - min(d for (d,) in _demo(o, "d.db", surveys.c.sent_at))
            ).days
            <= 31,
        ),
        (True, False, [("ana", True)], True),
        stdin=f"{PASSWORD}\n",
    ),
    Case(
        ("demo", "--months", "1", "--seed", "2"),
        lambda o: (
            _demo(o, "afterword-demo.db", answers.c.score) == _demo(o, "seed-1.db", answers.c.score),
            _demo(o, "afterword-demo.db", staff.c.web_login),
        ),
        (False, [("demo",)]),
        before=(("demo", "--months", "1", "--database", "seed-1.db"),),
    ),
    Case(
        ("demo", "--months", "1", "--force"),
        lambda o: _wrote(o) == len(_demo(o, "afterword-demo.db", surveys.c.id)),
        True,
        before=(("demo", "--months", "1"),),
    ),
    Case(
        ("demo", "--months", "25"),
        lambda o: (o.errors, (o.folder / "afterword-demo.db").exists()),
        (["Error: --months: 25 is not 1 to 24"], False),
        code=2,
    ),
]

# What needs a running server or a long-running process, and the subprocess test asserting its effect.
ELSEWHERE = {
    # Erasure and export on a person surveyed by SMS and Telegram (tests/bot/test_privacy.py).
    "erase": "tests.bot.test_privacy::test_erase_by_ticket_with_the_cli",
    "erase --ticket": "tests.bot.test_privacy::test_erase_by_ticket_with_the_cli",
    "erase --yes": "tests.bot.test_privacy::test_erase_by_ticket_with_the_cli",
    "erase --phone": "tests.bot.test_privacy::test_cli_dry_run_and_refused_confirmation_change_nothing",
    "erase --dry-run": "tests.bot.test_privacy::test_cli_dry_run_and_refused_confirmation_change_nothing",
    "erase --email": "tests.bot.test_privacy::test_erase_by_email_and_telegram_with_the_cli",
    "erase --telegram": "tests.bot.test_privacy::test_erase_by_email_and_telegram_with_the_cli",
    "export-person": "tests.bot.test_privacy::test_export_returns_exactly_what_is_stored",
    "export-person --phone": "tests.bot.test_privacy::test_export_returns_exactly_what_is_stored",
    "export-person --email": "tests.bot.test_privacy::test_bad_selectors_name_their_option",
    "export-person --telegram": "tests.bot.test_privacy::test_erase_needs_exactly_one_selector",
    "export-person --ticket": "tests.bot.test_privacy::test_erase_needs_exactly_one_selector",
    "housekeeping": "tests.bot.test_housekeeping::test_housekeeping_cli_dry_run",
    "housekeeping --dry-run": "tests.bot.test_housekeeping::test_housekeeping_cli_dry_run",
    # HOST and PORT name another address; /healthz answers on --host 127.0.0.1 --port P.
    "serve --host": "tests.bot.test_cli_processes::test_serve_answers_healthz",
    "serve --port": "tests.bot.test_cli_processes::test_serve_answers_healthz",
    # No webhook secret is set; serve says "long polling" and answers an update it fetched with getUpdates.
    "serve --telegram-polling": "tests.bot.test_cli_processes::test_serve_telegram_polling_answers_without_a_webhook",
    # Two uvicorn processes both send surveys and take webhooks (PostgreSQL only; the refusals are in CASES).
    "serve --workers": (
        "tests.bot.test_serve_workers::test_two_workers_share_webhooks_and_jobs_mask_numbers_and_stop_on_sigterm"
    ),
    # A survey `trigger` queued goes out through the fake Twilio; SIGTERM stops the worker with exit 0.
    "worker": "tests.bot.test_cli_processes::test_worker_sends_a_due_survey_and_stops_on_sigterm",
}


def _builds_a_demo(case: Case) -> bool:
    """Whether the case makes a demo database: seconds each, so kept out of the fast lane."""
    return any(argv[0] == "demo" for argv in case.before) or (case.argv[0] == "demo" and case.code == 0)


def _params() -> list[Any]:
    return [
        pytest.param(
            case,
            id=case.id,
            marks=[
                *([pytest.mark.xfail(strict=True, reason=case.bug)] if case.bug else []),
                *([pytest.mark.slow] if _builds_a_demo(case) else []),
            ],
        )
        for case in CASES
    ]


@pytest.mark.parametrize("case", _params())
def test_option_has_its_effect(
    case: Case,
    cli_env: dict[str, str],
    db_url: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`afterword ARGV` exits with the case's code, and the outcome shows the option's effect."""
    monkeypatch.chdir(tmp_path)
    for name, text in FILES.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    fakes = {name: request.getfixturevalue(f"fake_{name}") for name in case.fakes}
    env = {**cli_env, "COLUMNS": "200", **{k: v.format(folder=tmp_path) for k, v in case.env.items()}}
    for name, fake in fakes.items():
        env.update(_settings_for(name, fake))
    for step in case.before:
        done = invoke(step, env)
        assert 0 == done.code, done.stderr
    argv = [word.format(root=ROOT) for word in case.argv]
    ran = invoke(argv, env, case.stdin)
    assert case.code == ran.code, ran.stderr or ran.stdout
    assert case.expected == case.observe(Outcome(ran, tmp_path, db_url, env, fakes))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_serve_refuses_a_port_out_of_range(cli_env: dict[str, str], tmp_path: Path) -> None:
    """`serve --port 70000` exits 2 with one line naming --port, as PORT=70000 does, not a traceback."""
    # A process: in this one, uvicorn would configure logging and start the app before it fails.
    result = run(["serve", "--port", "70000"], cli_env, tmp_path, timeout=30)
    lines = result.stderr.strip().splitlines()
    assert (2, 1, True) == (result.returncode, len(lines), lines[0].startswith("Error: --port:"))


# -- completeness ----------------------------------------------------------------------------


@functools.cache
def _tree() -> Any:
    """The Click command of the app, with the completion options taking a shell as the cases do."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in COMPLETION.items():
            patch.setenv(key, value)
        return typer.main.get_command(app)


def _key(words: Sequence[str], param: Any) -> str:
    name = param.opts[0] if param.param_type_name == "option" else param.name.upper()
    return " ".join([*words, name])


def _everything() -> set[str]:
    """Each leaf command, and each option and argument of every command, but --help."""
    found: set[str] = set()

    def walk(command: Any, words: list[str]) -> None:
        found.update(_key(words, param) for param in command.params)
        subs = getattr(command, "commands", None)
        if subs:
            for name, sub in subs.items():
                walk(sub, [*words, name])
        else:
            found.add(" ".join(words))

    walk(_tree(), [])
    return found


def _exercised(argv: Sequence[str]) -> set[str]:
    """The command ARGV runs and the options and arguments it gives, as `report --by`, `import PATH`."""
    command, words, rest, found = _tree(), [], list(argv), set()
    while rest and getattr(command, "commands", None):
        if rest[0] in command.commands:
            words.append(rest[0])
            command = command.commands[rest.pop(0)]
        elif rest[0].startswith("-"):  # a group's own option before the command: `afterword --verbose report`
            name = rest.pop(0).split("=", 1)[0]
            for param in command.params:
                if name in param.opts:
                    found.add(_key(words, param))
                    if not param.is_flag and rest:
                        rest.pop(0)
        else:
            break
    found |= {" ".join(words)} if words else set()
    options = {
        opt: param for param in command.params if param.param_type_name == "option" for opt in param.opts
    }
    arguments = [param for param in command.params if param.param_type_name == "argument"]
    tokens = iter(rest)
    for token in tokens:
        name = token.split("=", 1)[0]
        if name in options:
            found.add(_key(words, options[name]))
            if not options[name].is_flag and "=" not in token:
                next(tokens, None)
        else:
            problem = f"{list(argv)}: {token!r} is no option or argument of {words}"
            assert (True, False) == (bool(arguments), token.startswith("-")), problem
            found.add(_key(words, arguments[0]))
            if arguments[0].nargs != -1:  # it took its one value; the next goes to the next argument
                arguments.pop(0)
    return found


def test_every_option_of_every_command_has_a_case() -> None:
    """Each command, option and argument of `afterword` is exercised by a passing case or named in ELSEWHERE."""
    covered = set(ELSEWHERE).union(*(_exercised(case.argv) for case in CASES if case.bug is None))
    assert [] == sorted(_everything() - covered)


def test_elsewhere_points_to_tests_that_exist() -> None:
    """Every ELSEWHERE entry names a current option or command and a test function that exists."""
    missing = []
    for key, target in ELSEWHERE.items():
        module, function = target.split("::")
        if key not in _everything() or not callable(getattr(importlib.import_module(module), function, None)):
            missing.append(f"{key} → {target}")
    assert [] == missing
