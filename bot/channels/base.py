"""The contract every channel implements, and how the scheduler reads a failed send.

A channel is an adapter between a provider and the domain, in the spirit of
python-telegram-bot's handler base classes: a subclass of `Channel` declares what the rest of
Afterword needs to know about it, and does nothing else. It declares

- ``name``: what surveys, answers and reports call it;
- ``configured(settings)``: whether the settings turn it on (``needs`` says what to set if not);
- ``router()``: its webhook routes, mounted by the web app whether it is on or off (a route
  of a channel that is off answers 404 saying so);
- ``provider`` and ``send_rate(settings)``: whose sending slots its sends take, and how many
  per second (`bot.scheduler.reserve_slot`); None for a channel that sends nothing;
- ``address(to, settings)``: the recipient as stored (E.164, a chat id), or None for a
  survey answered at a link; a refused address is ``AddressRefused`` with the reason;
- ``refuses_language(language)``: why it cannot serve a survey in that language, or None;
- ``messages(outgoing)``: how many provider messages a send makes, for the pace;
- ``open(service, resources)``: the instance this process sends with, or None when the
  provider's client is not open here;
- ``deliver(outgoing)``: shows the prompts and returns `Delivered`, what the caller must
  remember (the provider's id, the message whose buttons go later); the caller stores it.

Channels do no SQL and hold no business rules: the scheduler applies the rules and records
the send, `bot.inbound.handle` stores answers and consent, and a channel only translates
between the provider's requests and `Inbound`/`Handled`. Adding a channel is one module
with a `Channel` subclass plus one line in `bot.channels.registry` (tests/bot/test_channel_contract.py
registers one defined only in the test and runs a whole survey through it).
"""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from flows.engine import Prompt

if TYPE_CHECKING:
    from fastapi import APIRouter

    from bot.service import Service
    from bot.settings import Settings


class AddressRefused(ValueError):
    """An address the channel cannot send to; the message says what is allowed (for field ``to``)."""


@dataclass(frozen=True)
class Resources:
    """Provider clients opened once per process and shared by the channels that use them."""

    telegram: Any = None  # bot.channels.telegram.bot.TelegramBot
    twilio: Any = None  # bot.channels.twilio.TwilioAccount


@dataclass(frozen=True)
class Outgoing:
    """What to show one customer: the prompts in ``language``, UI strings falling back to
    ``fallback`` (the survey's flow's default language, bot.texts), for survey ``survey_id``."""

    address: str
    prompts: tuple[Prompt, ...]
    language: str
    fallback: str = "en"
    survey_id: int | None = None


@dataclass(frozen=True)
class Delivered:
    """What a send leaves for the caller to store.

    ``provider_id``: the provider's id for what it sent (message SIDs joined by commas, a
    call SID, a Telegram message id). ``ref``: when ``keeps_ref``, the survey's new
    ``channel_ref`` (the message whose buttons go when the next message follows; None clears it).
    """

    provider_id: str | None = None
    ref: str | None = None
    keeps_ref: bool = field(default=False)


class Channel(ABC):
    """Delivers channel-neutral prompts to one address, rendered the channel's own way.

    ``deliver`` raises ``DeliveryFailed`` (or ``ContactOptedOut``) only when the provider
    refused the send, so that nothing reached the customer; any other exception leaves it
    unknown whether something did, and the scheduler then does not send again.
    """

    name: ClassVar[str]
    provider: ClassVar[str | None] = None
    needs: ClassVar[str] = ""  # the settings that turn it on, for "<name> is off: set …"
    phone_numbers: ClassVar[bool] = False  # addresses are E.164 numbers (a time zone can be guessed)

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        """Whether the settings turn this channel on."""
        return True

    @classmethod
    def router(cls) -> APIRouter | None:
        """The channel's webhook routes, or None."""
        return None

    @classmethod
    def send_rate(cls, settings: Settings) -> float | None:
        """Sends per second for all processes together (SEND_RATE_*), or None: not paced."""
        return None

    @classmethod
    def address(cls, to: str | None, settings: Settings) -> str | None:
        """The recipient as stored, or None for a link survey; AddressRefused says why not."""
        if to is not None:
            raise AddressRefused(f"the {cls.name} channel sends nothing: leave out `to` and share the link")
        return None

    @classmethod
    def refuses_language(cls, language: str) -> str | None:
        """Why the channel cannot serve a survey in ``language`` (voice: no voice speaks it), or None."""
        return None

    @classmethod
    def open(cls, service: Service, resources: Resources) -> Channel | None:
        """This process's instance, or None when what it needs is not open here."""
        return None

    def messages(self, outgoing: Outgoing) -> int:
        """How many provider messages a send of ``outgoing`` makes (the pace counts messages)."""
        return 1

    @abstractmethod
    async def deliver(self, outgoing: Outgoing) -> Delivered:
        """Show the prompts to the customer; what the caller must store."""


def never_sent(exc: BaseException) -> bool:
    """Whether a send failed before any request left: the connection was refused or the name did not resolve.

    HTTP clients wrap these (aiohttp's ClientConnectorError, httpx's ConnectError and
    python-telegram-bot's NetworkError keep them as their cause), so the chain is searched.
    """
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        if isinstance(found, ConnectionRefusedError | socket.gaierror):
            return True
        seen.add(id(found))
        found = found.__cause__ or found.__context__
    return False
