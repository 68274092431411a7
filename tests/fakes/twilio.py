"""A fake Twilio REST API (Messages and Calls) served over real HTTP on 127.0.0.1.

The real ``twilio`` library talks to it through an ``AsyncTwilioHttpClient`` whose ``request()``
swaps the ``https://api.twilio.com`` prefix for :attr:`FakeTwilioApi.base_url`, so tests exercise
the library's request encoding, authentication and error mapping without touching the internet
and without mocking any library function: the HTTP boundary is the fake.

twilio 9 posts ``application/x-www-form-urlencoded`` bodies to
``/2010-04-01/Accounts/{AccountSid}/Messages.json`` and ``.../Calls.json`` with HTTP Basic auth
(account SID : auth token). Parameters keep Twilio's capitalised names (``To``, ``From``,
``StatusCallback``); a list parameter such as ``StatusCallbackEvent`` is sent as repeated keys,
which the fake records as a list. The fake answers like Twilio: 201 with the created resource, or
an error body ``{"code", "message", "more_info", "status"}`` that the library turns into a
``TwilioRestException`` carrying ``code`` and ``status``.

The server runs on its own event loop in a daemon thread, so it serves requests while the test's
loop awaits the library. Everything shared between the two threads is guarded by one lock.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.server import LocalServer

DEFAULT_ACCOUNT_SID = "AC" + "0" * 32  # shaped like a real SID: "AC" and 32 hex digits
DEFAULT_AUTH_TOKEN = "test-auth-token-0123456789abcdef"

_API_VERSION = "2010-04-01"
# Twilio picks a sender from the messaging service's pool when no From is given; the fake
# reports Twilio's magic test number instead, so "from" is never empty.
_MESSAGING_SERVICE_FROM = "+15005550006"
_RESOURCES = ("Messages", "Calls")
_SID_PREFIXES = {"Messages": "SM", "Calls": "CA"}
_DEFAULT_MESSAGES = {
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    21610: "Attempt to send to unsubscribed recipient",
}


@dataclass(frozen=True)
class Call:
    """One REST request the fake received."""

    resource: str  # "Messages" or "Calls"; for unknown paths the last path part without ".json"
    params: dict[str, Any]  # form fields; repeated keys -> list[str], single keys -> str
    status: int  # the HTTP status answered
    sid: str | None  # the created resource's sid; None when failed
    failed: bool = False  # True whenever the fake answered with an error


class _ApiError(Exception):
    """Raised by a handler to answer with Twilio's error body."""

    def __init__(self, status: int, code: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        body = {
            "code": self.code,
            "message": self.message,
            "more_info": f"https://www.twilio.com/docs/errors/{self.code}",
            "status": self.status,
        }
        headers: dict[str, str] = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'  # as Twilio sends it
        return JSONResponse(body, status_code=self.status, headers=headers)


@dataclass
class _Failure:
    status: int
    code: int
    message: str | None  # None: the default for the code, filled in per request
    retry_after: int | None
    remaining: int


def _default_message(code: int, params: dict[str, Any]) -> str:
    if code == 21211:
        return f"The 'To' number {params.get('To', '')} is not a valid phone number."
    return _DEFAULT_MESSAGES.get(code, f"Error {code}")


def _now() -> str:
    """The current time in RFC 2822 form, as Twilio's ``date_created`` (``… +0000``)."""
    return format_datetime(datetime.now(UTC).replace(microsecond=0))


def _new_sid(prefix: str) -> str:
    return prefix + uuid.uuid4().hex


class FakeTwilioApi(LocalServer):
    """A Twilio REST API server for tests; use as ``with FakeTwilioApi() as fake:``."""

    def __init__(self, account_sid: str = DEFAULT_ACCOUNT_SID, auth_token: str = DEFAULT_AUTH_TOKEN) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._failures: dict[str, _Failure] = {}
        app = Starlette(
            routes=[
                Route(
                    f"/{_API_VERSION}/Accounts/{{account_sid}}/{{rest:path}}",
                    self._endpoint,
                    methods=["GET", "POST", "DELETE"],
                ),
                # Anything else answers like Twilio does, with a JSON error body, so the library
                # raises a TwilioRestException with a code instead of failing to parse HTML.
                Route("/{path:path}", self._not_found, methods=["GET", "POST", "DELETE"]),
            ]
        )
        super().__init__(app, "fake-twilio-api")

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """What replaces ``https://api.twilio.com`` in the library's URLs; no trailing slash."""
        return self.origin

    # -- inspection and control from tests --------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every request received so far, in arrival order, failed ones included."""
        with self._lock:
            return list(self._calls)

    def requests_to(self, resource: str) -> list[Call]:
        """The requests to one resource ("Messages" or "Calls"), successful and failed."""
        return [call for call in self.calls if call.resource == resource]

    def messages(self) -> list[Call]:
        """The messages created, i.e. the successful Messages requests."""
        return self._successful("Messages")

    def calls_made(self) -> list[Call]:
        """The phone calls created, i.e. the successful Calls requests."""
        return self._successful("Calls")

    def fail_next(
        self,
        resource: str,
        *,
        status: int = 400,
        code: int = 21610,
        message: str | None = None,
        times: int = 1,
        retry_after: int | None = None,
    ) -> None:
        """Answer the next ``times`` requests to ``resource`` with a Twilio error.

        The body is ``{"code", "message", "more_info", "status"}``; ``message`` defaults to
        Twilio's text for the code. ``retry_after`` adds a ``Retry-After`` header (seconds).
        Requests with wrong credentials are rejected first and do not use up the failure.
        """
        if resource not in _RESOURCES:
            raise ValueError(f"resource must be one of {_RESOURCES}, not {resource!r}")
        with self._lock:
            self._failures[resource] = _Failure(status, code, message, retry_after, times)

    # The `timeout` parameter mirrors asyncio.wait_for; wrapping each call in asyncio.timeout
    # would be noisier in every test, hence the noqa.
    async def wait_for(self, resource: str, count: int = 1, timeout: float = 30.0) -> list[Call]:  # noqa: ASYNC109
        """Wait until at least ``count`` successful requests to ``resource`` arrived; return them."""
        deadline = time.monotonic() + timeout
        while True:
            done = self._successful(resource)
            if len(done) >= count:
                return done
            if time.monotonic() > deadline:
                seen = [f"{call.resource} ({call.status})" for call in self.calls]
                raise AssertionError(
                    f"expected {count} successful {resource} request(s) within {timeout}s, "
                    f"got {len(done)}; requests received: {seen}"
                )
            await asyncio.sleep(0.02)

    def reset(self) -> None:
        """Forget the recorded requests; pending injected failures stay."""
        with self._lock:
            self._calls.clear()

    def _successful(self, resource: str) -> list[Call]:
        return [call for call in self.requests_to(resource) if not call.failed]

    # -- HTTP --------------------------------------------------------------------------------

    async def _not_found(self, request: Request) -> JSONResponse:
        return _not_found_error(request).response()

    async def _endpoint(self, request: Request) -> JSONResponse:
        path_sid: str = request.path_params["account_sid"]
        rest: str = request.path_params["rest"]
        resource = rest.rsplit("/", 1)[-1].removesuffix(".json")
        params = await self._read_params(request)
        try:
            self._authenticate(request, path_sid)
            # Only the list endpoints the library posts to exist; ".../Messages/SM….json" and
            # the like are unknown here.
            if rest.removesuffix(".json") not in _RESOURCES:
                raise _not_found_error(request)
            if request.method != "POST":
                raise _ApiError(405, 20004, "Method not allowed")
            self._take_failure(resource, params)
            if resource == "Messages":
                body = self._create_message(path_sid, params)
            else:
                body = self._create_call(path_sid, params)
        except _ApiError as error:
            self._record(Call(resource, params, error.status, None, failed=True))
            return error.response()
        self._record(Call(resource, params, 201, body["sid"]))
        return JSONResponse(body, status_code=201)

    @staticmethod
    async def _read_params(request: Request) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            async with request.form() as form:
                # multi_items() keeps repeated keys, which is how list parameters arrive.
                for name, value in form.multi_items():
                    if not isinstance(value, str):
                        continue  # a urlencoded form holds no files; this only narrows the type
                    if name not in params:
                        params[name] = value
                    elif isinstance(params[name], list):
                        params[name].append(value)
                    else:
                        params[name] = [params[name], value]
        return params

    def _authenticate(self, request: Request, path_sid: str) -> None:
        """Check HTTP Basic auth the way Twilio does; raise 20003 unless it names this account."""
        user, password = "", ""
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            # Malformed credentials are simply wrong credentials.
            with contextlib.suppress(binascii.Error, UnicodeDecodeError):
                user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        if not (user == path_sid == self.account_sid and password == self.auth_token):
            raise _ApiError(401, 20003, "Authenticate")

    def _record(self, call: Call) -> None:
        with self._lock:
            self._calls.append(call)

    def _take_failure(self, resource: str, params: dict[str, Any]) -> None:
        with self._lock:
            failure = self._failures.get(resource)
            if failure is None:
                return
            failure.remaining -= 1
            if failure.remaining <= 0:
                del self._failures[resource]
        message = failure.message or _default_message(failure.code, params)
        raise _ApiError(failure.status, failure.code, message, failure.retry_after)

    # -- resources (each returns the created resource's JSON) --------------------------------

    def _resource_base(self, account_sid: str, resource: str) -> tuple[str, dict[str, Any]]:
        sid = _new_sid(_SID_PREFIXES[resource])
        now = _now()
        base: dict[str, Any] = {
            "sid": sid,
            "account_sid": account_sid,
            "api_version": _API_VERSION,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "status": "queued",
            "price": None,
            "price_unit": "USD",
            "uri": f"/{_API_VERSION}/Accounts/{account_sid}/{resource}/{sid}.json",
        }
        return sid, base

    def _create_message(self, account_sid: str, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("To"):
            raise _ApiError(400, 21604, "A 'To' phone number is required.")
        if not params.get("From") and not params.get("MessagingServiceSid"):
            raise _ApiError(400, 21603, "A 'From' phone number is required.")
        media = params.get("MediaUrl")
        media_urls = media if isinstance(media, list) else [media] if media else []
        if not params.get("Body") and not media_urls and not params.get("ContentSid"):
            raise _ApiError(400, 21602, "Message body is required.")
        sid, message = self._resource_base(account_sid, "Messages")
        return {
            **message,
            "to": params["To"],
            "from": params.get("From") or _MESSAGING_SERVICE_FROM,
            "messaging_service_sid": params.get("MessagingServiceSid"),
            "body": params.get("Body", ""),
            "num_segments": "1",
            "num_media": str(len(media_urls)),
            "date_sent": None,
            "error_code": None,
            "error_message": None,
            "subresource_uris": {
                "media": f"/{_API_VERSION}/Accounts/{account_sid}/Messages/{sid}/Media.json",
                "feedback": f"/{_API_VERSION}/Accounts/{account_sid}/Messages/{sid}/Feedback.json",
            },
        }

    def _create_call(self, account_sid: str, params: dict[str, Any]) -> dict[str, Any]:
        if not params.get("To"):
            raise _ApiError(400, 21201, "No 'To' number is specified")
        if not params.get("From"):
            raise _ApiError(400, 21213, "No 'From' number is specified")
        if not (params.get("Url") or params.get("Twiml") or params.get("ApplicationSid")):
            raise _ApiError(400, 21205, "Url parameter is required.")
        sid, call = self._resource_base(account_sid, "Calls")
        return {
            **call,
            "to": params["To"],
            "to_formatted": params["To"],
            "from": params["From"],
            "from_formatted": params["From"],
            "answered_by": None,
            "caller_name": None,
            "duration": None,
            "start_time": None,
            "end_time": None,
            "forwarded_from": None,
            "group_sid": None,
            "parent_call_sid": None,
            "phone_number_sid": None,
            "queue_time": "0",
            "trunk_sid": None,
            "subresource_uris": {
                "recordings": f"/{_API_VERSION}/Accounts/{account_sid}/Calls/{sid}/Recordings.json",
                "notifications": f"/{_API_VERSION}/Accounts/{account_sid}/Calls/{sid}/Notifications.json",
            },
        }


def _not_found_error(request: Request) -> _ApiError:
    return _ApiError(404, 20404, f"The requested resource {request.url.path} was not found")
