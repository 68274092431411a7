"""The process's logging: one stderr handler, and no secret or phone number in any line it writes.

Libraries log secrets without meaning to: httpx logs every Bot API call as
``POST https://api.telegram.org/bot<TOKEN>/sendMessage`` at INFO, python-telegram-bot logs
whole updates (``/start <survey token>``) at DEBUG, uvicorn's access log has ``GET /s/<token>``,
and a traceback may quote any of them. So every handler of the root and uvicorn loggers gets
two guards, and each removes the bot token, the Twilio auth token, every other secret
setting, survey tokens in links, and raw phone numbers (masked as ``+49151****678``):

* ``Redact``, a filter, cleans the record itself before any formatter sees it: the message,
  its arguments, and the exception and stack text, which it renders once and caches in
  ``record.exc_text`` (``Formatter.format`` reuses a cached ``exc_text``). So a handler
  that sees the record after ours, such as one a test or an error tracker adds, gets it clean.
* ``RedactingFormatter`` wraps the handler's own formatter (uvicorn keeps its colours and its
  access-log fields) and redacts the finished line. A filter alone is not enough: it sees the
  record before formatting, and a formatter may add text from elsewhere (a record attribute,
  ``formatException`` of its own). The formatter alone is not enough either: it would leave
  the raw ``exc_text`` cached on the record for every later handler.

The database libraries (``DATABASE_LOGGERS``) stay at WARNING even with ``LOG_LEVEL=DEBUG``:
their debug lines carry the query parameters, and a survey token there has no link around it.
python-telegram-bot (``PERSONAL_LOGGERS``) stays at INFO: at DEBUG it logs every update and every
Bot API call whole, with the customer's chat id, name and message text (a comment), which no
pattern can tell from other text and which an erasure could not reach in the log files.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable
from types import TracebackType
from typing import TextIO

from pydantic import SecretStr

from bot.phones import mask_text
from bot.settings import Settings

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HIDDEN = "[secret]"
# The loggers that uvicorn sets up with handlers of their own (they do not all propagate).
_UVICORN = ("uvicorn", "uvicorn.error", "uvicorn.access")
# Their DEBUG lines are the database traffic with its parameters: survey tokens (which no
# pattern can tell from other text), answers, comments. They never log below WARNING.
DATABASE_LOGGERS = ("sqlalchemy.engine", "sqlalchemy.pool", "aiosqlite", "asyncpg")
# Their DEBUG lines are whole updates and API calls: chat ids, names, what customers wrote.
PERSONAL_LOGGERS = ("telegram",)
# twilio's HTTP clients log every REST request at INFO in ten lines (URL, each header, status,
# response headers), each through the redaction above: most of the log work of a send (issue 20).
# Our own line per send says what was sent; at LOG_LEVEL=DEBUG theirs come back.
CHATTY_LOGGERS = ("twilio.http_client", "twilio.async_http_client")
# A secret shorter than this is not looked for: replacing "a" everywhere would garble the log.
_MIN_SECRET = 6

# Any Telegram bot token after "bot" in a URL: <bot id>:<35 characters>, whichever bot it is.
_BOT_TOKEN = re.compile(r"bot\d+:[A-Za-z0-9_-]{35}")
# A survey token in its links: /s/<token> (web), ?start=<token> (Telegram deep link), and
# "/start <token>" (the message the deep link makes, as python-telegram-bot logs the update).
_SURVEY_LINK = re.compile(r"(/s/|\bstart=|/start )[A-Za-z0-9_-]+")
# The person in an export or erasure request's path (GET/DELETE /api/contacts/<address>): a
# Telegram chat id or an e-mail address, which the phone pattern does not catch.
_CONTACT_PATH = re.compile(r"(/api/contacts/)[^\s?\"']+")
# HTTP Basic credentials (Twilio's account SID : auth token) if a client logs its headers.
_BASIC_AUTH = re.compile(r"(Basic )[A-Za-z0-9+/=]{8,}")
# Our API keys (bot.apikeys: "aw_" and 43 URL-safe characters) and any Bearer credential.
_API_KEY = re.compile(r"(Bearer |\baw_)[A-Za-z0-9._~+/=-]{8,}")


def secrets_of(settings: Settings) -> list[str]:
    """The values of every secret setting (the bot token, the Twilio auth token, …), longest first."""
    found = [getattr(settings, name) for name in type(settings).model_fields]
    values = [v.get_secret_value() for v in found if isinstance(v, SecretStr)]
    values.append(settings.database.password or "")  # a DATABASE_URL may carry one
    return sorted({v for v in values if len(v) >= _MIN_SECRET}, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secrets, bot tokens, survey tokens in links and raw phone numbers."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, HIDDEN)
    text = _BOT_TOKEN.sub(f"bot{HIDDEN}", text)
    text = _BASIC_AUTH.sub(rf"\g<1>{HIDDEN}", text)
    text = _API_KEY.sub(rf"\g<1>{HIDDEN}", text)
    text = _SURVEY_LINK.sub(r"\g<1>…", text)
    text = _CONTACT_PATH.sub(r"\g<1>…", text)
    return mask_text(text)


class Redact(logging.Filter):
    """Removes secrets from a record's message, arguments, exception and stack text; drops nothing."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place.

        Text arguments are redacted one by one, so a formatter that reads ``record.args``
        itself (uvicorn's access log) still finds them. When a secret remains in the message
        (an argument that is no ``str``, such as httpx's ``URL``, or a secret that message and
        arguments form together), the record collapses into its redacted message.
        """
        self._clean_text(record)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True

    def _clean_text(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is logging's to report (handleError), not ours
            return
        if redact(message, self.secrets) == message:
            return
        if isinstance(record.args, tuple):
            record.args = tuple(self._clean(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: self._clean(v) for k, v in record.args.items()}
        if isinstance(record.msg, str):
            record.msg = redact(record.msg, self.secrets)
        try:
            still = record.getMessage()
        except (TypeError, ValueError):  # a redacted argument no longer fits its %-format
            still = message
        if redact(still, self.secrets) != still:
            record.msg, record.args = redact(message, self.secrets), None

    def _clean(self, value: object) -> object:
        return redact(value, self.secrets) if isinstance(value, str) else value


class RedactingFormatter(logging.Formatter):
    """Formats with the handler's own formatter, then redacts the finished line."""

    def __init__(self, inner: logging.Formatter | None, secrets: Iterable[str] = ()) -> None:
        super().__init__(FORMAT)
        self.inner = inner or logging.Formatter(FORMAT)
        self.secrets = tuple(secrets)

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record), self.secrets)

    def formatException(self, ei: _ExcInfo) -> str:
        return redact(self.inner.formatException(ei), self.secrets)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler install_logging adds to the root logger, known again on a second call.

    Without a stream of its own it writes to ``sys.stderr`` as it is at each record, like
    logging's last-resort handler, so a replaced stderr (a test runner's) is never written
    to after it was closed.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._own = stream

    @property
    def stream(self) -> TextIO:
        return self._own or sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        self._own = value


def install_logging(settings: Settings, stream: TextIO | None = None) -> logging.Handler:
    """Log at ``LOG_LEVEL`` to stderr (or ``stream``), and redact every handler of the root and
    uvicorn loggers; the handler it added.

    Call it after uvicorn configured its loggers (uvicorn.Config replaces their handlers).
    A second call replaces the first one's handler and secrets.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StderrHandler)]:
        root.removeHandler(old)
    handler = _StderrHandler(stream)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    library_levels(root.level)
    protect(secrets_of(settings))
    return handler


def library_levels(level: int) -> None:
    """Keep the libraries whose detail is personal data above ``level``: the database libraries at
    WARNING, python-telegram-bot at INFO (see the module's docstring)."""
    for name in DATABASE_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, level))
    for name in PERSONAL_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, level))
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level if level <= logging.DEBUG else max(logging.WARNING, level))


def protect(secrets: Iterable[str]) -> None:
    """Put ``Redact`` and ``RedactingFormatter`` on every handler of the root and uvicorn loggers."""
    secrets = tuple(secrets)
    for name in ("", *_UVICORN):
        for handler in logging.getLogger(name).handlers:
            for old in [f for f in handler.filters if isinstance(f, Redact)]:
                handler.removeFilter(old)
            handler.addFilter(Redact(secrets))
            inner = handler.formatter
            if isinstance(inner, RedactingFormatter):
                inner = inner.inner
            handler.setFormatter(RedactingFormatter(inner, secrets))
