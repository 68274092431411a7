"""The running service's parts, opened once and shared by the CLI, the web app and the channels."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.errors import ConfigError
from bot.flow_versions import FlowBook, as_book, record_flows
from bot.settings import Settings
from bot.store.db import Database
from flows.loader import load_flows
from flows.schema import Flow


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


@dataclass
class Service:
    """Settings, database and flows, plus the clock every timestamp comes from.

    ``flows`` holds the loaded flows by id (new surveys use them) and every recorded version
    (an open survey is served by its own, ``flow_for``); a plain dict given is wrapped.
    """

    settings: Settings
    db: Database
    flows: Mapping[str, Flow]
    clock: Callable[[], datetime] = field(default=utc_now)

    def __post_init__(self) -> None:
        self.flows = as_book(self.flows)

    @property
    def book(self) -> FlowBook:
        """``flows`` as the FlowBook it is."""
        return as_book(self.flows)

    def flow_for(self, flow_id: str, version: int) -> Flow | None:
        """The flow a survey started on, if this process has it in memory (see FlowBook.version)."""
        return self.book.cached(flow_id, version)

    async def record_flows(self) -> list[str]:
        """Record the loaded flows' definitions (as ``open`` does); the warnings for changed files."""
        return await record_flows(self.db, self.book, self.clock())

    @property
    def survey_ttl(self) -> timedelta:
        """How long a survey stays open after it is sent."""
        return timedelta(hours=self.settings.survey_ttl_hours)

    @classmethod
    async def open(cls, settings: Settings, *, create: bool = False, migrate_sqlite: bool = True) -> Service:
        """Load the flows and connect; raise a clear error on a bad database or flow.

        A missing SQLite file is made only with ``create`` (`afterword serve`); an existing
        one is brought to the newest schema on the spot. A PostgreSQL database shared by
        several workers is migrated only on purpose (`afterword db upgrade`), so an outdated
        one is refused. See `Database.open`.

        Each loaded flow's definition is recorded (bot.flow_versions); a file changed without
        its ``version`` being raised is logged as a warning, and its recorded definition kept.
        """
        flows = load_flows(settings.flows_dir)
        if settings.default_flow not in flows:  # else every hook and trigger without a flow fails
            known = ", ".join(sorted(flows))
            raise ConfigError("DEFAULT_FLOW", f"no flow {settings.default_flow!r} is loaded; flows: {known}")
        db = await Database.open(settings.database, create=create, migrate_sqlite=migrate_sqlite)
        service = cls(settings=settings, db=db, flows=FlowBook(flows))
        try:
            await service.record_flows()
        except BaseException:
            await db.dispose()
            raise
        return service

    async def close(self) -> None:
        """Release the database connections."""
        await self.db.dispose()
