"""Versioned flows: every flow definition served is kept, and a survey is answered with its own.

A survey is bound to the flow version it started with (``surveys.flow_id``,
``surveys.flow_version``). The service records each loaded flow's definition in the table
``flow_versions`` (migration 0010), so a survey started on version 1 is still asked and
interpreted with version 1 after the file moved to version 2. A file changed without its
``version`` being raised is reported at start, and the recorded definition stays in force
for that version: no survey is ever answered against a definition it was not started with.

``FlowBook`` is the flows of a running service: a mapping of the loaded (current) flows by
id, for new surveys, and ``version()`` for an existing survey's own, cached in memory.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from bot.store.db import Database, upsert_insert
from bot.store.tables import flow_versions
from flows.schema import Flow, problems

log = logging.getLogger(__name__)

# The status of a survey whose flow version can no longer be served (no stored definition,
# or one that no longer parses): closed, never answered against another version.
UNAVAILABLE = "unavailable"


def no_definition(flow_id: str, version: int) -> str:
    """Why a survey of this flow version is closed as UNAVAILABLE (its closed_reason, the logs)."""
    return f"flow {flow_id} version {version} has no valid stored definition"


_BY_KEY = sa.select(flow_versions.c.definition).where(
    flow_versions.c.flow_id == sa.bindparam("flow_id"), flow_versions.c.version == sa.bindparam("version")
)


def definition(flow: Flow) -> dict[str, Any]:
    """The flow as JSON-ready data, from which ``rebuild`` makes the same flow again."""
    return flow.model_dump(mode="json", by_alias=True, exclude_defaults=False)


def digest(data: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a definition's canonical JSON: equal exactly when the definitions are."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def rebuild(data: Mapping[str, Any]) -> Flow | None:
    """The flow a stored definition describes, or None when it no longer validates."""
    try:
        flow = Flow.model_validate(dict(data))
    except (ValidationError, TypeError, ValueError):
        return None
    return None if problems(flow) else flow


def changed_parts(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The top-level fields two definitions differ in (questions, texts, …), sorted."""
    return sorted(key for key in set(old) | set(new) if old.get(key) != new.get(key))


def drift_message(flow: Flow, parts: list[str], where: str) -> str:
    """The warning for a flow whose definition changed while its version stayed the same."""
    return (
        f"flow {flow.id} changed ({', '.join(parts)}) but its version is still {flow.version}: "
        f"{where}; raise `version` to {flow.version + 1} in the flow file to put the change in force"
    )


class FlowBook(Mapping[str, Flow]):
    """The loaded flows by id (for new surveys) and every recorded version (for open ones).

    As a mapping it holds the current flows: ``book["nps"]``, ``"nps" in book``. A survey
    already started is served by ``version(conn, flow_id, version)``: the loaded flow when
    it is that version, else the recorded definition, read once and kept in memory.
    """

    def __init__(self, flows: Mapping[str, Flow]) -> None:
        self._current: dict[str, Flow] = dict(flows)
        # (flow_id, version) -> the flow, or None when it cannot be served.
        self._versions: dict[tuple[str, int], Flow | None] = {(f.id, f.version): f for f in flows.values()}

    def __getitem__(self, flow_id: str) -> Flow:
        return self._current[flow_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current)

    def __len__(self) -> int:
        return len(self._current)

    def cached(self, flow_id: str, version: int) -> Flow | None:
        """The flow of this version if this process knows it already (no database)."""
        return self._versions.get((flow_id, version))

    def version(self, conn: Connection, flow_id: str, version: int) -> Flow | None:
        """The flow ``flow_id`` at ``version``, or None when no valid definition of it is stored."""
        key = (flow_id, version)
        if key not in self._versions:
            stored = conn.execute(_BY_KEY, {"flow_id": flow_id, "version": version}).scalar_one_or_none()
            flow = rebuild(stored) if stored is not None else None
            if flow is None or (flow.id, flow.version) != key:
                flow = None
                log.warning("%s", no_definition(flow_id, version))
            self._versions[key] = flow
        return self._versions[key]

    async def version_async(self, conn: AsyncConnection, flow_id: str, version: int) -> Flow | None:
        """``version()`` on an async connection (the database is asked only on a miss)."""
        key = (flow_id, version)
        if key in self._versions:
            return self._versions[key]
        return await conn.run_sync(self.version, flow_id, version)

    def record(self, conn: Connection, now: datetime, dialect: str) -> list[str]:
        """Store each loaded flow's definition when its (id, version) is new; the drift warnings.

        A version recorded before with another definition keeps the recorded one, for open
        surveys and new ones alike, and a warning says the file changed without its version.
        """
        warnings: list[str] = []
        for flow_id, flow in list(self._current.items()):
            data = definition(flow)
            conn.execute(
                upsert_insert(dialect, flow_versions)
                .values(
                    flow_id=flow.id,
                    version=flow.version,
                    definition=data,
                    digest=digest(data),
                    first_seen_at=now,
                )
                .on_conflict_do_nothing()
            )
            row = conn.execute(
                sa.select(flow_versions.c.definition, flow_versions.c.digest).where(
                    flow_versions.c.flow_id == flow.id, flow_versions.c.version == flow.version
                )
            ).one()
            if row.digest == digest(data):
                continue
            recorded = rebuild(row.definition)
            if recorded is None:  # unreadable: the file is all there is for new surveys
                where = "the recorded definition no longer validates; new surveys use the file"
                self._versions[(flow.id, flow.version)] = None
            else:
                where = "open and new surveys keep the recorded definition of that version"
                self._current[flow_id] = recorded
                self._versions[(flow.id, flow.version)] = recorded
            warnings.append(drift_message(flow, changed_parts(row.definition, data), where))
        return warnings


def as_book(flows: Mapping[str, Flow]) -> FlowBook:
    """``flows`` as a FlowBook: itself if it is one, else one over these flows only."""
    return flows if isinstance(flows, FlowBook) else FlowBook(flows)


async def record_flows(db: Database, book: FlowBook, now: datetime) -> list[str]:
    """Record the book's loaded flows in the database; log and return the drift warnings."""
    warnings = await db.transact(book.record, now, db.dialect)
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


async def recorded_drift(db: Database, flows: Mapping[str, Flow]) -> list[str]:
    """For `flows check`: each flow whose (id, version) is recorded with another definition."""
    found: list[str] = []
    async with db.read() as conn:
        for flow in flows.values():
            stored = (
                await conn.execute(_BY_KEY, {"flow_id": flow.id, "version": flow.version})
            ).scalar_one_or_none()
            data = definition(flow)
            if stored is not None and digest(stored) != digest(data):
                where = "surveys keep the recorded definition of that version"
                found.append(drift_message(flow, changed_parts(stored, data), where))
    return found
