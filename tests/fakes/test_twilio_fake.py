"""The fake Twilio REST API, driven by the real twilio library over HTTP."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import httpx
import pytest
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from bot.channels.twilio import RoutedHttpClient
from tests.fakes.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN, FakeTwilioApi


@pytest.fixture
def fake(fake_twilio: FakeTwilioApi) -> FakeTwilioApi:
    return fake_twilio


@pytest.fixture
async def http_client(fake: FakeTwilioApi) -> AsyncIterator[RoutedHttpClient]:
    # Built inside the test's loop: AsyncTwilioHttpClient opens its aiohttp session in
    # __init__, which needs a running loop, and an unclosed session is a warning, i.e. an error.
    client = RoutedHttpClient(fake.base_url)
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture
def client(fake: FakeTwilioApi, http_client: RoutedHttpClient) -> Client:
    return Client(fake.account_sid, fake.auth_token, http_client=http_client)


async def test_message_create_returns_a_queued_message_and_records_the_form(
    fake: FakeTwilioApi, client: Client
) -> None:
    """messages.create_async gets a queued SM… message; the fake records To, From, Body, StatusCallback."""
    message = await client.messages.create_async(
        to="+4915112345678",
        from_="+4930123456",
        body="Hallo",
        status_callback="https://x.example/twilio/status?survey=1",
    )

    assert message.sid is not None
    assert ("SM", 34) == (message.sid[:2], len(message.sid))
    assert ("queued", "+4915112345678", "+4930123456", "Hallo") == (
        message.status,
        message.to,
        message.from_,
        message.body,
    )
    assert message.date_created is not None
    assert f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages/{message.sid}.json" == message.uri
    [sent] = fake.messages()
    assert {
        "To": "+4915112345678",
        "From": "+4930123456",
        "Body": "Hallo",
        "StatusCallback": "https://x.example/twilio/status?survey=1",
    } == sent.params
    assert (201, message.sid, False) == (sent.status, sent.sid, sent.failed)


async def test_messaging_service_replaces_from_and_neither_is_error_21603(
    fake: FakeTwilioApi, client: Client
) -> None:
    """A MessagingServiceSid stands in for From; with neither, Twilio's 21603 is a TwilioRestException."""
    service_sid = "MG" + "1" * 32
    message = await client.messages.create_async(
        to="+4915112345678", messaging_service_sid=service_sid, body="Hallo"
    )
    with pytest.raises(TwilioRestException) as raised:
        await client.messages.create_async(to="+4915112345678", body="Hallo")

    assert (service_sid, "+15005550006") == (message.messaging_service_sid, message.from_)
    assert (400, 21603) == (raised.value.status, raised.value.code)
    assert "Unable to create record: A 'From' phone number is required." == raised.value.msg
    assert [(201, False), (400, True)] == [(c.status, c.failed) for c in fake.requests_to("Messages")]


async def test_call_create_sends_status_callback_events_as_a_repeated_key(
    fake: FakeTwilioApi, client: Client
) -> None:
    """calls.create_async gets a queued CA… call; StatusCallbackEvent arrives as a list of both values."""
    call = await client.calls.create_async(
        to="+4915112345678",
        from_="+4930123456",
        url="https://x.example/twilio/voice?survey=1",
        machine_detection="Enable",
        status_callback="https://x.example/twilio/call-status?survey=1",
        status_callback_event=["initiated", "completed"],
    )

    assert call.sid is not None
    assert ("CA", 34, "queued", None) == (call.sid[:2], len(call.sid), call.status, call.answered_by)
    [made] = fake.calls_made()
    assert {
        "To": "+4915112345678",
        "From": "+4930123456",
        "Url": "https://x.example/twilio/voice?survey=1",
        "MachineDetection": "Enable",
        "StatusCallback": "https://x.example/twilio/call-status?survey=1",
        "StatusCallbackEvent": ["initiated", "completed"],
    } == made.params
    assert call.sid == made.sid


async def test_missing_call_url_and_message_body_are_twilio_validation_errors(
    fake: FakeTwilioApi, client: Client
) -> None:
    """A call without Url or Twiml is 21205; a message without Body or media is 21602."""
    with pytest.raises(TwilioRestException) as no_url:
        await client.calls.create_async(to="+4915112345678", from_="+4930123456")
    with pytest.raises(TwilioRestException) as no_body:
        await client.messages.create_async(to="+4915112345678", from_="+4930123456")
    call = await client.calls.create_async(to="+4915112345678", from_="+4930123456", twiml="<Response/>")

    assert [(400, 21205), (400, 21602)] == [(e.value.status, e.value.code) for e in (no_url, no_body)]
    assert [] == fake.messages()
    assert [call.sid] == [c.sid for c in fake.calls_made()]


async def test_injected_failure_raises_once_and_only_successes_count_as_sent(
    fake: FakeTwilioApi, client: Client
) -> None:
    """fail_next answers one send with 21610; the next succeeds; messages() holds only that one."""
    fake.fail_next("Messages", code=21610)
    with pytest.raises(TwilioRestException) as raised:
        await client.messages.create_async(to="+4915112345678", from_="+4930123456", body="Hallo")
    message = await client.messages.create_async(to="+4915112345678", from_="+4930123456", body="Hallo")

    assert (400, 21610) == (raised.value.status, raised.value.code)
    assert "Unable to create record: Attempt to send to unsubscribed recipient" == raised.value.msg
    assert [message.sid] == [c.sid for c in fake.messages()]
    assert [(400, None, True), (201, message.sid, False)] == [
        (c.status, c.sid, c.failed) for c in fake.requests_to("Messages")
    ]


async def test_injected_429_carries_retry_after(fake: FakeTwilioApi) -> None:
    """An injected 429 answers status 429 / code 20429 with a Retry-After header, like Twilio."""
    fake.fail_next("Messages", status=429, code=20429, retry_after=1)
    async with httpx.AsyncClient(base_url=fake.base_url) as plain:
        response = await plain.post(
            f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Messages.json",
            data={"To": "+4915112345678", "From": "+4930123456", "Body": "Hallo"},
            auth=(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN),
        )
    assert (429, "1") == (response.status_code, response.headers["Retry-After"])
    assert {
        "code": 20429,
        "message": "Too Many Requests",
        "more_info": "https://www.twilio.com/docs/errors/20429",
        "status": 429,
    } == response.json()
    assert [] == fake.messages()


async def test_routed_client_waits_out_a_429_and_sends_again(fake: FakeTwilioApi, client: Client) -> None:
    """Afterword's HTTP client waits Retry-After after a 429 and sends again: the message goes out."""
    fake.fail_next("Messages", status=429, code=20429, retry_after=1)
    sent = await client.messages.create_async(to="+4915112345678", from_="+4930123456", body="Hallo")
    assert ([429, 201], sent.sid) == (
        [c.status for c in fake.requests_to("Messages")],
        fake.messages()[0].sid,
    )


async def test_routed_client_gives_up_after_four_429s(fake: FakeTwilioApi, client: Client) -> None:
    """Four 429s in a row surface as TwilioRestException 429 / 20429, for the caller to retry later."""
    fake.fail_next("Messages", status=429, code=20429, retry_after=0, times=4)
    with pytest.raises(TwilioRestException) as raised:
        await client.messages.create_async(to="+4915112345678", from_="+4930123456", body="Hallo")
    assert (429, 20429, 4) == (raised.value.status, raised.value.code, len(fake.requests_to("Messages")))


async def test_wrong_auth_token_is_error_20003(fake: FakeTwilioApi, http_client: RoutedHttpClient) -> None:
    """A wrong auth token is a 401 with code 20003, recorded as failed, and leaves a pending failure alone."""
    fake.fail_next("Messages", code=21610)
    wrong = Client(fake.account_sid, "not-the-token", http_client=http_client)
    with pytest.raises(TwilioRestException) as raised:
        await wrong.messages.create_async(to="+4915112345678", from_="+4930123456", body="Hallo")

    assert (401, 20003) == (raised.value.status, raised.value.code)
    assert [("Messages", 401, True)] == [(c.resource, c.status, c.failed) for c in fake.calls]


async def test_whatsapp_addresses_pass_through_unchanged(fake: FakeTwilioApi, client: Client) -> None:
    """whatsapp: addresses and a non-ASCII body reach the fake and come back as they were sent."""
    message = await client.messages.create_async(
        to="whatsapp:+4915112345678", from_="whatsapp:+4930123456", body="Wie war es? Grüße 👋"
    )

    assert ("whatsapp:+4915112345678", "whatsapp:+4930123456", "Wie war es? Grüße 👋") == (
        message.to,
        message.from_,
        message.body,
    )
    [sent] = fake.messages()
    assert {
        "To": "whatsapp:+4915112345678",
        "From": "whatsapp:+4930123456",
        "Body": "Wie war es? Grüße 👋",
    } == sent.params


async def test_unknown_paths_are_404_with_code_20404(fake: FakeTwilioApi) -> None:
    """A resource the fake does not serve answers like Twilio: 404, code 20404, recorded as failed."""
    path = f"/2010-04-01/Accounts/{DEFAULT_ACCOUNT_SID}/Recordings.json"
    async with httpx.AsyncClient(base_url=fake.base_url) as plain:
        response = await plain.post(path, data={"To": "+49"}, auth=(DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN))

    assert (404, 20404) == (response.status_code, response.json()["code"])
    assert f"The requested resource {path} was not found" == response.json()["message"]
    assert [("Recordings", 404, True)] == [(c.resource, c.status, c.failed) for c in fake.calls]


async def test_wait_for_names_the_requests_it_saw_when_it_times_out(
    fake: FakeTwilioApi, client: Client
) -> None:
    """wait_for returns once the sends arrived and otherwise fails listing what did arrive."""
    await client.messages.create_async(to="+4915112345678", from_="+4930123456", body="Hallo")

    assert 1 == len(await fake.wait_for("Messages"))
    with pytest.raises(AssertionError, match=r"\['Messages \(201\)'\]"):
        await fake.wait_for("Calls", timeout=0.1)


def test_stop_ends_the_server_thread() -> None:
    """Leaving the with block stops the server and its thread."""
    # Other tests' servers may still be ending on their own (their fixtures do not wait).
    before = set(threading.enumerate())
    with FakeTwilioApi():
        started = [t for t in threading.enumerate() if t not in before]

    assert (["fake-twilio-api"], [False]) == ([t.name for t in started], [t.is_alive() for t in started])
