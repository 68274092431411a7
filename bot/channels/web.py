"""The web channel: a survey at `/s/<token>`, one question per page, no JavaScript.

Each scale point is its own submit button, so one tap answers. Answers go through the one
inbound path like every channel's; the page then redirects to itself (post/redirect/get),
so a reload never answers twice, and a press for a question already answered stores nothing.
A token of another shape than ours is a 404 before the database is asked.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import sqlalchemy as sa
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from bot.channels.base import Channel, Delivered, Outgoing, Resources
from bot.errors import clean_text
from bot.inbound import TOKEN, Inbound, handle
from bot.lifecycle import SurveyStatus, has_expired, is_open
from bot.service import Service
from bot.store.tables import surveys
from bot.surveys import current, unservable
from bot.texts import default_language, text
from bot.web.pages import page
from flows.engine import Prompt
from flows.schema import Flow


class WebChannel(Channel):
    """Nothing to deliver: the customer opens the link; the page renders the prompts."""

    name: ClassVar[str] = "web"

    @classmethod
    def router(cls) -> APIRouter:
        return router

    @classmethod
    def open(cls, service: Service, resources: Resources) -> WebChannel:
        return cls()

    async def deliver(self, outgoing: Outgoing) -> Delivered:
        """Web surveys are answered at their link; there is nobody to send to."""
        return Delivered()


# The page's own strings (bot.texts, web.*), given to survey.html as ``ui``.
_PAGE = ("title", "progress", "send", "skip")


def _ui(language: str, fallback: str) -> dict[str, str]:
    """The survey page's strings in ``language``, else ``fallback`` (the flow's default language)."""
    return {name: text(f"web.{name}", language, fallback=fallback) for name in _PAGE}


def _closed(service: Service, row: Any, flow: Flow | None) -> str:
    """ "Already closed", in the survey's language, else its flow's default language."""
    known = flow or service.flows.get(row.flow_id)
    fallback = known.default_language if known is not None else default_language(service)
    return text("web.closed", row.language, fallback=fallback)


def _not_found(request: Request) -> HTMLResponse:
    # The same page for every unknown token: it tells nothing about which surveys exist.
    missing = text("web.missing", "en", fallback="en")
    return page(request, "message.html", {"lang": "en", "title": "404", "message": missing}, 404)


async def _survey(service: Service, token: str) -> Any:
    async with service.db.read() as conn:
        return (
            await conn.execute(
                sa.select(
                    surveys.c.id,
                    surveys.c.flow_id,
                    surveys.c.flow_version,
                    surveys.c.status,
                    surveys.c.expires_at,
                    surveys.c.language,
                    surveys.c.state,
                ).where(surveys.c.token == token, surveys.c.channel == "web")
            )
        ).one_or_none()


async def _flow(service: Service, row: Any) -> Flow | None:
    """The survey's own flow version (bot.flow_versions), never the file as it is now."""
    flow = service.flow_for(row.flow_id, row.flow_version)
    if flow is not None:
        return flow
    async with service.db.read() as conn:
        return await service.book.version_async(conn, row.flow_id, row.flow_version)


def _render(
    request: Request, token: str, flow: Flow, language: str, prompts: tuple[Prompt, ...]
) -> HTMLResponse:
    ui = _ui(language, flow.default_language)
    question = prompts[-1] if prompts and prompts[-1].kind == "question" else None
    before = [p.text for p in prompts if p is not question]
    context: dict[str, Any] = {
        "lang": language,
        "title": ui["title"],
        "ui": ui,
        "token": token,
        "before": before,
    }
    if question is not None:
        ids: list[str | None] = [q.id for q in flow.questions]
        context["question"] = question
        context["progress"] = ui["progress"].format(n=ids.index(question.question_id) + 1, total=len(ids))
        if question.scale is not None:
            values = range(question.scale.min, question.scale.max + 1)
            context["points"] = [(v, question.labels.get(v) if len(values) <= 7 else None) for v in values]
            if len(values) > 7:  # on 0-10 only the ends have labels, shown under the row
                context["ends"] = [
                    question.labels.get(question.scale.min, ""),
                    question.labels.get(question.scale.max, ""),
                ]
    return page(request, "survey.html", context)


router = APIRouter(include_in_schema=False)


@router.get("/s/{token}", response_class=HTMLResponse)
async def show(request: Request, token: str) -> HTMLResponse:
    """The survey's current question, or how it ended."""
    service: Service = request.app.state.service
    if not TOKEN.fullmatch(token):
        return _not_found(request)
    row = await _survey(service, token)
    if row is None:
        return _not_found(request)
    flow = await _flow(service, row)
    if flow is None:  # its version cannot be served: closed, never shown another version
        await service.db.run(unservable(row.id, row.flow_id, row.flow_version))
        message = _closed(service, row, None)
        return page(request, "message.html", {"lang": row.language, "title": message, "message": message})
    texts = flow.texts[row.language]
    now = service.clock()
    if has_expired(row.status, row.expires_at, now):
        return page(
            request, "message.html", {"lang": row.language, "title": texts.expired, "message": texts.expired}
        )
    ended = {SurveyStatus.COMPLETED: texts.thanks, SurveyStatus.STOPPED: texts.stopped}
    if not is_open(row.status, row.expires_at, now):
        message = ended[row.status] if row.status in ended else _closed(service, row, flow)
        return page(request, "message.html", {"lang": row.language, "title": message, "message": message})
    shown = await current(service.db, service.flows, row.id)
    if shown is None or not shown.prompts:
        return _not_found(request)
    return _render(request, token, flow, shown.language, shown.prompts)


@router.post("/s/{token}", response_model=None)
async def answer(
    request: Request,
    token: str,
    question: Annotated[str, Form()] = "",
    choice: Annotated[int | None, Form()] = None,
    text: Annotated[str | None, Form()] = None,
    action: Annotated[str | None, Form()] = None,
) -> Response:
    """One answer: a tapped point, a comment, or skip; then back to the page."""
    service: Service = request.app.state.service
    if not TOKEN.fullmatch(token):
        return _not_found(request)
    row = await _survey(service, token)
    if row is None:
        return _not_found(request)
    # A NUL or another control character is dropped, not refused: the rest of the comment is kept.
    text = clean_text(text) if text is not None else None
    handled = await handle(
        service.db,
        service.flows,
        Inbound(
            channel="web",
            address="",
            received_at=service.clock(),
            choice=choice,
            text=text,
            # An empty comment box is a skip: the customer had nothing to add.
            command="skip" if action == "skip" or (text is not None and not text.strip()) else None,
            question_id=question or None,
            survey_token=token,
        ),
    )
    if handled.outcome == "reprompted":  # show the reprompt at once; a redirect would lose it
        flow = await _flow(service, row)
        if flow is None:
            return RedirectResponse(f"/s/{token}", status_code=303)
        return _render(request, token, flow, handled.language or row.language, handled.prompts)
    return RedirectResponse(f"/s/{token}", status_code=303)
