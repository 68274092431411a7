"""The database: one async engine per process, SQLite or PostgreSQL, and its schema revision."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from bot.errors import ConfigError, DatabaseUnavailable, SchemaOutdated

if TYPE_CHECKING:
    from alembic.config import Config

_MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration, so that opening a current database needs neither Alembic nor its
# migration files: running them at the head cost each `afterword report` about 160 ms of CPU,
# a quarter of it (bench/startup.py). tests/bot/test_startup.py checks it is Alembic's head.
HEAD_REVISION = "0016"
# PostgreSQL connections one process keeps (SQLAlchemy's default is 5, plus 10 opened and closed
# again as needed): with 16 webhooks at a time, 142-247 connections were opened and closed per
# 1,200 answers, each costing PostgreSQL a backend start (bench/cpu.py, issue 20). At most
# POOL_SIZE + POOL_OVERFLOW per process: 4 workers stay under PostgreSQL's default 100.
POOL_SIZE = 16
POOL_OVERFLOW = 4
# A PostgreSQL server that takes the connection but never answers (a black-holed host, a full
# backlog) made each request wait asyncpg's default 60 s, holding a pool slot: /healthz and every
# webhook answer 503 after this long instead, and the provider sends again.
CONNECT_TIMEOUT_SECONDS = 5
_VERSION_TABLE = "alembic_version"  # Alembic's default; migrations/env.py keeps it
SQLITE_BUSY_TIMEOUT_MS = 15_000

P = ParamSpec("P")
T = TypeVar("T")


class Database:
    """An async engine with the transaction modes Afterword needs.

    One way to write: every write transaction is a plain (sync) function of a connection,
    ``fn(conn, ...)``, run by ``transact(fn, ...)``; a lone statement (the builders named as
    nouns in each table's module: ``jobs.finished``, ``surveys.closing``, ...) by
    ``run(statement)``. Reads are async, through ``read()``.

    Writers are serialised on SQLite (``BEGIN IMMEDIATE``), so that two answers arriving
    together never both read the same conversation state; PostgreSQL gets the same guarantee
    from row locks taken inside the transaction. On SQLite ``transact`` makes one trip to a
    writer thread with the standard sqlite3 driver, on PostgreSQL it goes through
    ``run_sync`` on asyncpg. aiosqlite hands every cursor, execute, fetch and close to its
    thread separately (about 1.3 ms per statement here, against 0.13 ms in one trip), which
    made those trips most of an answer's cost.
    """

    def __init__(self, url: URL, *, echo: bool = False) -> None:
        self.url = url
        self.shown_url = url.render_as_string(hide_password=True)
        self.dialect = url.get_backend_name()
        # hide_parameters: a database error's message and traceback would otherwise carry the
        # statement's values (survey tokens, phone numbers, comments) into the logs.
        kwargs: dict[str, Any] = {
            "echo": echo,
            "pool_pre_ping": self.dialect == "postgresql",
            "hide_parameters": True,
        }
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}
        else:  # kept open as many as webhooks come at once, so none is opened and closed per request
            kwargs.update(pool_size=POOL_SIZE, max_overflow=POOL_OVERFLOW)
            kwargs["connect_args"] = {"timeout": CONNECT_TIMEOUT_SECONDS}
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        # SQLite takes one writer at a time; queueing this process's writers here is cheaper
        # than letting them poll SQLite's busy handler, which sleeps between tries (the answer
        # benchmark's p99 fell from 1.9 s to milliseconds). Other processes still meet BEGIN IMMEDIATE.
        self._writers = asyncio.Lock()
        self._sync_engine: Engine | None = None
        self._writer_thread: ThreadPoolExecutor | None = None
        if self.dialect == "sqlite":
            _configure_sqlite(self.engine.sync_engine)
            # The same file through the standard driver, for transact(); one thread keeps its connection.
            self._sync_engine = create_engine(url.set(drivername="sqlite+pysqlite"), **kwargs)
            _configure_sqlite(self._sync_engine)

    @classmethod
    async def open(cls, url: URL, *, create: bool = False, migrate_sqlite: bool = True) -> Database:
        """Connect, with the schema at the newest revision; raise a clear error if it is not.

        A SQLite file that is not there is made only with ``create`` (`serve`, `db upgrade`):
        any other command would otherwise make a new, empty database whenever it runs in the
        wrong folder or DATABASE_URL has a typo, and report on it as if nothing were wrong.
        A missing folder is never made (see `require_sqlite_file`). An existing SQLite file
        is brought to the newest schema on the spot (Alembic runs only when it is behind);
        a PostgreSQL database shared by several workers is migrated only on purpose
        (`afterword db upgrade`), so an outdated one is refused.
        """
        # Before the engine connects: connecting is what makes a missing SQLite file.
        require_sqlite_file(url, create=create)
        db = cls(url)
        try:
            if db.is_sqlite and migrate_sqlite:
                # A file not there yet (allowed above) is made and migrated; one at the newest revision only read.
                path = sqlite_path(url)
                if path is None or not path.exists() or await db.revision() != HEAD_REVISION:
                    await db.upgrade()
                    await db.require_schema()
            else:
                await db.require_schema()
        except BaseException:
            await db.dispose()
            raise
        return db

    @property
    def is_sqlite(self) -> bool:
        """Whether this is the embedded SQLite backend (one process only)."""
        return self.dialect == "sqlite"

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that will write, for ``transact`` on PostgreSQL (and on SQLite without its thread)."""
        if not self.is_sqlite:
            async with self._connect() as conn, conn.begin():
                yield conn
            return
        async with self._writers, self._connect() as conn:
            conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
            async with conn.begin():
                yield conn

    async def transact(
        self, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(conn, *args, **kwargs)`` in one write transaction; committed when it returns."""
        if self._sync_engine is None:
            async with self._write() as conn:
                return await conn.run_sync(fn, *args, **kwargs)
        call = functools.partial(self._transact_sqlite, self._sync_engine, fn, *args, **kwargs)
        async with self._writers:
            if self._writer_thread is None:  # made on first use, and again after dispose()
                self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="afterword-sqlite-writer")
            return await asyncio.get_running_loop().run_in_executor(self._writer_thread, call)

    async def run(self, statement: sa.Executable) -> int:
        """One statement in a write transaction of its own; how many rows it changed.

        For the statement builders (``jobs.finished``, ``surveys.closing``, …), so a lone write
        needs no async wrapper beside each of them: the same builder also goes into a larger
        transaction through ``transact()``.
        """
        return await self.transact(_rowcount, statement)

    @staticmethod
    def _transact_sqlite(
        engine: Engine, fn: Callable[Concatenate[Connection, P], T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        try:
            connection = engine.connect()
        except OperationalError as exc:
            raise DatabaseUnavailable(engine.url.render_as_string(), _reason(exc)) from exc
        with connection as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                return fn(conn, *args, **kwargs)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction."""
        async with self._connect() as conn, conn.begin():
            yield conn

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        conn = self.engine.connect()
        try:
            await conn.start()
        except (OSError, OperationalError, DBAPIError) as exc:
            raise DatabaseUnavailable(self.shown_url, _reason(exc)) from exc
        try:
            yield conn
        finally:
            await conn.close()

    async def ping(self) -> None:
        """Raise DatabaseUnavailable unless a trivial query succeeds."""
        async with self.read() as conn:
            await conn.exec_driver_sql("SELECT 1")

    async def revision(self) -> str | None:
        """The schema revision the database is at, None for an empty database."""
        async with self.read() as conn:
            return await conn.run_sync(_current_revision)

    async def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations up to ``revision``; a SQLite file is made, but never its folder."""
        require_sqlite_file(self.url, create=True)
        async with self._connect() as conn:
            await conn.run_sync(_upgrade, revision)
            await conn.commit()

    async def require_schema(self) -> None:
        """Raise SchemaOutdated unless the database is at the newest revision."""
        current, head = await self.revision(), HEAD_REVISION
        if current != head:
            raise SchemaOutdated(self.shown_url, current, head)

    async def dispose(self) -> None:
        """Close every pooled connection, and the SQLite writer thread."""
        await self.engine.dispose()
        if self._sync_engine is not None and self._writer_thread is not None:
            async with self._writers:
                writer, self._writer_thread = self._writer_thread, None
                await asyncio.get_running_loop().run_in_executor(writer, self._sync_engine.dispose)
                writer.shutdown()


def head_revision() -> str:
    """The newest migration shipped with this version, as Alembic finds it in the migration files."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None, "the package ships at least one migration"  # noqa: S101
    return head


def _current_revision(conn: Connection) -> str | None:
    """Alembic's version row, read without importing Alembic (its MigrationContext does the same)."""
    if not conn.dialect.has_table(conn, _VERSION_TABLE):
        return None
    found = list(conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars())
    if len(found) > 1:  # branches, which Afterword never makes: Alembic's own error says so
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(conn).get_current_revision()
    return found[0] if found else None


def _alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    return cfg


def _upgrade(conn: Connection, revision: str) -> None:
    from alembic import command

    cfg = _alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


def sqlite_path(url: URL) -> Path | None:
    """The absolute path of the SQLite file ``url`` names; None for PostgreSQL or an in-memory database.

    Relative to the current folder, as SQLite opens it (SQLite does not expand ``~``).
    """
    name = url.database
    if url.get_backend_name() != "sqlite" or name is None or name in ("", ":memory:"):
        return None
    return Path(os.path.abspath(name))


def require_sqlite_file(url: URL, *, create: bool) -> None:
    """Raise ConfigError naming DATABASE_URL unless the SQLite file is there (or may be made now).

    A missing folder is refused even with ``create``: it is nearly always a typo in
    DATABASE_URL or a volume that is not mounted, and a folder made for it would hold a new,
    empty database that the next container restart throws away.
    """
    path = sqlite_path(url)
    if path is None or path.exists():
        return
    if not path.parent.is_dir():
        raise ConfigError(
            "DATABASE_URL",
            f"no folder {path.parent} for the SQLite file {path.name}; make the folder, or correct DATABASE_URL",
        )
    if not create:
        raise ConfigError(
            "DATABASE_URL",
            f"no SQLite file at {path}; create it with `afterword db upgrade` (or `afterword serve`),"
            " or correct DATABASE_URL",
        )


def describe(url: URL) -> str:
    """Which database ``url`` is, for people: the SQLite file's absolute path, or the URL without its password."""
    if url.get_backend_name() == "sqlite":
        path = sqlite_path(url)
        return f"sqlite {path}" if path is not None else "sqlite in memory"
    return url.render_as_string(hide_password=True)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us emit BEGIN ourselves (pysqlite's implicit BEGIN is always DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        # The page cache stays at SQLite's 2 MiB: each pooled connection keeps its cache filled,
        # so a larger one made the server's memory grow with the database (bench/memory.py).
        # The importer raises it for its own transaction.
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")


def _reason(exc: BaseException) -> str:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return text


def upsert_insert(db: Database | str, table: Any) -> Any:
    """An INSERT for ``table`` in the database's dialect (or the dialect named), so callers can add ON CONFLICT."""
    if (db if isinstance(db, str) else db.dialect) == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert(table)


def _rowcount(conn: Connection, statement: sa.Executable) -> int:
    return int(conn.execute(statement).rowcount)
