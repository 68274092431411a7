"""The interface every channel implements, and how the scheduler reads a failed send."""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from flows.engine import Prompt


class Channel(ABC):
    """Delivers channel-neutral prompts to one address, rendered the channel's own way.

    ``deliver`` raises ``DeliveryFailed`` (or ``ContactOptedOut``) only when the provider
    refused the send, so that nothing reached the customer; any other exception leaves it
    unknown whether something did, and the scheduler then does not send again.
    """

    name: ClassVar[str]

    @abstractmethod
    async def deliver(
        self, address: str, prompts: Sequence[Prompt], language: str, *, survey_id: int | None = None
    ) -> str | None:
        """Show ``prompts`` to the customer at ``address``; ``survey_id`` lets answers name their survey.

        Returns the provider's id for what it sent (message SIDs joined by commas, a call SID,
        a Telegram message id), or None where there is none.
        """


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
