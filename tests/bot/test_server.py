"""The HTTP edge of `afterword serve` as a real process: slow clients dropped, connections bounded.

And `serve_workers` says when a worker could not start, so `serve --workers N` exits non-zero.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from tests.cli import free_port, serving

pytestmark = pytest.mark.slow
ON_SQLITE = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.settimeout(20)  # far past CLIENT_TIMEOUT_SECONDS=1: the server must end it first
    return sock


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


@ON_SQLITE
@pytest.mark.parametrize(
    "sent",
    [
        b"",  # connects and says nothing
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",  # headers never finished (slowloris)
        b"POST /dashboard/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: 100\r\n\r\nlogin=",  # body never finished
    ],
    ids=["silent", "headers", "body"],
)
def test_slow_client_gets_408_and_is_disconnected(
    cli_env: dict[str, str], tmp_path: Path, sent: bytes
) -> None:
    """A request not whole within CLIENT_TIMEOUT_SECONDS is answered 408 and its connection closed.

    Before, uvicorn waited for ever: 1,100 half-sent requests made the server unreachable (issue 16).
    """
    port = free_port()
    env = {**cli_env, "CLIENT_TIMEOUT_SECONDS": "1"}
    with serving(["--port", str(port)], env, tmp_path, port), _connect(port) as sock:
        sock.sendall(sent)
        answer = _read_all(sock)  # returns only once the server closed the connection
    assert answer.startswith(b"HTTP/1.1 408 "), answer


@ON_SQLITE
def test_a_body_nobody_waits_for_is_cut_off_after_the_answer(cli_env: dict[str, str], tmp_path: Path) -> None:
    """A keyless POST /api/surveys is answered 401 at once; its unfinished body then ends the connection."""
    port = free_port()
    env = {**cli_env, "CLIENT_TIMEOUT_SECONDS": "1"}
    with serving(["--port", str(port)], env, tmp_path, port), _connect(port) as sock:
        sock.sendall(b"POST /api/surveys HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        answer = _read_all(sock)
    assert (True, 1) == (answer.startswith(b"HTTP/1.1 401 "), answer.count(b"HTTP/1.1 ")), answer


@ON_SQLITE
def test_a_prompt_client_is_not_cut_off(cli_env: dict[str, str], tmp_path: Path) -> None:
    """The deadline is for the request to arrive, not for the answer: a whole request gets its 200."""
    port = free_port()
    env = {**cli_env, "CLIENT_TIMEOUT_SECONDS": "1"}
    with serving(["--port", str(port)], env, tmp_path, port), _connect(port) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 200 "), answer


@ON_SQLITE
def test_connections_past_max_connections_get_503(cli_env: dict[str, str], tmp_path: Path) -> None:
    """With MAX_CONNECTIONS=3 and two connections held open, a third request gets 503 at once."""
    port = free_port()
    env = {**cli_env, "MAX_CONNECTIONS": "3", "CLIENT_TIMEOUT_SECONDS": "30"}
    with serving(["--port", str(port)], env, tmp_path, port), _connect(port) as one, _connect(port) as two:
        one.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        two.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        refused = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    assert 503 == refused.status_code


def test_serve_workers_is_false_when_a_worker_cannot_start(tmp_path: Path) -> None:
    """A worker that exits with uvicorn's start-up failure stops the rest, and the caller learns of it.

    uvicorn's supervisor returns as it does after Ctrl-C, so `serve --workers 2` used to exit 0.
    """
    (tmp_path / "broken_app.py").write_text(
        textwrap.dedent(
            """
            from uvicorn.config import STARTUP_FAILURE

            def create():
                raise SystemExit(STARTUP_FAILURE)
            """
        )
    )
    script = textwrap.dedent(
        f"""
        import sys
        from bot.web.server import serve_workers, server_config
        from bot.settings import load_settings

        config = server_config(
            "broken_app:create", load_settings(_env_file=None), host="127.0.0.1", port={free_port()},
            factory=True, workers=2,
        )
        sys.exit(0 if serve_workers(config) else 7)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert 7 == done.returncode, done.stderr
