"""The HTTP server's edge: uvicorn with deadlines for slow clients, bounded connections, safe workers.

uvicorn on its own waits for ever for a request that is sent slowly: 1,100 half-sent requests
made `afterword serve` unreachable (1,024 open files) and wrote 102 MB of error log in 45 s
(issue 16). Here:

* ``GuardedHttp`` gives every request ``CLIENT_TIMEOUT_SECONDS`` from its first byte (or from
  the connection, for one that sends nothing) to arrive whole, headers and body; a client
  slower than that gets 408 and the connection is closed. Every body Afterword takes is at
  most 1 MiB (bot.web.limits), which a real client sends well within the default 10 s.
* ``MAX_CONNECTIONS`` is uvicorn's ``limit_concurrency``: requests over it get 503 at once,
  and the process may hold that many open files (its soft limit is raised towards the hard one).
* X-Forwarded-For is not uvicorn's business (``proxy_headers`` off: its default believed it
  from 127.0.0.1); the app reads it behind ``TRUSTED_PROXIES`` only (bot.web.limits.client_address).
* ``serve_workers`` runs uvicorn's supervisor with a start-up allowance of ``STARTUP_SECONDS``
  (uvicorn's 5 s killed workers still importing on a loaded machine) and says whether a worker
  failed to start, so `serve --workers N` can exit non-zero instead of 0.
"""

from __future__ import annotations

import asyncio
import resource
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.supervisors.multiprocess import Multiprocess

from bot.errors import ConfigError
from bot.settings import Settings

STARTUP_SECONDS = 60  # a worker must answer uvicorn's health check within this, from its start
_SPARE_FILES = 100  # besides connections: the database, log files, the providers' HTTP clients
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class ServerConfig(uvicorn.Config):
    """uvicorn's Config with the client deadline that ``GuardedHttp`` reads (it travels to workers)."""

    def __init__(self, app: Any, *, client_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.client_timeout = client_timeout


def server_config(app: Any, settings: Settings, *, host: str, port: int, **kwargs: Any) -> ServerConfig:
    """The uvicorn configuration of `afterword serve`, from the settings."""
    return ServerConfig(
        app,
        client_timeout=settings.client_timeout_seconds,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        http=GuardedHttp,
        proxy_headers=False,
        limit_concurrency=settings.max_connections,
        timeout_worker_healthcheck=STARTUP_SECONDS,
        **kwargs,
    )


class GuardedHttp(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request does not arrive in time."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self._client_timeout: float = getattr(config, "client_timeout", 10.0)
        self._deadline: asyncio.TimerHandle | None = None
        self._cycle_when_armed: Any = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that sends nothing is held no longer than a slow request

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()  # from here on the time is the app's, not the client's

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._cycle_when_armed = self.cycle  # a new cycle appears once this request's headers are in
        self._deadline = self.loop.call_later(self._client_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is self._cycle_when_armed or not cycle.response_started:
            # Headers not whole yet, or the app still waits for the body: nobody has answered.
            self.transport.write(_TIMED_OUT)
        if cycle is not None:
            cycle.keep_alive = False
        self.transport.close()  # an app still reading the body is told the client left


def allow_open_files(connections: int) -> None:
    """Raise the soft limit of open files to fit ``connections``; ConfigError when the hard one cannot."""
    needed = connections + _SPARE_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            raise ConfigError(
                "MAX_CONNECTIONS",
                f"{connections} connections need {needed} open files, and this process may have "
                f"{hard} (ulimit -Hn); lower MAX_CONNECTIONS or raise the limit",
            )
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def serve_workers(config: uvicorn.Config) -> bool:
    """Run ``config.workers`` processes on one socket until stopped; False when one could not start.

    uvicorn's supervisor stops all workers when one exits with its start-up failure code, and
    returns as it does after Ctrl-C; the failed process is still in its list to tell the two apart.
    """
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    supervisor.run()
    return not any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes)
