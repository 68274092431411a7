"""Tests for flows.parser: reading a score, stop and skip from free-text answers."""

from __future__ import annotations

from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.parser import ParsedAnswer, ParseProblem, is_skip, is_stop, parse_score

LABELS = {1: "sehr zufrieden", 2: "zufrieden", 3: "neutral", 4: "unzufrieden", 5: "sehr unzufrieden"}

# (text, low, high, score, comment, problem)
CASES: list[tuple[str, int, int, int | None, str | None, ParseProblem | None]] = [
    # 1. empty
    ("", 1, 5, None, None, "empty"),
    ("   \t\n", 1, 5, None, None, "empty"),
    ("\u3000\u00a0", 0, 10, None, None, "empty"),
    # 2. digits
    ("4", 1, 5, 4, None, None),
    (" 4 ", 1, 5, 4, None, None),
    ("4.", 1, 5, 4, None, None),
    ("4!", 1, 5, 4, None, None),
    ("04", 1, 5, 4, None, None),
    ("10", 0, 10, 10, None, None),
    ("0", 0, 10, 0, None, None),
    ("７", 1, 7, 7, None, None),
    ("٤", 1, 5, 4, None, None),
    ("- 4", 1, 5, 4, None, None),
    ("(4) super", 1, 5, 4, "super", None),
    # 3. number words
    ("Fünf.", 1, 5, 5, None, None),
    ("Zehn!", 0, 10, 10, None, None),
    ("null", 0, 10, 0, None, None),
    ("eins", 1, 5, 1, None, None),
    ("Eine", 1, 5, 1, None, None),
    ("ein", 1, 7, 1, None, None),
    ("fuenf", 1, 5, 5, None, None),
    ("FUNF", 1, 5, 5, None, None),
    ("fu\u0308nf", 1, 5, 5, None, None),
    ("sieben", 1, 7, 7, None, None),
    ("Seven", 1, 7, 7, None, None),
    ("one", 1, 5, 1, None, None),
    ("zero", 0, 10, 0, None, None),
    ("Nine!", 0, 10, 9, None, None),
    ("Drei, war okay", 1, 5, 3, "war okay", None),
    ("One of the best", 1, 5, None, None, "no_number"),
    ("Ein bisschen langsam", 1, 5, None, None, "no_number"),
    ("Ich habe zwei Tage gewartet", 1, 5, None, None, "no_number"),
    # 4. fractions
    ("8/10", 0, 10, 8, None, None),
    ("8 / 10", 0, 10, 8, None, None),
    ("8 von 10", 0, 10, 8, None, None),
    ("8 of 10", 0, 10, 8, None, None),
    ("8 out of 10", 0, 10, 8, None, None),
    ("acht von zehn", 0, 10, 8, None, None),
    ("ten out of ten", 0, 10, 10, None, None),
    ("10/10 würde wieder kommen", 0, 10, 10, "würde wieder kommen", None),
    ("6/7", 1, 7, 6, None, None),
    ("8/10", 1, 5, None, None, "out_of_range"),
    ("Ich gebe 8 von 10", 0, 10, 8, "Ich gebe 8 von 10", None),
    # 5. emoji
    ("4️⃣", 1, 5, 4, None, None),
    ("4\u20e3", 1, 5, 4, None, None),
    ("🔟", 0, 10, 10, None, None),
    ("5️⃣ top", 1, 5, 5, "top", None),
    ("⭐⭐⭐⭐", 1, 5, 4, None, None),
    ("⭐️⭐️⭐️", 1, 5, 3, None, None),
    ("⭐" * 6, 1, 5, None, None, "out_of_range"),
    ("4️⃣5️⃣", 1, 5, None, None, "ambiguous"),
    # 6. leading number with comment
    ("4 - schnell, aber unfreundlich", 1, 5, 4, "schnell, aber unfreundlich", None),
    ("5 super service", 1, 5, 5, "super service", None),
    ("9 weil alles geklappt hat", 0, 10, 9, "weil alles geklappt hat", None),
    ("3: Wartezeit zu lang", 1, 7, 3, "Wartezeit zu lang", None),
    ("7 — Top Beratung!", 1, 7, 7, "Top Beratung!", None),
    ("2. NICHT zufrieden", 1, 5, 2, "NICHT zufrieden", None),
    ("4 - schnell, 2 Tage gewartet", 1, 5, 4, "schnell, 2 Tage gewartet", None),
    ("5 und eine Bitte: schneller antworten", 1, 5, 5, "und eine Bitte: schneller antworten", None),
    ("Fünf – sehr nett", 1, 5, 5, "sehr nett", None),
    ("4 :)", 1, 5, 4, None, None),
    # 7. ambiguous
    ("4 oder 5", 1, 5, None, None, "ambiguous"),
    ("4 or 5", 1, 5, None, None, "ambiguous"),
    ("4-5", 1, 5, None, None, "ambiguous"),
    ("4 – 5", 1, 5, None, None, "ambiguous"),
    ("4 bis 5", 1, 5, None, None, "ambiguous"),
    ("4 to 5", 1, 5, None, None, "ambiguous"),
    ("4 5", 1, 5, None, None, "ambiguous"),
    ("4,5", 1, 5, None, None, "ambiguous"),
    ("4.5", 1, 5, None, None, "ambiguous"),
    ("3 und 4", 1, 5, None, None, "ambiguous"),
    ("zwei oder drei", 1, 5, None, None, "ambiguous"),
    ("one or two", 1, 5, None, None, "ambiguous"),
    ("8 oder neun", 0, 10, None, None, "ambiguous"),
    ("4 und eine 5", 1, 5, None, None, "ambiguous"),
    ("6 -7", 1, 7, None, None, "ambiguous"),
    # 8. a number later in the text
    ("Ich gebe eine 4", 1, 5, 4, "Ich gebe eine 4", None),
    ("I'd say 9", 0, 10, 9, "I'd say 9", None),
    ("Eine 4", 1, 5, 4, "Eine 4", None),
    ("👍 5", 1, 5, 5, "👍 5", None),
    ("Alles gut, 6 von mir  ", 1, 7, 6, "Alles gut, 6 von mir", None),
    ("Ich gebe 4 oder 5", 1, 5, None, None, "ambiguous"),
    ("Nach 2 Tagen eine 3", 1, 5, None, None, "ambiguous"),
    ("Ich gebe 12", 0, 10, None, None, "out_of_range"),
    # 9. labels (in the table they are given for every case, see test below)
    ("unzufrieden", 1, 5, 4, None, None),
    ("Unzufrieden!", 1, 5, 4, None, None),
    ("  Sehr   zufrieden ", 1, 5, 1, None, None),
    ("sehr unzufrieden.", 1, 5, 5, None, None),
    ("neutral", 1, 5, 3, None, None),
    ("eher unzufrieden", 1, 5, None, None, "no_number"),
    # 10. out of range
    ("-1", 0, 10, None, None, "out_of_range"),
    ("11", 0, 10, None, None, "out_of_range"),
    ("0", 1, 5, None, None, "out_of_range"),
    ("8", 1, 7, None, None, "out_of_range"),
    ("zehn", 1, 5, None, None, "out_of_range"),
    ("11 super", 0, 10, None, None, "out_of_range"),
    ("9" * 5000, 0, 10, None, None, "out_of_range"),
    ("-" + "9" * 5000, 0, 10, None, None, "out_of_range"),
    # 11. no number
    ("super", 1, 5, None, None, "no_number"),
    ("great service", 0, 10, None, None, "no_number"),
    ("...", 1, 5, None, None, "no_number"),
    ("\x00\x07", 1, 5, None, None, "no_number"),
    ("\ud800", 1, 5, None, None, "no_number"),
]


@pytest.mark.parametrize(("text", "low", "high", "score", "comment", "problem"), CASES)
def test_parse_score(
    text: str, low: int, high: int, score: int | None, comment: str | None, problem: ParseProblem | None
) -> None:
    """Each answer in the table reads as the expected score, comment and problem."""
    expected = ParsedAnswer(score=score, comment=comment, problem=problem)
    actual = parse_score(text, low, high, LABELS if (low, high) == (1, 5) else None)
    assert expected == actual


def test_labels_only_when_given() -> None:
    """A label text is no answer on a question without labels."""
    assert parse_score("unzufrieden", 1, 5) == ParsedAnswer(None, None, "no_number")


def test_shared_label_text_is_ambiguous() -> None:
    """Two scale points with the same label text make that answer ambiguous."""
    assert parse_score("ok", 1, 5, {2: "OK", 3: "ok"}) == ParsedAnswer(None, None, "ambiguous")


def test_ok_follows_score() -> None:
    """``ok`` is true exactly when there is a score."""
    assert parse_score("4", 1, 5).ok
    assert not parse_score("9", 1, 5).ok


def test_long_comment_is_capped() -> None:
    """A very long comment after the score is kept, but at most 2,000 characters of it."""
    answer = parse_score("5 " + "sehr gut " * 1000, 1, 5)
    assert answer.score == 5
    assert answer.comment is not None
    assert len(answer.comment) <= 2000
    assert answer.comment.startswith("sehr gut")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("stop", True),
        ("STOP", True),
        ("Stopp", True),
        ("/stop", True),
        ("Abbrechen!", True),
        ("abbrechen", True),
        ("cancel", True),
        (" Cancel. ", True),
        ("ＳＴＯＰ", True),
        ("nicht stoppen", False),  # only a whole-message command ends the survey
        ("stop and go traffic", False),
        ("stoppen", False),
        ("4", False),
        ("skip", False),
        ("", False),
    ],
)
def test_is_stop(text: str, expected: bool) -> None:
    """Only a whole answer that is a stop word ends the survey."""
    assert is_stop(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("skip", True),
        ("/skip", True),
        ("Überspringen", True),
        ("ueberspringen", True),
        ("weiter", True),
        ("Next", True),
        ("-", True),
        ("–", True),
        ("nein danke", True),
        ("Nein, danke!", True),
        ("no thanks", True),
        ("nichts", True),
        ("nichts davon war gut", False),  # a real comment that starts like a skip word
        ("weiter so!", False),
        ("4", False),
        ("stop", False),
        ("", False),
    ],
)
def test_is_skip(text: str, expected: bool) -> None:
    """Only a whole answer that is a skip word skips an optional question."""
    assert is_skip(text) is expected


_scales = st.tuples(st.integers(-5, 100), st.integers(0, 100)).map(lambda lh: (lh[0], lh[0] + lh[1]))
_texts = st.one_of(st.text(), st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")))


@given(text=_texts, scale=_scales)
def test_parse_score_never_raises_and_stays_in_range(text: str, scale: tuple[int, int]) -> None:
    """Any text on any scale parses without raising, and an accepted score is on the scale."""
    low, high = scale
    answer = parse_score(text, low, high, LABELS)
    if answer.ok:
        assert answer.score is not None
        assert low <= answer.score <= high
        assert answer.problem is None
    else:
        assert answer.problem is not None
        assert answer.comment is None


@given(text=_texts)
def test_commands_never_raise(text: str) -> None:
    """is_stop and is_skip answer a bool for any text."""
    assert isinstance(is_stop(text), bool)
    assert isinstance(is_skip(text), bool)


@given(data=st.data(), scale=_scales)
def test_every_point_of_the_scale_reads_back(data: st.DataObject, scale: tuple[int, int]) -> None:
    """The plain digits of every point of a scale read back as that point."""
    low, high = scale
    n = data.draw(st.integers(low, high))
    assert parse_score(str(n), low, high).score == n


@pytest.mark.parametrize(
    ("stars", "best", "score"),
    [(5, "low", 1), (4, "low", 2), (1, "low", 5), (5, "high", 5), (1, "high", 1), (3, "low", 3)],
)
def test_stars_mean_the_same_on_both_directions(stars: int, best: Literal["high", "low"], score: int) -> None:
    """More stars are always better: five stars are the best point, 1 on the school-grade scale."""
    assert parse_score("⭐" * stars, 1, 5, LABELS, best) == ParsedAnswer(score, None, None)


@pytest.mark.parametrize(("low", "high"), [(0, 10), (1, 7), (1, 10)])
def test_stars_on_other_scales_are_asked_again(low: int, high: int) -> None:
    """Stars on a scale without five points have no one reading: the customer is asked again."""
    for best in ("high", "low"):
        assert parse_score("⭐⭐⭐", low, high, None, best) == ParsedAnswer(None, None, "ambiguous")


@pytest.mark.parametrize("text", ["👍", "👎", "😀", "😡", "super", "top", "Top!", "👍👍👍", "❤️", "🙂", "gut"])
@pytest.mark.parametrize(
    ("low", "high", "best"), [(1, 5, "low"), (1, 5, "high"), (0, 10, "high"), (1, 7, "high")]
)
def test_praise_and_emoji_give_no_score(text: str, low: int, high: int, best: Literal["high", "low"]) -> None:
    """A thumb, a smiley or a word of praise is never turned into a point whose direction we guessed."""
    assert parse_score(text, low, high, None, best).score is None
