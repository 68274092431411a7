"""Errors of the service; the CLI, the web app and the channels turn them into responses.

Also the one check of text that no column can hold, which every edge applies to what it takes in.
"""

from __future__ import annotations

import re


class AfterwordError(Exception):
    """Base of every error the service raises on purpose."""

    exit_code = 1
    # The HTTP status the web app answers when a route lets this error escape (bot.web.app):
    # 4xx names what the request got wrong; 5xx is ours, and a provider sends its request again.
    http_status = 500


class ConfigError(AfterwordError):
    """A setting is missing or malformed; ``key`` names it."""

    exit_code = 2

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")


class DatabaseUnavailable(AfterwordError):
    """The database cannot be reached or opened."""

    http_status = 503

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the database at {url}: {reason}")


class SchemaOutdated(AfterwordError):
    """The database schema is not at the revision this version of Afterword needs."""

    http_status = 503

    def __init__(self, url: str, current: str | None, head: str) -> None:
        self.url = url
        self.current = current
        self.head = head
        at = current or "an empty schema"
        super().__init__(
            f"the database at {url} is at {at}, this Afterword needs {head}: run `afterword db upgrade`"
        )


class ChannelUnavailable(AfterwordError):
    """A channel's provider cannot be used right now (refused token, unreachable API)."""

    http_status = 503

    def __init__(self, channel: str, reason: str) -> None:
        self.channel = channel
        self.reason = reason
        super().__init__(f"{channel}: {reason}")


class DeliveryFailed(AfterwordError):
    """A provider refused a message or call, so nothing of it reached the customer.

    Classified where the provider's error is read (each channel): ``permanent`` when it will
    never take it (the customer blocked the bot, an invalid or unreachable number, any other
    refusal of the request itself), so the delivery ends at once with this error as its
    reason; otherwise it may work later (a 429, a 5xx, a handset switched off): after
    ``retry_after`` seconds when the provider said how long, else after the scheduler's
    back-off, until its attempts run out.
    """

    def __init__(
        self,
        channel: str,
        code: int | None,
        message: str,
        *,
        permanent: bool,
        retry_after: float | None = None,
    ) -> None:
        self.channel = channel
        self.code = code
        self.message = message
        self.permanent = permanent
        self.retry_after = retry_after
        super().__init__(f"{channel}: {message}" + (f" (code {code})" if code else ""))


class InvalidPhone(AfterwordError):
    """A phone number that cannot be read as a valid number."""

    exit_code = 2
    http_status = 422

    def __init__(self, raw: str, reason: str) -> None:
        self.raw = raw
        self.reason = reason
        super().__init__(f"{raw!r} is not a phone number we can reach: {reason}")


class SurveyError(AfterwordError):
    """A survey cannot be created or continued as asked."""

    http_status = 422


class ContactOptedOut(SurveyError):
    """The contact asked not to be surveyed again."""

    http_status = 409  # not bad input: the same request works once the contact opts in again

    def __init__(self, channel: str, address: str) -> None:
        self.channel = channel
        self.address = address
        super().__init__(f"the {channel} contact has opted out of surveys")


class InputError(AfterwordError):
    """A value the user gave is not allowed; ``field`` names it, ``message`` says what is."""

    exit_code = 2
    http_status = 422

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ReportError(InputError):
    """A report parameter is not allowed."""


class TriggerError(InputError):
    """A trigger request that cannot become a survey (API 422, CLI exit 2)."""


class OpenSurveysFull(TriggerError):
    """The contact already has MAX_OPEN_SURVEYS_PER_ADDRESS open surveys (API and hooks 409, CLI exit 1).

    Not bad input: the same request succeeds once one of them is answered, expires or is closed.
    """

    exit_code = 1
    http_status = 409

    def __init__(self, channel: str, limit: int) -> None:
        self.channel = channel
        self.limit = limit
        super().__init__(
            "to",
            f"this {channel} recipient already has {limit} open survey(s), the most "
            "MAX_OPEN_SURVEYS_PER_ADDRESS allows; another can be sent once one is answered or expires",
        )


class ApiKeyError(InputError):
    """An API key cannot be created or revoked as asked."""


class ImportFailed(AfterwordError):
    """The file cannot be imported as it is; nothing of it was stored."""

    http_status = 422

    def __init__(self, path: str, problems: list[str], total: int) -> None:
        self.path = path
        self.problems = problems
        self.total = total
        more = f"\n… and {total - len(problems)} more" if total > len(problems) else ""
        super().__init__(
            f"{path}: {total} bad row(s), nothing imported (use --skip-bad to import the good rows):\n"
            + "\n".join(problems)
            + more
        )


class ImportFileUnreadable(AfterwordError):
    """The import file as a whole cannot be read (missing, encoding, header); --skip-bad cannot help."""

    http_status = 422

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class InboundFailed(AfterwordError):
    """A provider's request (a Telegram update) failed for a reason of ours, not of the request.

    Answered 500, so that the provider sends it again; the error that stopped it is the cause.
    An event is recorded (bot.inbound) in the transaction that does its work, so work that
    failed left no record, and the request sent again does it instead of being dropped.
    """

    def __init__(self, provider: str, event_id: str) -> None:
        self.provider = provider
        self.event_id = event_id
        super().__init__(f"{provider} event {event_id} failed; the provider will send it again")


# What no column should hold: NUL (PostgreSQL refuses it in text), the other C0 controls but
# tab and line breaks (nobody types them), DEL, and lone surrogates (JSON's "\ud800" escape makes
# them; they are not Unicode, and neither a database driver nor a JSON response can encode them).
_UNFIT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def unfit_text(value: str) -> str | None:
    """Why ``value`` cannot be stored or shown as text (a NUL, a control character, a lone surrogate); None if it can."""
    found = _UNFIT.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "contains a NUL character (\\x00); text may not"
    if "\ud800" <= char <= "\udfff":
        return f"contains a lone surrogate ({ascii(char)[1:-1]}), which is not Unicode text"
    return f"contains the control character {ascii(char)[1:-1]}; only tab and line breaks are allowed"


def clean_text(value: str) -> str:
    """``value`` without the characters unfit_text refuses: what a customer typed, kept as far as it can be."""
    return _UNFIT.sub("", value)
