"""The `afterword` command line, in this process through Typer's CliRunner, against a real database.

What needs the real script (smoke tests, a killed chat, `serve` and `worker` running) is in
test_cli_processes.py; every option of every command is in test_cli_options.py.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bot.cli.main import app
from bot.store.tables import answers, surveys
from tests.cli import ROOT, invoke, no_database, query
from tests.fakes.telegram import FakeBotApi
from tests.support import environment

pytestmark = pytest.mark.usefixtures("in_tmp_path")


# -- chat ------------------------------------------------------------------------------------


def test_piped_chat_completes_and_stores_answers(cli_env: dict[str, str], db_url: str) -> None:
    """`printf '2\\n1\\n2\\nsehr freundlich\\n' | afterword chat --flow support-csat --lang de` stores 2, 1, 2 and the comment."""
    result = invoke(
        ["chat", "--flow", "support-csat", "--lang", "de"], cli_env, stdin="2\n1\n2\nsehr freundlich\n"
    )
    assert 0 == result.code, result.stderr
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


def test_broken_flow_dir_stops_chat_naming_the_field(cli_env: dict[str, str], tmp_path: Path) -> None:
    """A broken flow file in FLOWS_DIR stops the command with its problems and no traceback."""
    flows_dir = tmp_path / "myflows"
    flows_dir.mkdir()
    (flows_dir / "x.yaml").write_text(
        "id: x\nversion: 1\nlanguages: [de]\ndefault_language: de\n", encoding="utf-8"
    )
    result = invoke(["chat"], {**cli_env, "FLOWS_DIR": str(flows_dir)})
    assert 1 == result.code
    assert "x.yaml" in result.stderr
    assert "texts" in result.stderr
    assert "Traceback" not in result.stderr


# -- flows -----------------------------------------------------------------------------------


def test_flows_check_passes_builtin_flows(cli_env: dict[str, str]) -> None:
    """Every built-in flow passes `afterword flows check`."""
    result = invoke(["flows", "check", str(ROOT / "flows" / "builtin")], cli_env)
    assert (0, "") == (result.code, result.stderr)


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
    result = invoke(["flows", "check", str(path)], cli_env)
    assert 1 == result.code
    assert f"{path}:{line}: questions[0].kind:" in result.stderr
    assert "Traceback" not in result.stderr


def test_flows_list_shows_builtin_flows(cli_env: dict[str, str]) -> None:
    """`afterword flows list` lists the three built-in flows."""
    result = invoke(["flows", "list"], cli_env)
    assert 0 == result.code, result.stderr
    assert {"support-csat", "nps", "ces"} <= set(re.findall(r"[a-z][a-z-]+", result.stdout))


# -- the database ----------------------------------------------------------------------------


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
    cli_env: dict[str, str], taken_port: int, url: str, expected: str
) -> None:
    """A malformed or unreachable DATABASE_URL stops `serve` with one clear line and a non-zero exit."""
    result = invoke(["serve", "--port", str(taken_port)], {**cli_env, "DATABASE_URL": url})
    assert result.code != 0
    assert [f"Error: {expected}"] == [
        line[: len(expected) + 7] for line in result.stderr.strip().splitlines()
    ]


@pytest.mark.parametrize("empty_db_url", ["postgresql"], indirect=True)
def test_unmigrated_postgres_is_refused(empty_db_url: str, taken_port: int) -> None:
    """`serve` on an unmigrated PostgreSQL database says to run `afterword db upgrade`, then that fixes it."""
    env = environment(empty_db_url)
    refused = invoke(["serve", "--port", str(taken_port)], env)
    assert (1, 1) == (refused.code, len(refused.stderr.strip().splitlines()))
    assert "run `afterword db upgrade`" in refused.stderr
    upgraded = invoke(["db", "upgrade"], env)
    assert 0 == upgraded.code, upgraded.stderr
    assert 0 == invoke(["db", "status"], env).code


def test_db_upgrade_makes_an_empty_database_current(empty_db_url: str) -> None:
    """`db status` refuses a missing SQLite file (exit 2) and shows an empty PostgreSQL one (exit 1); `db upgrade` makes either current."""
    from bot.store.db import describe, head_revision

    env = environment(empty_db_url)
    url = make_url(empty_db_url)
    before = invoke(["db", "status"], env)
    upgraded = invoke(["db", "upgrade"], env)
    after = invoke(["db", "status"], env)
    head = head_revision()
    if url.get_backend_name() == "sqlite":
        assert (2, "", [f"Error: DATABASE_URL: no SQLite file at {url.database}; create it"]) == (
            before.code,
            before.stdout,
            [line[: len(str(url.database)) + 50] for line in before.stderr.strip().splitlines()],
        )
    else:
        assert (1, f"database: {describe(url)}\ncurrent:  empty\nneeded:   {head}\n") == (
            before.code,
            before.stdout,
        )
    assert (0, f"database {describe(url)} is at revision {head}\n") == (upgraded.code, upgraded.stdout)
    assert (0, f"database: {describe(url)}\ncurrent:  {head}\nneeded:   {head}\n") == (
        after.code,
        after.stdout,
    )


def test_sqlite_serve_makes_and_migrates_a_new_file(tmp_path: Path) -> None:
    """Opening the service with create=True, as `serve` does, makes a new SQLite file at the newest schema."""
    from bot.service import Service
    from bot.settings import load_settings
    from bot.store.db import head_revision

    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"

    async def _open() -> str | None:
        service = await Service.open(load_settings(_env_file=None, database_url=url), create=True)
        try:
            return await service.db.revision()
        finally:
            await service.close()

    assert (head_revision(), True) == (asyncio.run(_open()), os.path.exists(tmp_path / "fresh.db"))


# Each command that opens the database but may not make it; FILES holds what they read.
_NO_CREATE = [
    ["report"],
    ["chart", "--out", "trend.png"],
    ["import", "answers.csv"],
    ["trigger", "--channel", "web", "--ticket", "T-1"],
    ["chat", "--contact", "kim"],
    ["worker"],
    ["db", "status"],
    ["staff", "list"],
    ["staff", "add", "--telegram", "1"],
    ["apikey", "list"],
    ["apikey", "create", "x"],
    ["telegram", "set-webhook"],
]
_TELEGRAM = {"TELEGRAM_BOT_TOKEN": "123:abc", "TELEGRAM_WEBHOOK_SECRET": "s3cret"}


@pytest.mark.parametrize("args", _NO_CREATE, ids=" ".join)
def test_a_missing_sqlite_file_is_refused_and_not_made(tmp_path: Path, args: list[str]) -> None:
    """Every command but serve and db upgrade refuses a SQLite file that is not there, in one line, and makes none."""
    (tmp_path / "answers.csv").write_text("response_id,submitted_at,metric,score\nr1,2026-11-01,csat,4\n")
    env = {**environment("sqlite+aiosqlite:///afterword.db"), **_TELEGRAM}  # relative: in the test's folder
    result = invoke(args, env)
    expected = (
        f"Error: DATABASE_URL: no SQLite file at {tmp_path / 'afterword.db'}; create it with "
        "`afterword db upgrade` (or `afterword serve`), or correct DATABASE_URL"
    )
    assert (2, [expected], ["answers.csv"]) == (
        result.code,
        result.stderr.strip().splitlines(),
        sorted(path.name for path in tmp_path.iterdir()),
    )


@pytest.mark.parametrize("args", [["report"], ["db", "upgrade"], ["serve"]], ids=" ".join)
def test_a_missing_folder_is_refused_and_not_made(tmp_path: Path, taken_port: int, args: list[str]) -> None:
    """A SQLite file in a folder that is not there is refused in one line, even by `db upgrade` and `serve`."""
    if args == ["serve"]:
        args = ["serve", "--port", str(taken_port)]
    result = invoke(args, environment(f"sqlite+aiosqlite:///{tmp_path / 'nonexistent_dir' / 'x.db'}"))
    expected = (
        f"Error: DATABASE_URL: no folder {tmp_path / 'nonexistent_dir'} for the SQLite file x.db; "
        "make the folder, or correct DATABASE_URL"
    )
    assert (2, [expected], []) == (result.code, result.stderr.strip().splitlines(), list(tmp_path.iterdir()))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_verbose_names_the_sqlite_file(cli_env: dict[str, str], db_url: str) -> None:
    """`afterword --verbose report` names the SQLite file it reads, by its absolute path, on stderr."""
    result = invoke(["--verbose", "report", "--format", "json"], cli_env)
    assert (0, [f"database: sqlite {make_url(db_url).database}"]) == (result.code, result.stderr.splitlines())


def test_verbose_masks_the_postgresql_password(tmp_path: Path) -> None:
    """`afterword -v report` shows the PostgreSQL URL with its password masked, in the line and in the error."""
    url = "postgresql+asyncpg://afterword:hunter2@127.0.0.1:1/afterword"
    result = invoke(["-v", "report"], environment(url))
    lines = result.stderr.strip().splitlines()
    assert (1, "database: postgresql+asyncpg://afterword:***@127.0.0.1:1/afterword", 2, False) == (
        result.code,
        lines[0],
        len(lines),
        "hunter2" in result.stdout + result.stderr,
    )


# -- serve: refused before it starts ---------------------------------------------------------


def test_serve_with_token_but_no_secret_stops_with_one_line(cli_env: dict[str, str], taken_port: int) -> None:
    """A bot token without TELEGRAM_WEBHOOK_SECRET stops `serve` with one line naming the setting."""
    env = {**cli_env, "TELEGRAM_BOT_TOKEN": "123:abc"}
    result = invoke(["serve", "--port", str(taken_port)], env)
    assert 2 == result.code
    assert [
        "Error: TELEGRAM_WEBHOOK_SECRET: required to accept Telegram webhooks; set it, or run `afterword serve --telegram-polling`"
    ] == result.stderr.strip().splitlines()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_with_a_rejected_token_stops_with_one_line_without_the_token(
    cli_env: dict[str, str], db_url: str, taken_port: int, fake_telegram: FakeBotApi, workers: str
) -> None:
    """A token Telegram rejects stops `serve` (checked once, before any worker starts) with one line without it."""
    if workers != "1" and db_url.startswith("sqlite"):
        pytest.skip("several workers need PostgreSQL; with SQLite Afterword runs as one process")
    fake_telegram.fail_next("getMe", error_code=401)
    env = {
        **cli_env,
        "TELEGRAM_BOT_TOKEN": fake_telegram.token,
        "TELEGRAM_API_BASE_URL": fake_telegram.base_url,
        "TELEGRAM_WEBHOOK_SECRET": "s3cret",
    }
    result = invoke(["serve", "--port", str(taken_port), "--workers", workers], env)
    # python-telegram-bot's InvalidToken quotes the token; an unclosed client is reported on collection.
    gc.collect()
    assert (1, ["Error: telegram: Telegram refused to start the bot: it rejected TELEGRAM_BOT_TOKEN"]) == (
        result.code,
        result.stderr.strip().splitlines(),
    )
    assert (False, 1) == (
        fake_telegram.token in result.stdout + result.stderr,
        len(fake_telegram.calls_to("getMe")),
    )


def test_serve_with_twilio_but_no_public_url_stops_with_one_line(
    cli_env: dict[str, str], taken_port: int
) -> None:
    """Twilio credentials without PUBLIC_BASE_URL stop `serve`: signatures could not be checked."""
    env = {**cli_env, "TWILIO_ACCOUNT_SID": "AC" + "0" * 32, "TWILIO_AUTH_TOKEN": "x" * 32}
    result = invoke(["serve", "--port", str(taken_port)], env)
    assert (2, "Error: PUBLIC_BASE_URL: required with Twilio: webhooks are signed over this address") == (
        result.code,
        result.stderr.strip().splitlines()[-1],
    )


# -- help ------------------------------------------------------------------------------------


def _commands() -> list[list[str]]:
    """Every leaf command of the `afterword` app, as its words."""
    import typer.main

    def walk(command: Any, words: list[str]) -> list[list[str]]:
        # Typer 0.29 vendors click, so groups are told by their sub-commands, not by class.
        subs = getattr(command, "commands", None)
        if subs:
            return [found for name, sub in subs.items() for found in walk(sub, [*words, name])]
        return [words]

    return walk(typer.main.get_command(app), [])


def test_every_command_has_help_with_example(tmp_path: Path) -> None:
    """Every command's --help ends with an Example: line and the README documents the command."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    env = {**no_database(tmp_path), "COLUMNS": "200"}
    commands = _commands()
    assert ["serve"] in commands
    assert ["staff", "add"] in commands
    missing = []
    for command in commands:
        result = invoke([*command, "--help"], env)
        if (
            result.code != 0
            or "Example:" not in result.stdout
            or f"afterword {' '.join(command)}" not in readme
        ):
            missing.append(" ".join(command))
    assert [] == missing


# -- report, import, chart -------------------------------------------------------------------


def test_report_cli_json_and_bad_by(cli_env: dict[str, str], tmp_path: Path) -> None:
    """`afterword import` then `afterword report --format json` show the imported answer; a bad --by exits 2 naming it."""
    import json

    csv_path = tmp_path / "a.csv"
    csv_path.write_text(
        "response_id,submitted_at,metric,score\nr1,2026-11-01T10:00:00Z,nps,10\n", encoding="utf-8"
    )
    imported = invoke(["import", str(csv_path)], cli_env)
    assert (0, "1 answer(s) added, 0 already there, 0 bad row(s) skipped\n") == (
        imported.code,
        imported.stdout,
    )
    shown = invoke(["report", "--since", "3650d", "--format", "json"], cli_env)
    assert 0 == shown.code, shown.stderr
    body = json.loads(shown.stdout)
    assert (100.0, 1, 1) == (body["nps"]["value"], body["nps"]["n"], body["nps"]["promoters"])
    bad = invoke(["report", "--by", "agnt"], cli_env)
    assert (2, "Error: by: 'agnt' is not one of agent, team, channel, flow, language, question") == (
        bad.code,
        bad.stderr.strip(),
    )


@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "args",
    [
        ["report", "--by", "agnt"],
        ["report", "--csi", "missing.yaml"],
        ["report", "--format", "xml"],
        ["chart", "--out", "trend.png", "--since", "7"],
        ["chart", "--out", "trend.png", "--trend", "hour"],
        ["chart", "--out", "no/such/folder/trend.png"],
    ],
)
def test_bad_report_option_is_refused_before_the_database_is_opened(
    empty_db_url: str, args: list[str]
) -> None:
    """A bad report or chart option exits 2 with one line, and no database file is made for it."""
    result = invoke(args, environment(empty_db_url))
    database = Path(str(make_url(empty_db_url).database))
    assert (2, 1, False) == (result.code, len(result.stderr.strip().splitlines()), database.exists())


def test_import_bad_file_exits_1_and_stores_nothing(
    cli_env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    """A CSV with a bad score exits 1 naming the line and stores nothing."""
    csv_path = tmp_path / "a.csv"
    csv_path.write_text(
        "response_id,submitted_at,metric,score\nr1,2026-11-01,csat,4\nr2,2026-11-01,csat,9\n",
        encoding="utf-8",
    )
    result = invoke(["import", str(csv_path)], cli_env)
    assert 1 == result.code
    assert "line 3: score: 9 is outside the csat scale 1-5" in result.stderr
    assert [] == asyncio.run(query(db_url, sa.select(answers.c.id)))


def test_chart_writes_png(cli_env: dict[str, str], tmp_path: Path) -> None:
    """`afterword chart --out trend.png` writes a PNG even with no answers yet, and says how big."""
    out = tmp_path / "trend.png"
    result = invoke(["chart", "--out", str(out)], cli_env)
    assert 0 == result.code, result.stderr
    png = out.read_bytes()
    assert (b"\x89PNG\r\n\x1a\n", f"wrote {out} ({len(png):,} bytes)\n") == (png[:8], result.stdout)


# -- staff, Telegram, API keys ---------------------------------------------------------------


def test_staff_add_list_update_remove(cli_env: dict[str, str]) -> None:
    """`staff add` stores a role, a second add changes it, `list` shows it, `remove` takes it away."""
    env = {**cli_env, "TELEGRAM_STAFF": "999:agent", "COLUMNS": "200"}
    assert (
        "added: Telegram user 123 is agent"
        in invoke(["staff", "add", "--telegram", "123", "--role", "agent", "--name", "Anna"], env).stdout
    )
    assert (
        "updated: Telegram user 123 is manager"
        in invoke(["staff", "add", "--telegram", "123", "--role", "manager"], env).stdout
    )
    listed = invoke(["staff", "list"], env).stdout
    assert [["123", "manager", "Anna", "database"], ["999", "agent", "settings"]] == [
        line.replace("│", " ").split() for line in listed.splitlines() if re.search(r"\d{3}", line)
    ]
    assert 0 == invoke(["staff", "remove", "--telegram", "123"], env).code
    again = invoke(["staff", "remove", "--telegram", "123"], env)
    assert (1, ["no staff member 123"]) == (again.code, re.findall(r"no staff member \d+", again.stderr))


def test_staff_add_refuses_an_unknown_role(cli_env: dict[str, str]) -> None:
    """A role other than manager or agent is refused, naming the option and the allowed values."""
    result = invoke(["staff", "add", "--telegram", "1", "--role", "boss"], cli_env)
    assert (2, "Error: --role: 'boss' is not one of manager, agent") == (result.code, result.stderr.strip())


def test_telegram_set_webhook_registers_url_secret_and_updates(
    cli_env: dict[str, str], fake_telegram: FakeBotApi
) -> None:
    """`telegram set-webhook` registers PUBLIC_BASE_URL/telegram/webhook with the secret and update kinds."""
    env = {
        **cli_env,
        "TELEGRAM_BOT_TOKEN": fake_telegram.token,
        "TELEGRAM_API_BASE_URL": fake_telegram.base_url,
        "TELEGRAM_WEBHOOK_SECRET": "s3cret",
        "PUBLIC_BASE_URL": "https://survey.example.com/",
    }
    result = invoke(["telegram", "set-webhook"], env)
    assert 0 == result.code, result.stderr
    [call] = fake_telegram.sent("setWebhook")
    assert ("https://survey.example.com/telegram/webhook", "s3cret", ["message", "callback_query"]) == (
        call.params["url"],
        call.params["secret_token"],
        call.params["allowed_updates"],
    )
    assert (False, 1) == (
        fake_telegram.token in result.stdout + result.stderr,
        len(fake_telegram.calls_to("getMe")),
    )


def test_telegram_set_webhook_without_public_url_names_the_setting(
    cli_env: dict[str, str], fake_telegram: FakeBotApi
) -> None:
    """Without PUBLIC_BASE_URL, `telegram set-webhook` says which setting is missing and registers nothing."""
    env = {
        **cli_env,
        "TELEGRAM_BOT_TOKEN": fake_telegram.token,
        "TELEGRAM_API_BASE_URL": fake_telegram.base_url,
        "TELEGRAM_WEBHOOK_SECRET": "s3cret",
    }
    result = invoke(["telegram", "set-webhook"], env)
    assert (2, []) == (result.code, fake_telegram.sent("setWebhook"))
    assert result.stderr.startswith("Error: PUBLIC_BASE_URL: not set")


_WRONG_TOKEN = "987654:WRONG-SECRET-TOKEN"


@pytest.mark.parametrize(
    ("api", "expected"),
    [
        ("fake", "Error: telegram: Telegram refused to start the bot: it rejected TELEGRAM_BOT_TOKEN"),
        ("closed", "Error: telegram: cannot reach the Telegram Bot API at http://127.0.0.1:{port}/bot: "),
        ("not the api", "Error: telegram: {base} does not answer as the Telegram Bot API (Not Found (404), "),
    ],
)
def test_telegram_set_webhook_failure_is_one_line_without_the_token(
    cli_env: dict[str, str],
    fake_telegram: FakeBotApi,
    caplog: pytest.LogCaptureFixture,
    api: str,
    expected: str,
) -> None:
    """A wrong token, a closed port or a URL that is not the Bot API: one line, exit 1, the token nowhere."""
    from starlette.applications import Starlette

    from tests.cli import free_port
    from tests.fakes.server import LocalServer

    port = free_port()
    other = LocalServer(Starlette(), "not-telegram")  # any other web server: a plain-text 404
    other.start()
    base = {
        "fake": fake_telegram.base_url,  # it answers 401 for any token but its own
        "closed": f"http://127.0.0.1:{port}/bot",
        "not the api": f"{other.origin}/bot",
    }[api]
    env = {
        **cli_env,
        "TELEGRAM_BOT_TOKEN": _WRONG_TOKEN,
        "TELEGRAM_API_BASE_URL": base,
        "TELEGRAM_WEBHOOK_SECRET": "s3cret",
        "PUBLIC_BASE_URL": "https://survey.example.com",
    }
    try:
        result = invoke(["telegram", "set-webhook"], env)
    finally:
        other.stop(wait=False)
    gc.collect()  # an unclosed HTTP client would be reported (and fail the test) on collection
    lines = result.stderr.strip().splitlines()
    logged = [record.getMessage() for record in caplog.records if record.name.startswith("telegram")]
    assert (1, 1, True, False, [], []) == (
        result.code,
        len(lines),
        lines[0].startswith(expected.format(port=port, base=base)),
        "WRONG-SECRET" in result.stdout + result.stderr + "".join(logged),
        logged,
        fake_telegram.sent("setWebhook"),
    )


def test_apikey_create_list_revoke(cli_env: dict[str, str]) -> None:
    """`apikey create` prints the key once; `list` shows the name, never the key; `revoke` marks it."""
    env = {**cli_env, "COLUMNS": "200"}
    created = invoke(["apikey", "create", "zendesk-prod"], env)
    key = created.stdout.strip()
    assert (0, True) == (created.code, key.startswith("aw_") and len(key) > 40)
    listed = invoke(["apikey", "list"], env).stdout
    assert ("zendesk-prod" in listed, key in listed) == (True, False)
    twice = invoke(["apikey", "create", "zendesk-prod"], env)
    assert (2, "Error: NAME: a key named 'zendesk-prod' exists; revoke it or choose another name") == (
        twice.code,
        twice.stderr.strip(),
    )
    assert "revoked: zendesk-prod" == invoke(["apikey", "revoke", "zendesk-prod"], env).stdout.strip()
    assert 1 == invoke(["apikey", "revoke", "zendesk-prod"], env).code


# -- trigger ---------------------------------------------------------------------------------


def test_trigger_cli_queues_a_survey_and_prints_a_web_link(cli_env: dict[str, str]) -> None:
    """`afterword trigger --channel web` creates an open survey and prints its link; again, it exists."""
    env = {**cli_env, "PUBLIC_BASE_URL": "https://survey.example.com"}
    args = ["trigger", "--channel", "web", "--ticket", "T-7", "--agent", "anna"]
    first = invoke(args, env)
    again = invoke(args, env)
    assert 0 == first.code, first.stderr
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
            "Error: channel: unknown channel 'pigeon'; channels: sms, whatsapp, voice, telegram, web",
        ),
        (
            ["--channel", "web", "--delay", "soon"],
            "Error: delay: 'soon' is not a delay such as 90s, 15m, 1h or 2d",
        ),
    ],
)
def test_trigger_cli_bad_input_names_the_option(
    cli_env: dict[str, str], db_url: str, args: list[str], message: str
) -> None:
    """A bad trigger option is one line naming it, exit 2, and nothing is stored."""
    result = invoke(["trigger", "--ticket", "T-1", *args], cli_env)
    assert (2, True) == (result.code, result.stderr.strip().startswith(message)), result.stderr
    assert [] == asyncio.run(query(db_url, sa.select(surveys.c.id)))
