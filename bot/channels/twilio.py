"""What the SMS, WhatsApp and voice channels share: the Twilio account, its REST client and
the webhook signature check.

Every Twilio webhook carries ``X-Twilio-Signature``, an HMAC over the URL Twilio called and
the posted parameters. The URL is rebuilt from PUBLIC_BASE_URL, never from the request's
Host header, so the check holds behind a reverse proxy and cannot be steered by a client.
A signed form is then checked field by field (400 naming the field) before anything reads it:
a replayed or hand-made request may be signed, but not every signed value fits a column.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import logging
import re
from typing import Any
from urllib.parse import urlencode

from fastapi import HTTPException, Request
from starlette.datastructures import FormData
from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from bot.channels.base import AddressRefused
from bot.errors import ConfigError, DeliveryFailed, InvalidPhone, unfit_text
from bot.phones import mask_text, normalize
from bot.settings import Settings

log = logging.getLogger(__name__)

PROVIDER = "twilio"
SIGNATURE_HEADER = "X-Twilio-Signature"
OPTED_OUT = 21610  # Twilio: "Attempt to send to unsubscribed recipient"
RATE_LIMITED = 429
_RETRIES_429 = 3  # a 429 is waited out (Retry-After, else 1, 2, 4 s) this many times
_LONGEST_WAIT = 10.0
_TWILIO_HOST = re.compile(r"^https://[a-z0-9.-]*\.twilio\.com")
_REST_TIMEOUT = 10.0  # seconds; a start must not hang a worker
# The fields the routes read, each at most what its column holds (contacts.address is 255; an
# event id is built from a sid), or what Twilio sends: a WhatsApp body has up to 4,096 characters.
SID = re.compile(r"[A-Za-z0-9]{1,64}")
_SIDS = ("MessageSid", "SmsSid", "CallSid", "AccountSid")
_LONGEST = {
    "From": 255,
    "To": 255,
    "Body": 4096,
    "SpeechResult": 4096,
    "Digits": 64,
    "MessageStatus": 32,
    "CallStatus": 32,
    "AnsweredBy": 32,
    "ErrorCode": 16,
}


class RoutedHttpClient(AsyncTwilioHttpClient):
    """Twilio's async HTTP client, sent to TWILIO_API_BASE_URL when set, waiting out a 429."""

    def __init__(self, base_url: str | None) -> None:
        super().__init__(timeout=_REST_TIMEOUT)
        self.base_url = base_url

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the signature is Twilio's
        allow_redirects: bool = False,
    ) -> Response:
        """Send the request (to the configured host); on 429 wait and send it again."""
        if self.base_url:
            url = _TWILIO_HOST.sub(self.base_url, url)
        if auth is not None:
            # aiohttp 3.14 deprecates the BasicAuth object twilio would build; the header is the same.
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
            auth = None
        attempt = 0
        while True:
            response: Response = await super().request(
                method, url, params, data, headers, auth, timeout, allow_redirects
            )
            if response.status_code != RATE_LIMITED or attempt >= _RETRIES_429:
                return response
            wait = _retry_after(response)
            wait = float(2**attempt) if wait is None else wait
            log.info("Twilio answered 429; sending again in %.1f s", wait)
            await asyncio.sleep(min(wait, _LONGEST_WAIT))
            attempt += 1


def _retry_after(response: Response) -> float | None:
    headers = response.headers or {}
    raw = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


class TwilioAccount:
    """The account's REST client and request validator, opened once per process."""

    def __init__(self, settings: Settings) -> None:
        if settings.twilio_account_sid is None or settings.twilio_auth_token is None:
            raise ConfigError("TWILIO_ACCOUNT_SID", "not set; the Twilio channels are off")
        if settings.public_base_url is None:
            raise ConfigError(
                "PUBLIC_BASE_URL", "required with Twilio: webhooks are signed over this address"
            )
        token = settings.twilio_auth_token.get_secret_value()
        self.settings = settings
        self.public_base_url = settings.public_base_url
        self.http = RoutedHttpClient(settings.twilio_api_base_url)
        self.client = Client(settings.twilio_account_sid, token, http_client=self.http)
        self.validator = RequestValidator(token)

    def url(self, path: str, **query: object) -> str:
        """The public URL of one of our webhooks, with its query."""
        suffix = f"?{urlencode({k: v for k, v in query.items() if v is not None})}" if query else ""
        return f"{self.public_base_url}{path}{suffix}"

    def is_signed(self, request: Request, form: FormData) -> bool:
        """Whether ``X-Twilio-Signature`` matches PUBLIC_BASE_URL + path + query and the form."""
        query = f"?{request.url.query}" if request.url.query else ""
        url = f"{self.public_base_url}{request.url.path}{query}"
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not signature:
            return False
        # The URL as configured first: one HMAC. twilio's validate() computes two (with and
        # without a port) and parses the URL, for every request; it stays the fallback, so a
        # signature over the other form still passes (issue 20: 5 % of an answer's CPU).
        if hmac.compare_digest(self.validator.compute_signature(url, form), signature):
            return True
        return bool(self.validator.validate(url, form, signature))

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.http.close()


async def signed_form(request: Request) -> FormData:
    """The posted form of a Twilio webhook; 404 when Twilio is off, 403 unless signed."""
    account: TwilioAccount | None = getattr(request.app.state, "twilio", None)
    if account is None:
        raise HTTPException(404, "the Twilio channels are off")
    form = await request.form()
    if not account.is_signed(request, form):
        raise HTTPException(403, "invalid or missing X-Twilio-Signature")
    _check_fields(form)
    return form


def _check_fields(form: FormData) -> None:
    """400 naming the first field we read that no column could hold; free text is cleaned later."""
    for key in _SIDS:
        value = form_text(form, key)
        if value and not SID.fullmatch(value):
            raise HTTPException(
                400, {"field": key, "message": "not a Twilio sid (1 to 64 letters and digits)"}
            )
    for key, longest in _LONGEST.items():
        value = form_text(form, key)
        if len(value) > longest:
            raise HTTPException(400, {"field": key, "message": f"longer than {longest} characters"})
        # Body and SpeechResult are what a customer said: handle() stores them without such characters.
        problem = None if key in ("Body", "SpeechResult") else unfit_text(value)
        if problem is not None:
            raise HTTPException(400, {"field": key, "message": problem})


def delivery_failed(channel: str, exc: TwilioRestException) -> DeliveryFailed:
    """A Twilio REST error as DeliveryFailed: a 429 or a 5xx may work later, any other refusal never.

    Twilio answers 4xx for a request it will not carry out as it is: 21211 (the 'To' number is
    invalid), 21614 (not a mobile number), 21408 (no permission for the region), 21610 (the
    recipient unsubscribed, which the SMS channel records as an opt-out before this). A 429
    reaches here only after ``RoutedHttpClient`` waited out its Retry-After; a 5xx is Twilio's
    own trouble ("try again a few times with exponential back-off", error 20503), so both are
    retried with the scheduler's back-off.
    """
    transient = exc.status == RATE_LIMITED or exc.status >= 500
    # Twilio's text names the number ("The 'To' number +49… is not valid"); it becomes the
    # survey's closed_reason, shown by the API, and a log line: masked like every number we show.
    return DeliveryFailed(channel, exc.code, mask_text(str(exc.msg)), permanent=not transient)


def form_text(form: FormData, key: str) -> str:
    """One form field as text ('' when missing)."""
    value: Any = form.get(key)
    return value if isinstance(value, str) else ""


def phone_address(channel: str, to: str | None, settings: Settings) -> str:
    """``to`` in E.164 for a phone channel; AddressRefused saying what is allowed."""
    if not to:
        raise AddressRefused(f"the {channel} channel needs a phone number in E.164 form (+49…)")
    try:
        return normalize(to, settings.phone_region)
    except InvalidPhone as exc:
        raise AddressRefused(str(exc)) from exc
