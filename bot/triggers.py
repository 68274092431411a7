"""Triggering a survey: the API, the CLI and the helpdesk webhooks all come through here.

A request is checked whole before anything is stored (which field, what is allowed), then
becomes a survey: pending with a send job for channels that deliver (SMS, WhatsApp, voice,
Telegram by chat id), or open at once with a link (web, Telegram without a chat id).
A contact with MAX_OPEN_SURVEYS_PER_ADDRESS open surveys is refused another (`OpenSurveysFull`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from bot.channels import registry
from bot.channels.base import AddressRefused
from bot.errors import ContactOptedOut, TriggerError
from bot.service import Service
from bot.store.tables import surveys
from bot.surveys import NewSurvey, create_survey

_DELAY = re.compile(r"^(\d{1,5})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
MAX_DELAY = timedelta(days=30)


class SurveyRequest(BaseModel):
    """What `POST /api/surveys` takes: a ticket, a channel and who to ask."""

    model_config = ConfigDict(extra="forbid")

    ticket_id: str = Field(min_length=1, max_length=128, examples=["T-1042"])
    channel: str = Field(
        max_length=32,
        description="a registered channel: sms, whatsapp, voice, telegram, web",
        examples=["sms"],
    )
    to: str | None = Field(
        default=None,
        max_length=64,
        description="E.164 phone for sms, whatsapp and voice; a Telegram chat id; none for web",
    )
    agent: str | None = Field(default=None, max_length=128)
    team: str | None = Field(default=None, max_length=128)
    language: str | None = Field(default=None, examples=["de"])
    flow: str | None = Field(default=None, examples=["support-csat"])
    delay: str | None = Field(
        default=None, description="wait before sending: 90s, 15m, 1h, 2d", examples=["1h"]
    )
    send_at: AwareDatetime | None = None
    metadata: dict[str, Any] | None = Field(
        default=None,
        description="any JSON object; stored with the survey, returned by GET and in the dashboard's CSV export",
        examples=[{"order": "A-77", "priority": "high"}],
    )


@dataclass(frozen=True)
class Triggered:
    """The survey a trigger made or found again; ``link`` for link channels."""

    survey_id: int | None
    status: str
    created: bool
    ticket_id: str
    channel: str
    flow: str
    language: str | None
    send_at: datetime | None
    link: str | None
    metadata: dict[str, Any] | None = None  # as stored: the request's, or the found survey's own


def survey_links(base_url: str, telegram_username: str | None) -> Callable[[str, str], str | None]:
    """``link_for(channel, token)``: a Telegram deep link, else the web survey under ``base_url``."""

    def link_for(channel: str, token: str) -> str | None:
        if channel == "telegram":
            return f"https://t.me/{telegram_username}?start={token}" if telegram_username else None
        return f"{base_url.rstrip('/')}/s/{token}"

    return link_for


def parse_delay(raw: str) -> timedelta:
    """'90s', '15m', '1h', '2d' as a timedelta; TriggerError naming ``delay`` otherwise."""
    found = _DELAY.match(raw.strip())
    if not found:
        raise TriggerError("delay", f"{raw!r} is not a delay such as 90s, 15m, 1h or 2d")
    delay = timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})
    if delay > MAX_DELAY:
        raise TriggerError("delay", f"{raw!r} is longer than {MAX_DELAY.days} days")
    return delay


async def trigger(
    service: Service,
    request: SurveyRequest,
    *,
    channels: Mapping[str, object],
    link_for: Callable[[str, str], str | None],
) -> Triggered:
    """Create (or find again) the survey ``request`` asks for; TriggerError names a bad field.

    ``channels`` are the ones this process can send through; ``link_for(channel, token)``
    gives a survey's link for link channels.
    """
    now = service.clock()
    flow_id = request.flow or service.settings.default_flow
    flow = service.flows.get(flow_id)
    if flow is None:
        raise TriggerError("flow", f"unknown flow {flow_id!r}; flows: {', '.join(sorted(service.flows))}")
    if request.language is not None and (why := flow.missing_language(request.language)):
        raise TriggerError("language", why)
    address = _address(service, request, channels)
    refused = registry.kind(request.channel).refuses_language(request.language or flow.default_language)
    if refused is not None:
        raise TriggerError("language", refused)
    send_at = _send_at(request, now)
    delivers = address is not None  # a link survey has nobody to send to: it is open at once
    if not delivers:
        for field, given in (("delay", request.delay), ("send_at", request.send_at)):
            if given is not None:
                raise TriggerError(
                    field,
                    f"a {request.channel} link is open at once and nothing is sent later: leave out {field}",
                )
    new = NewSurvey(
        flow.id,
        request.channel,
        address,
        ticket=request.ticket_id,
        agent=request.agent,
        team=request.team,
        language=request.language,
        meta=request.metadata,
    )
    try:
        created = await create_survey(
            service.db,
            service.flows,
            new,
            now=now,
            ttl=service.survey_ttl,
            send_at=send_at if delivers else None,
            max_open=service.settings.max_open_surveys_per_address,
        )
    except ContactOptedOut:
        return Triggered(
            None, "skipped", False, request.ticket_id, request.channel, flow.id, request.language, None, None
        )
    link = None if delivers else link_for(request.channel, created.token)
    if created.created:
        metadata = dict(request.metadata) if request.metadata else None  # {} is stored as null
    else:  # found again by ticket: its metadata is the first request's
        metadata = await _stored_metadata(service, created.survey_id)
    return Triggered(
        created.survey_id,
        created.status,
        created.created,
        request.ticket_id,
        request.channel,
        flow.id,
        created.language,
        send_at if delivers and created.created else None,
        link,
        metadata,
    )


async def _stored_metadata(service: Service, survey_id: int) -> dict[str, Any] | None:
    async with service.db.read() as conn:
        meta = (await conn.execute(sa.select(surveys.c.meta).where(surveys.c.id == survey_id))).scalar_one()
    return dict(meta) if meta else None


def _address(service: Service, request: SurveyRequest, channels: Mapping[str, object]) -> str | None:
    """The recipient's address as stored, as the channel reads ``to`` (`Channel.address`):
    E.164 for phone channels, a chat id for Telegram, None for a link."""
    try:
        kind = registry.kind(request.channel)
    except registry.UnknownChannel as exc:
        raise TriggerError("channel", str(exc)) from exc
    if request.channel not in channels and (request.to is not None or kind.provider is not None):
        if not kind.configured(service.settings):
            raise TriggerError("channel", f"{request.channel} is off: {kind.needs}")
        raise TriggerError("channel", f"{request.channel} cannot send from this process")
    try:
        return kind.address(request.to, service.settings)
    except AddressRefused as exc:
        raise TriggerError("to", str(exc)) from exc


def _send_at(request: SurveyRequest, now: datetime) -> datetime:
    if request.delay is not None and request.send_at is not None:
        raise TriggerError("delay", "give delay or send_at, not both")
    if request.delay is not None:
        return now + parse_delay(request.delay)
    if request.send_at is not None:
        return max(request.send_at, now)
    return now
