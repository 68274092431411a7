"""`client_address`: whose address a request is, with and without trusted reverse proxies."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from starlette.requests import Request

from bot.web.limits import client_address

PROXIES = (ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8"))


def _request(peer: str, *forwarded: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "client": (peer, 40000), "headers": headers})


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.7", ("198.51.100.1",), PROXIES, "203.0.113.7"),  # not from a proxy: header ignored
        ("127.0.0.1", ("198.51.100.1",), (), "127.0.0.1"),  # no trusted proxies: header ignored
        ("127.0.0.1", ("198.51.100.1",), PROXIES, "198.51.100.1"),
        ("127.0.0.1", ("6.6.6.6, 198.51.100.1",), PROXIES, "198.51.100.1"),  # left of it: the client's claim
        ("127.0.0.1", ("198.51.100.1, 10.1.2.3",), PROXIES, "198.51.100.1"),  # past a second proxy
        ("127.0.0.1", ("6.6.6.6", "198.51.100.1, 10.1.2.3"), PROXIES, "198.51.100.1"),  # two headers
        ("127.0.0.1", ("10.1.2.3",), PROXIES, "10.1.2.3"),  # only proxies: the farthest one
        ("127.0.0.1", (), PROXIES, "127.0.0.1"),
        ("127.0.0.1", ("not-an-address",), PROXIES, "not-an-address"),
        ("127.0.0.1", ("x" * 100,), PROXIES, "x" * 64),
    ],
)
def test_client_address(peer: str, forwarded: tuple[str, ...], trusted: tuple, expected: str) -> None:
    """The nearest address that is not a trusted proxy, read from the right of X-Forwarded-For."""
    assert expected == client_address(_request(peer, *forwarded), trusted)
