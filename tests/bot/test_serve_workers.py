"""`afterword serve --workers N`: refused where it cannot work, and on PostgreSQL N processes share the work."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from twilio.request_validator import RequestValidator

from bot.service import Service, utc_now
from bot.store.db import Database
from bot.store.tables import answers, jobs, surveys
from bot.triggers import SurveyRequest, trigger
from tests.bot.test_twilio import PUBLIC, SENDER, twilio_process_env
from tests.cli import AFTERWORD, free_port, invoke
from tests.fakes.twilio import FakeTwilioApi
from tests.support import environment

SURVEYS = 100  # two claim batches of 50 (bot.scheduler.BATCH): enough that both schedulers get some
REPLIES = ("2", "1", "2", "Sehr nett")  # support-csat: three ratings and the comment


def _untouched(url: str) -> bool:
    """Whether nothing opened the database: no SQLite file, or no table in PostgreSQL."""
    if url.startswith("sqlite"):
        return not Path(str(make_url(url).database)).exists()

    async def tables() -> int:
        db = Database(make_url(url))
        try:
            async with db.read() as conn:
                found = await conn.exec_driver_sql(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
                )
                return int(found.scalar_one())
        finally:
            await db.dispose()

    return 0 == asyncio.run(tables())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--workers", "0"], "Error: --workers: 0 is not a number of processes; use 1 or more"),
        (
            ["--workers", "2", "--telegram-polling"],
            "Error: --workers: only one process may long-poll Telegram; use --workers 1 or the webhook",
        ),
    ],
)
@pytest.mark.usefixtures("in_tmp_path")
def test_workers_refused_with_one_line_and_nothing_started(
    empty_db_url: str, taken_port: int, args: list[str], expected: str
) -> None:
    """`serve --workers 0` and `--workers 2 --telegram-polling` exit 2 with one line; the database stays untouched."""
    result = invoke(["serve", "--port", str(taken_port), *args], environment(empty_db_url))
    assert (2, [expected]) == (result.code, result.stderr.strip().splitlines())
    assert _untouched(empty_db_url)


@pytest.mark.usefixtures("in_tmp_path")
@pytest.mark.parametrize("empty_db_url", ["sqlite"], indirect=True)
def test_several_workers_on_sqlite_are_refused(empty_db_url: str, taken_port: int) -> None:
    """`serve --workers 2` on SQLite exits 2 saying PostgreSQL is needed; no database file is made."""
    result = invoke(["serve", "--port", str(taken_port), "--workers", "2"], environment(empty_db_url))
    assert (
        2,
        [
            "Error: --workers: more than one process needs PostgreSQL "
            "(DATABASE_URL=postgresql+asyncpg://…); SQLite serves one process"
        ],
    ) == (result.code, result.stderr.strip().splitlines())
    assert _untouched(empty_db_url)


def _tail(log: Path, lines: int = 60) -> str:
    """The end of a server log, for a failure message."""
    return "\n".join(log.read_text().splitlines()[-lines:])


def _children(pid: int) -> list[int]:
    """The uvicorn workers started by process ``pid`` (multiprocessing's resource tracker left out)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(int(child))
    return found


def _alive(pids: list[int]) -> list[int]:
    return [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def _holders(port: int, pids: list[int]) -> dict[int, int]:
    """Which of ``pids`` holds each open connection to ``port``, by the client's port (Linux /proc)."""
    owner = {}
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):  # an fd closed while we look
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    owner[target[len("socket:[") : -1]] = pid
    held = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, remote, state, inode = (line.split()[i] for i in (1, 2, 3, 9))
            if int(local.rsplit(":", 1)[1], 16) == port and state == "01" and inode in owner:
                held[int(remote.rsplit(":", 1)[1], 16)] = owner[inode]
    return held


def _client_port(response: httpx.Response) -> int:
    port: int = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    return port


@contextlib.asynccontextmanager
async def _serving(
    args: list[str], env: dict[str, str], cwd: Path, port: int, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`afterword serve ARGS` until /healthz answers; stopped by the test, killed if it does not stop."""
    with log.open("w") as sink:
        proc = await asyncio.create_subprocess_exec(
            AFTERWORD, "serve", "--port", str(port), *args, env=env, cwd=cwd, stdout=sink, stderr=sink
        )
        try:
            deadline = time.monotonic() + 90
            async with httpx.AsyncClient() as client:
                while True:
                    try:
                        await client.get(f"http://127.0.0.1:{port}/healthz")
                        break
                    except httpx.TransportError:
                        assert proc.returncode is None, _tail(log)
                        assert time.monotonic() < deadline, "serve did not come up: " + _tail(log)
                        await asyncio.sleep(0.2)
            yield proc
        finally:
            if proc.returncode is None:
                workers = _children(proc.pid)
                proc.kill()
                await proc.wait()
                for pid in workers:  # orphans now: they would serve on
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
async def test_two_workers_share_webhooks_and_jobs_mask_numbers_and_stop_on_sigterm(
    service: Service, cli_env: dict[str, str], fake_twilio: FakeTwilioApi, tmp_path: Path
) -> None:
    """`serve --workers 2`: both processes send surveys, take signed SMS replies and mask numbers; answers stored once; SIGTERM stops all."""
    if service.db.is_sqlite:
        pytest.skip("several workers need PostgreSQL; with SQLite Afterword runs as one process")
    live = dataclasses.replace(service, clock=utc_now)  # the workers read the real clock
    numbers = [f"+49151{30_000_000 + i}" for i in range(SURVEYS)]
    for i, number in enumerate(numbers):
        request = SurveyRequest(ticket_id=f"W-{i}", channel="sms", to=number, language="de")
        await trigger(live, request, channels={"sms": object()}, link_for=lambda *_: None)
    port = free_port()
    env = twilio_process_env(
        cli_env,
        fake_twilio,
        SEND_RATE_SMS="50",  # a batch of 50 surveys takes seconds: the other worker claims the next
        LOG_LEVEL="INFO",  # uvicorn's access log, where a number in a request line must be masked
    )
    log = tmp_path / "serve.log"
    validator = RequestValidator(fake_twilio.auth_token)
    served: Counter[int] = Counter()  # requests answered, by worker pid

    async with _serving(["--workers", "2"], env, tmp_path, port, log) as proc:
        pids = _children(proc.pid)
        assert 2 == len(pids), _tail(log)
        deadline = time.monotonic() + 90
        while len(fake_twilio.messages()) < SURVEYS:  # one message each
            assert time.monotonic() < deadline, f"{len(fake_twilio.messages())} sent; " + _tail(log)
            await asyncio.sleep(0.2)

        async def reply(client: httpx.AsyncClient, number: str, text: str, sid: str) -> int:
            params = {"From": number, "To": SENDER, "Body": text, "MessageSid": sid}
            signature = validator.compute_signature(f"{PUBLIC}/twilio/sms", params)
            response = await client.post(
                "/twilio/sms", data=params, headers={"X-Twilio-Signature": signature}
            )
            assert 200 == response.status_code, response.text
            return _client_port(response)

        gate = asyncio.Semaphore(8)

        async def customer(n: int, number: str) -> None:
            # One connection per customer, as Twilio's would be: the kernel hands each to a worker.
            async with gate, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                ports = [
                    await reply(client, number, text, f"SM{n:016d}{i:016d}") for i, text in enumerate(REPLIES)
                ]
                # Twilio retries a webhook it got no answer to: the same MessageSid again.
                ports.append(await reply(client, number, REPLIES[-1], f"SM{n:016d}{len(REPLIES) - 1:016d}"))
                # A number in the request line, which the worker's access log must mask.
                response = await client.get(f"/healthz?to={number}")
                assert 200 == response.status_code, response.text
                ports.append(_client_port(response))
                holders = _holders(port, pids)  # while the connection is open
                served.update(holders[p] for p in ports)

        await asyncio.gather(*(customer(n, number) for n, number in enumerate(numbers)))
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 60)

    text = await asyncio.to_thread(log.read_text)
    failed = [line for line in text.splitlines() if "ERROR" in line]  # uvicorn's and ours
    assert (0, [], []) == (code, _alive(pids), failed), _tail(log)
    assert ["Finished server process"] * 2 == re.findall("Finished server process", text)
    async with service.db.read() as conn:
        per_survey = Counter(survey_id for (survey_id,) in await conn.execute(sa.select(answers.c.survey_id)))
        statuses = Counter(status for (status,) in await conn.execute(sa.select(surveys.c.status)))
        senders = Counter(
            result["worker"]
            for (result,) in await conn.execute(
                sa.select(jobs.c.result).where(jobs.c.kind == "send", jobs.c.status == "done")
            )
        )
    assert ({len(REPLIES)}, SURVEYS) == (set(per_survey.values()), len(per_survey))
    assert {"completed": SURVEYS} == dict(statuses)
    assert {f"{socket.gethostname()}:{pid}" for pid in pids} == set(senders), senders
    assert (set(pids), SURVEYS * (len(REPLIES) + 2)) == (set(served), served.total()), served
    assert ([], SURVEYS) == ([n for n in numbers if n in text], text.count("GET /healthz?to=+49151****"))
