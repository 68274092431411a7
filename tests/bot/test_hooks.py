"""Tests for bot.web.hooks: helpdesk webhook payloads read as tickets, and the paths named when they cannot be."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.web.hooks import (
    FRESHDESK_BODY,
    ZENDESK_BODY,
    HookError,
    HookTicket,
    from_freshdesk,
    from_generic,
    from_zendesk,
    json_path,
    parse_mapping,
)

# ZENDESK_BODY as a German account's trigger renders it.
ZENDESK_DE: dict[str, Any] = {
    "ticket": {
        "id": "48213",
        "status": "Gelöst",
        "requester": {"name": "Jana Köhler", "phone": "+49 151 23456789", "locale": "Deutsch"},
        "assignee": {"name": "Tobias Brandt"},
        "group": {"name": "Kundenservice Berlin"},
    }
}

# The same body in an English account: a requester without a phone, a ticket without a group.
ZENDESK_EN: dict[str, Any] = {
    "ticket": {
        "id": "48377",
        "status": "Solved",
        "requester": {"name": "Oliver Smith", "phone": "", "locale": "English"},
        "assignee": {"name": "Priya Nair"},
        "group": {"name": ""},
    }
}

# Freshdesk's "Trigger webhook" with "Simple" content and every field ticked.
FRESHDESK: dict[str, Any] = {
    "freshdesk_webhook": {
        "ticket_id": 1234,
        "ticket_subject": "Rechnung doppelt abgebucht",
        "ticket_description": "<div>Hallo, meine Rechnung vom 2. Mai wurde zweimal abgebucht.</div>",
        "ticket_url": "https://acme.freshdesk.com/helpdesk/tickets/1234",
        "ticket_portal_url": "https://support.acme.de/support/tickets/1234",
        "ticket_due_by_time": "Tue, 14 May, 2024 at  5:00 PM",
        "ticket_status": "Resolved",
        "ticket_priority": "Medium",
        "ticket_source": "Phone",
        "ticket_ticket_type": "Question",
        "ticket_tags": "billing, refund",
        "ticket_cc_email": "",
        "ticket_latest_public_comment": "Tobias Brandt : Die doppelte Abbuchung ist storniert.",
        "ticket_agent_name": "Tobias Brandt",
        "ticket_agent_email": "tobias.brandt@acme.de",
        "ticket_group_name": "Billing",
        "ticket_contact_name": "Jana Köhler",
        "ticket_contact_firstname": "Jana",
        "ticket_contact_lastname": "Köhler",
        "ticket_contact_email": "jana.koehler@example.de",
        "ticket_contact_phone": "030 1234567",
        "ticket_contact_mobile": "0151 23456789",
        "ticket_contact_address": "Hauptstraße 5, 10115 Berlin",
        "ticket_contact_language": "de",
        "ticket_company_name": "Köhler Design GmbH",
        "ticket_company_domains": "koehler-design.de",
        "triggered_event": "{ticket_action:updated}",
    }
}

GENERIC = {
    "event": "case.closed",
    "data": {
        "ticket": {"id": 99017, "owner": {"display_name": "Priya Nair"}, "queue": "Tier 2"},
        "contacts": [{"name": "Oliver Smith", "phone": "+447700900123", "locale": "en-GB"}],
    },
}
GENERIC_MAP = {
    "ticket_id": "data.ticket.id",
    "phone": "data.contacts[0].phone",
    "agent": "data.ticket.owner.display_name",
    "team": "data.ticket.queue",
    "language": "data.contacts[0].locale",
    "requester_name": "data.contacts[0].name",
}


def zendesk(**ticket: Any) -> dict[str, Any]:
    """The German Zendesk sample with some of its ticket's fields replaced."""
    payload = copy.deepcopy(ZENDESK_DE)
    payload["ticket"].update(ticket)
    return payload


def freshdesk(**fields: Any) -> dict[str, Any]:
    """The Freshdesk sample with some fields replaced; a value of None drops the field."""
    payload = copy.deepcopy(FRESHDESK)
    for key, value in fields.items():
        if value is None:
            payload["freshdesk_webhook"].pop(key)
        else:
            payload["freshdesk_webhook"][key] = value
    return payload


def raised(call: Any, *args: Any) -> tuple[str, str]:
    """The path and message of the HookError that ``call(*args)`` raises."""
    with pytest.raises(HookError) as info:
        call(*args)
    return info.value.path, info.value.message


def test_documented_bodies_are_json() -> None:
    """ZENDESK_BODY and FRESHDESK_BODY, shown in the README, are JSON objects with the keys we read."""
    assert ["ticket"] == list(json.loads(ZENDESK_BODY))
    assert ["freshdesk_webhook"] == list(json.loads(FRESHDESK_BODY))


def test_zendesk_german_sample() -> None:
    """A German account's rendered trigger body gives the ticket, with "Deutsch" as "de"."""
    expected = HookTicket(
        "48213", "+49 151 23456789", "Tobias Brandt", "Kundenservice Berlin", "de", "Jana Köhler"
    )
    assert expected == from_zendesk(ZENDESK_DE)


def test_zendesk_english_sample() -> None:
    """An English account's body gives the ticket, with "English" as "en" and empty fields as None."""
    expected = HookTicket("48377", None, "Priya Nair", None, "en", "Oliver Smith")
    assert expected == from_zendesk(ZENDESK_EN)


@pytest.mark.parametrize(
    "status", ["Solved", "solved", "Gelöst", "GELÖST", "Gelo\u0308st", "Closed", "Geschlossen", " Solved "]
)
def test_zendesk_done_statuses_proceed(status: str) -> None:
    """Solved and closed, in English or German, any case or Unicode form, give a ticket."""
    assert "48213" == getattr(from_zendesk(zendesk(status=status)), "ticket_id", None)


@pytest.mark.parametrize("status", ["Open", "Offen", "Pending", "Wartend", "On-hold", "New"])
def test_zendesk_unsolved_is_ignored(status: str) -> None:
    """Any other status gives None, for the route to answer "ignored"."""
    assert None is from_zendesk(zendesk(status=status))


def test_zendesk_number_id() -> None:
    """A ticket id sent as a JSON number is read as text."""
    assert "48213" == getattr(from_zendesk(zendesk(id=48213)), "ticket_id", None)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"ticket": {"status": "Solved"}}, ("ticket.id", "missing")),
        ({"id": "1", "status": "Solved"}, ("ticket.id", "missing")),
        ({"ticket": "48213"}, ("ticket.id", "not an object")),
        ({"ticket": {"id": "48213"}}, ("ticket.status", "missing")),
        (zendesk(id="{{ticket.id}}"), ("ticket.id", "an unrendered placeholder")),
        (zendesk(id=""), ("ticket.id", "empty")),
        (zendesk(id=True), ("ticket.id", "not a string or number")),
        (zendesk(status="{{ticket.status}}"), ("ticket.status", "an unrendered placeholder")),
        (zendesk(requester=[]), ("ticket.requester.phone", "not an object")),
        ([ZENDESK_DE], ("$", "not a JSON object")),
        ("48213", ("$", "not a JSON object")),
    ],
)
def test_zendesk_errors_name_the_path(payload: Any, expected: tuple[str, str]) -> None:
    """A body without a usable id or status, or of the wrong shape, raises HookError naming the path."""
    assert expected == raised(from_zendesk, payload)


def test_zendesk_unrendered_placeholders_are_absent() -> None:
    """Optional fields still holding their {{placeholder}} are None, as if empty."""
    payload = json.loads(ZENDESK_BODY)
    payload["ticket"].update(id="48213", status="Solved")
    assert HookTicket("48213", None, None, None, None, None) == from_zendesk(payload)


def test_zendesk_optional_parts_may_be_left_out() -> None:
    """A body trimmed to id and status is a ticket with nothing else known."""
    assert HookTicket("7", None, None, None, None) == from_zendesk({"ticket": {"id": 7, "status": "Solved"}})


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("Deutsch", "de"),
        ("German", "de"),
        ("English", "en"),
        ("Englisch", "en"),
        ("English (United Kingdom)", "en"),
        ("de", "de"),
        ("de-DE", "de"),
        ("de_AT", "de"),
        ("en-US", "en"),
        ("en-gb", "en"),
        ("Français", None),
        ("fr-FR", None),
        ("deu", None),
        ("", None),
        ("{{ticket.requester.language}}", None),
    ],
)
def test_zendesk_language_names_and_locales(locale: str, expected: str | None) -> None:
    """A language name in German or English, or a de/en locale code, gives "de" or "en"; others None."""
    payload = zendesk()
    payload["ticket"]["requester"]["locale"] = locale
    assert expected == getattr(from_zendesk(payload), "language", "no ticket")


def test_freshdesk_simple_sample() -> None:
    """A "Simple" webhook with every field gives the ticket; the many other fields are ignored."""
    expected = HookTicket("1234", "0151 23456789", "Tobias Brandt", "Billing", "de", "Jana Köhler")
    assert expected == from_freshdesk(FRESHDESK)


@pytest.mark.parametrize(
    ("mobile", "phone", "expected"),
    [
        ("0151 23456789", "030 1234567", "0151 23456789"),
        ("", "030 1234567", "030 1234567"),
        (None, "030 1234567", "030 1234567"),
        ("", "", None),
    ],
)
def test_freshdesk_mobile_before_phone(mobile: str | None, phone: str, expected: str | None) -> None:
    """The contact's mobile number is used when there is one, else the phone number."""
    payload = freshdesk(ticket_contact_mobile=mobile, ticket_contact_phone=phone)
    assert expected == getattr(from_freshdesk(payload), "phone", "no ticket")


@pytest.mark.parametrize(
    ("status", "proceeds"),
    [
        ("Resolved", True),
        ("closed", True),
        ("Gelöst", True),
        ("GESCHLOSSEN", True),
        ("Open", False),
        ("Pending", False),
        ("Waiting on Customer", False),
        ("Offen", False),
    ],
)
def test_freshdesk_statuses(status: str, proceeds: bool) -> None:
    """Resolved and closed (also in German) give a ticket; every other status gives None."""
    assert proceeds == (from_freshdesk(freshdesk(ticket_status=status)) is not None)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (freshdesk(ticket_id=None), ("freshdesk_webhook.ticket_id", "missing")),
        (FRESHDESK["freshdesk_webhook"], ("freshdesk_webhook.ticket_id", "missing")),
        (freshdesk(ticket_status=None), ("freshdesk_webhook.ticket_status", "missing")),
        (freshdesk(ticket_id="{{ticket.id}}"), ("freshdesk_webhook.ticket_id", "an unrendered placeholder")),
        (None, ("$", "not a JSON object")),
    ],
)
def test_freshdesk_errors_name_the_path(payload: Any, expected: tuple[str, str]) -> None:
    """A webhook without its ticket id or status, or not wrapped in freshdesk_webhook, names the path."""
    assert expected == raised(from_freshdesk, payload)


def test_freshdesk_sparse_webhook() -> None:
    """A webhook with only id and status is a ticket with nothing else known; no language is None."""
    payload = {"freshdesk_webhook": {"ticket_id": "1234", "ticket_status": "Closed", "ticket_agent_name": ""}}
    assert HookTicket("1234", None, None, None, None) == from_freshdesk(payload)


def test_generic_sample() -> None:
    """Each mapped path is read, list indices too; the number id becomes text and "en-GB" "en"."""
    expected = HookTicket("99017", "+447700900123", "Priya Nair", "Tier 2", "en", "Oliver Smith")
    assert expected == from_generic(GENERIC, GENERIC_MAP)


def test_generic_missing_optional_fields_are_none() -> None:
    """Optional fields whose paths lead nowhere, or that are not mapped, are None."""
    payload = {"data": {"ticket": {"id": "A-17"}, "contacts": []}}
    mapping = {"ticket_id": "data.ticket.id", "phone": "data.contacts[0].phone", "agent": "data.agent"}
    assert HookTicket("A-17", None, None, None, None) == from_generic(payload, mapping)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"data": {"ticket": {}}}, ("data.ticket.id", "missing")),
        ({"data": []}, ("data.ticket.id", "not an object")),
        ({"data": {"ticket": {"id": None}}}, ("data.ticket.id", "empty")),
        ({"data": {"ticket": {"id": {"value": 3}}}}, ("data.ticket.id", "not a string or number")),
    ],
)
def test_generic_ticket_id_errors(payload: Any, expected: tuple[str, str]) -> None:
    """A payload without a usable ticket id raises HookError naming the mapped path."""
    assert expected == raised(from_generic, payload, {"ticket_id": "data.ticket.id"})


def test_generic_wrong_shape_is_an_error() -> None:
    """An optional field whose path meets a value of the wrong shape is an error, not None."""
    mapping = {"ticket_id": "data.ticket.id", "phone": "data.contacts[0].phone"}
    payload = {"data": {"ticket": {"id": 1}, "contacts": {"phone": "+447700900123"}}}
    assert ("data.contacts[0].phone", "not a list") == raised(from_generic, payload, mapping)


ITEMS = {"items": [{"phone": "+4915123456789"}, {"tags": ["vip", "de"]}], "n": 0, "": {"x": 1}}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("items[0].phone", "+4915123456789"),
        ("items[1].tags[1]", "de"),
        ("$.items[1].tags[0]", "vip"),
        ("n", 0),
        ("$", ITEMS),
    ],
)
def test_json_path_reads(path: str, expected: Any) -> None:
    """Dot notation with list indices reads into objects and lists; "$" is the whole payload."""
    assert expected == json_path(ITEMS, path)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("items[2].phone", ("items[2].phone", "missing")),
        ("items[0].email", ("items[0].email", "missing")),
        ("items.phone", ("items.phone", "not an object")),
        ("n[0]", ("n[0]", "not a list")),
        ("items[1].tags[0].name", ("items[1].tags[0].name", "not an object")),
        ("[0]", ("[0]", "not a list")),
    ],
)
def test_json_path_errors_name_the_full_path(path: str, expected: tuple[str, str]) -> None:
    """An absent step or a wrong shape raises HookError with the whole path asked for."""
    assert expected == raised(json_path, ITEMS, path)


def test_json_path_reads_a_top_level_list() -> None:
    """A path may start with an index when the payload is a list."""
    assert "b" == json_path([{"id": "a"}, {"id": "b"}], "[1].id")


@pytest.mark.parametrize("path", ["", "a..b", "a.", "items[x]", "items[-1]", "a[0]b", "$."])
def test_json_path_rejects_malformed_paths(path: str) -> None:
    """A path that is not dot and [n] notation is a ValueError, not a payload problem."""
    with pytest.raises(ValueError, match="is not a path like"):
        json_path(ITEMS, path)


def test_hook_error_text() -> None:
    """HookError reads "path: message"."""
    assert "ticket.requester.phone: missing" == str(HookError("ticket.requester.phone", "missing"))


def test_parse_mapping_reads_the_setting() -> None:
    """HOOKS_GENERIC_MAP's JSON object becomes the field-to-path mapping."""
    assert GENERIC_MAP == parse_mapping(json.dumps(GENERIC_MAP))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            '{"ticket_id": "id", "email": "customer.email"}',
            "unknown key 'email'; allowed keys are ticket_id, phone,",
        ),
        ('{"phone": "customer.phone"}', "ticket_id is required"),
        ('["ticket_id", "id"]', "must be a JSON object of strings"),
        ('{"ticket_id": 3}', "must be a JSON object of strings"),
        ("ticket_id=data.id", "must be a JSON object of strings"),
        ('{"ticket_id": "data..id"}', "ticket_id: 'data..id' is not a path like"),
    ],
)
def test_parse_mapping_errors_say_what_is_wrong(raw: str, message: str) -> None:
    """A malformed mapping is a ValueError that names the bad key or says what the value must be."""
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_mapping(raw)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "id", "0"]), children, max_size=3)
    ),
    max_leaves=12,
)
_step = st.tuples(st.sampled_from(["", "a", "b", "id", "0"]), st.lists(st.integers(0, 3), max_size=2)).filter(
    lambda step: bool(step[0] or step[1])
)
_paths = st.tuples(st.booleans(), st.lists(_step, min_size=1, max_size=4)).map(
    lambda p: ("$." if p[0] else "") + ".".join(key + "".join(f"[{i}]" for i in idx) for key, idx in p[1])
)


@given(payload=_json, path=_paths)
def test_json_path_only_raises_hook_error(payload: Any, path: str) -> None:
    """For any JSON value and well-formed path, json_path returns or raises HookError naming that path."""
    try:
        json_path(payload, path)
        named = path
    except HookError as exc:
        named = exc.path
    assert path == named
