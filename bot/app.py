"""The web app: FastAPI on uvicorn. Channels and the API mount their routes here."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, Response

from bot.channels import sms, voice
from bot.channels.registry import open_channels
from bot.errors import AfterwordError, ReportError
from bot.reports import build_report, report_query
from bot.service import Service
from bot.settings import Settings

if TYPE_CHECKING:  # python-telegram-bot is imported only when the channel is on
    from bot.telegram_bot import TelegramBot

VERSION = version("afterword")


def create_app(
    settings: Settings,
    service: Service | None = None,
    *,
    telegram: TelegramBot | None = None,
    telegram_polling: bool = False,
) -> FastAPI:
    """The ASGI app; it opens its own Service unless one is passed in (tests, the CLI).

    With TELEGRAM_BOT_TOKEN set, the Telegram bot starts and stops with the app, unless a
    started one is passed in (the CLI starts it first, to report a refused token in one line).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = service is None
        app.state.service = service if service is not None else await Service.open(settings)
        app.state.telegram = telegram
        app.state.twilio = None
        own_bot = telegram is None and settings.telegram_enabled
        try:
            if own_bot:
                from bot.telegram_bot import TelegramBot

                app.state.telegram = TelegramBot(app.state.service, polling=telegram_polling)
                await app.state.telegram.start()
            if settings.twilio_enabled:
                from bot.channels.twilio import TwilioAccount

                app.state.twilio = TwilioAccount(settings)
            app.state.channels = open_channels(
                app.state.service, telegram=app.state.telegram, twilio=app.state.twilio
            )
            yield
        finally:
            if app.state.twilio is not None:
                await app.state.twilio.close()
            if own_bot and app.state.telegram is not None:
                await app.state.telegram.stop()
            if owned:
                await app.state.service.close()

    app = FastAPI(title="Afterword", version=VERSION, lifespan=lifespan)
    if service is not None:  # usable without running the lifespan (in-process test clients)
        app.state.service = service
    app.state.telegram = None
    app.state.twilio = None
    app.state.channels = {}
    app.include_router(sms.router)
    app.include_router(voice.router)

    @app.post("/telegram/webhook", include_in_schema=False)
    async def telegram_webhook(request: Request) -> Response:
        """Updates from Telegram; only with the secret token set by `afterword telegram set-webhook`."""
        bot = request.app.state.telegram
        secret = settings.telegram_webhook_secret
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
        if bot is None:
            return JSONResponse({"error": "the Telegram channel is off"}, status_code=404)
        if secret is None or not hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
            return JSONResponse({"error": "forbidden"}, status_code=403)
        try:
            data = await request.json()
        except ValueError:
            data = None
        if not isinstance(data, dict) or "update_id" not in data:
            return JSONResponse({"error": "the body must be a Telegram update (JSON with update_id)"}, 400)
        await bot.process(data)
        return Response(status_code=200)

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

    @app.get("/api/report", tags=["reports"])
    async def api_report(
        request: Request,
        since: str = "30d",
        from_: Annotated[str | None, Query(alias="from")] = None,
        to: str | None = None,
        by: str | None = None,
        trend: str | None = None,
        rule: str = "top2",
    ) -> JSONResponse:
        """CSAT, NPS and CES with 95 % intervals, as `afterword report --format json`."""
        svc: Service = request.app.state.service
        try:
            query = report_query(
                now=svc.clock(), since=since, from_=from_, to=to, by=by, trend=trend, rule=rule
            )
        except ReportError as exc:
            return JSONResponse({"error": {"field": exc.field, "message": exc.message}}, status_code=400)
        return JSONResponse(await build_report(svc.db, query, svc.settings.targets))

    return app
