"""What every `afterword` command shares: one-line errors, settings, running a coroutine.

Imported by every command, and by `afterword --help`: it imports only what those need.
Settings (pydantic, SQLAlchemy) and asyncio are imported when a command first uses them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from bot.errors import AfterwordError
from flows.errors import FlowError, FlowInvalid

if TYPE_CHECKING:
    from bot.service import Service
    from bot.settings import Settings
    from bot.store.db import Database

T = TypeVar("T")

err = Console(stderr=True, highlight=False, soft_wrap=True)


class _Options:
    """The options given before the command (`afterword --verbose report`), set by the app's callback."""

    verbose = False


options = _Options()


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``Error: message`` on stderr and exit with ``code``."""
    err.print(f"[bold red]Error:[/] {message}", markup=True)
    raise typer.Exit(code)


def load() -> Settings:
    """The settings, or one line naming the bad key and exit 2."""
    from bot.settings import load_settings

    try:
        return load_settings()
    except AfterwordError as exc:
        fail(str(exc), exc.exit_code)


@contextmanager
def errors() -> Iterator[None]:
    """Our own errors become one line on stderr and a non-zero exit, never a traceback."""
    try:
        yield
    except FlowInvalid as exc:
        for issue in exc.issues:
            err.print(str(issue), markup=False)
        fail(f"flow file {exc.source} is invalid ({len(exc.issues)} problem(s))")
    except (AfterwordError, FlowError) as exc:
        fail(str(exc), getattr(exc, "exit_code", 1))


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion under ``errors``."""
    import asyncio

    with errors():
        return asyncio.run(coro)
    raise AssertionError("unreachable: errors() exits on every error")


def say_database(settings: Settings) -> None:
    """With --verbose, name the database on stderr before it is opened (password masked)."""
    if options.verbose:
        from bot.store.db import describe

        err.print(f"database: {describe(settings.database)}", markup=False)


async def open_service(settings: Settings, *, create: bool = False) -> Service:
    """The service, saying which database with --verbose; a missing SQLite file only with ``create``."""
    from bot.service import Service

    say_database(settings)
    return await Service.open(settings, create=create)


async def open_database(settings: Settings) -> Database:
    """The database alone (no flow files), saying which with --verbose; never a new SQLite file."""
    from bot.store.db import Database

    say_database(settings)
    return await Database.open(settings.database)


def with_service(config: Settings, work: Callable[[Service], Awaitable[T]]) -> T:
    """Open the service, run ``work`` with it, close it; errors as one line."""

    async def go() -> T:
        service = await open_service(config)
        try:
            return await work(service)
        finally:
            await service.close()

    return run(go())
