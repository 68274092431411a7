"""Test databases: migrated once per test process into a template, then copied for each test.

Running every Alembic migration in each test's set-up cost 1–2 s a test. Instead each test
process (each pytest-xdist worker) migrates one template per backend once; a test then gets
a copy of it: on SQLite a copy of the file, on PostgreSQL ``CREATE DATABASE … TEMPLATE``
(about 30 ms). Each test still starts from a database nobody else touches, with every
sequence at 1, so one test can never see another's rows or locks.

On PostgreSQL the databases are named after the one in AFTERWORD_TEST_DATABASE_URL, which
is only used to connect for ``CREATE DATABASE``: ``<name>_<worker>`` for a test's migrated database,
``<name>_<worker>_empty`` for an empty one, and ``<name>_<worker>_template``. The user needs the CREATEDB privilege.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.engine import URL, make_url

from bot.store.db import Database

# The process id too: several pytest runs on one machine (an edit loop beside `make test`) must
# not drop each other's databases.
WORKER = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{os.getpid()}"
T = TypeVar("T")


def run_aside(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on its own event loop in another thread, leaving this thread's loop alone.

    Session fixtures are set up while pytest-asyncio may hold a loop for the test; a plain
    asyncio.run() here would replace the thread's current loop under it.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="test-database") as pool:
        return pool.submit(asyncio.run, coro).result()


async def _migrate(url: URL) -> None:
    db = Database(url)
    try:
        await db.upgrade()
    finally:
        await db.dispose()


class SqliteTemplate:
    """A migrated SQLite file, copied for each test that asks for a migrated database."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "template.db"
        run_aside(_migrate(make_url(f"sqlite+aiosqlite:///{self.path}")))
        # Closing the last connection checkpoints the WAL into the file and removes it, so the
        # file alone is the whole database; a leftover WAL would mean a copy misses pages.
        assert not self.path.with_name("template.db-wal").exists(), "the template's WAL was not checkpointed"

    def migrated(self, folder: Path) -> str:
        """The URL of a fresh copy of the template in ``folder``."""
        target = folder / "afterword.db"
        shutil.copyfile(self.path, target)
        return f"sqlite+aiosqlite:///{target}"

    @staticmethod
    def empty(folder: Path) -> str:
        """The URL of a SQLite file that does not exist yet."""
        return f"sqlite+aiosqlite:///{folder / 'afterword.db'}"


class PostgresTemplate:
    """A migrated PostgreSQL database used as the template of each test's database."""

    def __init__(self, url: str) -> None:
        self.base = make_url(url)
        name = self.base.database
        assert name, f"AFTERWORD_TEST_DATABASE_URL names no database: {url}"
        self.template = f"{name}_{WORKER}_template"
        self.name = f"{name}_{WORKER}"
        self.empty_name = f"{name}_{WORKER}_empty"
        run_aside(self._create_template())

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on the same server."""
        return self.base.set(database=database).render_as_string(hide_password=False)

    async def migrated(self) -> str:
        """The URL of a new database copied from the template (any previous one is dropped)."""
        await self._recreate(self.name, template=self.template)
        return self.url(self.name)

    async def empty(self) -> str:
        """The URL of a new database without any table."""
        await self._recreate(self.empty_name, template="template0")
        return self.url(self.empty_name)

    def drop_all(self) -> None:
        """Drop this process's databases, at the end of the run."""

        async def drop() -> None:
            conn = await self._connect()
            try:
                for name in (self.name, self.empty_name, self.template):
                    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        run_aside(drop())

    async def _connect(self) -> asyncpg.Connection:
        dsn = self.base.set(drivername="postgresql").render_as_string(hide_password=False)
        return await asyncpg.connect(dsn)

    async def _create_template(self) -> None:
        conn = await self._connect()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.template}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{self.template}"')
        finally:
            await conn.close()
        await _migrate(make_url(self.url(self.template)))

    async def _recreate(self, name: str, template: str) -> None:
        conn = await self._connect()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            # The template's last connection may still be closing on the server side; CREATE
            # DATABASE refuses a template in use, so wait for that, not for a fixed time.
            deadline = time.monotonic() + 30
            while True:
                try:
                    await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                    return
                except asyncpg.ObjectInUseError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        finally:
            await conn.close()
