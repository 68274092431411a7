"""Phone numbers: normalised to E.164 with phonenumbers, and masked wherever they are logged
(``bot.logs`` masks them in every log line, with the other secrets)."""

from __future__ import annotations

import functools
import logging
import re

import phonenumbers
from phonenumbers import timezone as phone_timezone

from bot.errors import InvalidPhone

# A number as it may appear in a log line: + and 8 to 15 digits (E.164 allows 15).
_IN_TEXT = re.compile(r"\+\d{8,15}\b")


@functools.lru_cache(maxsize=4096)  # every answer by SMS or voice reads its sender again
def normalize(raw: str, default_region: str = "DE") -> str:
    """``raw`` as E.164 (+4915112345678); a national number is read in ``default_region``.

    InvalidPhone when it is not a possible, valid number.
    """
    text = raw.strip().removeprefix("whatsapp:")
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(raw, str(exc)) from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone(raw, "not a valid phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask(number: str) -> str:
    """A phone number fit for logs: the country and network prefix and the last three digits."""
    if len(number) < 10:
        return number[:3] + "****"
    return f"{number[:6]}****{number[-3:]}"


def mask_text(text: str) -> str:
    """``text`` with every phone number in it masked."""
    return _IN_TEXT.sub(lambda found: mask(found.group(0)), text)


def time_zone(number: str) -> str | None:
    """The time zone of an E.164 number when its prefix names exactly one."""
    try:
        zones = phone_timezone.time_zones_for_number(phonenumbers.parse(number))
    except phonenumbers.NumberParseException:
        return None
    return zones[0] if len(zones) == 1 and zones[0] != "Etc/Unknown" else None


class MaskPhones(logging.Filter):
    """Masks phone numbers in every log record that passes through the handler it is set on."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the message with numbers masked; never drops a record.

        Text arguments are masked in place, so a formatter that reads ``record.args`` itself
        (uvicorn's access log) still finds them; only a number that arguments and message
        form together collapses the record into its masked message.
        """
        message = record.getMessage()
        if mask_text(message) == message:
            return True
        if isinstance(record.args, tuple):
            record.args = tuple(mask_text(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = mask_text(record.msg)
        if _IN_TEXT.search(record.getMessage()):
            record.msg, record.args = mask_text(message), None
        return True
