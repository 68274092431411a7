"""Every route refuses a body over the cap (413) before reading it; smaller bodies are served as before."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bot.apikeys import create_key
from bot.service import Service
from bot.web.limits import MAX_BODY_BYTES
from tests.bot.test_twilio import twilio_settings
from tests.fakes.twilio import FakeTwilioApi
from tests.support import Clock, running_app


class Body:
    """A request body of ``chunks`` pieces of ``size`` bytes that counts how many were pulled."""

    def __init__(self, chunks: int, size: int, byte: bytes = b"x") -> None:
        self.chunks, self.size, self.byte, self.pulled = chunks, size, byte, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.pulled += 1
            yield self.byte * self.size


ROUTES = [
    "/api/surveys",
    "/twilio/sms",
    "/twilio/voice/answer",
    "/telegram/webhook",
    "/hooks/generic",
    "/s/x",
]


@pytest.mark.parametrize("path", ROUTES)
async def test_a_declared_50_mb_body_is_refused_before_it_is_read(
    service: Service, clock: Clock, path: str
) -> None:
    """Content-Length 50 MB, no credentials: 413 naming the body, and the body is never pulled."""
    body = Body(50, 1024 * 1024)
    async with running_app(service, clock) as (_app, client, _svc):
        response = await client.post(path, content=body, headers={"content-length": str(50 * 1024 * 1024)})
    assert (413, "body") == (response.status_code, response.json()["error"]["field"])
    assert body.pulled <= 1  # httpx may have the first chunk ready; the app reads none of it


@pytest.mark.parametrize("path", ["/api/surveys", "/twilio/sms", "/dashboard/login"])
async def test_a_chunked_body_is_cut_off_at_the_cap(
    service: Service, clock: Clock, fake_twilio: FakeTwilioApi, path: str
) -> None:
    """Without Content-Length the body is counted as it comes and refused once past the cap.

    Each of these routes reads the body: the API with a valid key, the Twilio webhook (a form,
    read before its signature is checked) and the login form. The Twilio route used to answer
    500: request.form() met the cut-off as ClientDisconnect (found by bench/body_memory.py).
    """
    key = await create_key(service.db, "limits", now=clock())
    body = Body(50, 256 * 1024, b"{" if path == "/api/surveys" else b"a")
    form = "application/x-www-form-urlencoded"
    headers = {"Authorization": f"Bearer {key}"} if path == "/api/surveys" else {"Content-Type": form}
    async with running_app(service, clock, **twilio_settings(fake_twilio)) as (_app, client, _svc):
        response = await client.post(path, content=body, headers=headers)
    assert (413, "body") == (response.status_code, response.json()["error"]["field"])
    assert body.pulled <= MAX_BODY_BYTES // (256 * 1024) + 2  # stopped near 1 MiB, not at 12.5 MiB


async def test_a_body_under_the_cap_is_served(service: Service, clock: Clock) -> None:
    """A trigger with 100 kB of metadata is under the 1 MiB cap: created as before."""
    key = await create_key(service.db, "limits", now=clock())
    payload = {"ticket_id": "T-big", "channel": "web", "metadata": {"note": "x" * 100_000}}
    async with running_app(service, clock) as (_app, client, _svc):
        response = await client.post("/api/surveys", json=payload, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code in (200, 201), response.text
