"""The Telegram channel's pure parts: keyboards, button data, message text, staff arguments, settings."""

from __future__ import annotations

import pytest

from bot.channels.telegram.customers import callback_data, keyboard, message_text, parse_callback
from bot.channels.telegram.staff import parse_report_args
from bot.errors import ConfigError, ReportError
from bot.settings import load_settings
from flows.engine import Prompt
from flows.schema import Scale


def _question(low: int, high: int, question_id: str = "q") -> Prompt:
    return Prompt(
        "question", "How?", question_id, Scale(min=low, max=high, best="high"), {low: "bad", high: "good"}
    )


def test_five_points_make_one_row_and_eleven_make_two() -> None:
    """1-5 is one row of buttons; 0-10 is two rows, 0-5 and 6-10."""
    five, eleven = keyboard(_question(1, 5), 7), keyboard(_question(0, 10), 7)
    assert five is not None
    assert eleven is not None
    assert [["1", "2", "3", "4", "5"]] == [[b.text for b in row] for row in five.inline_keyboard]
    assert [["0", "1", "2", "3", "4", "5"], ["6", "7", "8", "9", "10"]] == [
        [b.text for b in row] for row in eleven.inline_keyboard
    ]


def test_text_questions_have_no_keyboard() -> None:
    """A comment question is answered by typing, so it gets no buttons."""
    assert None is keyboard(Prompt("question", "Anything else?", "comment"), 7)


def test_button_data_fits_telegrams_64_bytes_and_reads_back() -> None:
    """The longest button data (big survey id, 40-character question id, 10) fits in 64 bytes."""
    data = callback_data(9_999_999_999, "q" * 40, 10)
    assert (True, (9_999_999_999, "q" * 40, 10)) == (len(data.encode()) <= 64, parse_callback(data))


@pytest.mark.parametrize("data", [None, "", "a:1:q", "x:1:q:2", "a:one:q:2", "a:1:q:two"])
def test_foreign_button_data_is_ignored(data: str | None) -> None:
    """Data we did not make (or that was mangled) reads as None, never as an answer."""
    assert None is parse_callback(data)


def test_message_text_has_intro_question_labels_and_skip_hint() -> None:
    """Prompts become one message: the intro, the question, its labels and, if optional, /skip."""
    prompts = [
        Prompt("intro", "Hi!"),
        Prompt("question", "Rate us", "q", Scale(min=1, max=5), {1: "bad", 5: "good"}, optional=True),
    ]
    assert "Hi!\n\nRate us\n\n1 = bad\n5 = good\n(/skip skips this question)" == message_text(prompts, "en")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], ("30d", None)),
        (["7d"], ("7d", None)),
        (["90d", "by", "agent"], ("90d", "agent")),
        (["by", "Team"], ("30d", "team")),
    ],
)
def test_report_arguments(args: list[str], expected: tuple[str, str | None]) -> None:
    """/report takes a period and an optional grouping, in any case."""
    assert expected == parse_report_args(args)


@pytest.mark.parametrize(
    ("args", "field"), [(["yesterday"], "period"), (["by"], "by"), (["by", "flow"], "by")]
)
def test_bad_report_arguments_name_the_field(args: list[str], field: str) -> None:
    """An argument /report does not understand is named, so the manager can fix it."""
    with pytest.raises(ReportError) as caught:
        parse_report_args(args)
    assert field == caught.value.field


def test_telegram_staff_setting_is_read_and_checked() -> None:
    """TELEGRAM_STAFF is id:role pairs; a wrong role names the setting and shows the form."""
    settings = load_settings(_env_file=None, telegram_staff="111:manager, 222:agent")
    assert {111: "manager", 222: "agent"} == settings.telegram_staff
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, telegram_staff="111:boss")
    assert "TELEGRAM_STAFF" == caught.value.key
    assert "123456789:manager,987654321:agent" in caught.value.message


def test_telegram_token_is_secret_and_blank_means_off() -> None:
    """The bot token never prints; an empty TELEGRAM_BOT_TOKEN leaves the channel off."""
    on = load_settings(_env_file=None, telegram_bot_token="123:abc")
    off = load_settings(_env_file=None, telegram_bot_token="  ")
    assert ("123:abc" not in repr(on), on.telegram_enabled, off.telegram_enabled) == (True, True, False)


def test_webhook_secret_follows_telegrams_rule() -> None:
    """A webhook secret with characters Telegram refuses is rejected at start, naming the key."""
    with pytest.raises(ConfigError) as caught:
        load_settings(_env_file=None, telegram_webhook_secret="has spaces")
    assert "TELEGRAM_WEBHOOK_SECRET" == caught.value.key
