"""Helpdesk webhooks: a "ticket solved" payload from Zendesk, Freshdesk or anything else, as a HookTicket.

Pure: the routes parse the JSON body and pass it here; a payload we cannot use raises
HookError naming the JSON path at fault (the route answers 422 with it), and a ticket that
is not solved yet gives None (the route answers 200 "ignored"). Every field we read is
checked here: at most MAX_FIELD characters, and no character a column cannot hold.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.errors import InputError, unfit_text

# The trigger body an admin pastes into Zendesk ("Ticket status changed to Solved → notify webhook").
ZENDESK_BODY = """\
{
  "ticket": {
    "id": "{{ticket.id}}",
    "status": "{{ticket.status}}",
    "requester": {
      "name": "{{ticket.requester.name}}",
      "phone": "{{ticket.requester.phone}}",
      "locale": "{{ticket.requester.language}}"
    },
    "assignee": {"name": "{{ticket.assignee.name}}"},
    "group": {"name": "{{ticket.group.name}}"}
  }
}"""

# Freshdesk's "Simple" content with all fields already has these keys; an "Advanced" JSON body
# needs them under the same names.
FRESHDESK_BODY = """\
{
  "freshdesk_webhook": {
    "ticket_id": "{{ticket.id}}",
    "ticket_status": "{{ticket.status}}",
    "ticket_contact_name": "{{ticket.contact.name}}",
    "ticket_contact_phone": "{{ticket.contact.phone}}",
    "ticket_contact_mobile": "{{ticket.contact.mobile}}",
    "ticket_agent_name": "{{ticket.agent.name}}",
    "ticket_group_name": "{{ticket.group.name}}",
    "ticket_contact_language": "{{ticket.contact.language}}"
  }
}"""

GENERIC_FIELDS = ("ticket_id", "phone", "agent", "team", "language", "requester_name")
_EXAMPLE = '{"ticket_id": "data.ticket.id", "phone": "data.customer.phone"}'

# Status names as the helpdesks render them, in English and German accounts.
_ZENDESK_DONE = frozenset({"solved", "gelöst", "closed", "geschlossen"})
_FRESHDESK_DONE = frozenset({"resolved", "gelöst", "closed", "geschlossen"})
# Zendesk renders the requester's language as its name in the account's language.
_LANGUAGE_NAMES = {"deutsch": "de", "german": "de", "english": "en", "englisch": "en"}
_LANGUAGES = frozenset({"de", "en"})
# The ticket, agent and team columns are String(128); no other field we read needs more.
MAX_FIELD = 128
_LOCALE = re.compile(r"([a-z]{2})(?:[-_][a-z0-9]{2,8})*")
_PLACEHOLDER = re.compile(r"\{\{[^{}]*\}\}")
_STEP = re.compile(r"([^.\[\]]*)((?:\[\d+\])*)")
_INDEX = re.compile(r"\[(\d+)\]")


class HookError(InputError):
    """A helpdesk payload without a field we need; ``path`` names it (e.g. "ticket.requester.phone")."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(path, message)
        self.path = path


class _Missing(HookError):
    """The path leads nowhere; optional fields treat this as absent, unlike a wrong shape."""


@dataclass(frozen=True)
class HookTicket:
    """A solved ticket as the helpdesk told us: whom to ask, and who helped them."""

    ticket_id: str
    phone: str | None
    agent: str | None
    team: str | None
    language: str | None
    requester_name: str | None = None


def _steps(path: str) -> list[str | int]:
    """The keys and indices of ``path``; ValueError when it is not dot and [n] notation."""
    # A leading "$." is what JSONPath users will type; "$" alone is the whole payload.
    if path == "$":
        return []
    steps: list[str | int] = []
    for part in path.removeprefix("$.").split("."):
        found = _STEP.fullmatch(part)
        if found is None or part == "":
            raise ValueError(f"{path!r} is not a path like 'data.ticket.id' or 'items[0].phone'")
        if found.group(1):
            steps.append(found.group(1))
        steps.extend(int(i) for i in _INDEX.findall(found.group(2)))
    return steps


def json_path(payload: Any, path: str) -> Any:
    """The value at ``path`` ("data.ticket.id", "items[0].phone") in ``payload``; HookError when absent."""
    value = payload
    for step in _steps(path):
        if isinstance(step, str):
            if not isinstance(value, dict):
                raise HookError(path, "not an object")
            if step not in value:
                raise _Missing(path, "missing")
            value = value[step]
        else:
            if not isinstance(value, list):
                raise HookError(path, "not a list")
            if step >= len(value):
                raise _Missing(path, "missing")
            value = value[step]
    return value


def _text(value: Any, path: str) -> str | None:
    """``value`` as text; None for null, "" and an unrendered placeholder."""
    # bool is an int to Python, but a flag where we want an id or a name is a mistake.
    if isinstance(value, bool) or not isinstance(value, str | int | float | None):
        raise HookError(path, "not a string or number")
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    # NFC, so that a decomposed "Gelöst" (o + combining diaeresis) still matches our statuses.
    text = unicodedata.normalize("NFC", str(value)).strip()
    if len(text) > MAX_FIELD:
        raise HookError(path, f"longer than {MAX_FIELD} characters")
    if (problem := unfit_text(text)) is not None:
        raise HookError(path, problem)
    return None if text == "" or _PLACEHOLDER.search(text) else text


def _required(payload: Any, path: str) -> str:
    value = json_path(payload, path)
    text = _text(value, path)
    if text is None:
        placeholder = isinstance(value, str) and _PLACEHOLDER.search(value)
        raise HookError(path, "an unrendered placeholder" if placeholder else "empty")
    return text


def _optional(payload: Any, path: str) -> str | None:
    try:
        return _text(json_path(payload, path), path)
    except _Missing:
        return None


def _language(raw: str | None) -> str | None:
    """The code "de" or "en" from a language name ("Deutsch", "English (United States)") or a locale ("de-DE")."""
    if raw is None:
        return None
    text = raw.strip().casefold()
    name = text.split("(", 1)[0].strip()
    if name in _LANGUAGE_NAMES:
        return _LANGUAGE_NAMES[name]
    locale = _LOCALE.fullmatch(text)
    return locale.group(1) if locale and locale.group(1) in _LANGUAGES else None


def _object(payload: Any) -> None:
    if not isinstance(payload, dict):
        raise HookError("$", "not a JSON object")


def from_zendesk(payload: Any) -> HookTicket | None:
    """The ticket in a Zendesk trigger body (ZENDESK_BODY); None while it is not solved."""
    _object(payload)
    ticket_id = _required(payload, "ticket.id")
    if _required(payload, "ticket.status").casefold() not in _ZENDESK_DONE:
        return None
    return HookTicket(
        ticket_id=ticket_id,
        phone=_optional(payload, "ticket.requester.phone"),
        agent=_optional(payload, "ticket.assignee.name"),
        team=_optional(payload, "ticket.group.name"),
        language=_language(_optional(payload, "ticket.requester.locale")),
        requester_name=_optional(payload, "ticket.requester.name"),
    )


def from_freshdesk(payload: Any) -> HookTicket | None:
    """The ticket in a Freshdesk "Trigger webhook" body; None while it is not resolved or closed."""
    _object(payload)
    ticket_id = _required(payload, "freshdesk_webhook.ticket_id")
    if _required(payload, "freshdesk_webhook.ticket_status").casefold() not in _FRESHDESK_DONE:
        return None
    field = "freshdesk_webhook.ticket_{}".format
    # The survey goes out by SMS or WhatsApp, so a mobile number beats a landline.
    phone = _optional(payload, field("contact_mobile")) or _optional(payload, field("contact_phone"))
    return HookTicket(
        ticket_id=ticket_id,
        phone=phone,
        agent=_optional(payload, field("agent_name")),
        team=_optional(payload, field("group_name")),
        language=_language(_optional(payload, field("contact_language"))),
        requester_name=_optional(payload, field("contact_name")),
    )


def from_generic(payload: Any, mapping: Mapping[str, str]) -> HookTicket:
    """The ticket in any JSON payload, read at the paths ``mapping`` (from parse_mapping) names."""
    ticket_id = _required(payload, mapping["ticket_id"])
    values = {field: _optional(payload, path) for field, path in mapping.items() if field != "ticket_id"}
    return HookTicket(
        ticket_id=ticket_id,
        phone=values.get("phone"),
        agent=values.get("agent"),
        team=values.get("team"),
        language=_language(values.get("language")),
        requester_name=values.get("requester_name"),
    )


def parse_mapping(raw: str) -> dict[str, str]:
    """HOOKS_GENERIC_MAP as a dict of our field names to JSON paths; ValueError saying what is wrong."""
    try:
        mapping = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"must be a JSON object of strings, such as {_EXAMPLE}: {exc}") from exc
    if not isinstance(mapping, dict) or not all(isinstance(v, str) for v in mapping.values()):
        raise ValueError(f"must be a JSON object of strings, such as {_EXAMPLE}")
    allowed = ", ".join(GENERIC_FIELDS)
    for key, path in mapping.items():
        if key not in GENERIC_FIELDS:
            raise ValueError(f"unknown key {key!r}; allowed keys are {allowed}")
        try:
            _steps(path)
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    if "ticket_id" not in mapping:
        raise ValueError(f"ticket_id is required, such as {_EXAMPLE}")
    return {str(key): str(path) for key, path in mapping.items()}
