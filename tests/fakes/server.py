"""A fake provider's HTTP server: a Starlette app served by uvicorn on 127.0.0.1 in a thread.

The server runs on its own event loop in a daemon thread, so it answers requests while the
test's loop awaits the library under test. Subclasses build their app and call ``serve``.
"""

from __future__ import annotations

import socket
import threading
import time
from types import TracebackType
from typing import Self

import uvicorn
from starlette.applications import Starlette


class LocalServer:
    """Serves ``app`` on a free port of 127.0.0.1; use as ``with Subclass() as fake:``."""

    def __init__(self, app: Starlette, name: str) -> None:
        self._app = app
        self._name = name
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._port: int | None = None
        # Set while stopping, so a pending long poll can answer at once instead of holding
        # up uvicorn's graceful shutdown.
        self.stopping = threading.Event()

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``, once started."""
        if self._port is None:
            raise RuntimeError(f"{self._name} is not started")
        return f"http://127.0.0.1:{self._port}"

    def start(self) -> None:
        """Serve in a daemon thread; return once it accepts requests."""
        if self._thread is not None:
            raise RuntimeError(f"{self._name} is already started")
        # Binding the socket here, rather than asking uvicorn for port 0, makes the port known
        # before the thread starts and leaves no window for another process to take it.
        # The explicit IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets
        # whose proto is IPPROTO_TCP (a default socket() says 0), and without it every response
        # stalls ~40 ms on Nagle's algorithm meeting delayed ACKs.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            host="127.0.0.1",
            port=self._port,
            loop="asyncio",
            http="h11",
            ws="none",  # never import websockets: its deprecation warnings are errors in pytest
            lifespan="off",
            log_level="warning",
            log_config=None,  # leave the process's logging configuration alone
            access_log=False,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name=self._name, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30  # generous: a busy machine starts threads slowly
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self._name} did not start")
            time.sleep(0.005)

    def stop(self, *, wait: bool = True) -> None:
        """Stop the server and wait for its thread to end, or with ``wait=False`` let it end alone.

        uvicorn notices the stop on its next 0.1 s tick and then sleeps 0.1 s while it shuts
        down: waiting cost each test that used a fake 0.2 s, a fifth of the fast lane. A test's
        fixture need not wait: the server takes no new work, and its port is its own.
        """
        self.stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if not wait:
            return
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                raise RuntimeError(f"{self._name} did not stop")
        if self._socket is not None:
            self._socket.close()  # uvicorn closes it too; closing twice is harmless
        self._server = None
        self._thread = None
        self._socket = None
        self.stopping.clear()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
