"""Telegram text after a survey expired: the flow's expired text within the late-reply window."""

from __future__ import annotations

from bot.scheduler import Scheduler
from tests.bot.test_telegram import CUSTOMER, Harness, stored, survey_for
from tests.bot.test_telegram import tg as tg  # the fixture, shared with test_telegram.py
from tests.support import Clock


async def expire_by_scheduler(tg: Harness, clock: Clock) -> None:
    """Move past SURVEY_TTL_HOURS and run a scheduler pass, whose expire job closes the survey."""
    clock.advance(hours=49)
    await Scheduler(tg.service, tg.app.state.channels, worker="test").run_once()


async def test_text_after_expiry_gets_the_expired_text(tg: Harness, clock: Clock) -> None:
    """A message to a chat whose survey the scheduler expired gets the expired text, not the greeting."""
    await survey_for(tg)
    await expire_by_scheduler(tg, clock)
    await tg.say(CUSTOMER, "2", language_code="en")
    assert [] == await stored(tg.service)
    assert tg.to_chat(CUSTOMER)[-1].params["text"].startswith("Diese Umfrage ist leider abgelaufen.")


async def test_text_long_after_expiry_gets_the_greeting(tg: Harness, clock: Clock) -> None:
    """Past the late-reply window a message is treated as one with no survey: the greeting."""
    await survey_for(tg)
    await expire_by_scheduler(tg, clock)
    clock.advance(days=8)
    await tg.say(CUSTOMER, "2", language_code="de")
    assert tg.to_chat(CUSTOMER)[-1].params["text"].startswith("Hallo! Nach einem Kontakt")
