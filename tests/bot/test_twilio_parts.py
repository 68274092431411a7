"""The Twilio channels' pure parts: message text and segments, spoken questions, phone numbers."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.requests import Request
from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from bot.channels.sms import _twiml, segments, sms_text
from bot.channels.twilio import TwilioAccount
from bot.channels.voice import spoken_question
from bot.errors import ConfigError, InvalidPhone
from bot.phones import MaskPhones, mask, mask_text, normalize, time_zone
from bot.settings import load_settings
from flows import engine
from flows.engine import Prompt
from flows.loader import load_flows
from flows.schema import Scale


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" * 160, (1, "GSM-7")),
        ("a" * 161, (2, "GSM-7")),
        ("Grüße, Ärger, ß: alles GSM-7", (1, "GSM-7")),
        ("€" * 80, (1, "GSM-7")),  # the extension set counts twice: 160
        ("€" * 81, (2, "GSM-7")),
        ("Danke “sehr”", (1, "UCS-2")),  # curly quotes are not GSM-7
        ("ç" * 71, (2, "UCS-2")),
    ],
)
def test_segments_hand_cases(text: str, expected: tuple[int, str]) -> None:
    """160 GSM-7 characters make one segment, 153 per segment after; UCS-2 70, then 67."""
    assert expected == segments(text)


def test_every_builtin_question_is_one_gsm7_sms() -> None:
    """Each question of the built-in flows, with its compact scale, fits one GSM-7 segment in de and en."""
    too_long = []
    for flow in load_flows().values():
        for language in flow.languages:
            state = engine.State()
            for question in flow.questions:
                prompt = Prompt(
                    "question",
                    question.text_for(language, state.scores),
                    question.id,
                    question.answer_scale,
                    question.labels.get(language, {}),
                    question.optional,
                )
                text = sms_text(prompt, language)
                if segments(text) != (1, "GSM-7"):
                    too_long.append((flow.id, language, question.id, len(text), segments(text)))
    assert [] == too_long


def test_sms_text_shows_the_scale_ends() -> None:
    """A rating question ends in "1 = … ... 5 = …"; an optional one says how to skip."""
    prompt = Prompt(
        "question", "Wie war es?", "q", Scale(min=1, max=5), {1: "gut", 5: "schlecht"}, optional=True
    )
    assert "Wie war es?\n1 = gut ... 5 = schlecht\nOptional: weiter = überspringen." == sms_text(prompt, "de")


def test_spoken_question_names_each_key_on_short_scales() -> None:
    """On 1-5 each key is named with its label; on 0-10 the caller types the number and #."""
    five = Prompt("question", "Wie war es?", "q", Scale(min=1, max=2), {1: "gut", 2: "schlecht"})
    ten = Prompt("question", "How likely?", "q", Scale(min=0, max=10), {0: "not", 10: "very"})
    assert "Wie war es? Drücken Sie 1 für gut. Drücken Sie 2 für schlecht. Oder sagen Sie die Zahl." == (
        spoken_question(five, "de")
    )
    assert "How likely? Enter a number from 0 to 10, then the hash key. Or say the number." == (
        spoken_question(ten, "en")
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+49 151 12345678", "+4915112345678"),
        ("0151 12345678", "+4915112345678"),  # national, read in PHONE_REGION DE
        ("whatsapp:+4915112345678", "+4915112345678"),
        ("+1 415 523 8886", "+14155238886"),
    ],
)
def test_numbers_are_normalised_to_e164(raw: str, expected: str) -> None:
    """Numbers in any common form become E.164."""
    assert expected == normalize(raw, "DE")


@pytest.mark.parametrize("raw", ["", "hallo", "+49 123", "12345"])
def test_unreadable_numbers_are_refused(raw: str) -> None:
    """Text that is no valid number raises InvalidPhone naming it."""
    with pytest.raises(InvalidPhone) as caught:
        normalize(raw, "DE")
    assert raw == caught.value.raw


def test_numbers_are_masked_for_logs() -> None:
    """+4915112345678 is logged as +49151****678, also inside a sentence."""
    assert "+49151****678" == mask("+4915112345678")
    assert "sent to +49151****678 and +14155****886" == mask_text("sent to +4915112345678 and +14155238886")


def test_log_filter_masks_numbers_in_records() -> None:
    """The MaskPhones filter rewrites a record's message, arguments included."""
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "calling %s now", ("+4915112345678",), None)
    assert (True, "calling +49151****678 now") == (MaskPhones().filter(record), record.getMessage())


def test_log_filter_keeps_the_arguments_of_uvicorns_access_log() -> None:
    """An access-log record keeps its argument tuple, masked, so uvicorn's formatter still formats it."""
    from uvicorn.logging import AccessFormatter

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/healthz?to=+4915112345678", "1.1", 200),
        None,
    )
    MaskPhones().filter(record)
    line = AccessFormatter("%(client_addr)s %(request_line)s %(status_code)s", use_colors=False).format(
        record
    )
    assert "127.0.0.1:5000 GET /healthz?to=+49151****678 HTTP/1.1 200 OK" == line


def test_time_zone_from_the_number() -> None:
    """A German mobile number is in Europe/Berlin; a US toll-free number has no single zone."""
    assert ("Europe/Berlin", None) == (time_zone("+4915112345678"), time_zone("+18005550199"))


def test_twilio_settings_are_checked() -> None:
    """A malformed account SID or sender number is refused at start, naming the key."""
    for key, value in (("twilio_account_sid", "AB123"), ("twilio_from_number", "030 1234")):
        with pytest.raises(ConfigError) as caught:
            load_settings(_env_file=None, **{key: value})
        assert key.upper() == caught.value.key
    on = load_settings(_env_file=None, twilio_account_sid="AC" + "a" * 32, twilio_auth_token="s3cr3t-auth")
    assert (True, False) == (on.twilio_enabled, "s3cr3t-auth" in repr(on))


# --- TwiML and signatures as written by hand (issue 20) ---------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=80), max_size=3))
def test_twiml_written_as_a_string_is_what_messaging_response_writes(bodies: list[str]) -> None:
    """`_twiml` writes byte for byte what twilio's MessagingResponse writes, escaping included."""
    expected = MessagingResponse()
    for body in bodies:
        expected.message(body)
    assert str(expected) == _twiml(*bodies).body.decode()


def test_a_signature_over_the_url_with_its_port_still_passes() -> None:
    """The one-HMAC shortcut falls back to twilio's validate(): a signature Twilio made over
    https://host:443/… is still accepted, and a wrong one is refused."""
    validator = RequestValidator("auth-token-0123456789")
    form = {"From": "+4915112345678", "Body": "2", "MessageSid": "SM" + "1" * 32}
    account = TwilioAccount.__new__(TwilioAccount)
    account.public_base_url = "https://survey.example.com"
    account.validator = validator
    request = Request({"type": "http", "path": "/twilio/sms", "query_string": b"", "headers": []})
    signed = {
        name: validator.compute_signature(f"https://survey.example.com{port}/twilio/sms", form)
        for name, port in (("plain", ""), ("port", ":443"))
    }

    def checked(signature: str) -> bool:
        scope = {**request.scope, "headers": [(b"x-twilio-signature", signature.encode())]}
        return account.is_signed(Request(scope), form)  # type: ignore[arg-type]

    assert (True, True, False, False) == (
        checked(signed["plain"]),
        checked(signed["port"]),
        checked("x"),
        checked(""),
    )
