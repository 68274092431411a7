"""The console channel: a survey in the terminal, typed or piped, through the one inbound path."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, TextIO

import sqlalchemy as sa

from bot.channels.base import Channel
from bot.inbound import Inbound, handle
from bot.service import Service
from bot.surveys import NewSurvey, create_survey
from bot.tables import contacts, surveys
from flows import engine
from flows.engine import Prompt

_SKIP_HINT = {"de": "optional – Enter zum Überspringen", "en": "optional – press Enter to skip"}
_PAUSED = {
    "de": "Umfrage pausiert. `afterword chat` setzt sie fort.",
    "en": "Survey paused. Run `afterword chat` again to continue.",
}


def render(prompt: Prompt, language: str) -> str:
    """A prompt as terminal text: the question, then its scale with labels."""
    lines = [prompt.text]
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
        lines.append(f"  ({_SKIP_HINT.get(language, _SKIP_HINT['en'])})")
    return "\n".join(lines)


class ConsoleChannel(Channel):
    """Writes prompts to a text stream."""

    name: ClassVar[str] = "console"

    def __init__(self, out: TextIO) -> None:
        self.out = out

    async def deliver(
        self, address: str, prompts: Sequence[Prompt], language: str, *, survey_id: int | None = None
    ) -> None:
        """Print each prompt, separated by blank lines."""
        for prompt in prompts:
            self.out.write(render(prompt, language) + "\n\n")
        self.out.flush()


@dataclass(frozen=True)
class ChatResult:
    """How a console session ended."""

    survey_id: int
    status: str
    resumed: bool


async def chat(
    service: Service, request: NewSurvey, *, stdin: TextIO, out: TextIO, echo: bool, new: bool = False
) -> ChatResult:
    """Run (or resume) the console contact's survey until it ends or input runs out."""
    channel = ConsoleChannel(out)
    assert request.address is not None  # noqa: S101 - the CLI always names the console contact
    found = None if new else await _open_survey(service, request.address)
    if found is not None:
        survey_id, language, prompts = found
        out.write(f"(resuming survey {survey_id})\n\n")
    else:
        created = await create_survey(
            service.db, service.flows, request, now=service.clock(), ttl=service.survey_ttl
        )
        survey_id, language, prompts = created.survey_id, created.language, created.prompts
    await channel.deliver(request.address, prompts, language)
    status = "active"
    while status == "active" and prompts:
        line = await asyncio.to_thread(stdin.readline)
        if not line:
            out.write(_PAUSED.get(language, _PAUSED["en"]) + "\n")
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
                address=request.address,
                received_at=service.clock(),
                text=text,
                command="skip" if optional and not text.strip() else None,
            ),
        )
        prompts = handled.prompts
        await channel.deliver(request.address, prompts, handled.language or language)
        status = handled.status or "closed"
    return ChatResult(survey_id, await _status(service, survey_id), resumed=found is not None)


async def _open_survey(service: Service, address: str) -> tuple[int, str, tuple[Prompt, ...]] | None:
    async with service.db.read() as conn:
        row = (
            await conn.execute(
                sa.select(surveys.c.id, surveys.c.flow_id, surveys.c.state)
                .join(contacts, contacts.c.id == surveys.c.contact_id)
                .where(
                    contacts.c.channel == "console",
                    contacts.c.address == address,
                    surveys.c.status == "active",
                )
                .order_by(surveys.c.id.desc())
                .limit(1)
            )
        ).one_or_none()
    if row is None or row.flow_id not in service.flows:
        return None
    state = engine.State.from_json(row.state)
    return row.id, state.language, engine.resume(service.flows[row.flow_id], state)


async def _status(service: Service, survey_id: int) -> str:
    async with service.db.read() as conn:
        status: str = (
            await conn.execute(sa.select(surveys.c.status).where(surveys.c.id == survey_id))
        ).scalar_one()
    return status
