"""The `afterword` script as a real process: smoke tests of the console script, a chat killed
half-way, and `serve` and `worker` running until they are stopped."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from bot.store.tables import answers, surveys
from flows.loader import load_flows
from tests.bot.test_twilio import SENDER, twilio_process_env
from tests.cli import AFTERWORD, free_port, invoke, no_database, query, run, serving
from tests.fakes.telegram import FakeBotApi, message_update
from tests.fakes.twilio import FakeTwilioApi

pytestmark = pytest.mark.usefixtures("in_tmp_path")


# -- smoke tests of the installed console script --------------------------------------------


def test_script_prints_its_version(tmp_path: Path) -> None:
    """`afterword --version` prints the version and exits 0."""
    from bot.web.app import VERSION

    result = run(["--version"], no_database(tmp_path), tmp_path)
    assert (0, f"afterword {VERSION}\n", "") == (result.returncode, result.stdout, result.stderr)


def test_script_help_lists_the_commands(tmp_path: Path) -> None:
    """`afterword --help` shows the usage line and every top-level command."""
    result = run(["--help"], {**no_database(tmp_path), "COLUMNS": "200"}, tmp_path)
    commands = {"serve", "chat", "report", "chart", "import", "trigger", "worker", "db", "flows"}
    commands |= {"staff", "telegram", "apikey"}
    listed = set(re.findall(r"^  ([a-z]+)  ", result.stdout.split("Commands:")[-1], re.MULTILINE))
    assert (0, True, commands) == (
        result.returncode,
        "Usage: afterword [OPTIONS] COMMAND [ARGS]..." in result.stdout,
        commands & listed,
    )


def test_script_takes_a_piped_chat(cli_env: dict[str, str], db_url: str, tmp_path: Path) -> None:
    """`printf '10\\ngreat\\n' | afterword chat --flow nps --lang en` completes the survey from the pipe."""
    result = run(
        ["chat", "--flow", "nps", "--lang", "en", "--contact", "smoke"],
        cli_env,
        tmp_path,
        stdin="10\ngreat\n",
    )
    assert 0 == result.returncode, result.stderr
    assert "How likely are you to recommend us to a friend or colleague?" in result.stdout
    assert [("nps", "completed")] == asyncio.run(
        query(db_url, sa.select(surveys.c.flow_id, surveys.c.status))
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_script_bad_database_url_exits_2_with_one_line(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The script stops on a malformed DATABASE_URL with exit 2 and one line, no traceback."""
    result = run(["db", "status"], {**cli_env, "DATABASE_URL": "mysql://localhost/x"}, tmp_path)
    lines = result.stderr.strip().splitlines()
    assert (2, 1, True) == (
        result.returncode,
        len(lines),
        lines[0].startswith("Error: DATABASE_URL: unsupported database 'mysql'"),
    )


# -- a chat killed half-way ------------------------------------------------------------------


def test_killed_chat_continues_at_question_two(cli_env: dict[str, str], db_url: str, tmp_path: Path) -> None:
    """A chat killed after question 1 continues at question 2 when started again."""
    proc = subprocess.Popen(
        [AFTERWORD, "chat", "--flow", "support-csat", "--lang", "en", "--contact", "kim"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env,
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

    result = invoke(["chat", "--contact", "kim"], cli_env, stdin="1\n2\n\n")
    assert 0 == result.code, result.stderr
    assert "resuming survey" in result.stdout
    second = load_flows()["support-csat"].question("resolution").prompt["en"]
    assert second in result.stdout.split("resuming survey")[1]
    rows = asyncio.run(
        query(db_url, sa.select(answers.c.question_id, answers.c.score).order_by(answers.c.id))
    )
    assert [("satisfaction", 2), ("resolution", 1), ("speed", 2)] == rows
    assert [("completed",)] == asyncio.run(query(db_url, sa.select(surveys.c.status)))


# -- serve and worker as real processes ------------------------------------------------------


@pytest.mark.slow
def test_serve_answers_healthz(cli_env: dict[str, str], tmp_path: Path) -> None:
    """`serve --host 127.0.0.1 --port P` listens there, not on HOST and PORT, and /healthz gives version and database."""
    port = free_port()
    # HOST and PORT name another address: only the options can make it answer on 127.0.0.1:P.
    env = {**cli_env, "HOST": "127.0.0.2", "PORT": str(free_port())}
    with serving(["--host", "127.0.0.1", "--port", str(port)], env, tmp_path, port) as log:
        response = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
        assert 200 == response.status_code, (response.text, log.read_text())
        body = response.json()
        assert ("ok", "ok") == (body["status"], body["database"]["status"])
        assert re.fullmatch(r"\d+\.\d+\.\d+.*", body["version"])
        text = log.read_text()
        assert f"Uvicorn running on http://127.0.0.1:{port}" in text
        assert "Telegram: off (TELEGRAM_BOT_TOKEN is not set)" in text
        assert "Twilio: off (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set)" in text


@pytest.mark.slow
def test_serve_telegram_polling_answers_without_a_webhook(
    cli_env: dict[str, str], tmp_path: Path, fake_telegram: FakeBotApi
) -> None:
    """`serve --telegram-polling` needs no webhook secret, says "long polling" and answers an update it fetched itself."""
    port = free_port()
    env = {
        **{k: v for k, v in cli_env.items() if not k.startswith(("TELEGRAM_", "TWILIO_"))},
        "TELEGRAM_BOT_TOKEN": fake_telegram.token,
        "TELEGRAM_API_BASE_URL": fake_telegram.base_url,
    }
    with serving(["--telegram-polling", "--port", str(port)], env, tmp_path, port) as log:
        fake_telegram.queue_update(message_update(1, 5001, "/start", language_code="en"))
        deadline = time.monotonic() + 30
        while not fake_telegram.sent("sendMessage"):
            assert time.monotonic() < deadline, "no answer to the polled update: " + log.read_text()
            time.sleep(0.1)
        [answer] = fake_telegram.sent("sendMessage")
        channel = next(line for line in log.read_text().splitlines() if line.startswith("Telegram:"))
    assert (
        f"Telegram: on as @{fake_telegram.bot_username} (long polling; no TELEGRAM_ALERT_CHAT_ID, no alerts)"
        == channel
    )
    assert (5001, True) == (
        answer.params["chat_id"],
        answer.params["text"].startswith("Hello! After a contact"),
    )
    assert (1, []) == (len(fake_telegram.sent("deleteWebhook")), fake_telegram.sent("setWebhook"))


@pytest.mark.slow
def test_worker_sends_a_due_survey_and_stops_on_sigterm(
    cli_env: dict[str, str], db_url: str, tmp_path: Path, fake_twilio: FakeTwilioApi
) -> None:
    """`afterword worker` sends a survey `trigger` queued through Twilio, then SIGTERM stops it with exit 0."""
    env = twilio_process_env(cli_env, fake_twilio)
    queued = invoke(["trigger", "--channel", "sms", "--to", "+4915112345678", "--ticket", "T-1"], env)
    assert 0 == queued.code, queued.stderr
    log = tmp_path / "worker.log"
    with (
        log.open("w") as sink,
        subprocess.Popen([AFTERWORD, "worker"], env=env, cwd=tmp_path, stderr=sink) as proc,
    ):
        try:
            # Until the survey is recorded sent: every message of it has reached the fake by then.
            sent = sa.select(surveys.c.id).where(surveys.c.sent_at.is_not(None))
            deadline = time.monotonic() + 30
            while not asyncio.run(query(db_url, sent)):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the worker sent nothing: " + log.read_text()
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=15)
    messages = fake_twilio.messages()
    lines = log.read_text().splitlines()
    assert (0, {("+4915112345678", SENDER)}) == (code, {(m.params["To"], m.params["From"]) for m in messages})
    assert "Wie zufrieden waren Sie mit unserem Kundenservice?" in "\n".join(
        m.params["Body"] for m in messages
    )
    channels = re.match(r"worker \S+: channels ([a-z]+(?:, [a-z]+)*)", lines[0])
    assert ("sms, voice, web", "worker stopped") == (channels and channels.group(1), lines[-1]), lines
