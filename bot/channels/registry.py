"""Which channels run in this process: one line each, by the settings that turn them on."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.channels.base import Channel
from bot.phones import mask
from bot.service import Service
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.channels.telegram.bot import TelegramBot
    from bot.channels.twilio import TwilioAccount


def configured(settings: Settings) -> set[str]:
    """The channel names the settings turn on (web links need nothing)."""
    names = {"web"}
    if settings.telegram_enabled:
        names.add("telegram")
    if settings.twilio_enabled:
        if settings.twilio_from_number or settings.twilio_messaging_service_sid:
            names.add("sms")
        if settings.twilio_whatsapp_from:
            names.add("whatsapp")
        if settings.twilio_from_number:
            names.add("voice")
    return names


def open_channels(
    service: Service, *, telegram: TelegramBot | None = None, twilio: TwilioAccount | None = None
) -> dict[str, Channel]:
    """The channels that can send, by the name surveys use (`telegram`, `sms`, `whatsapp`, `voice`)."""
    from bot.channels.web import WebChannel

    channels: dict[str, Channel] = {"web": WebChannel()}
    names = configured(service.settings)
    if telegram is not None:
        channels["telegram"] = telegram.channel
    if twilio is not None:
        from bot.channels.sms import SmsChannel
        from bot.channels.voice import VoiceChannel

        if "sms" in names:
            channels["sms"] = SmsChannel(service, twilio)
        if "whatsapp" in names:
            channels["whatsapp"] = SmsChannel(service, twilio, whatsapp=True)
        if "voice" in names:
            channels["voice"] = VoiceChannel(service, twilio)
    return channels


def twilio_summary(settings: Settings) -> str:
    """One line on the Twilio channels, for `afterword serve` to print at start."""
    if not settings.twilio_enabled:
        return "Twilio: off (TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set)"
    sender = settings.twilio_messaging_service_sid or mask(str(settings.twilio_from_number))
    parts = []
    if settings.twilio_from_number or settings.twilio_messaging_service_sid:
        parts.append(f"SMS from {sender}")
    if settings.twilio_whatsapp_from:
        parts.append(f"WhatsApp from {mask(settings.twilio_whatsapp_from)}")
    if settings.twilio_from_number:
        parts.append(f"voice from {mask(settings.twilio_from_number)}")
    shown = (
        ", ".join(parts)
        or "no sender: set TWILIO_FROM_NUMBER, TWILIO_MESSAGING_SERVICE_SID or TWILIO_WHATSAPP_FROM"
    )
    return f"Twilio: on ({shown}; webhooks under {settings.public_base_url}/twilio/)"
