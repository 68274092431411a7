"""The staff dashboard at `/dashboard`, its login, and the start page at `/`.

Every form carries a CSRF token: before login a double-submit cookie, after login the
session's own token. Sessions live in the database (bot.web.auth), so any worker can
serve any page and logging out ends the session everywhere.

Pages are in German or English: the signed-in staff member's language (`staff add --lang`),
else the browser's (Accept-Language), else STAFF_LANGUAGE. The CSV export is an interface
and stays as it is.
"""

from __future__ import annotations

import asyncio
import csv
import html
import io
import ipaddress
import json
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from bot import audit
from bot.errors import InputError, ReportError
from bot.report_format import (
    CSV_LINE_END,
    METRICS,
    change_cell,
    footnote,
    group_key,
    key_name,
    metric_cell,
    period_label,
    spreadsheet_safe,
    target_cell,
)
from bot.reports import answered_in, build_report, report_query, trend_points
from bot.service import Service
from bot.staff import language_of
from bot.staff_language import StaffLanguage, accepted, staff_language
from bot.store.tables import answers, surveys
from bot.texts import day, decimal, staff_text
from bot.triggers import SurveyRequest, trigger
from bot.web import auth as web_auth
from bot.web.limits import client_address
from bot.web.pages import SECURITY_HEADERS, page
from scoring.chart import trend_chart

SETUP_ACTOR = "setup"  # the audit trail's actor for the first login, made on the start page
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


# --- language -----------------------------------------------------------------------------


async def _language(request: Request, user: web_auth.WebUser | None = None) -> StaffLanguage:
    """The staff member's own language, else the browser's first of de and en, else STAFF_LANGUAGE."""
    service: Service = request.app.state.service
    own = await language_of(service.db, user.staff_id) if user is not None else None
    return staff_language(
        own, accepted(request.headers.get("accept-language")), default=service.settings.staff_language
    )


def _texts(language: str) -> Callable[..., str]:
    """``t(key, **fields)`` for the templates: a staff text in ``language`` (escaped by Jinja)."""

    def t(key: str, /, **fields: object) -> str:
        return staff_text(key, language, **fields)

    return t


def _sentence(key: str, language: str, **elements: tuple[str, str]) -> str:
    """A staff text as HTML with each {name} an element: ``name=('a href="/docs"', text)``.

    The catalogue's text and each element's text are escaped here; the tags are this module's.
    """
    parts = {
        name: f"<{tag}>{html.escape(inner)}</{tag.split(maxsplit=1)[0]}>"
        for name, (tag, inner) in elements.items()
    }
    return html.escape(staff_text(key, language)).format(**parts)


def _page(
    request: Request, name: str, context: dict[str, Any], language: str, status: int = 200
) -> HTMLResponse:
    """A page in ``language``: its lang attribute, the templates' ``t`` and a Vary for Accept-Language."""
    response = page(request, name, {**context, "lang": language, "t": _texts(language)}, status)
    response.headers["Content-Language"] = language
    response.headers["Vary"] = "Accept-Language, Cookie"
    return response


# --- start page ---------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
async def start(request: Request) -> Response:
    """What runs here and how to try it: a survey for yourself, then the dashboard."""
    service: Service = request.app.state.service
    channels = sorted(set(request.app.state.channels) - {"web"})
    language = await _language(request)
    command = ("code", "afterword staff add --web-login NAME")
    context: dict[str, Any] = {
        "title": "Afterword",
        "create_hint": _sentence("staff.dashboard.create_hint", language, command=command),
        "then_text": _sentence(
            "staff.dashboard.then_text",
            language,
            dashboard=('a href="/dashboard"', staff_text("staff.dashboard.open_dashboard", language)),
            docs=('a href="/docs"', staff_text("staff.dashboard.api_docs", language)),
        ),
        "channels": channels,
        "can_try": not channels,
        "needs_login": not await web_auth.has_web_logins(service.db),
        "local": _is_local(request),
        "flows": sorted(service.flows),
        "default_flow": service.settings.default_flow,
    }
    token = _form_token(request, context)
    return _with_csrf_cookie(request, _page(request, "start.html", context, language), token)


@router.post("/try")
async def try_survey(
    request: Request,
    csrf: Annotated[str, Form()] = "",
    flow: Annotated[str | None, Form()] = None,
    language: Annotated[str | None, Form()] = None,
) -> Response:
    """Create a web survey for whoever asks, on a setup without providers, and open it."""
    if not _form_ok(request, csrf):
        return await _forbidden(request)
    if set(request.app.state.channels) - {"web"}:
        return await _forbidden(request)  # a real deployment takes surveys from triggers only
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
        return await _forbidden(request)
    try:
        await web_auth.set_web_login(
            service.db,
            login=login,
            password=password,
            role="manager",
            name=login,
            now=service.clock(),
            actor=SETUP_ACTOR,
            source=_client(request),
        )
    except InputError as exc:
        language = await _language(request)
        context = {"title": staff_text("staff.dashboard.setup_title", language), "message": str(exc)}
        return _page(request, "message.html", context, language, 422)
    return await _log_in(request, login, password)


async def _forbidden(request: Request) -> HTMLResponse:
    language = await _language(request)
    context = {
        "title": staff_text("staff.dashboard.forbidden_title", language),
        "message": staff_text("staff.dashboard.forbidden", language),
    }
    return _page(request, "message.html", context, language, 403)


# --- login --------------------------------------------------------------------------------


@router.get("/dashboard/login", response_class=HTMLResponse)
async def login_form(request: Request, error: str | None = None) -> Response:
    """The login form."""
    language = await _language(request)
    context = _login_context(language, error)
    token = _form_token(request, context)
    return _with_csrf_cookie(request, _page(request, "login.html", context, language), token)


def _login_context(language: str, error: str | None) -> dict[str, Any]:
    return {
        "title": staff_text("staff.dashboard.login_title", language),
        "error": error,
        "no_login": _sentence(
            "staff.dashboard.no_login", language, command=("code", "afterword staff add --web-login NAME")
        ),
    }


@router.post("/dashboard/login")
async def login(
    request: Request,
    csrf: Annotated[str, Form()] = "",
    login: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    """Check the password; failed attempts are limited per login and per address."""
    if not _form_ok(request, csrf):
        return await _forbidden(request)
    return await _log_in(request, login, password)


async def _log_in(request: Request, login: str, password: str) -> Response:
    service: Service = request.app.state.service
    ip = _client(request)
    result = await web_auth.log_in(service.db, login=login, password=password, ip=ip, now=service.clock())
    if result.throttled:
        language = await _language(request)
        minutes = max(1, round((result.retry_after or 60) / 60))
        context = _login_context(language, staff_text("staff.dashboard.throttled", language, minutes=minutes))
        context["csrf"] = request.cookies.get(CSRF_COOKIE, "")
        refused = _page(request, "login.html", context, language, 429)
        refused.headers["Retry-After"] = str(result.retry_after or 60)
        return refused
    if not result.ok or result.cookie is None:
        language = await _language(request)
        context = _login_context(language, staff_text("staff.dashboard.wrong_password", language))
        context["csrf"] = request.cookies.get(CSRF_COOKIE, "")
        return _page(request, "login.html", context, language, 401)
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
        return await _forbidden(request)
    await web_auth.log_out(request.app.state.service.db, request.cookies.get(SESSION_COOKIE))
    response = _to_login()
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- the dashboard ------------------------------------------------------------------------


def _filters(since: str, by: str, language: str) -> tuple[str, str]:
    for field, value, allowed in (("since", since, PERIODS), ("by", by, SEGMENTS)):
        if value not in allowed:
            choices = ", ".join(allowed)
            message = staff_text("staff.dashboard.bad_choice", language, value=repr(value), choices=choices)
            raise ReportError(field, message)
    return since, by


@router.get("/dashboard", response_class=HTMLResponse)
async def dashboard(request: Request, since: str = "30d", by: str = "agent") -> Response:
    """Scores with intervals and targets, the trend, a breakdown, response rate and comments."""
    user = await _user(request)
    if user is None:
        return _to_login()
    service: Service = request.app.state.service
    language = await _language(request, user)
    try:
        since, by = _filters(since, by, language)
    except ReportError as exc:
        shown = {"title": staff_text("staff.dashboard.title", language), "message": str(exc)}
        return _page(request, "message.html", shown, language, 400)
    query = report_query(now=service.clock(), since=since, by=by, agent=user.agent)
    report = await build_report(service.db, query, service.settings.targets)
    cards = [
        {
            "name": name.upper(),
            "value": metric_cell(name, item, language),
            "target": target_cell(item, language),
            "met": None if item.target is None else item.target.met,
            "change": change_cell(item, language),
        }
        for name, item in zip(METRICS, report.metrics(), strict=True)
    ]
    groups = [
        {
            "key": group_key(g.key, language),
            **{m: metric_cell(m, item, language) for m, item in zip(METRICS, g.metrics(), strict=True)},
        }
        for g in report.groups
    ]
    questions = [
        {
            "question": q.question,
            "metric": q.metric.upper(),
            "value": metric_cell(q.metric, q.score, language),
        }
        for q in report.questions
    ]
    rate = report.response_rate
    context: dict[str, Any] = {
        "title": staff_text("staff.dashboard.title", language),
        "user": user,
        "since": since,
        "by": by,
        "by_name": key_name(by, language),
        "periods": PERIODS,
        "segments": [(segment, key_name(segment, language)) for segment in SEGMENTS],
        "cards": cards,
        "groups": groups,
        "questions": questions,
        "rate": rate,
        "rate_line": staff_text(
            "staff.dashboard.rate",
            language,
            answer_rate=_percent(rate.answer_rate, language),
            completion_rate=_percent(rate.completion_rate, language),
            answered=rate.answered,
            completed=rate.completed,
            delivered=rate.delivered,
            not_delivered=rate.not_delivered,
        ),
        "comments": [{"day": day(c.answered_at, language), "comment": c} for c in report.comments],
        "period_label": period_label(report, language),
        "footnote": footnote(language),
        "try_hint": _sentence(
            "staff.dashboard.try_hint",
            language,
            link=('a href="/#try"', staff_text("staff.dashboard.try_link", language)),
        ),
        # The start page's own survey is the first-hour path; it exists only without providers.
        "can_try": not set(request.app.state.channels) - {"web"},
    }
    return _page(request, "dashboard.html", context, language)


def _percent(value: float | None, language: str) -> str:
    """A rate as the report has it (66.7, 100.0), with a decimal comma in German."""
    return "-" if value is None else decimal(value, "", language)


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
    language = await _language(request, user)
    query = report_query(
        now=service.clock(), since=since, trend="day" if days <= 31 else "week", agent=user.agent
    )
    report = await build_report(service.db, query, service.settings.targets)
    targets = {k: v for k, v in service.settings.targets.items() if k in ("csat", "nps")}
    # Drawing takes up to a second of CPU: in a thread, so that every other request, webhooks
    # included, is served meanwhile (the chart is drawn on a Figure, never with pyplot).
    png = await asyncio.to_thread(
        trend_chart,
        trend_points(report),
        targets=targets,
        title=staff_text("staff.report.chart_title", language, days=days),
        language=language,
    )
    return Response(png, media_type="image/png", headers={**SECURITY_HEADERS, "Cache-Control": "no-store"})


@router.get("/dashboard/export.csv")
async def export(request: Request, since: str = "30d") -> Response:
    """Every answer of the period as CSV, oldest first, streamed; an agent gets only their own.

    Each export is recorded in the audit trail (who, the period, the client's address).
    """
    user = await _user(request)
    if user is None:
        return _to_login()
    service: Service = request.app.state.service
    if since not in PERIODS:
        since = "30d"
    query = report_query(now=service.clock(), since=since, agent=user.agent)
    await audit.record(
        service.db,
        actor=user.login,
        action=audit.Action.EXPORT_CSV,
        subject=f"answers:{since}" + ("" if query.agent is None else ":own"),
        source=_client(request),
        at=service.clock(),
    )
    columns = [answers.c[name] for name in EXPORT_COLUMNS]
    in_period = answered_in(query)
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
