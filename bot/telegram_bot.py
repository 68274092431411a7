"""The Telegram bot inside `afterword serve`: started and stopped with the web app.

Webhook mode (the default) takes updates from `POST /telegram/webhook`, so any number of
workers can serve one bot; `--telegram-polling` fetches them instead, for one process
without a public URL. Detractor alerts go to TELEGRAM_ALERT_CHAT_ID from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from telegram import LinkPreviewOptions, ReplyParameters, Update
from telegram.error import InvalidToken, TelegramError
from telegram.ext import ContextTypes

from bot.alerts import Alerter
from bot.channels.telegram import ALLOWED_UPDATES, CustomerHandlers, TelegramChannel, build_application
from bot.errors import ChannelUnavailable, ConfigError
from bot.service import Service
from bot.telegram_staff import StaffHandlers
from bot.triggers import survey_links

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/telegram/webhook"


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
        CustomerHandlers(service, self.channel).register(self.application)
        self.application.add_error_handler(self._log_error)
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
            await self.application.initialize()
        except TelegramError as exc:
            # initialize() opened the HTTP clients before getMe failed, and the Application's
            # shutdown() skips a bot it never finished initializing: close them here.
            await self.application.bot.shutdown()
            if isinstance(exc, InvalidToken):
                reason = "it rejected TELEGRAM_BOT_TOKEN"
            else:
                token = self.application.bot.token
                reason = str(exc).replace(token, "<TELEGRAM_BOT_TOKEN>")
            raise ChannelUnavailable("telegram", f"Telegram refused to start the bot: {reason}") from None

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

    async def process(self, data: Mapping[str, Any]) -> None:
        """Handle one update as Telegram posts it to the webhook."""
        update = Update.de_json(dict(data), self.application.bot)
        await self.application.process_update(update)

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
            await self.application.bot.set_webhook(
                url,
                secret_token=settings.telegram_webhook_secret.get_secret_value(),
                allowed_updates=list(ALLOWED_UPDATES),
            )
        except TelegramError as exc:
            raise ChannelUnavailable("telegram", f"Telegram refused the webhook {url}: {exc}") from exc
        return url

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

    async def _log_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        update_id = update.update_id if isinstance(update, Update) else None
        log.error("Telegram update %s failed", update_id, exc_info=context.error)
