"""The channel contract: a channel defined only in this file, registered with one line, runs a whole
survey through the product's own paths (trigger, scheduler, answers, report) with no other file
changed. Its provider is a pigeon loft: sends are kept in a list, replies arrive at its own route.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import httpx
import pytest
import sqlalchemy as sa
from fastapi import APIRouter, Request

from bot.apikeys import create_key
from bot.channels import registry
from bot.channels.base import AddressRefused, Channel, Delivered, Outgoing, Resources
from bot.inbound import Inbound, handle
from bot.scheduler import Scheduler
from bot.service import Service
from bot.settings import Settings
from bot.store.tables import answers, jobs, surveys
from tests.support import Clock, running_app

LOFT = "loft-7"
pigeon_routes = APIRouter()


@pigeon_routes.post("/pigeon/{loft}")
async def arrive(request: Request, loft: str) -> dict[str, Any]:
    """A pigeon back from the customer: its note is an answer, through the one inbound path."""
    service: Service = request.app.state.service
    note = await request.json()
    handled = await handle(
        service.db,
        service.flows,
        Inbound(
            channel="pigeon",
            address=loft,
            received_at=service.clock(),
            text=str(note["text"])[:500],
            provider="pigeon",
            event_id=str(note["ring"]),
        ),
    )
    return {"outcome": handled.outcome, "prompts": [p.text for p in handled.prompts]}


class PigeonChannel(Channel):
    """Carries prompts to a loft; nothing in Afterword knows it but this file and the registry line."""

    name: ClassVar[str] = "pigeon"
    provider: ClassVar[str | None] = "pigeon-post"
    needs: ClassVar[str] = "train some pigeons"
    flown: ClassVar[list[Outgoing]] = []

    @classmethod
    def router(cls) -> APIRouter:
        return pigeon_routes

    @classmethod
    def send_rate(cls, settings: Settings) -> float:
        return 100.0

    @classmethod
    def address(cls, to: str | None, settings: Settings) -> str:
        if to is None or not re.fullmatch(r"loft-\d{1,4}", to):
            raise AddressRefused("a pigeon needs a loft such as loft-7")
        return to

    @classmethod
    def open(cls, service: Service, resources: Resources) -> PigeonChannel:
        return cls()

    async def deliver(self, outgoing: Outgoing) -> Delivered:
        self.flown.append(outgoing)
        return Delivered(f"ring-{len(self.flown)}")


@pytest.fixture
async def loft(
    service: Service, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[httpx.AsyncClient, Service, dict[str, str], Scheduler]]:
    monkeypatch.setitem(registry.CHANNELS, "pigeon", PigeonChannel)  # the one registry line
    monkeypatch.setattr(PigeonChannel, "flown", [])
    async with running_app(service, clock) as (app, client, svc):
        key = await create_key(svc.db, "test", now=clock())
        scheduler = Scheduler(svc, app.state.channels, worker="test")
        yield client, svc, {"Authorization": f"Bearer {key}"}, scheduler


async def test_a_channel_defined_in_a_test_runs_a_whole_survey(
    loft: tuple[httpx.AsyncClient, Service, dict[str, str], Scheduler],
) -> None:
    """Trigger by the API, sent by the scheduler at the channel's pace, answered at its route, reported by channel."""
    client, service, key, scheduler = loft
    body = {"ticket_id": "T-1", "channel": "pigeon", "to": LOFT, "agent": "anna", "language": "en"}
    made = await client.post("/api/surveys", json=body, headers=key)
    assert (201, "pending") == (made.status_code, made.json()["status"])
    assert 1 == await scheduler.run_once()
    [sent] = PigeonChannel.flown
    assert (LOFT, ["intro", "question"], "en") == (
        sent.address,
        [p.kind for p in sent.prompts],
        sent.language,
    )

    replies = []
    for ring, text in enumerate(["2", "1", "2", "Quick and kind"], start=1):
        reply = await client.post(f"/pigeon/{LOFT}", json={"ring": ring, "text": text})
        replies.append(reply.json()["outcome"])
    again = await client.post(f"/pigeon/{LOFT}", json={"ring": 4, "text": "Quick and kind"})
    assert (["answered", "answered", "answered", "completed"], "duplicate") == (
        replies,
        again.json()["outcome"],
    )

    async with service.db.read() as conn:
        survey = (await conn.execute(sa.select(surveys.c.status, surveys.c.channel))).one()
        stored = (await conn.execute(sa.select(sa.func.count()).select_from(answers))).scalar_one()
        job = (await conn.execute(sa.select(jobs.c.result).where(jobs.c.kind == "send"))).scalar_one()
    assert (("completed", "pigeon"), 4, "ring-1") == (tuple(survey), stored, job["provider_id"])

    service.clock.advance(minutes=1)  # type: ignore[attr-defined]  # the report's period ends before now
    report = (await client.get("/api/report", params={"by": "channel"}, headers=key)).json()
    [group] = report["groups"]
    assert ("pigeon", 1) == (group["key"], group["csat"]["n"])


async def test_its_address_rule_and_the_off_message_come_from_the_channel(
    loft: tuple[httpx.AsyncClient, Service, dict[str, str], Scheduler],
) -> None:
    """A bad address is refused with the channel's own words, naming `to`; an unknown channel names the known ones."""
    client, _, key, _ = loft
    bad = await client.post(
        "/api/surveys", json={"ticket_id": "T-2", "channel": "pigeon", "to": "+4915112345678"}, headers=key
    )
    unknown = await client.post("/api/surveys", json={"ticket_id": "T-3", "channel": "owl"}, headers=key)
    assert (422, "to", "a pigeon needs a loft such as loft-7") == (
        bad.status_code,
        bad.json()["error"]["field"],
        bad.json()["error"]["message"],
    )
    assert (422, "channel") == (unknown.status_code, unknown.json()["error"]["field"])
    assert "pigeon" in unknown.json()["error"]["message"]
