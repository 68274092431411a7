"""The `afterword` command line, run as a real process against a real database."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bot.db import Database
from bot.tables import answers, surveys
from flows.loader import load_flows
from tests.fakes.telegram import FakeBotApi

AFTERWORD = str(Path(sys.executable).parent / "afterword")
ROOT = Path(__file__).resolve().parents[2]


def run(
    args: list[str], env: dict[str, str], cwd: Path, stdin: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `afterword ARGS` and capture its output."""
    return subprocess.run(
        [AFTERWORD, *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=timeout,
        check=False,
    )


async def query(url: str, stmt: sa.Select[tuple[object, ...]]) -> list[tuple[object, ...]]:
    db = Database(make_url(url))
    try:
        async with db.read() as conn:
            return [tuple(r) for r in (await conn.execute(stmt)).all()]
    finally:
        await db.dispose()


@pytest.fixture
def migrated(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The CLI environment after `afterword db upgrade`, as the README has users do on PostgreSQL."""
    result = run(["db", "upgrade"], cli_env, tmp_path)
    assert 0 == result.returncode, result.stderr
    return cli_env


def test_piped_chat_completes_and_stores_answers(
    migrated: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    """`printf '2\\n1\\n2\\nsehr freundlich\\n' | afterword chat --flow support-csat --lang de` stores 2, 1, 2 and the comment."""
    result = run(
        ["chat", "--flow", "support-csat", "--lang", "de"],
        migrated,
        tmp_path,
        stdin="2\n1\n2\nsehr freundlich\n",
    )
    assert 0 == result.returncode, result.stderr
    assert "Wie zufrieden waren Sie mit unserem Kundenservice?" in result.stdout
    rows = asyncio.run(
        query(
            db_url, sa.select(answers.c.question_id, answers.c.score, answers.c.text).order_by(answers.c.id)
        )
    )
    assert [
        ("satisfaction", 2, None),
        ("resolution", 1, None),
        ("speed", 2, None),
        ("comment", None, "sehr freundlich"),
    ] == rows
    assert [("completed",)] == asyncio.run(query(db_url, sa.select(surveys.c.status)))


def test_killed_chat_continues_at_question_two(migrated: dict[str, str], db_url: str, tmp_path: Path) -> None:
    """A chat killed after question 1 continues at question 2 when started again."""
    proc = subprocess.Popen(
        [AFTERWORD, "chat", "--flow", "support-csat", "--lang", "en", "--contact", "kim"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=migrated,
        cwd=tmp_path,
    )
    assert proc.stdin is not None
    proc.stdin.write("2\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not asyncio.run(query(db_url, sa.select(answers.c.id))):
        assert time.monotonic() < deadline, "the first answer was never stored"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)

    result = run(["chat", "--contact", "kim"], migrated, tmp_path, stdin="1\n2\n\n")
    assert 0 == result.returncode, result.stderr
    assert "resuming survey" in result.stdout
    second = load_flows()["support-csat"].question("resolution").prompt["en"]
    assert second in result.stdout.split("resuming survey")[1]
    rows = asyncio.run(
        query(db_url, sa.select(answers.c.question_id, answers.c.score).order_by(answers.c.id))
    )
    assert [("satisfaction", 2), ("resolution", 1), ("speed", 2)] == rows
    assert [("completed",)] == asyncio.run(query(db_url, sa.select(surveys.c.status)))


def test_flows_check_passes_builtin_flows(cli_env: dict[str, str], tmp_path: Path) -> None:
    """Every built-in flow passes `afterword flows check`."""
    result = run(["flows", "check", str(ROOT / "flows" / "builtin")], cli_env, tmp_path)
    assert (0, "") == (result.returncode, result.stderr)


def test_flows_check_names_file_line_and_field(cli_env: dict[str, str], tmp_path: Path) -> None:
    """A broken flow fails `flows check` with exit 1, naming the file, line and field."""
    broken = (
        (ROOT / "flows" / "builtin" / "ces.yaml")
        .read_text(encoding="utf-8")
        .replace("kind: rating", "kind: ratng", 1)
    )
    path = tmp_path / "broken.yaml"
    path.write_text(broken, encoding="utf-8")
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if "kind: ratng" in text)
    result = run(["flows", "check", str(path)], cli_env, tmp_path)
    assert 1 == result.returncode
    assert f"{path}:{line}: questions[0].kind:" in result.stderr
    assert "Traceback" not in result.stderr


def test_flows_list_shows_builtin_flows(cli_env: dict[str, str], tmp_path: Path) -> None:
    """`afterword flows list` lists the three built-in flows."""
    result = run(["flows", "list"], cli_env, tmp_path)
    assert 0 == result.returncode, result.stderr
    assert {"support-csat", "nps", "ces"} <= set(re.findall(r"[a-z][a-z-]+", result.stdout))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mysql://localhost/x", "DATABASE_URL: unsupported database 'mysql'"),
        ("not a url", "DATABASE_URL: cannot read 'not a url'"),
        (
            "postgresql+asyncpg://postgres@127.0.0.1:1/test",
            "cannot reach the database at postgresql+asyncpg://postgres@127.0.0.1:1/test",
        ),
    ],
)
def test_bad_database_url_stops_with_one_line(
    cli_env: dict[str, str], tmp_path: Path, url: str, expected: str
) -> None:
    """A malformed or unreachable DATABASE_URL stops `serve` with one clear line and a non-zero exit."""
    result = run(["serve", "--port", "1"], {**cli_env, "DATABASE_URL": url}, tmp_path)
    assert result.returncode != 0
    assert [f"Error: {expected}"] == [
        line[: len(expected) + 7] for line in result.stderr.strip().splitlines()
    ]


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_unmigrated_postgres_is_refused(cli_env: dict[str, str], tmp_path: Path) -> None:
    """`serve` on an unmigrated PostgreSQL database says to run `afterword db upgrade`, then that fixes it."""
    refused = run(["serve", "--port", "1"], cli_env, tmp_path)
    assert (1, 1) == (refused.returncode, len(refused.stderr.strip().splitlines()))
    assert "run `afterword db upgrade`" in refused.stderr
    upgraded = run(["db", "upgrade"], cli_env, tmp_path)
    assert 0 == upgraded.returncode, upgraded.stderr
    assert 0 == run(["db", "status"], cli_env, tmp_path).returncode


def test_broken_flow_dir_stops_chat_naming_the_field(cli_env: dict[str, str], tmp_path: Path) -> None:
    """A broken flow file in FLOWS_DIR stops the command with its problems and no traceback."""
    flows_dir = tmp_path / "myflows"
    flows_dir.mkdir()
    (flows_dir / "x.yaml").write_text(
        "id: x\nversion: 1\nlanguages: [de]\ndefault_language: de\n", encoding="utf-8"
    )
    result = run(["chat"], {**cli_env, "FLOWS_DIR": str(flows_dir)}, tmp_path)
    assert 1 == result.returncode
    assert "x.yaml" in result.stderr
    assert "texts" in result.stderr
    assert "Traceback" not in result.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_serve_answers_healthz(migrated: dict[str, str], tmp_path: Path) -> None:
    """`afterword serve` (after `db upgrade`) answers /healthz with the version and database status."""
    cli_env = migrated
    port = _free_port()
    log = tmp_path / "serve.log"
    with (
        log.open("w") as sink,
        subprocess.Popen(
            [AFTERWORD, "serve", "--port", str(port)], env=cli_env, cwd=tmp_path, stderr=sink
        ) as proc,
    ):
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, "serve did not come up"
                    time.sleep(0.2)
            assert 200 == response.status_code, (response.text, log.read_text())
            body = response.json()
            assert ("ok", "ok") == (body["status"], body["database"]["status"])
            assert re.fullmatch(r"\d+\.\d+\.\d+.*", body["version"])
            assert "Telegram: off (TELEGRAM_BOT_TOKEN is not set)" in log.read_text()
            assert "Twilio: off (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set)" in log.read_text()
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=15)


def _commands() -> list[list[str]]:
    """Every leaf command of the `afterword` app, as its words."""
    import typer.main

    from bot.cli import app

    def walk(command: Any, words: list[str]) -> list[list[str]]:
        # Typer 0.29 vendors click, so groups are told by their sub-commands, not by class.
        subs = getattr(command, "commands", None)
        if subs:
            return [found for name, sub in subs.items() for found in walk(sub, [*words, name])]
        return [words]

    return walk(typer.main.get_command(app), [])


def test_every_command_has_help_with_example(cli_env: dict[str, str], tmp_path: Path) -> None:
    """Every command's --help ends with an Example: line and the README documents the command."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = _commands()
    assert ["serve"] in commands
    assert ["staff", "add"] in commands
    missing = []
    for command in commands:
        result = run([*command, "--help"], {**cli_env, "COLUMNS": "200"}, tmp_path)
        if (
            result.returncode != 0
            or "Example:" not in result.stdout
            or f"afterword {' '.join(command)}" not in readme
        ):
            missing.append(" ".join(command))
    assert [] == missing


def test_sqlite_serve_migrates_by_itself(tmp_path: Path) -> None:
    """Opening the service on a new SQLite file creates the schema without `db upgrade`."""
    from bot.service import Service
    from bot.settings import load_settings

    url = f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'fresh.db'}"

    async def _open() -> str | None:
        service = await Service.open(load_settings(_env_file=None, database_url=url))
        try:
            return await service.db.revision()
        finally:
            await service.close()

    from bot.db import head_revision

    assert head_revision() == asyncio.run(_open())
    assert os.path.exists(tmp_path / "sub" / "fresh.db")


def test_report_cli_json_and_bad_by(migrated: dict[str, str], tmp_path: Path) -> None:
    """`afterword import` then `afterword report --format json` show the imported answer; a bad --by exits 2 naming it."""
    csv_path = tmp_path / "a.csv"
    csv_path.write_text(
        "response_id,submitted_at,metric,score\nr1,2026-11-01T10:00:00Z,nps,10\n", encoding="utf-8"
    )
    imported = run(["import", str(csv_path)], migrated, tmp_path)
    assert (0, "1 answer(s) added, 0 already there, 0 bad row(s) skipped\n") == (
        imported.returncode,
        imported.stdout,
    )
    shown = run(["report", "--since", "3650d", "--format", "json"], migrated, tmp_path)
    assert 0 == shown.returncode, shown.stderr
    import json

    body = json.loads(shown.stdout)
    assert (100.0, 1, 1) == (body["nps"]["value"], body["nps"]["n"], body["nps"]["promoters"])
    bad = run(["report", "--by", "agnt"], migrated, tmp_path)
    assert (2, "Error: by: 'agnt' is not one of agent, team, channel, flow, language, question") == (
        bad.returncode,
        bad.stderr.strip(),
    )


def test_import_bad_file_exits_1_and_stores_nothing(
    migrated: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    """A CSV with a bad score exits 1 naming the line and stores nothing."""
    csv_path = tmp_path / "a.csv"
    csv_path.write_text(
        "response_id,submitted_at,metric,score\nr1,2026-11-01,csat,4\nr2,2026-11-01,csat,9\n",
        encoding="utf-8",
    )
    result = run(["import", str(csv_path)], migrated, tmp_path)
    assert 1 == result.returncode
    assert "line 3: score: 9 is outside the csat scale 1-5" in result.stderr
    assert [] == asyncio.run(query(db_url, sa.select(answers.c.id)))


def test_chart_writes_png(migrated: dict[str, str], tmp_path: Path) -> None:
    """`afterword chart --out trend.png` writes a PNG even with no answers yet."""
    out = tmp_path / "trend.png"
    result = run(["chart", "--out", str(out)], migrated, tmp_path)
    assert 0 == result.returncode, result.stderr
    assert b"\x89PNG\r\n\x1a\n" == out.read_bytes()[:8]


def test_staff_add_list_update_remove(migrated: dict[str, str], tmp_path: Path) -> None:
    """`staff add` stores a role, a second add changes it, `list` shows it, `remove` takes it away."""
    env = {**migrated, "TELEGRAM_STAFF": "999:agent", "COLUMNS": "200"}
    assert (
        "added: Telegram user 123 is agent"
        in run(
            ["staff", "add", "--telegram", "123", "--role", "agent", "--name", "Anna"], env, tmp_path
        ).stdout
    )
    assert (
        "updated: Telegram user 123 is manager"
        in run(["staff", "add", "--telegram", "123", "--role", "manager"], env, tmp_path).stdout
    )
    listed = run(["staff", "list"], env, tmp_path).stdout
    assert [["123", "manager", "Anna", "database"], ["999", "agent", "settings"]] == [
        line.replace("│", " ").split() for line in listed.splitlines() if re.search(r"\d{3}", line)
    ]
    assert 0 == run(["staff", "remove", "--telegram", "123"], env, tmp_path).returncode
    again = run(["staff", "remove", "--telegram", "123"], env, tmp_path)
    assert (1, "no staff member 123") == (
        again.returncode,
        re.search(r"no staff member \d+", again.stderr).group(0),
    )  # type: ignore[union-attr]


def test_staff_add_refuses_an_unknown_role(migrated: dict[str, str], tmp_path: Path) -> None:
    """A role other than manager or agent is refused, naming the option and the allowed values."""
    result = run(["staff", "add", "--telegram", "1", "--role", "boss"], migrated, tmp_path)
    assert (2, "Error: --role: 'boss' is not one of manager, agent") == (
        result.returncode,
        result.stderr.strip(),
    )


def test_telegram_set_webhook_registers_url_secret_and_updates(
    migrated: dict[str, str], tmp_path: Path, fake_telegram: FakeBotApi
) -> None:
    """`telegram set-webhook` registers PUBLIC_BASE_URL/telegram/webhook with the secret and update kinds."""
    env = {
        **migrated,
        "TELEGRAM_BOT_TOKEN": fake_telegram.token,
        "TELEGRAM_API_BASE_URL": fake_telegram.base_url,
        "TELEGRAM_WEBHOOK_SECRET": "s3cret",
        "PUBLIC_BASE_URL": "https://survey.example.com/",
    }
    result = run(["telegram", "set-webhook"], env, tmp_path)
    assert 0 == result.returncode, result.stderr
    [call] = fake_telegram.sent("setWebhook")
    assert ("https://survey.example.com/telegram/webhook", "s3cret", ["message", "callback_query"]) == (
        call.params["url"],
        call.params["secret_token"],
        call.params["allowed_updates"],
    )
    assert fake_telegram.token not in result.stdout + result.stderr


def test_telegram_set_webhook_without_public_url_names_the_setting(
    migrated: dict[str, str], tmp_path: Path, fake_telegram: FakeBotApi
) -> None:
    """Without PUBLIC_BASE_URL, `telegram set-webhook` says which setting is missing and registers nothing."""
    env = {
        **migrated,
        "TELEGRAM_BOT_TOKEN": fake_telegram.token,
        "TELEGRAM_API_BASE_URL": fake_telegram.base_url,
        "TELEGRAM_WEBHOOK_SECRET": "s3cret",
    }
    result = run(["telegram", "set-webhook"], env, tmp_path)
    assert (2, []) == (result.returncode, fake_telegram.sent("setWebhook"))
    assert result.stderr.startswith("Error: PUBLIC_BASE_URL: not set")


def test_serve_with_token_but_no_secret_stops_with_one_line(migrated: dict[str, str], tmp_path: Path) -> None:
    """A bot token without TELEGRAM_WEBHOOK_SECRET stops `serve` with one line naming the setting."""
    env = {**migrated, "TELEGRAM_BOT_TOKEN": "123:abc"}
    result = run(["serve", "--port", "1"], env, tmp_path)
    assert 2 == result.returncode
    assert [
        "Error: TELEGRAM_WEBHOOK_SECRET: required to accept Telegram webhooks; set it, or run `afterword serve --telegram-polling`"
    ] == result.stderr.strip().splitlines()


def test_serve_with_twilio_but_no_public_url_stops_with_one_line(
    migrated: dict[str, str], tmp_path: Path
) -> None:
    """Twilio credentials without PUBLIC_BASE_URL stop `serve`: signatures could not be checked."""
    env = {**migrated, "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "x" * 32}
    result = run(["serve", "--port", "1"], env, tmp_path)
    assert (2, "Error: PUBLIC_BASE_URL: required with Twilio: webhooks are signed over this address") == (
        result.returncode,
        result.stderr.strip().splitlines()[-1],
    )


def test_apikey_create_list_revoke(migrated: dict[str, str], tmp_path: Path) -> None:
    """`apikey create` prints the key once; `list` shows the name, never the key; `revoke` marks it."""
    env = {**migrated, "COLUMNS": "200"}
    created = run(["apikey", "create", "zendesk-prod"], env, tmp_path)
    key = created.stdout.strip()
    assert (0, True) == (created.returncode, key.startswith("aw_") and len(key) > 40)
    listed = run(["apikey", "list"], env, tmp_path).stdout
    assert ("zendesk-prod" in listed, key in listed) == (True, False)
    twice = run(["apikey", "create", "zendesk-prod"], env, tmp_path)
    assert (2, "Error: NAME: a key named 'zendesk-prod' exists; revoke it or choose another name") == (
        twice.returncode,
        twice.stderr.strip(),
    )
    assert "revoked: zendesk-prod" == run(["apikey", "revoke", "zendesk-prod"], env, tmp_path).stdout.strip()
    assert 1 == run(["apikey", "revoke", "zendesk-prod"], env, tmp_path).returncode


def test_trigger_cli_queues_a_survey_and_prints_a_web_link(migrated: dict[str, str], tmp_path: Path) -> None:
    """`afterword trigger --channel web` creates an open survey and prints its link; again, it exists."""
    env = {**migrated, "PUBLIC_BASE_URL": "https://survey.example.com"}
    args = ["trigger", "--channel", "web", "--ticket", "T-7", "--agent", "anna"]
    first = run(args, env, tmp_path)
    again = run(args, env, tmp_path)
    assert 0 == first.returncode, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("created: survey 1 for T-7 (support-csat, active")
    assert lines[1].startswith("https://survey.example.com/s/")
    assert again.stdout.startswith("exists: survey 1 for T-7")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--channel", "sms", "--to", "+4915112345678"],
            "Error: channel: sms is off: set TWILIO_ACCOUNT_SID",
        ),
        (
            ["--channel", "pigeon"],
            "Error: --channel: Input should be 'telegram', 'sms', 'whatsapp', 'voice' or 'web'",
        ),
        (
            ["--channel", "web", "--delay", "soon"],
            "Error: delay: 'soon' is not a delay such as 90s, 15m, 1h or 2d",
        ),
    ],
)
def test_trigger_cli_bad_input_names_the_option(
    migrated: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    """A bad trigger option is one line naming it, exit 2, and nothing is stored."""
    result = run(["trigger", "--ticket", "T-1", *args], migrated, tmp_path)
    assert (2, True) == (result.returncode, result.stderr.strip().startswith(message)), result.stderr
