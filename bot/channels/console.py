"""The console channel: a survey in the terminal, typed or piped, through the one inbound path."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TextIO

import sqlalchemy as sa

from bot import texts
from bot.channels.base import Channel, Delivered, Outgoing
from bot.errors import InputError
from bot.inbound import Inbound, handle
from bot.lifecycle import SurveyStatus
from bot.service import Service
from bot.store.tables import contacts, surveys
from bot.surveys import NewSurvey, create_survey
from flows import engine
from flows.engine import Prompt


def render(prompt: Prompt, language: str, *, fallback: str = "en") -> str:
    """A prompt as terminal text: the question, then its scale with labels.

    ``fallback`` is the flow's default language, for the skip hint in a language without one.
    """
    lines = [prompt.typed_text]
    if prompt.kind == "question" and prompt.scale is not None:
        points = range(prompt.scale.min, prompt.scale.max + 1)
        if prompt.labels and len(prompt.labels) == len(points):
            lines.extend(f"  {v} = {prompt.labels[v]}" for v in points)
        else:
            ends = " … ".join(
                f"{v}{' = ' + prompt.labels[v] if v in prompt.labels else ''}"
                for v in (prompt.scale.min, prompt.scale.max)
            )
            lines.append(f"  {ends}")
    if prompt.kind == "question" and prompt.optional:
        lines.append(f"  ({texts.text('console.skip', language, fallback=fallback)})")
    return "\n".join(lines)


class ConsoleChannel(Channel):
    """Writes prompts to a text stream."""

    name: ClassVar[str] = "console"

    def __init__(self, out: TextIO, *, fallback: str = "en") -> None:
        self.out = out
        self.fallback = fallback  # the flow's default language, for UI strings (bot.texts)

    async def deliver(self, outgoing: Outgoing) -> Delivered:
        """Print each prompt, separated by blank lines; no provider, so no id."""
        for prompt in outgoing.prompts:
            self.out.write(render(prompt, outgoing.language, fallback=outgoing.fallback) + "\n\n")
        self.out.flush()
        return Delivered()

    async def show(self, address: str, prompts: Sequence[Prompt], language: str) -> None:
        """Print prompts to ``address``'s terminal, UI strings falling back to the flow's default language."""
        await self.deliver(Outgoing(address, tuple(prompts), language, self.fallback))


@dataclass(frozen=True)
class ChatResult:
    """How a console session ended."""

    survey_id: int
    status: str
    resumed: bool


DEFAULT_FLOW = "support-csat"


@dataclass(frozen=True)
class ChatRequest:
    """What `afterword chat` asks for. None means "not given": the open survey decides, or the default."""

    contact: str
    flow_id: str | None = None
    language: str | None = None
    ticket: str | None = None
    agent: str | None = None
    team: str | None = None
    new: bool = False


@dataclass(frozen=True)
class _Open:
    """The contact's open survey, as far as a request can contradict it."""

    survey_id: int
    flow_id: str
    language: str
    ticket: str | None
    agent: str | None
    team: str | None
    prompts: tuple[Prompt, ...]


async def chat(
    service: Service, request: ChatRequest, *, stdin: TextIO, out: TextIO, echo: bool
) -> ChatResult:
    """Run (or resume) the console contact's survey until it ends or input runs out.

    InputError, before anything is stored, for a flow or language that cannot be had, and for
    an open survey that differs from what was asked: resuming it would quietly answer
    another survey than the one asked for.
    """
    if request.flow_id is not None and request.flow_id not in service.flows:
        known = ", ".join(sorted(service.flows))
        raise InputError("--flow", f"unknown flow {request.flow_id!r}; flows: {known}")
    found = None if request.new else await _open_survey(service, request.contact)
    flow = service.flows.get(request.flow_id or (found.flow_id if found else DEFAULT_FLOW))
    if flow is None:
        raise InputError("--flow", f"no flow {DEFAULT_FLOW!r} is loaded; name one with --flow")
    channel = ConsoleChannel(out, fallback=flow.default_language)
    if request.language is not None and (why := flow.missing_language(request.language)):
        raise InputError("--lang", why)
    if found is not None:
        _check_resumable(found, request)
        survey_id, language, prompts = found.survey_id, found.language, found.prompts
        out.write(f"(resuming survey {survey_id})\n\n")
    else:
        new = NewSurvey(
            flow_id=flow.id,
            channel="console",
            address=request.contact,
            ticket=request.ticket,
            agent=request.agent,
            team=request.team,
            language=request.language,
        )
        created = await create_survey(
            service.db, service.flows, new, now=service.clock(), ttl=service.survey_ttl
        )
        if not created.created:  # the ticket was surveyed with this flow before: nothing to ask
            raise InputError(
                "--ticket",
                f"ticket {request.ticket} already has survey {created.survey_id} of flow {flow.id} "
                f"({created.status}); a ticket is surveyed once per flow, so use another --ticket",
            )
        survey_id, language, prompts = created.survey_id, created.language, created.prompts
    await channel.show(request.contact, prompts, language)
    status: str = SurveyStatus.ACTIVE
    while status == SurveyStatus.ACTIVE and prompts:
        line = await asyncio.to_thread(stdin.readline)
        if not line:
            out.write(texts.text("console.paused", language, fallback=flow.default_language) + "\n")
            break
        text = line.rstrip("\r\n")
        if echo:
            out.write(f"> {text}\n\n")
        optional = any(p.kind == "question" and p.optional for p in prompts)
        handled = await handle(
            service.db,
            service.flows,
            Inbound(
                channel="console",
                address=request.contact,
                received_at=service.clock(),
                text=text,
                command="skip" if optional and not text.strip() else None,
            ),
        )
        prompts = handled.prompts
        await channel.show(request.contact, prompts, handled.language or language)
        status = handled.status or "closed"
    return ChatResult(survey_id, await _status(service, survey_id), resumed=found is not None)


def _check_resumable(found: _Open, request: ChatRequest) -> None:
    """InputError naming the first option the open survey does not match."""
    asked = {
        "--flow": (request.flow_id, found.flow_id),
        "--lang": (request.language, found.language),
        "--ticket": (request.ticket, found.ticket),
        "--agent": (request.agent, found.agent),
        "--team": (request.team, found.team),
    }
    for option, (wanted, has) in asked.items():
        if wanted is not None and wanted != has:
            ticket = f"ticket {found.ticket}" if found.ticket else "no ticket"
            raise InputError(
                option,
                f"contact {request.contact} has open survey {found.survey_id} of flow {found.flow_id} "
                f"({ticket}, language {found.language}), not {wanted!r}; finish it "
                f"(`afterword chat --contact {request.contact}`), or use --new to start a new one "
                "(the open one is then closed as incomplete)",
            )


async def _open_survey(service: Service, address: str) -> _Open | None:
    async with service.db.read() as conn:
        row = (
            await conn.execute(
                sa.select(
                    surveys.c.id,
                    surveys.c.flow_id,
                    surveys.c.flow_version,
                    surveys.c.language,
                    surveys.c.state,
                    surveys.c.ticket,
                    surveys.c.agent,
                    surveys.c.team,
                )
                .join(contacts, contacts.c.id == surveys.c.contact_id)
                .where(
                    contacts.c.channel == "console",
                    contacts.c.address == address,
                    surveys.c.status == SurveyStatus.ACTIVE,
                )
                .order_by(surveys.c.id.desc())
                .limit(1)
            )
        ).one_or_none()
        # The survey's own flow version (bot.flow_versions), never the file as it is now.
        flow = await service.book.version_async(conn, row.flow_id, row.flow_version) if row else None
    if row is None or flow is None:
        return None
    state = engine.State.from_json(row.state, flow)
    prompts = engine.resume(flow, state, language=row.language, status=SurveyStatus.ACTIVE)  # active only
    return _Open(row.id, row.flow_id, row.language, row.ticket, row.agent, row.team, prompts)


async def _status(service: Service, survey_id: int) -> str:
    async with service.db.read() as conn:
        status: str = (
            await conn.execute(sa.select(surveys.c.status).where(surveys.c.id == survey_id))
        ).scalar_one()
    return status
