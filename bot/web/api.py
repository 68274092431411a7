"""The JSON API (`/api/…`, with API keys) and the helpdesk webhooks (`/hooks/…`, with a shared secret).

Errors answer ``{"error": {"field": …, "message": …}}``: 401 for a missing, wrong or
revoked key, 422 for a request that cannot become a survey, naming the field (for a
helpdesk payload, the JSON path), 409 when the recipient has MAX_OPEN_SURVEYS_PER_ADDRESS open.
The key or secret is checked before the body is read: a request without one never has its
body parsed, and learns nothing about what a valid body would be.
"""

from __future__ import annotations

import hmac
import json
import math
from collections.abc import Callable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from bot import jobs
from bot.apikeys import check_key
from bot.errors import OpenSurveysFull, ReportError, TriggerError, unfit_text
from bot.inbound import MAX_ID
from bot.lifecycle import JobKind, JobStatus
from bot.reports import build_report, report_query
from bot.service import Service
from bot.store.tables import answers, surveys
from bot.triggers import SurveyRequest, Triggered, survey_links, trigger
from bot.web.hooks import HookError, HookTicket, from_freshdesk, from_generic, from_zendesk, parse_mapping
from bot.web.resources import Survey, SurveyCreated
from scoring.report import Report

# Where each helpdesk puts the customer's phone, to name it when it is missing.
_PHONE_PATHS = {
    "zendesk": "ticket.requester.phone",
    "freshdesk": "freshdesk_webhook.ticket_contact_mobile",
}
# The text fields of a trigger; metadata is checked value by value, to this depth.
_TEXT_FIELDS = ("ticket_id", "to", "agent", "team", "language", "flow", "delay")
_METADATA_DEPTH = 32


def error(status: int, field: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The API's error shape."""
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status, headers=headers)


class Refused(HTTPException):
    """An HTTP error in the API's shape, raised from a dependency."""

    def __init__(self, status: int, field: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status, {"field": field, "message": message}, headers)


async def api_key(request: Request) -> str:
    """The name of the API key in ``Authorization: Bearer …``; 401 without an active one."""
    service: Service = request.app.state.service
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    name = (
        await check_key(service.db, key.strip(), now=service.clock()) if scheme.lower() == "bearer" else None
    )
    if name is None:
        raise Refused(
            401,
            "Authorization",
            "send Authorization: Bearer <api key>; create one with `afterword apikey create NAME`",
            {"WWW-Authenticate": "Bearer"},
        )
    return name


async def hook_secret(request: Request) -> None:
    """Helpdesk webhooks carry HOOKS_SECRET as a bearer token or in X-Afterword-Secret."""
    secret = request.app.state.service.settings.hooks_secret
    if secret is None:
        raise Refused(404, "HOOKS_SECRET", "helpdesk webhooks are off: set HOOKS_SECRET")
    scheme, _, bearer = request.headers.get("Authorization", "").partition(" ")
    given = request.headers.get("X-Afterword-Secret") or (
        bearer.strip() if scheme.lower() == "bearer" else ""
    )
    if not hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
        raise Refused(401, "Authorization", "send HOOKS_SECRET as Authorization: Bearer <secret>")


def _link_maker(request: Request) -> Callable[[str, str], str | None]:
    settings = request.app.state.service.settings
    telegram = request.app.state.telegram
    username = telegram.application.bot.username if telegram is not None else None
    return survey_links(settings.public_base_url or str(request.base_url), username)


def _body(made: Triggered) -> dict[str, Any]:
    return {
        "id": made.survey_id,
        "status": made.status,
        "ticket_id": made.ticket_id,
        "channel": made.channel,
        "flow": made.flow,
        "language": made.language,
        "send_at": made.send_at.isoformat() if made.send_at else None,
        "link": made.link,
        "created": made.created,
        "metadata": made.metadata,
    }


def _shown(key: object) -> str:
    """A key of the body as a field name that is safe to send back (escaped, at most 64 characters)."""
    text = str(key)[:64]
    return text if unfit_text(text) is None else ascii(text)[1:-1]


async def _survey_request(request: Request) -> SurveyRequest | JSONResponse:
    """The body as a SurveyRequest, read only now that the key was checked; else the 422 to answer."""
    try:
        data = json.loads(await request.body())
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or nested past the parser's reach
        return error(422, "body", f"the body must be a JSON object: {exc}"[:300])
    try:
        return SurveyRequest.model_validate(data)
    except ValidationError as exc:
        problems = [
            {"field": ".".join(_shown(p) for p in e["loc"]) or "body", "message": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        return JSONResponse({"error": problems[0], "errors": problems}, status_code=422)


def _unfit(body: SurveyRequest) -> tuple[str, str] | None:
    """The first field of ``body`` that no column can hold (or no JSON response can show), and why."""
    for field in _TEXT_FIELDS:
        value = getattr(body, field)
        if isinstance(value, str) and (problem := unfit_text(value)) is not None:
            return field, problem
    return _unfit_json(body.metadata, "metadata", 1) if body.metadata is not None else None


def _unfit_json(value: Any, path: str, depth: int) -> tuple[str, str] | None:
    if depth > _METADATA_DEPTH:
        return path, f"nested deeper than {_METADATA_DEPTH} levels"
    if isinstance(value, str):
        problem = unfit_text(value)
        return (path, problem) if problem is not None else None
    if isinstance(value, float) and not math.isfinite(value):
        return path, "not a finite number (NaN and Infinity are not JSON)"
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{path}.{_shown(key)}"
            if (problem := unfit_text(key)) is not None:
                return name, f"the key {problem}"
            if (found := _unfit_json(item, name, depth + 1)) is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            if (found := _unfit_json(item, f"{path}[{i}]", depth + 1)) is not None:
                return found
    return None


async def _trigger(request: Request, body: SurveyRequest) -> JSONResponse:
    service: Service = request.app.state.service
    if (unfit := _unfit(body)) is not None:
        return error(422, *unfit)
    try:
        made = await trigger(
            service, body, channels=request.app.state.channels, link_for=_link_maker(request)
        )
    except OpenSurveysFull as exc:  # 409, not 429: a helpdesk retries 429 until it is let through
        return error(409, exc.field, exc.message)
    except TriggerError as exc:
        return error(422, exc.field, exc.message)
    return JSONResponse(_body(made), status_code=201 if made.created else 200)


router = APIRouter()


# The body is not a parameter: FastAPI reads and parses a body parameter before it runs any
# dependency, so a request without a key would have its JSON parsed and checked. It is
# documented here instead, and read by _survey_request once api_key has let the request in.
_SURVEY_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SurveyRequest.model_json_schema()}},
    }
}


# The routes write their JSON themselves (a JSONResponse is not validated again); response_model and
# responses describe it in /openapi.json (bot.web.resources, scoring.report).
@router.post(
    "/api/surveys",
    tags=["surveys"],
    status_code=201,
    openapi_extra=_SURVEY_BODY,
    response_model=SurveyCreated,
    responses={
        200: {"model": SurveyCreated, "description": "The survey existed already for this ticket and flow."}
    },
)
async def create(request: Request, key: Annotated[str, Depends(api_key)]) -> JSONResponse:
    """Trigger a survey for a ticket; the same ticket_id and flow give back the existing survey (200)."""
    body = await _survey_request(request)
    if isinstance(body, JSONResponse):
        return body
    return await _trigger(request, body)


@router.get("/api/surveys/{survey_id}", tags=["surveys"], response_model=Survey)
async def show(request: Request, survey_id: int, key: Annotated[str, Depends(api_key)]) -> JSONResponse:
    """A survey's status, times and answers."""
    service: Service = request.app.state.service
    if not 0 < survey_id <= MAX_ID:  # no row has such an id, and the database would refuse it
        return error(404, "survey_id", f"no survey {survey_id}")
    s = surveys.c
    async with service.db.read() as conn:
        row = (
            await conn.execute(
                sa.select(
                    s.id,
                    s.status,
                    s.ticket,
                    s.channel,
                    s.flow_id,
                    s.language,
                    s.agent,
                    s.team,
                    s.created_at,
                    s.send_at,
                    s.sent_at,
                    s.completed_at,
                    s.expires_at,
                    s.meta,
                    s.closed_reason,
                ).where(s.id == survey_id)
            )
        ).one_or_none()
        if row is None:
            return error(404, "survey_id", f"no survey {survey_id}")
        given = await conn.execute(
            sa.select(answers.c.question_id, answers.c.score, answers.c.text, answers.c.answered_at)
            .where(answers.c.survey_id == survey_id)
            .order_by(answers.c.id)
        )
        found = [
            {
                "question": a.question_id,
                "score": a.score,
                "text": a.text,
                "answered_at": a.answered_at.isoformat(),
            }
            for a in given
        ]
        sent = await jobs.ended(conn, survey_id, JobKind.SEND)
    times = ("created_at", "send_at", "sent_at", "completed_at", "expires_at")
    return JSONResponse(
        {
            "id": row.id,
            "status": row.status,
            "ticket_id": row.ticket,
            "channel": row.channel,
            "flow": row.flow_id,
            "language": row.language,
            "agent": row.agent,
            "team": row.team,
            **{t: getattr(row, t).isoformat() if getattr(row, t) else None for t in times},
            "metadata": row.meta or None,  # the key POST took; {} and null are stored alike
            "closed_reason": row.closed_reason,
            # How its send ended ("sent", "throttled", "sent, unconfirmed: …", "failed") and the
            # provider's message ids; null until the send job has ended.
            "delivery": {
                "outcome": "failed"
                if sent.status == JobStatus.FAILED
                else (sent.result or {}).get("outcome"),
                "provider_id": (sent.result or {}).get("provider_id"),
                "reason": sent.last_error if sent.status == JobStatus.FAILED else None,
            }
            if sent
            else None,
            "answers": found,
        }
    )


@router.get("/api/report", tags=["reports"], response_model=Report)
async def api_report(
    request: Request,
    key: Annotated[str, Depends(api_key)],
    since: Annotated[str | None, Query(description="Period ending now, e.g. 7d (default 30d).")] = None,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
    by: str | None = None,
    trend: str | None = None,
    rule: str = "top2",
) -> JSONResponse:
    """CSAT, NPS and CES with 95 % intervals, as `afterword report --format json`."""
    service: Service = request.app.state.service
    try:
        query = report_query(
            now=service.clock(), since=since, from_=from_, to=to, by=by, trend=trend, rule=rule
        )
    except ReportError as exc:
        return error(400, exc.field, exc.message)
    report = await build_report(service.db, query, service.settings.targets)
    return JSONResponse(report.json_data())


async def _hook(request: Request, source: str, read: Callable[[Any], HookTicket | None]) -> JSONResponse:
    try:
        payload = await request.json()
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested past the parser's reach
        return error(422, "$", "the body must be JSON")
    try:
        ticket = read(payload)
    except HookError as exc:
        return error(422, exc.path, exc.message)
    if ticket is None:
        return JSONResponse({"status": "ignored", "reason": "the ticket is not solved"})
    settings = request.app.state.service.settings
    if ticket.phone is None:
        path = _PHONE_PATHS.get(source) or parse_mapping(settings.hooks_generic_map or "{}").get(
            "phone", "phone"
        )
        return error(422, path, "missing: the customer's phone number is needed to send a survey")
    body = SurveyRequest(
        ticket_id=ticket.ticket_id,
        channel=settings.hooks_channel,
        to=ticket.phone,
        agent=ticket.agent,
        team=ticket.team,
        language=ticket.language,
        metadata={"source": source},
    )
    return await _trigger(request, body)


@router.post("/hooks/zendesk", tags=["helpdesk webhooks"], dependencies=[Depends(hook_secret)])
async def zendesk(request: Request) -> JSONResponse:
    """Zendesk's "ticket solved" trigger webhook (the body to paste is in the README)."""
    return await _hook(request, "zendesk", from_zendesk)


@router.post("/hooks/freshdesk", tags=["helpdesk webhooks"], dependencies=[Depends(hook_secret)])
async def freshdesk(request: Request) -> JSONResponse:
    """Freshdesk's automation webhook when a ticket is resolved."""
    return await _hook(request, "freshdesk", from_freshdesk)


@router.post("/hooks/generic", tags=["helpdesk webhooks"], dependencies=[Depends(hook_secret)])
async def generic(request: Request) -> JSONResponse:
    """Any JSON, read with the field mapping in HOOKS_GENERIC_MAP."""
    raw = request.app.state.service.settings.hooks_generic_map
    if raw is None:
        return error(404, "HOOKS_GENERIC_MAP", "the generic webhook needs HOOKS_GENERIC_MAP")
    mapping = parse_mapping(raw)
    return await _hook(request, "generic", lambda payload: from_generic(payload, mapping))
