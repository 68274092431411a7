"""The web app: FastAPI on uvicorn. Channels and the API mount their routes here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import version
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bot.errors import AfterwordError
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
