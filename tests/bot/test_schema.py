"""The migrations and bot/store/tables.py describe the same schema."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from bot.service import Service
from bot.store.tables import metadata


async def test_migrated_schema_matches_tables(service: Service) -> None:
    """After `db upgrade`, Alembic finds no difference between the database and tables.py."""

    def diff(sync: sa.Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(sync), metadata))

    async with service.db.read() as conn:
        differences = await conn.run_sync(diff)
    assert [] == differences
