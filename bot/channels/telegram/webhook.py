"""`POST /telegram/webhook`: updates from Telegram, into the bot's Application.

This module imports no python-telegram-bot: the web app mounts it whether the channel is on
or off (off: 404 saying so), and the library is loaded only when the channel is on.
"""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

router = APIRouter(include_in_schema=False)


@router.post("/telegram/webhook")
async def telegram_webhook(request: Request) -> Response:
    """Updates from Telegram; only with the secret token set by `afterword telegram set-webhook`."""
    bot = request.app.state.telegram
    secret = request.app.state.service.settings.telegram_webhook_secret
    given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "")
    if bot is None:
        return JSONResponse({"error": "the Telegram channel is off"}, status_code=404)
    if secret is None or not hmac.compare_digest(given.encode(), secret.get_secret_value().encode()):
        return JSONResponse({"error": "forbidden"}, status_code=403)
    try:
        data = await request.json()
    except (ValueError, RecursionError):  # not JSON, or nested past the parser's reach
        data = None
    if not isinstance(data, dict) or "update_id" not in data:
        return _not_an_update("body", "the body must be a Telegram update (JSON with update_id)")
    from bot.channels.telegram.customers import misshapen  # imported already: the channel is on

    if (field := misshapen(data)) is not None:
        return _not_an_update(field, "not as Telegram sends it: another type, or an id over 64 bits")
    try:
        update = bot.read_update(data)
    except (AttributeError, LookupError, TypeError, ValueError, ArithmeticError) as exc:
        # Raised while reading the update (Update.de_json), before any handler ran.
        return _not_an_update("body", f"not a Telegram update: {type(exc).__name__}")
    # A handler that failed raises here (TelegramBot.process): DatabaseUnavailable (503) or
    # InboundFailed (500), answered by the web app's error handlers, so Telegram sends the update again.
    await bot.process(update)
    return Response(status_code=200)


def _not_an_update(field: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"field": field, "message": message}}, status_code=400)
