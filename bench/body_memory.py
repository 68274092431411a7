"""Request bodies: `afterword serve`'s memory while it is sent 50 MB bodies without credentials (issue 16).

Usage: python -m bench.body_memory [--megabytes 50] [--out BENCHMARKS.md]

`afterword serve` (SQLite in a temporary folder, one process, a free port; Twilio, the Telegram
webhook against the fake Bot API of tests/fakes, and the helpdesk hooks all on) gets, at every
POST route of the app (read from its routes, so a new one is measured too), a body of
``--megabytes`` MB with no credentials, no signature and no secret, twice: streamed in 64 KiB
chunks without a length (``Transfer-Encoding: chunked``), and with its ``Content-Length``
declared. The client is a plain socket that keeps sending until the answer comes, so each row
says how much had been sent by then (the kernel's socket buffers included: an upper bound on
what the server can have read). Each route gets one small request first, so that what its
first request imports is not counted against the large ones.

Memory is read from /proc/<pid>/status: VmRSS before the large requests, the peak, and VmRSS
after them. The peak is VmHWM, reset before each route through /proc/<pid>/clear_refs, and
VmRSS sampled every few milliseconds while the requests run, whichever is higher. With --out,
the section "Request bodies" in that file is replaced (or added at the end); `make bench` runs
this after `python -m bench`, which writes the other sections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.memory import _check_server, _status
from bench.throughput import ACCOUNT, AFTERWORD, SENDER, TOKEN, _port, _serve, _stop
from bot.settings import load_settings
from tests.fakes.telegram import FakeBotApi

MEGABYTES = 50
CHUNK = 64 * 1024
RISE_LIMIT = 20 * 10**6  # bytes: the target, "RSS rises by less than 20 MB"
SAMPLE_SECONDS = 0.005
ANSWER_SECONDS = 60
HEADERS_ONLY_SECONDS = 0.5
RESETS = 3
FORM = "application/x-www-form-urlencoded"
SECTION = "## Request bodies"
# Routes that take a form; the others take JSON (what the content type says makes no
# difference to the size cap, but each route is sent what it would be).
_FORM_ROUTES = re.compile(r"^/(twilio/|s/|try$|setup$|dashboard/)")
_MIB = 2**20


@dataclass(frozen=True)
class Answer:
    """What one large request got: the status, and the bytes sent when the answer came."""

    status: int
    sent: int


@dataclass(frozen=True)
class Route:
    """One route's two large requests and the server's memory around them, in KiB."""

    path: str
    chunked: Answer
    declared: Answer
    before: int  # VmRSS before the large requests
    peak: int  # the higher of VmHWM and the sampled VmRSS while they ran
    after: int  # VmRSS after them


def post_routes() -> list[str]:
    """Every POST path of the app as FastAPI routes it (``/s/{token}``), the routers it includes too."""
    from bot.web.app import create_app

    settings = load_settings(_env_file=None, database_url="sqlite+aiosqlite://")
    paths: set[str] = set()
    for route in _walk(create_app(settings, scheduler=False).routes):
        if "POST" in (getattr(route, "methods", None) or ()):
            paths.add(route.path)
    return sorted(paths)


def _walk(routes: list[Any]) -> Iterator[Any]:
    """Routes, and those of the routers included in the app (FastAPI ≥ 0.120 keeps them apart)."""
    for route in routes:
        yield route
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from _walk(list(inner.routes))


async def _post(port: int, path: str, size: int, *, declared: bool) -> Answer:
    """POST ``size`` bytes to ``path`` until the server answers; its status and the bytes sent by then.

    A server that closes while bytes are still on their way may reset the connection before its
    answer is read; such a request is sent again, up to RESETS times, and counted as status 0 after.
    """
    for _ in range(RESETS):
        try:
            return await _post_once(port, path, size, declared=declared)
        except ConnectionResetError:
            continue
    return Answer(0, 0)


async def _post_once(port: int, path: str, size: int, *, declared: bool) -> Answer:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        form = bool(_FORM_ROUTES.match(path))
        framing = f"Content-Length: {size}" if declared else "Transfer-Encoding: chunked"
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: {FORM if form else 'application/json'}\r\n{framing}\r\n\r\n"
        )
        writer.write(head.encode("ascii"))
        answer = asyncio.ensure_future(reader.readline())
        # A server that answers from the headers alone does so now, before any of the body is sent.
        await asyncio.wait({answer}, timeout=HEADERS_ONLY_SECONDS)
        prefix = b"Body=" if form else b'{"ticket_id": "'
        sent = 0
        while sent < size and not answer.done():
            piece = ((prefix if sent == 0 else b"") + b"x" * CHUNK)[: size - sent]
            writer.write(piece if declared else b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
            drained = asyncio.ensure_future(writer.drain())
            await asyncio.wait({drained, answer}, return_when=asyncio.FIRST_COMPLETED)
            if not drained.done():  # the server answered and stopped reading
                drained.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await drained
            elif drained.exception() is not None:  # it closed the connection
                break
        if not declared and sent >= size and not answer.done():
            writer.write(b"0\r\n\r\n")
        line = await asyncio.wait_for(answer, ANSWER_SECONDS)
        if not line.startswith(b"HTTP/1.1 "):
            raise ConnectionResetError(f"POST {path}: the connection closed without an answer ({line!r})")
        return Answer(int(line.split()[1]), sent)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _small(port: int, path: str) -> None:
    """A tiny request to ``path``, so that its first-use imports are done before anything is measured."""
    await _post(port, path, 16, declared=True)


def _reset_peak(pid: int) -> bool:
    """Set VmHWM back to VmRSS (Linux: "5" to clear_refs); False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5", encoding="ascii")
    except OSError:
        return False
    return True


def _filled(path: str) -> str:
    """``path`` with a made-up value for each path parameter."""
    return re.sub(r"\{[^}]+\}", "x" * 22, path)


async def _measure(pid: int, port: int, route: str, size: int) -> Route:
    path = _filled(route)
    before = _status(pid)["VmRSS"]
    _reset_peak(pid)
    sampled = before
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal sampled
        while not done.is_set():
            sampled = max(sampled, _status(pid)["VmRSS"])
            await asyncio.sleep(SAMPLE_SECONDS)

    sampler = asyncio.create_task(sample())
    try:
        chunked = await _post(port, path, size, declared=False)
        declared = await _post(port, path, size, declared=True)
    finally:
        done.set()
        await sampler
    ended = _status(pid)
    return Route(route, chunked, declared, before, max(sampled, ended["VmHWM"]), ended["VmRSS"])


async def run(megabytes: int = MEGABYTES) -> tuple[list[str], int]:
    """The rows of the section, and how many routes missed the target (status or memory)."""
    size = megabytes * 10**6
    paths = post_routes()
    with tempfile.TemporaryDirectory() as name, FakeBotApi() as telegram:
        tmp = Path(name)
        port = _port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("TWILIO_", "TELEGRAM_", "DATABASE_URL", "HOOKS_", "FLOWS_DIR"))
            },
            "DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'bodies.db'}",
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "TWILIO_FROM_NUMBER": SENDER,
            "TELEGRAM_BOT_TOKEN": telegram.token,
            "TELEGRAM_API_BASE_URL": telegram.base_url,
            "TELEGRAM_WEBHOOK_SECRET": secrets.token_urlsafe(16),
            "HOOKS_SECRET": secrets.token_urlsafe(16),  # never sent: no request has credentials
            "HOOKS_GENERIC_MAP": '{"ticket_id": "id", "phone": "phone"}',
            "PUBLIC_BASE_URL": base,
            "LOG_LEVEL": "WARNING",
            "PORT": str(port),
        }
        proc = await _serve([AFTERWORD, "serve"], env, tmp, port)
        try:
            _check_server(proc.pid)
            for path in paths:
                await _small(port, _filled(path))
            started = _status(proc.pid)["VmRSS"]
            routes = [await _measure(proc.pid, port, path, size) for path in paths]
            _check_server(proc.pid)
            ended = _status(proc.pid)["VmRSS"]
        finally:
            await _stop(proc)
    return _rows(routes, megabytes, started, ended)


def _mib(kib: int) -> str:
    return f"{kib / 1024:,.1f} MiB"


def _sent(answer: Answer) -> str:
    if answer.status == 0:
        return f"connection reset before an answer, {RESETS} times"
    if answer.sent == 0:
        return f"{answer.status} before any of the body was sent"
    return f"{answer.status} after {answer.sent / _MIB:,.1f} MiB sent"


def _missed(route: Route) -> str:
    """What of the target ``route`` missed, or "" if it met it."""
    wrong = sorted({route.chunked.status, route.declared.status} - {401, 403, 404, 413})
    why = [f"{status} is not a refusal" for status in wrong]
    if (route.peak - route.before) * 1024 >= RISE_LIMIT:
        why.append("VmRSS rose 20 MB or more")
    return "; ".join(why)


def _rows(routes: list[Route], megabytes: int, started: int, ended: int) -> tuple[list[str], int]:
    target = "413 (or 401/403/404) before the body is read; VmRSS rises < 20 MB"
    rows = []
    for r in routes:
        rows.append(
            f"| `POST {r.path}`, {megabytes} MB without credentials "
            f"| chunked: {_sent(r.chunked)}; Content-Length: {_sent(r.declared)}; "
            f"VmRSS peak {_mib(r.peak)}, after {_mib(r.after)} "
            f"| VmRSS before: {_mib(r.before)} "
            f"| +{(r.peak - r.before) / 1024:,.1f} MiB "
            f"| {target}{f' (missed: {_missed(r)})' if _missed(r) else ''} |"
        )
    peak = max(r.peak for r in routes)
    missed = sum(bool(_missed(r)) for r in routes)
    rows.append(
        f"| all {len(routes)} POST routes, {2 * len(routes)} bodies of {megabytes} MB one after another "
        f"| VmRSS peak {_mib(peak)}, after {_mib(ended)}; {len(routes) - missed} of {len(routes)} routes "
        f"met the target | VmRSS before: {_mib(started)} | +{(peak - started) / 1024:,.1f} MiB "
        f"| VmRSS rises < 20 MB |"
    )
    return rows, missed


def section(rows: list[str], megabytes: int) -> str:
    """The BENCHMARKS.md section, with the date it was measured."""
    return "\n".join(
        [
            SECTION,
            "",
            f"`afterword serve` (SQLite, one process) sent {megabytes} MB bodies without credentials at",
            "every POST route, streamed in 64 KiB chunks and with the length declared (bench/body_memory.py;",
            f"the body cap is 1 MiB, bot/web/limits.py); measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on the",
            "machine above. Sent: what the client had written when the answer came, socket buffers",
            "included. Peak: VmHWM, reset before each route, or VmRSS sampled every 5 ms, if higher.",
            "",
            "| figure | ours | ceiling | ratio | target |",
            "| --- | --- | --- | --- | --- |",
            *rows,
        ]
    )


def write(out: Path, text: str) -> None:
    """Replace the section in ``out`` (up to the next "## " heading), or add it at the end."""
    old = out.read_text(encoding="utf-8") if out.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(old):
        new = pattern.sub(lambda _: text + "\n\n", old, count=1).rstrip("\n") + "\n"
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    out.write_text(new, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--megabytes", type=int, default=MEGABYTES, help=f"body size in MB (default {MEGABYTES})"
    )
    parser.add_argument("--out", type=Path, help="write the section into this file (e.g. BENCHMARKS.md)")
    args = parser.parse_args()
    started = time.perf_counter()
    rows, missed = asyncio.run(run(args.megabytes))
    print("\n".join(rows), flush=True)
    print(f"took {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.out is not None:
        write(args.out, section(rows, args.megabytes))
        print(f"wrote {args.out}", file=sys.stderr)
    if missed:  # reported, as the other benchmarks report a ratio under its target; not a failure
        print(f"{missed} route(s) missed the target", file=sys.stderr)


if __name__ == "__main__":
    main()
