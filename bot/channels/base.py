"""The interface every channel implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from flows.engine import Prompt


class Channel(ABC):
    """Delivers channel-neutral prompts to one address, rendered the channel's own way."""

    name: ClassVar[str]

    @abstractmethod
    async def deliver(
        self, address: str, prompts: Sequence[Prompt], language: str, *, survey_id: int | None = None
    ) -> None:
        """Show ``prompts`` to the customer at ``address``; ``survey_id`` lets answers name their survey."""
