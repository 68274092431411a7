"""The web app: FastAPI on uvicorn. Channels and the API mount their routes here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import fastapi_offline
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from bot.channels.registry import open_channels, routers
from bot.errors import (
    AfterwordError,
    ChannelUnavailable,
    DatabaseUnavailable,
    DeliveryFailed,
    ImportFailed,
    ImportFileUnreadable,
    InputError,
    InvalidPhone,
    SchemaOutdated,
    SurveyError,
)
from bot.logs import install_logging
from bot.scheduler import Scheduler
from bot.service import Service
from bot.settings import Settings, load_settings
from bot.web import api, contacts, dashboard
from bot.web.limits import BodyLimit
from bot.web.pages import SECURITY_HEADERS, STATIC_DIR

if TYPE_CHECKING:  # python-telegram-bot is imported only when the channel is on
    from bot.channels.telegram.bot import TelegramBot

VERSION = version("afterword")
log = logging.getLogger(__name__)
# Seconds a client (a provider's webhook retry, a helpdesk) is asked to wait after a 503: long
# enough for a database restart or fail-over, short enough that answers are not held up for long.
RETRY_AFTER_SECONDS = 30

# Swagger UI's files (swagger-ui-dist 5, the ones FastAPI would load from a CDN) as the
# fastapi-offline package ships them, so /docs works on a network without internet.
SWAGGER_UI_DIR = Path(fastapi_offline.__file__).parent / "static"
SWAGGER_UI_URL = "/static/swagger-ui"
OPENAPI_URL = "/openapi.json"


def create_app(
    settings: Settings,
    service: Service | None = None,
    *,
    telegram: TelegramBot | None = None,
    telegram_polling: bool = False,
    scheduler: bool = True,
) -> FastAPI:
    """The ASGI app; it opens its own Service unless one is passed in (tests, the CLI).

    With TELEGRAM_BOT_TOKEN set, the Telegram bot starts and stops with the app, unless a
    started one is passed in (the CLI starts it first, to report a refused token in one line).
    The scheduler runs inside the app unless ``scheduler`` is False.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = service is None
        app.state.service = service if service is not None else await Service.open(settings)
        app.state.telegram = telegram
        app.state.twilio = None
        app.state.scheduler = None
        own_bot = telegram is None and settings.telegram_enabled
        try:
            if own_bot:
                from bot.channels.telegram.bot import TelegramBot

                app.state.telegram = TelegramBot(app.state.service, polling=telegram_polling)
                await app.state.telegram.start()
            if settings.twilio_enabled:
                from bot.channels.twilio import TwilioAccount

                app.state.twilio = TwilioAccount(settings)
            app.state.channels = open_channels(
                app.state.service, telegram=app.state.telegram, twilio=app.state.twilio
            )
            if scheduler:
                app.state.scheduler = asyncio.create_task(
                    Scheduler(app.state.service, app.state.channels).run()
                )
            yield
        finally:
            if app.state.scheduler is not None:
                app.state.scheduler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await app.state.scheduler
            if app.state.twilio is not None:
                await app.state.twilio.close()
            if own_bot and app.state.telegram is not None:
                await app.state.telegram.stop()
            if owned:
                await app.state.service.close()

    app = FastAPI(
        title="Afterword", version=VERSION, lifespan=lifespan, openapi_url=OPENAPI_URL, docs_url=None
    )
    if service is not None:  # usable without running the lifespan (in-process test clients)
        app.state.service = service
    app.state.telegram = None
    app.state.twilio = None
    app.state.scheduler = None
    app.state.channels = {}
    # Outermost: a body over the cap is refused before any route or middleware reads it.
    app.add_middleware(BodyLimit)
    # Before /static, which would otherwise answer 404 for these paths.
    app.mount(SWAGGER_UI_URL, StaticFiles(directory=SWAGGER_UI_DIR), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    # Routes are matched in order: the provider webhooks, called once per answer, go first.
    for router in routers():  # every registered channel's webhooks (bot.channels.registry)
        app.include_router(router)
    app.include_router(api.router)
    app.include_router(contacts.router)
    app.include_router(dashboard.router)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        """Errors keep one shape: {"error": {"field", "message"}}."""
        detail = exc.detail if isinstance(exc.detail, dict) else {"field": None, "message": str(exc.detail)}
        return JSONResponse({"error": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        """A body that does not fit the schema: 422 naming the first field, with every problem listed."""
        problems = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]), "message": e["msg"]}
            for e in exc.errors()
        ]
        return JSONResponse({"error": problems[0], "errors": problems}, status_code=422)

    install_error_handlers(app)

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        """Swagger UI for the API, with every file it loads served by this app."""
        root = request.scope.get("root_path", "").rstrip("/")
        html = get_swagger_ui_html(
            openapi_url=root + OPENAPI_URL,
            title="Afterword - Swagger UI",
            swagger_js_url=f"{root}{SWAGGER_UI_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{SWAGGER_UI_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{SWAGGER_UI_URL}/favicon.png",
        )
        return _with_nonce(bytes(html.body))

    @app.get("/healthz", tags=["ops"])
    async def healthz(request: Request) -> JSONResponse:
        """Liveness and database status; 503 when the database cannot be queried."""
        svc: Service = request.app.state.service
        body: dict[str, Any] = {"version": VERSION, "database": {"backend": svc.db.dialect}}
        try:
            await svc.db.ping()
        except AfterwordError as exc:
            body["status"] = "degraded"
            body["database"].update(status="unavailable", error=str(exc))
            return JSONResponse(body, status_code=503)
        body["status"] = "ok"
        body["database"]["status"] = "ok"
        return JSONResponse(body)

    return app


def install_error_handlers(app: FastAPI) -> None:
    """One handler for each class of bot.errors, so an error that a route lets escape gets its status.

    Routes still catch what they answer in their own way (the API's 409 and 422); these are
    for the rest. An error of the request (4xx) says what was wrong in the app's shape
    {"error": {"field", "message"}}. One of ours (5xx) says nothing of the server (no URL,
    no path, no provider's text) and is logged; a provider's webhook that gets it sends its
    request again, which the inbound path then processes once (bot.inbound).
    """
    for bad_input in (InputError, InvalidPhone, SurveyError, ImportFailed, ImportFileUnreadable):
        app.add_exception_handler(bad_input, _bad_input)
    for down in (DatabaseUnavailable, SchemaOutdated, ChannelUnavailable):
        app.add_exception_handler(down, _unavailable)
    app.add_exception_handler(DeliveryFailed, _refused_by_provider)
    app.add_exception_handler(AfterwordError, _our_error)  # ConfigError, InboundFailed, any other
    # A connection lost in the middle of a transaction, or a database that refuses for now
    # (SQLite's "database is locked"): the same outage as DatabaseUnavailable.
    app.add_exception_handler(DBAPIError, _database_error)
    # Anything else: a 500 in the same shape. Starlette raises the error again after this
    # response is sent, so the server logs it with its traceback.
    app.add_exception_handler(Exception, _unexpected)


def _error(status: int, field: str | None, message: str) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=status)


def _try_later(what: str) -> JSONResponse:
    """503 with Retry-After: nothing was done, and the same request may be sent again as it is."""
    response = _error(503, None, f"{what} is unavailable right now; nothing was done, try again later")
    response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


async def _bad_input(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AfterwordError)  # noqa: S101 - registered for these classes only
    if isinstance(exc, InputError):
        return _error(exc.http_status, exc.field, exc.message)
    return _error(exc.http_status, None, str(exc))


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    # Logged in full: DatabaseUnavailable and SchemaOutdated show the URL without its password.
    log.warning("%s %s answered 503: %s", request.method, request.url.path, exc)
    return _try_later(f"the {exc.channel} channel" if isinstance(exc, ChannelUnavailable) else "the database")


async def _refused_by_provider(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DeliveryFailed)  # noqa: S101 - registered for this class only
    log.warning("%s %s answered 502: %s", request.method, request.url.path, exc)
    return _error(502, None, f"{exc.channel} did not take the message")


async def _our_error(request: Request, exc: Exception) -> JSONResponse:
    status = exc.http_status if isinstance(exc, AfterwordError) else 500
    log.error("%s %s answered %d: %s", request.method, request.url.path, status, exc, exc_info=exc)
    return _error(status, None, "the request failed on our side; try again later")


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)  # noqa: S101 - registered for this class only
    if not (exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)):
        raise exc  # a bug, not an outage: the server error path logs it (see _unexpected)
    # The driver's own first line only: the statement and its parameters (survey tokens,
    # answers) that SQLAlchemy adds to the message stay out of the log.
    cause = exc.orig if exc.orig is not None else exc
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    log.warning("%s %s answered 503: the database failed: %s", request.method, request.url.path, reason)
    return _try_later("the database")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return _error(500, None, "the request failed on our side; try again later")


def _with_nonce(html: bytes) -> HTMLResponse:
    """The docs page under the pages' policy, with its own scripts allowed by a fresh nonce.

    FastAPI's Swagger UI page starts the UI from an inline script, which the pages' policy
    (no script at all) would block; a nonce new on every response lets exactly the page's own
    two scripts run and nothing injected. Swagger UI also fetches the schema (connect-src) and
    draws its icons from data: URLs in its stylesheet (img-src).
    """
    nonce = secrets.token_urlsafe(16)
    policy = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    body = html.replace(b"<script", f'<script nonce="{nonce}"'.encode())
    return HTMLResponse(body, headers={**SECURITY_HEADERS, "Content-Security-Policy": policy})


def create_app_from_env() -> FastAPI:
    """The app of one `afterword serve --workers N` process, from the environment and `.env`.

    uvicorn calls this in each worker process after it set up its own logging, so the
    redaction of secrets and phone numbers in logs goes on here; the app opens its own
    Service, Telegram bot and scheduler.
    """
    try:
        settings = load_settings()
    except AfterwordError as exc:
        # uvicorn respawns a worker that dies of an error, but stops on this exit code.
        from uvicorn.config import STARTUP_FAILURE

        logging.getLogger("uvicorn.error").error("%s", exc)
        raise SystemExit(STARTUP_FAILURE) from exc
    install_logging(settings)
    return create_app(settings)
