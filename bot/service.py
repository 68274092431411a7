"""The running service's parts, opened once and shared by the CLI, the web app and the channels."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bot.db import Database
from bot.errors import ConfigError
from bot.settings import Settings
from flows.loader import load_flows
from flows.schema import Flow


def utc_now() -> datetime:
    """The current time, timezone-aware in UTC."""
    return datetime.now(UTC)


@dataclass
class Service:
    """Settings, database and flows, plus the clock every timestamp comes from."""

    settings: Settings
    db: Database
    flows: dict[str, Flow]
    clock: Callable[[], datetime] = field(default=utc_now)

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
        """
        flows = load_flows(settings.flows_dir)
        if settings.default_flow not in flows:  # else every hook and trigger without a flow fails
            known = ", ".join(sorted(flows))
            raise ConfigError("DEFAULT_FLOW", f"no flow {settings.default_flow!r} is loaded; flows: {known}")
        db = await Database.open(settings.database, create=create, migrate_sqlite=migrate_sqlite)
        return cls(settings=settings, db=db, flows=flows)

    async def close(self) -> None:
        """Release the database connections."""
        await self.db.dispose()
