"""The staff dashboard at `/dashboard`, its login, and the start page at `/`.

Every form carries a CSRF token: before login a double-submit cookie, after login the
session's own token. Sessions live in the database (bot.web.auth), so any worker can
serve any page and logging out ends the session everywhere.
"""

from __future__ import annotations

import asyncio
import csv
import io
import ipaddress
import json
import secrets
from collections.abc import AsyncIterator
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from bot.errors import InputError, ReportError
from bot.report_format import (
    CSV_LINE_END,
    FOOTNOTE,
    METRICS,
    change_cell,
    group_key,
    metric_cell,
    period_label,
    spreadsheet_safe,
    target_cell,
)
from bot.reports import build_report, report_query, trend_points
from bot.service import Service
from bot.store.tables import answers, surveys
from bot.triggers import SurveyRequest, trigger
from bot.web import auth as web_auth
from bot.web.limits import client_address
from bot.web.pages import SECURITY_HEADERS, page
from scoring.chart import trend_chart

SESSION_COOKIE = "aw_session"
CSRF_COOKIE = "aw_csrf"
PERIODS = ("7d", "30d", "90d", "365d")
SEGMENTS = ("agent", "team", "channel")
EXPORT_COLUMNS = (
    "answered_at", "ticket", "agent", "team", "channel", "flow_id", "language",
    "question_id", "metric", "score", "scale_min", "scale_max", "scale_best", "text",
)  # fmt: skip

router = APIRouter(include_in_schema=False)


def _secure(request: Request) -> bool:
    base = request.app.state.service.settings.public_base_url
    return bool(base and base.startswith("https://"))


def _form_token(request: Request, response_context: dict[str, Any]) -> str:
    """The double-submit token for a form shown before login (reused while its cookie lives)."""
    token = request.cookies.get(CSRF_COOKIE) or web_auth.new_csrf_token()
    response_context["csrf"] = token
    return token


def _with_csrf_cookie(request: Request, response: Response, token: str) -> Response:
    response.set_cookie(
        CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request), path="/"
    )
    return response


def _form_ok(request: Request, given: str | None) -> bool:
    return web_auth.csrf_ok(request.cookies.get(CSRF_COOKIE, ""), given)


def _client(request: Request) -> str:
    return client_address(request, request.app.state.service.settings.trusted_proxies)


_FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def _is_local(request: Request) -> bool:
    host = _client(request)
    peer = request.client.host if request.client else ""
    if host == peer and any(name in request.headers for name in _FORWARDING_HEADERS):
        # A proxy on this machine that is not in TRUSTED_PROXIES: the visitor may be anyone.
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in ("localhost", "testclient")


async def _user(request: Request) -> web_auth.WebUser | None:
    service: Service = request.app.state.service
    return await web_auth.session_user(service.db, request.cookies.get(SESSION_COOKIE), now=service.clock())


def _to_login() -> RedirectResponse:
    return RedirectResponse("/dashboard/login", status_code=303)


# --- start page ---------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def start(request: Request) -> Response:
    """What runs here and how to try it: a survey for yourself, then the dashboard."""
    service: Service = request.app.state.service
    channels = sorted(set(request.app.state.channels) - {"web"})
    context: dict[str, Any] = {
        "lang": "en",
        "title": "Afterword",
        "channels": channels,
        "can_try": not channels,
        "needs_login": not await web_auth.has_web_logins(service.db),
        "local": _is_local(request),
        "flows": sorted(service.flows),
        "default_flow": service.settings.default_flow,
    }
    token = _form_token(request, context)
    return _with_csrf_cookie(request, page(request, "start.html", context), token)


@router.post("/try")
async def try_survey(
    request: Request,
    csrf: Annotated[str, Form()] = "",
    flow: Annotated[str | None, Form()] = None,
    language: Annotated[str | None, Form()] = None,
) -> Response:
    """Create a web survey for whoever asks, on a setup without providers, and open it."""
    if not _form_ok(request, csrf):
        return _forbidden(request)
    if set(request.app.state.channels) - {"web"}:
        return _forbidden(request)  # a real deployment takes surveys from triggers only
    service: Service = request.app.state.service
    body = SurveyRequest(
        ticket_id=f"try-{secrets.token_hex(4)}", channel="web", flow=flow, language=language, agent="you"
    )
    made = await trigger(service, body, channels={"web": None}, link_for=lambda _c, t: f"/s/{t}")
    return RedirectResponse(made.link or "/", status_code=303)


@router.post("/setup")
async def setup(
    request: Request,
    csrf: Annotated[str, Form()] = "",
    login: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    """The first manager login, from this machine only, while there is none."""
    service: Service = request.app.state.service
    if not _form_ok(request, csrf) or not _is_local(request) or await web_auth.has_web_logins(service.db):
        return _forbidden(request)
    try:
        await web_auth.set_web_login(
            service.db, login=login, password=password, role="manager", name=login, now=service.clock()
        )
    except InputError as exc:
        return page(request, "message.html", {"lang": "en", "title": "Setup", "message": str(exc)}, 422)
    return await _log_in(request, login, password)


def _forbidden(request: Request) -> HTMLResponse:
    message = "This form has expired or is not allowed here. Reload the page and try again."
    return page(request, "message.html", {"lang": "en", "title": "Forbidden", "message": message}, 403)


# --- login --------------------------------------------------------------------------------


@router.get("/dashboard/login", response_class=HTMLResponse)
async def login_form(request: Request, error: str | None = None) -> Response:
    """The login form."""
    context: dict[str, Any] = {"lang": "en", "title": "Log in – Afterword", "error": error}
    token = _form_token(request, context)
    return _with_csrf_cookie(request, page(request, "login.html", context), token)


@router.post("/dashboard/login")
async def login(
    request: Request,
    csrf: Annotated[str, Form()] = "",
    login: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    """Check the password; failed attempts are limited per login and per address."""
    if not _form_ok(request, csrf):
        return _forbidden(request)
    return await _log_in(request, login, password)


async def _log_in(request: Request, login: str, password: str) -> Response:
    service: Service = request.app.state.service
    ip = _client(request)
    result = await web_auth.log_in(service.db, login=login, password=password, ip=ip, now=service.clock())
    if result.throttled:
        minutes = max(1, round((result.retry_after or 60) / 60))
        context = {
            "lang": "en",
            "title": "Log in – Afterword",
            "error": f"Too many failed logins. Try again in {minutes} min.",
        }
        context["csrf"] = request.cookies.get(CSRF_COOKIE, "")
        refused = page(request, "login.html", context, 429)
        refused.headers["Retry-After"] = str(result.retry_after or 60)
        return refused
    if not result.ok or result.cookie is None:
        context = {"lang": "en", "title": "Log in – Afterword", "error": "Login or password is wrong."}
        context["csrf"] = request.cookies.get(CSRF_COOKIE, "")
        return page(request, "login.html", context, 401)
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        result.cookie,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
        path="/",
        max_age=int(web_auth.SESSION_TTL.total_seconds()),
    )
    return response


@router.post("/dashboard/logout")
async def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    """End the session (CSRF-checked, so no other site can log you out)."""
    user = await _user(request)
    if user is None:
        return _to_login()
    if not web_auth.csrf_ok(user.csrf_token, csrf):
        return _forbidden(request)
    await web_auth.log_out(request.app.state.service.db, request.cookies.get(SESSION_COOKIE))
    response = _to_login()
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- the dashboard ------------------------------------------------------------------------


def _filters(since: str, by: str) -> tuple[str, str]:
    if since not in PERIODS:
        raise ReportError("since", f"{since!r} is not one of {', '.join(PERIODS)}")
    if by not in SEGMENTS:
        raise ReportError("by", f"{by!r} is not one of {', '.join(SEGMENTS)}")
    return since, by


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, since: str = "30d", by: str = "agent") -> Response:
    """Scores with intervals and targets, the trend, a breakdown, response rate and comments."""
    user = await _user(request)
    if user is None:
        return _to_login()
    service: Service = request.app.state.service
    try:
        since, by = _filters(since, by)
    except ReportError as exc:
        return page(request, "message.html", {"lang": "en", "title": "Dashboard", "message": str(exc)}, 400)
    query = report_query(now=service.clock(), since=since, by=by)
    report = await build_report(service.db, query, service.settings.targets)
    cards = [
        {
            "name": name.upper(),
            "value": metric_cell(name, item),
            "target": target_cell(item),
            "met": None if item.target is None else item.target.met,
            "change": change_cell(item),
        }
        for name, item in zip(METRICS, report.metrics(), strict=True)
    ]
    groups = [
        {
            "key": group_key(g.key),
            **{m: metric_cell(m, item) for m, item in zip(METRICS, g.metrics(), strict=True)},
        }
        for g in report.groups
    ]
    questions = [
        {"question": q.question, "metric": q.metric.upper(), "value": metric_cell(q.metric, q.score)}
        for q in report.questions
    ]
    context = {
        "lang": "en",
        "title": "Afterword dashboard",
        "user": user,
        "since": since,
        "by": by,
        "periods": PERIODS,
        "segments": SEGMENTS,
        "cards": cards,
        "groups": groups,
        "questions": questions,
        "rate": report.response_rate,
        "comments": report.comments,
        "period_label": period_label(report),
        "footnote": FOOTNOTE,
        # The start page's own survey is the first-hour path; it exists only without providers.
        "can_try": not set(request.app.state.channels) - {"web"},
    }
    return page(request, "dashboard.html", context)


@router.get("/dashboard/chart.png")
async def chart(request: Request, since: str = "30d") -> Response:
    """The CSAT and NPS trend of the period, as a PNG."""
    user = await _user(request)
    if user is None:
        return Response(status_code=401)
    service: Service = request.app.state.service
    if since not in PERIODS:
        since = "30d"
    days = int(since[:-1])
    query = report_query(now=service.clock(), since=since, trend="day" if days <= 31 else "week")
    report = await build_report(service.db, query, service.settings.targets)
    targets = {k: v for k, v in service.settings.targets.items() if k in ("csat", "nps")}
    # Drawing takes up to a second of CPU: in a thread, so that every other request, webhooks
    # included, is served meanwhile (the chart is drawn on a Figure, never with pyplot).
    png = await asyncio.to_thread(
        trend_chart, trend_points(report), targets=targets, title=f"CSAT and NPS, last {days} days"
    )
    return Response(png, media_type="image/png", headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


@router.get("/dashboard/export.csv")
async def export(request: Request, since: str = "30d") -> Response:
    """Every answer of the period as CSV, oldest first, streamed."""
    user = await _user(request)
    if user is None:
        return _to_login()
    service: Service = request.app.state.service
    if since not in PERIODS:
        since = "30d"
    query = report_query(now=service.clock(), since=since)
    columns = [answers.c[name] for name in EXPORT_COLUMNS]
    in_period = sa.and_(answers.c.answered_at >= query.start, answers.c.answered_at < query.end)
    stmt = (
        sa.select(*columns, surveys.c.meta)
        .select_from(answers.outerjoin(surveys, surveys.c.id == answers.c.survey_id))
        .where(in_period)
        .order_by(answers.c.answered_at, answers.c.id)
    )
    # One column per metadata key (`metadata.<key>`), so a spreadsheet can filter and sort by
    # it; the keys are every survey's of the period, found first, as the header comes first.
    metas = sa.select(surveys.c.meta).where(
        surveys.c.id.in_(sa.select(answers.c.survey_id).where(in_period).scalar_subquery())
    )

    async def rows() -> AsyncIterator[str]:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator=CSV_LINE_END)
        async with service.db.read() as conn:
            keys = sorted({key async for (meta,) in await conn.stream(metas) for key in _keyed(meta)})
            writer.writerow([*EXPORT_COLUMNS, *(f"metadata.{key}" for key in keys)])
            result = await conn.stream(stmt)
            async for *values, meta in result:
                cells = [value.isoformat() if hasattr(value, "isoformat") else value for value in values]
                cells += [_meta_cell(_keyed(meta).get(key)) for key in keys]
                writer.writerow([spreadsheet_safe(cell) for cell in cells])
                if out.tell() > 64_000:
                    yield out.getvalue()
                    out.seek(0)
                    out.truncate()
        yield out.getvalue()

    filename = f"afterword-answers-{query.end:%Y-%m-%d}-{since}.csv"
    return StreamingResponse(
        rows(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"},
    )


def _keyed(meta: object) -> dict[str, object]:
    return meta if isinstance(meta, dict) else {}  # none stored (null), or not an object


def _meta_cell(value: object) -> object:
    """A metadata value as a cell: text as it is, a number or a nested value as JSON, none empty."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
