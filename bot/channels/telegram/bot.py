"""The Telegram bot inside `afterword serve`: started and stopped with the web app.

Webhook mode (the default) takes updates from `POST /telegram/webhook`, so any number of
workers can serve one bot; `--telegram-polling` fetches them instead, for one process
without a public URL. Detractor alerts go to TELEGRAM_ALERT_CHAT_ID from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from telegram import LinkPreviewOptions, ReplyParameters, Update
from telegram.error import InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import ContextTypes

from bot.alerts import Alerter
from bot.channels.telegram.customers import (
    ALLOWED_UPDATES,
    CustomerHandlers,
    TelegramChannel,
    build_application,
)
from bot.channels.telegram.staff import StaffHandlers
from bot.errors import AfterwordError, ChannelUnavailable, ConfigError, InboundFailed
from bot.service import Service
from bot.triggers import survey_links

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"
DEFAULT_API_URL = "https://api.telegram.org/bot"  # python-telegram-bot's; it appends the token
# python-telegram-bot logs an answer that is not JSON with a traceback before it raises; the
# error we raise says so in one line, so that record is dropped while we call the API here.
_PAYLOAD_LOGGER = "telegram.request.BaseRequest"
# The errors of the webhook update being processed. python-telegram-bot hands an exception of a
# handler to the error handlers and swallows it (Application.process_update), so the webhook
# would answer 200 and Telegram would never send the update again. The error handler, which
# PTB awaits inside process_update (handlers and error handlers block by default), puts it
# here instead, and TelegramBot.process raises it. Unset (None) for polled updates.
_FAILED: contextvars.ContextVar[list[Exception] | None] = contextvars.ContextVar(
    "afterword_telegram_failed", default=None
)


def _not_json(exc: BaseException) -> str | None:
    """The HTTP status, as "Not Found (404)", if the answer was not JSON: then something else than
    the Bot API answered (a wrong URL, a proxy). Bot.initialize() wraps the error, so the causes are searched."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, TelegramError) and ". Parsing the server response" in cause.message:
            return cause.message.split(". Parsing", 1)[0]
        cause = cause.__cause__
    return None


def _drop_payload_record(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Can not load invalid JSON data")


@contextlib.contextmanager
def _no_payload_tracebacks() -> Iterator[None]:
    logger = logging.getLogger(_PAYLOAD_LOGGER)
    logger.addFilter(_drop_payload_record)
    try:
        yield
    finally:
        logger.removeFilter(_drop_payload_record)


class TelegramBot:
    """The Application with Afterword's handlers, and the alert loop that uses its bot.

    ``receive=False`` (`afterword worker`) only sends: surveys, reminders and alerts.
    """

    def __init__(self, service: Service, *, polling: bool = False, receive: bool = True) -> None:
        if receive and not polling and service.settings.telegram_webhook_secret is None:
            raise ConfigError(
                "TELEGRAM_WEBHOOK_SECRET",
                "required to accept Telegram webhooks; set it, or run `afterword serve --telegram-polling`",
            )
        self.service = service
        self.polling = polling
        self.application = build_application(service, polling=polling)
        self.channel = TelegramChannel(service, self.application)
        # Staff commands first: /report and /survey must not reach the customer handlers.
        StaffHandlers(service, self.link).register(self.application)
        self.customers = CustomerHandlers(service, self.channel)
        self.customers.register(self.application)
        self.application.add_error_handler(self._on_error)
        self._alerts: asyncio.Task[None] | None = None

    def link(self, token: str) -> str:
        """The deep link that opens the survey with ``token`` in a chat with the bot."""
        link = survey_links("", self.application.bot.username)("telegram", token)
        assert link is not None  # noqa: S101 - initialize() fetched the username
        return link

    async def check(self) -> None:
        """Have Telegram accept the token (getMe), without taking updates or sending alerts.

        ChannelUnavailable if it does not, with a message that never holds the token:
        python-telegram-bot's InvalidToken quotes it, and every Bot API URL contains it.
        """
        try:
            with _no_payload_tracebacks():
                await self.application.initialize()
        except TelegramError as exc:
            # initialize() opened the HTTP clients before getMe failed, and the Application's
            # shutdown() skips a bot it never finished initializing: close them here.
            await self.application.bot.shutdown()
            if isinstance(exc, InvalidToken) and _not_json(exc) is None:
                reason = "Telegram refused to start the bot: it rejected TELEGRAM_BOT_TOKEN"
            else:
                reason = self._failure(exc, "Telegram refused to start the bot")
            # `from None`: the library's exceptions and their causes carry URLs with the token.
            raise ChannelUnavailable("telegram", reason) from None

    async def start(self) -> None:
        """Check the token with Telegram (getMe), then take updates and send alerts."""
        await self.check()
        if self.polling and self.application.updater is not None:
            await self.application.updater.start_polling(allowed_updates=list(ALLOWED_UPDATES))
        await self.application.start()
        if self.service.settings.telegram_alert_chat_id is not None:
            self._alerts = asyncio.create_task(Alerter(self.service, self._send_alert).run())

    async def stop(self) -> None:
        """Stop taking updates and sending alerts; an update being handled is finished first."""
        if self._alerts is not None:
            self._alerts.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._alerts
        if self.application.updater is not None and self.application.updater.running:
            await self.application.updater.stop()
        if self.application.running:
            await self.application.stop()
        await self.application.shutdown()

    def read_update(self, data: Mapping[str, Any]) -> Update:
        """An update as Telegram posts it to the webhook; AttributeError, TypeError, ValueError, … if it is not one."""
        return Update.de_json(dict(data), self.application.bot)

    async def process(self, update: Update) -> None:
        """Handle one webhook update; raise what stopped a handler, so the webhook answers 5xx.

        Telegram sends an update again until it gets a 2xx. Every handler records the update
        with its work, or after it (bot.inbound.done_before), so an update whose
        handler failed is done on the next try, and one that was done is not done twice.
        An Afterword error of ours is raised as it is (DatabaseUnavailable: 503), anything
        else as InboundFailed (500) caused by it.
        """
        failed: list[Exception] = []
        token = _FAILED.set(failed)
        try:
            await self.application.process_update(update)
        finally:
            _FAILED.reset(token)
        if not failed:
            return
        error = failed[0]
        if isinstance(error, AfterwordError) and error.http_status >= 500:
            raise error
        raise InboundFailed("telegram", str(update.update_id)) from error

    async def set_webhook(self) -> str:
        """Register PUBLIC_BASE_URL/telegram/webhook with the secret; returns the URL."""
        settings = self.service.settings
        if settings.public_base_url is None:
            raise ConfigError(
                "PUBLIC_BASE_URL", "not set; Telegram needs the public https URL of this service"
            )
        assert settings.telegram_webhook_secret is not None  # noqa: S101 - checked in __init__
        url = settings.public_base_url + WEBHOOK_PATH
        try:
            with _no_payload_tracebacks():
                await self.application.bot.set_webhook(
                    url,
                    secret_token=settings.telegram_webhook_secret.get_secret_value(),
                    allowed_updates=list(ALLOWED_UPDATES),
                )
        except TelegramError as exc:
            reason = self._failure(exc, f"Telegram refused the webhook {url}")
            raise ChannelUnavailable("telegram", reason) from None
        return url

    @property
    def api_url(self) -> str:
        """The Bot API's address without the token (the library's ``bot.base_url`` ends with it)."""
        return self.service.settings.telegram_api_base_url or DEFAULT_API_URL

    def _failure(self, exc: TelegramError, refused: str) -> str:
        """One line for a failed Bot API call, telling an unreachable or wrong API from a refusal; never the token."""
        status = _not_json(exc)
        if status is not None:
            reason = (
                f"{self.api_url} does not answer as the Telegram Bot API ({status}, not JSON); "
                "check TELEGRAM_API_BASE_URL"
            )
        elif isinstance(exc, NetworkError) and not isinstance(exc, RetryAfter):
            reason = f"cannot reach the Telegram Bot API at {self.api_url}: {exc.message}"
        else:
            reason = f"{refused}: {exc.message}"
        return reason.replace(self.application.bot.token, "<TELEGRAM_BOT_TOKEN>")

    async def _send_alert(self, text: str, reply_to: int | None) -> int | None:
        chat_id = self.service.settings.telegram_alert_chat_id
        reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        sent = await self.application.bot.send_message(
            chat_id=chat_id,
            text=text,
            reply_parameters=reply,
            link_preview_options=LinkPreviewOptions(is_disabled=True),
        )
        message_id: int = sent.message_id
        return message_id

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A handler's error: raised by ``process`` for a webhook update (the web app logs it), else logged."""
        failed = _FAILED.get()
        if failed is not None and context.error is not None:
            failed.append(context.error)
            return
        update_id = update.update_id if isinstance(update, Update) else None
        log.error("Telegram update %s failed", update_id, exc_info=context.error)
