"""Running `afterword` in tests: in this process through Typer's CliRunner, or as the real script."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from bot.cli.main import app
from bot.store.db import Database
from tests.support import environment

AFTERWORD = str(Path(sys.executable).parent / "afterword")
ROOT = Path(__file__).resolve().parents[1]
# Rich colours a console it took for a terminal when it was made; the text is what is tested.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def run(
    args: list[str], env: dict[str, str], cwd: Path, stdin: str = "", timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the `afterword` script with ARGS as a process and capture its output."""
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


@dataclass(frozen=True)
class Ran:
    """What an in-process `afterword` command did: its exit code and what it wrote."""

    code: int
    stdout: str
    stderr: str


def invoke(args: Sequence[str], env: Mapping[str, str], stdin: str = "") -> Ran:
    """Run `afterword ARGS` in this process with exactly ``env`` as its environment.

    An exception the command does not turn into an exit code fails the test, as a traceback would.
    """
    with pytest.MonkeyPatch.context() as patch:
        # Set before Typer builds the command from the app: its completion options read it.
        for key in os.environ.keys() - env.keys():
            patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        result = CliRunner().invoke(
            app, list(args), input=stdin, catch_exceptions=False, prog_name="afterword"
        )
    return Ran(result.exit_code, _ANSI.sub("", result.stdout), _ANSI.sub("", result.stderr))


async def query(url: str, stmt: sa.Select[Any]) -> list[tuple[Any, ...]]:
    db = Database(make_url(url))
    try:
        async with db.read() as conn:
            return [tuple(r) for r in (await conn.execute(stmt)).all()]
    finally:
        await db.dispose()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def no_database(folder: Path) -> dict[str, str]:
    """An environment for commands that never open the database."""
    return environment(f"sqlite+aiosqlite:///{folder / 'unused.db'}")


@contextmanager
def serving(args: Sequence[str], env: Mapping[str, str], cwd: Path, port: int) -> Iterator[Path]:
    """`afterword serve ARGS` until /healthz answers on 127.0.0.1:``port``; its log; SIGINT at the end."""
    log = cwd / "serve.log"
    with (
        log.open("w") as sink,
        subprocess.Popen([AFTERWORD, "serve", *args], env=dict(env), cwd=cwd, stderr=sink) as proc,
    ):
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                    break
                except httpx.TransportError:
                    assert proc.poll() is None, log.read_text()
                    assert time.monotonic() < deadline, "serve did not come up: " + log.read_text()
                    time.sleep(0.2)
            yield log
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise


@asynccontextmanager
async def workers(
    count: int, env: Mapping[str, str], cwd: Path
) -> AsyncIterator[tuple[list[asyncio.subprocess.Process], list[Path]]]:
    """``count`` `afterword worker` processes and their logs; those still running at the end get SIGTERM.

    Each is waited for (30 s) before the block is left, so its exit code is in ``returncode``.
    """
    logs = [cwd / f"worker{n}.log" for n in range(1, count + 1)]
    with ExitStack() as files:
        sinks = [files.enter_context(log.open("w")) for log in logs]
        started = [
            await asyncio.create_subprocess_exec(
                AFTERWORD, "worker", env=dict(env), cwd=cwd, stdout=asyncio.subprocess.DEVNULL, stderr=sink
            )
            for sink in sinks
        ]
        try:
            yield started, logs
        finally:
            for process in started:
                if process.returncode is None:
                    process.send_signal(signal.SIGTERM)
            for process in started:
                await asyncio.wait_for(process.wait(), 30)
