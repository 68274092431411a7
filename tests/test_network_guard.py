"""The test run itself: no test can reach past this machine by accident (pytest-socket)."""

from __future__ import annotations

import socket

import httpx
import pytest
from pytest_socket import SocketConnectBlockedError

from tests.fakes.telegram import FakeBotApi

# 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never routed, so nothing could answer even unguarded.
ELSEWHERE = "192.0.2.1"


# pytest-socket warns before it raises; with filterwarnings = error that warning is what fails
# a test. Here both are caught, to see them.
BLOCKED = f'A test tried to use socket.socket.connect\\(\\) with host "{ELSEWHERE}"'


def test_a_connection_past_this_machine_fails_the_test() -> None:
    """Connecting to an address that is not 127.0.0.1 or ::1 raises at once, before any packet is sent."""
    with pytest.warns(UserWarning, match=BLOCKED), pytest.raises(SocketConnectBlockedError):
        socket.create_connection((ELSEWHERE, 443), timeout=5)


def _leaves(exc: BaseException) -> list[type[BaseException]]:
    """The exception types in ``exc``, exception groups opened."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [type(exc)]


async def test_an_async_client_is_blocked_too() -> None:
    """An HTTP client on the event loop (as python-telegram-bot and twilio use) is refused the same way."""
    async with httpx.AsyncClient() as client:
        # httpx may try the address inside a task group, which wraps the error in a group.
        with (
            pytest.warns(UserWarning, match=BLOCKED),
            pytest.raises((SocketConnectBlockedError, BaseExceptionGroup)) as caught,
        ):
            await client.get(f"http://{ELSEWHERE}/bot123:abc/getMe", timeout=5)
    assert [SocketConnectBlockedError] == _leaves(caught.value)


def test_this_machine_is_allowed() -> None:
    """The fakes on 127.0.0.1 stay reachable: the guard only stops what leaves the machine."""
    with FakeBotApi() as fake:
        response = httpx.get(f"{fake.base_url}{fake.token}/getMe", timeout=30)
    assert (200, True) == (response.status_code, response.json()["ok"])
