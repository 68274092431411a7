"""The web app: FastAPI on uvicorn. Channels and the API mount their routes here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse

from bot.errors import AfterwordError, ReportError
from bot.reports import build_report, report_query
from bot.service import Service
from bot.settings import Settings

VERSION = version("afterword")


def create_app(settings: Settings, service: Service | None = None) -> FastAPI:
    """The ASGI app; it opens its own Service unless one is passed in (tests, the CLI)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = service is None
        app.state.service = service if service is not None else await Service.open(settings)
        try:
            yield
        finally:
            if owned:
                await app.state.service.close()

    app = FastAPI(title="Afterword", version=VERSION, lifespan=lifespan)
    if service is not None:  # usable without running the lifespan (in-process test clients)
        app.state.service = service

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
