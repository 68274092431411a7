"""A cap on the size of every request body, enforced before the body is read.

A body past the cap gets 413 in the app's error shape. A request that declares its length
(Content-Length) is refused before one byte of it is read; a chunked one is counted as it
arrives and refused as soon as it passes the cap, so no route ever holds more than the cap
in memory. Without it, an unauthenticated 300 MB POST to /api/surveys took the server from
213 MB to 1,112 MB before its 401 (issue 16).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Every body Afterword takes is small: a Twilio webhook is a form of a few kB, a Telegram
# update a few kB, a helpdesk hook or an API call some kB of JSON with its metadata.
MAX_BODY_BYTES = 1024 * 1024


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send)
            return
        seen = 0
        over = started = False

        async def counted() -> Message:
            # Past the cap the app is told the client left: whatever it makes of that (FastAPI
            # turns a failed body read into 400) is dropped below, and 413 sent instead.
            nonlocal seen, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if not over:
                started = started or message["type"] == "http.response.start"
                await send(message)

        try:
            await self.app(scope, counted, watched)
        except Exception:
            # A route that reads the body itself (request.form() in the Twilio webhooks) meets
            # the disconnect as ClientDisconnect; past the cap that is ours to answer, not a 500.
            if not over:
                raise
        if over and not started:  # a route that answered before reading it all has its answer
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {"error": {"field": "body", "message": f"the request body is over {self.max_bytes:,} bytes"}}
        ).encode()
        headers: list[tuple[bytes, bytes]] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers") or []
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def client_address(request: Request, trusted: Sequence[IPv4Network | IPv6Network]) -> str:
    """The client's address: the peer's, or behind proxies in ``trusted`` the nearest other one.

    Each proxy appends the address it was connected from to X-Forwarded-For, so the list is read
    from the right, past the trusted proxies, to the first address none of them is: everything
    left of it was written by the client and may be made up. With no trusted proxies (the
    default) the header is ignored: uvicorn's own default believed it from 127.0.0.1, so a
    client could pick the address that the login throttle counted (issue 16).
    """
    peer = request.client.host if request.client else "unknown"
    if not _within(peer, trusted):
        return peer
    hops = [hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")]
    for hop in reversed([hop for hop in hops if hop]):
        if not _within(hop, trusted):
            return hop[:64]  # what a trusted proxy saw; a malformed entry is kept as it is
        peer = hop
    return peer  # every hop was a trusted proxy


def _within(address: str, networks: Sequence[IPv4Network | IPv6Network]) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in networks)
