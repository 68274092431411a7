"""Which channels exist: one line each. The rest of Afterword finds a channel only here.

A line names the class that implements `bot.channels.base.Channel`, as ``module:Class``, so
that a provider's library is imported only when its channel is asked for (`afterword --help`
and `afterword report` import neither python-telegram-bot nor twilio). ``register`` adds a
class itself: a plugin's, or a test's.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bot.channels.base import Channel, Resources
from bot.phones import mask
from bot.service import Service
from bot.settings import Settings

if TYPE_CHECKING:
    from fastapi import APIRouter

    from bot.channels.telegram.bot import TelegramBot
    from bot.channels.twilio import TwilioAccount

CHANNELS: dict[str, str | type[Channel]] = {
    "sms": "bot.channels.sms:SmsChannel",
    "whatsapp": "bot.channels.sms:WhatsAppChannel",
    "voice": "bot.channels.voice:VoiceChannel",
    "telegram": "bot.channels.telegram.customers:TelegramChannel",
    "web": "bot.channels.web:WebChannel",
}


class UnknownChannel(LookupError):
    """A channel name no line registers."""


def register(channel: type[Channel]) -> None:
    """Make ``channel`` known by its name (replacing one of that name)."""
    CHANNELS[channel.name] = channel


def names() -> tuple[str, ...]:
    """Every registered channel's name, in registry order."""
    return tuple(CHANNELS)


def kind(name: str) -> type[Channel]:
    """The class of channel ``name``; UnknownChannel naming the known ones."""
    entry = CHANNELS.get(name)
    if entry is None:
        raise UnknownChannel(f"unknown channel {name!r}; channels: {', '.join(CHANNELS)}")
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        found = getattr(importlib.import_module(module), attribute)
        if not (isinstance(found, type) and issubclass(found, Channel)) or found.name != name:
            raise TypeError(f"{entry} is not the Channel named {name!r}")
        CHANNELS[name] = entry = found
    return entry


def configured(settings: Settings) -> set[str]:
    """The channel names the settings turn on (web links need nothing)."""
    return {name for name in CHANNELS if kind(name).configured(settings)}


def routers() -> list[APIRouter]:
    """Every registered channel's webhook routes, each once (SMS and WhatsApp share theirs), in registry order."""
    found: list[APIRouter] = []
    for name in CHANNELS:
        router = kind(name).router()
        if router is not None and all(router is not seen for seen in found):
            found.append(router)
    return found


def open_channels(
    service: Service, *, telegram: TelegramBot | None = None, twilio: TwilioAccount | None = None
) -> dict[str, Channel]:
    """The channels that can send in this process, by the name surveys use."""
    resources = Resources(telegram=telegram, twilio=twilio)
    channels: dict[str, Channel] = {}
    for name in configured(service.settings):
        opened = kind(name).open(service, resources)
        if opened is not None:
            channels[name] = opened
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
