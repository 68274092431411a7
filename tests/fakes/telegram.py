"""A fake Telegram Bot API served over real HTTP on 127.0.0.1.

The real python-telegram-bot library talks to it through its ``base_url`` option, so tests
exercise the library's request encoding, error mapping and rate limiting without touching the
internet and without mocking any library function: the HTTP boundary is the fake.

python-telegram-bot posts every call to ``{base_url}{token}/{method}`` as
``application/x-www-form-urlencoded`` (``multipart/form-data`` when a file is uploaded), with
strings sent as they are and every other value JSON-encoded. The fake decodes the parameters the
tests look at back into ints and JSON objects, records each call, and answers the way Telegram
does: ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": ..., "description": ...}``.

The server runs on its own event loop in a daemon thread, so it serves requests while the test's
loop awaits the library. Everything shared between the two threads is guarded by one lock.

``limit_rate(30)`` makes it enforce Telegram's broadcast limit of about 30 messages per second
(https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this) as a strict
sliding window, so a client that bursts gets the 429 Telegram would send.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import json
import math
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.fakes.server import LocalServer

DEFAULT_TOKEN = "123456:TEST-TOKEN"
_DEFAULT_BOT_USERNAME = "afterword_test_bot"
_BOT_FIRST_NAME = "Afterword"

# Parameters Telegram defines as integers; PTB sends them JSON-encoded, i.e. as "42".
_INT_PARAMS = frozenset({"chat_id", "message_id", "user_id", "from_chat_id", "offset", "limit", "timeout"})
# Parameters whose value is a JSON object or array.
_JSON_PARAMS = frozenset(
    {
        "reply_markup",
        "allowed_updates",
        "entities",
        "caption_entities",
        "reply_parameters",
        "link_preview_options",
    }
)
_DEFAULT_DESCRIPTIONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden: bot was blocked by the user",
    404: "Not Found",
    409: "Conflict",
    500: "Internal Server Error",
    502: "Bad Gateway",
}
# getUpdates long-polls at most this long, so a test never waits on a slow poll.
_MAX_LONG_POLL = 1.0
_POLL_STEP = 0.02
# Every Bot API method that sends a new message starts with "send" (sendMessage, sendPhoto, …);
# these are the calls Telegram's messages-per-second limit counts.
_SEND_PREFIX = "send"


@dataclass(frozen=True)
class Call:
    """One request the fake received."""

    method: str  # as in the URL, e.g. "sendMessage"
    params: dict[str, Any]  # decoded; uploaded files are bytes
    failed: bool = False  # True whenever the fake answered {"ok": false}


class _ApiError(Exception):
    """Raised by a method handler to answer with an error."""

    def __init__(self, error_code: int, description: str, parameters: dict[str, Any] | None = None) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.parameters = parameters

    def response(self) -> JSONResponse:
        body: dict[str, Any] = {"ok": False, "error_code": self.error_code, "description": self.description}
        if self.parameters:
            body["parameters"] = self.parameters
        return JSONResponse(body, status_code=self.error_code)


@dataclass
class _Failure:
    error_code: int
    description: str
    parameters: dict[str, Any] | None
    remaining: int


def _bot_user(bot_id: int, username: str) -> dict[str, Any]:
    return {"id": bot_id, "is_bot": True, "first_name": _BOT_FIRST_NAME, "username": username}


def _chat(chat_id: int, *, first_name: str = "Kim", username: str | None = None) -> dict[str, Any]:
    """A Chat object; negative ids are groups, and -100… ids supergroups, as in Telegram."""
    if chat_id > 0:
        chat: dict[str, Any] = {"id": chat_id, "type": "private", "first_name": first_name}
        if username is not None:
            chat["username"] = username
        return chat
    kind = "supergroup" if str(chat_id).startswith("-100") else "group"
    return {"id": chat_id, "type": kind, "title": f"Group {chat_id}"}


def _decode(name: str, value: Any) -> Any:
    """Undo PTB's JSON encoding for the parameters tests inspect; leave the rest as strings."""
    if not isinstance(value, str):  # already typed, e.g. from a JSON request body
        return value
    if name in _INT_PARAMS:
        try:
            return int(value)
        except ValueError:
            return value  # e.g. "@channelname" as chat_id
    if name in _JSON_PARAMS:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _inline_markup(params: dict[str, Any]) -> dict[str, Any] | None:
    """The markup Telegram echoes on a message: inline keyboards only."""
    markup = params.get("reply_markup")
    if isinstance(markup, dict) and "inline_keyboard" in markup:
        return markup
    return None


class FakeBotApi(LocalServer):
    """A Telegram Bot API server for tests; use as ``with FakeBotApi() as fake:``."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        bot_username: str = _DEFAULT_BOT_USERNAME,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` times message arrivals for limit_rate; a test may pass one it moves by hand."""
        self.token = token
        self._clock = clock
        self.bot_username = bot_username
        self.bot_id = int(token.split(":", 1)[0])
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._messages: dict[tuple[int, int], dict[str, Any]] = {}
        self._next_message_id: dict[int, int] = {}
        self._photo_count = 0
        self._rate: tuple[int, float] | None = None  # (messages, per seconds) once limit_rate is called
        self._arrivals: list[float] = []  # the clock's time of each delivered message, ascending
        self._too_many = 0
        self._failures: dict[str, _Failure] = {}
        self._answered_queries: set[str] = set()
        self._updates: list[dict[str, Any]] = []
        self._webhook_url = ""
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            name.lower(): handler
            for name, handler in {
                "getMe": self._get_me,
                "sendMessage": self._send_message,
                "sendPhoto": self._send_photo,
                "editMessageText": self._edit_message_text,
                "editMessageReplyMarkup": self._edit_message_reply_markup,
                "answerCallbackQuery": self._answer_callback_query,
                "setWebhook": self._set_webhook,
                "deleteWebhook": self._delete_webhook,
                "getWebhookInfo": self._get_webhook_info,
                "setMyCommands": self._true,
                "getUpdates": self._get_updates,
            }.items()
        }
        app = Starlette(
            routes=[
                Route("/bot{token}/{method}", self._endpoint, methods=["GET", "POST"]),
                # Anything else (e.g. a URL without the "bot" prefix) answers like Telegram does,
                # with JSON, so the library reports it instead of failing to parse HTML.
                Route("/{path:path}", self._not_found, methods=["GET", "POST"]),
            ]
        )
        super().__init__(app, "fake-telegram-bot-api")

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """The ``base_url`` to give python-telegram-bot; it appends the token itself."""
        return f"{self.origin}/bot"

    # -- inspection and control from tests --------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every call received so far, in arrival order, failed ones included."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        """The calls of one method, successful and failed."""
        wanted = method.lower()
        return [call for call in self.calls if call.method.lower() == wanted]

    def sent(self, method: str = "sendMessage") -> list[Call]:
        """The successful calls of one method."""
        return [call for call in self.calls_to(method) if not call.failed]

    def fail_next(
        self,
        method: str,
        *,
        error_code: int = 429,
        retry_after: int = 1,
        description: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with an error instead of a result.

        A 429 carries ``parameters.retry_after`` like Telegram's flood control, which PTB turns
        into ``RetryAfter``; other codes carry only the description.
        """
        parameters: dict[str, Any] | None = None
        if error_code == 429:
            description = description or f"Too Many Requests: retry after {retry_after}"
            parameters = {"retry_after": retry_after}
        else:
            description = description or _DEFAULT_DESCRIPTIONS.get(error_code, f"Error {error_code}")
        with self._lock:
            self._failures[method.lower()] = _Failure(error_code, description, parameters, times)

    def limit_rate(self, messages: int = 30, per: float = 1.0) -> None:
        """Refuse a message call with 429 once ``messages`` were delivered in the last ``per`` seconds.

        The window is half-open, (now - per, now], on the fake's clock (time.monotonic unless
        given) when the call arrives; refused calls do not count. Off until called.
        """
        with self._lock:
            self._rate = (messages, per)

    @property
    def too_many_requests(self) -> int:
        """How many calls were answered 429 Too Many Requests, injected or over the rate limit."""
        with self._lock:
            return self._too_many

    @property
    def message_arrivals(self) -> list[float]:
        """When each delivered message call arrived (on the fake's clock), oldest first."""
        with self._lock:
            return list(self._arrivals)

    def queue_update(self, update: dict[str, Any]) -> None:
        """Queue an update for ``getUpdates`` (long polling)."""
        with self._lock:
            self._updates.append(copy.deepcopy(update))

    def message(self, chat_id: int, message_id: int) -> dict[str, Any]:
        """The current state of a message the bot sent, after any edits."""
        with self._lock:
            try:
                return copy.deepcopy(self._messages[(chat_id, message_id)])
            except KeyError:
                raise KeyError(f"no message {message_id} was sent to chat {chat_id}") from None

    # The `timeout` parameter mirrors asyncio.wait_for; wrapping each call in asyncio.timeout
    # would be noisier in every test, hence the noqa.
    async def wait_for(self, method: str, count: int = 1, timeout: float = 30.0) -> list[Call]:  # noqa: ASYNC109
        """Wait until at least ``count`` successful calls of ``method`` arrived; return them."""
        deadline = time.monotonic() + timeout
        while True:
            done = self.sent(method)
            if len(done) >= count:
                return done
            if time.monotonic() > deadline:
                seen = [call.method + (" (failed)" if call.failed else "") for call in self.calls]
                raise AssertionError(
                    f"expected {count} successful {method} call(s) within {timeout}s, "
                    f"got {len(done)}; calls received: {seen}"
                )
            await asyncio.sleep(0.02)

    def reset(self) -> None:
        """Forget the recorded calls; sent messages, queued updates and failures stay."""
        with self._lock:
            self._calls.clear()

    # -- HTTP --------------------------------------------------------------------------------

    async def _not_found(self, request: Request) -> JSONResponse:
        return _ApiError(404, "Not Found").response()

    async def _endpoint(self, request: Request) -> JSONResponse:
        token: str = request.path_params["token"]
        method: str = request.path_params["method"]
        params = await self._read_params(request)
        handler = self._handlers.get(method.lower())
        arrived: float | None = None
        try:
            if token != self.token:
                raise _ApiError(401, "Unauthorized")
            if handler is None:
                raise _ApiError(404, "Not Found: method not found")
            arrived = self._admit(method)
            self._take_failure(method)
            result = await handler(params)
        except _ApiError as error:
            self._record(Call(method, params, failed=True), undo_arrival=arrived)
            if error.error_code == 429:
                with self._lock:
                    self._too_many += 1
            return error.response()
        self._record(Call(method, params))
        return JSONResponse({"ok": True, "result": result})

    @staticmethod
    async def _read_params(request: Request) -> dict[str, Any]:
        raw: dict[str, Any] = dict(request.query_params)
        if request.method == "POST":
            content_type = request.headers.get("content-type", "")
            if content_type.startswith("application/json"):
                body = await request.json()
                if isinstance(body, dict):
                    raw.update(body)
            elif content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
                async with request.form() as form:
                    for name, value in form.multi_items():
                        # Uploaded files are recorded as their bytes; the temp file is closed
                        # when the form is.
                        raw[name] = await value.read() if isinstance(value, UploadFile) else value
        return {name: _decode(name, value) for name, value in raw.items()}

    def _record(self, call: Call, undo_arrival: float | None = None) -> None:
        with self._lock:
            self._calls.append(call)
            if undo_arrival is not None:  # admitted, then failed: it was not delivered
                self._arrivals.remove(undo_arrival)

    def _admit(self, method: str) -> float | None:
        """Count a message call into the rate window, or refuse it; returns its arrival time."""
        if not method.lower().startswith(_SEND_PREFIX):
            return None
        with self._lock:
            now = self._clock()
            self._arrivals.append(now)  # taken under the lock, so the list stays sorted
            if self._rate is None:
                return now
            messages, per = self._rate
            in_window = len(self._arrivals) - 1 - bisect.bisect_right(self._arrivals, now - per)
            if in_window < messages:
                return now
            self._arrivals.pop()
        retry_after = max(1, math.ceil(per))
        raise _ApiError(429, f"Too Many Requests: retry after {retry_after}", {"retry_after": retry_after})

    def _take_failure(self, method: str) -> None:
        with self._lock:
            failure = self._failures.get(method.lower())
            if failure is None:
                return
            failure.remaining -= 1
            if failure.remaining <= 0:
                del self._failures[method.lower()]
        raise _ApiError(failure.error_code, failure.description, failure.parameters)

    # -- Bot API methods (each returns the "result") -----------------------------------------

    async def _true(self, params: dict[str, Any]) -> bool:
        return True

    async def _answer_callback_query(self, params: dict[str, Any]) -> bool:
        """As Telegram: a callback query is answered once; a second answer is refused with a 400."""
        query_id = str(params.get("callback_query_id"))
        with self._lock:
            if query_id in self._answered_queries:
                raise _ApiError(
                    400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
                )
            self._answered_queries.add(query_id)
        return True

    async def _get_me(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            **_bot_user(self.bot_id, self.bot_username),
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    def _new_message(self, params: dict[str, Any], content: dict[str, Any]) -> dict[str, Any]:
        """Store a message the bot sends to ``params["chat_id"]`` and return a copy of it."""
        chat_id = params.get("chat_id")
        if not isinstance(chat_id, int):
            raise _ApiError(400, "Bad Request: chat not found")
        message: dict[str, Any] = {
            "date": int(time.time()),
            "chat": _chat(chat_id),
            "from": _bot_user(self.bot_id, self.bot_username),
            **content,
        }
        markup = _inline_markup(params)
        if markup is not None:
            message["reply_markup"] = markup
        with self._lock:
            message_id = self._next_message_id.get(chat_id, 1)
            self._next_message_id[chat_id] = message_id + 1
            message = {"message_id": message_id, **message}
            self._messages[(chat_id, message_id)] = message
            return copy.deepcopy(message)

    async def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        text = params.get("text")
        if not text:
            raise _ApiError(400, "Bad Request: message text is empty")
        return self._new_message(params, {"text": text})

    async def _send_photo(self, params: dict[str, Any]) -> dict[str, Any]:
        photo = params.get("photo")
        if photo is None:
            raise _ApiError(400, "Bad Request: there is no photo in the request")
        with self._lock:
            self._photo_count += 1
            n = self._photo_count
        size: dict[str, Any] = {
            "file_id": f"photo-{n}",
            "file_unique_id": f"u{n}",
            "width": 800,
            "height": 450,
        }
        if isinstance(photo, bytes):
            size["file_size"] = len(photo)
        content: dict[str, Any] = {"photo": [size]}
        if params.get("caption"):
            content["caption"] = params["caption"]
        return self._new_message(params, content)

    def _edit(
        self, params: dict[str, Any], change: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any] | bool:
        if "inline_message_id" in params:
            return True  # Telegram answers True for inline messages, which the fake does not keep
        chat_id, message_id = params.get("chat_id"), params.get("message_id")
        with self._lock:
            message = None
            if isinstance(chat_id, int) and isinstance(message_id, int):
                message = self._messages.get((chat_id, message_id))
            if message is None:
                raise _ApiError(400, "Bad Request: message to edit not found")
            change(message)
            markup = _inline_markup(params)
            if markup is None:
                message.pop("reply_markup", None)
            else:
                message["reply_markup"] = markup
            message["edit_date"] = int(time.time())
            return copy.deepcopy(message)

    async def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        text = params.get("text")
        if not text:
            raise _ApiError(400, "Bad Request: message text is empty")
        return self._edit(params, lambda message: message.update(text=text))

    async def _edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any] | bool:
        return self._edit(params, lambda message: None)

    async def _set_webhook(self, params: dict[str, Any]) -> bool:
        with self._lock:
            self._webhook_url = str(params.get("url", ""))
        return True

    async def _delete_webhook(self, params: dict[str, Any]) -> bool:
        with self._lock:
            self._webhook_url = ""
        return True

    async def _get_webhook_info(self, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            url = self._webhook_url
        return {"url": url, "has_custom_certificate": False, "pending_update_count": 0}

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = params.get("offset")
        limit = params.get("limit")
        limit = limit if isinstance(limit, int) and limit > 0 else 100
        timeout = params.get("timeout")
        wait = min(float(timeout), _MAX_LONG_POLL) if isinstance(timeout, int) and timeout > 0 else 0.0
        deadline = time.monotonic() + wait
        while True:
            with self._lock:
                if isinstance(offset, int):
                    # Like Telegram, an offset confirms (drops) every update below it.
                    self._updates = [u for u in self._updates if u["update_id"] >= offset]
                if self._updates:
                    batch, self._updates = self._updates[:limit], self._updates[limit:]
                    return batch
            if time.monotonic() >= deadline or self.stopping.is_set():
                return []
            await asyncio.sleep(_POLL_STEP)


# -- update factories: dicts exactly as Telegram posts them to a webhook ---------------------


def _user(user_id: int, first_name: str, username: str | None, language_code: str | None) -> dict[str, Any]:
    user: dict[str, Any] = {"id": user_id, "is_bot": False, "first_name": first_name}
    if username is not None:
        user["username"] = username
    if language_code is not None:
        user["language_code"] = language_code
    return user


def _default_user_id(chat_id: int, user_id: int | None) -> int:
    if user_id is not None:
        return user_id
    if chat_id > 0:
        return chat_id  # in a private chat, the chat id is the user's id
    raise ValueError("a group chat needs an explicit user_id")


def message_update(
    update_id: int,
    chat_id: int,
    text: str,
    *,
    user_id: int | None = None,
    language_code: str | None = "de",
    first_name: str = "Kim",
    username: str | None = None,
    message_id: int = 1000,
) -> dict[str, Any]:
    """An update carrying a text message from a user; a leading "/word" is a bot command."""
    sender = _user(_default_user_id(chat_id, user_id), first_name, username, language_code)
    message: dict[str, Any] = {
        "message_id": message_id,
        "from": sender,
        "chat": _chat(chat_id, first_name=first_name, username=username),
        "date": int(time.time()),
        "text": text,
    }
    if text.startswith("/"):
        command = text.split(maxsplit=1)[0]
        # Telegram measures entities in UTF-16 code units.
        length = len(command.encode("utf-16-le")) // 2
        message["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
    return {"update_id": update_id, "message": message}


def callback_update(
    update_id: int,
    chat_id: int,
    message_id: int,
    data: str,
    *,
    user_id: int | None = None,
    language_code: str | None = "de",
    first_name: str = "Kim",
    query_id: str | None = None,
    message_text: str = "",
) -> dict[str, Any]:
    """An update carrying a press of an inline button under a message the bot sent."""
    bot_id = int(DEFAULT_TOKEN.split(":", 1)[0])
    return {
        "update_id": update_id,
        "callback_query": {
            "id": query_id or f"cq{update_id}",
            "from": _user(_default_user_id(chat_id, user_id), first_name, None, language_code),
            "chat_instance": "ci",
            "data": data,
            "message": {
                "message_id": message_id,
                "date": int(time.time()),
                "chat": _chat(chat_id, first_name=first_name),
                "from": _bot_user(bot_id, _DEFAULT_BOT_USERNAME),
                "text": message_text,
            },
        },
    }
