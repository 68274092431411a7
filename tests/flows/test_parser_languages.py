"""flows.parser beyond German and English: French always, the others for a survey in their language.

Every expected value here was checked by hand against the module's rules.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows.parser import ParsedAnswer, ParseProblem, parse_score
from tests.flows.test_parser import CASES, LABELS

# (text, low, high, language, score, comment, problem)
FRENCH: list[tuple[str, int, int, str | None, int | None, str | None, ParseProblem | None]] = [
    # every word, as written and as Twilio's fr-FR speech recognition spells it
    ("zéro", 0, 10, None, 0, None, None),
    ("Zéro.", 0, 10, "fr", 0, None, None),
    ("zero", 0, 10, "fr", 0, None, None),
    ("ZÈRO", 0, 10, "fr", 0, None, None),  # accents are ignored
    ("un", 1, 5, None, 1, None, None),
    ("Une.", 1, 5, "fr", 1, None, None),
    ("deux", 1, 5, None, 2, None, None),
    ("Trois", 1, 5, None, 3, None, None),
    ("quatre", 1, 5, None, 4, None, None),
    ("Quatre.", 1, 5, "fr", 4, None, None),
    ("cinq !", 1, 5, None, 5, None, None),
    ("six", 0, 10, None, 6, None, None),
    ("sept", 0, 10, None, 7, None, None),
    ("huit", 0, 10, None, 8, None, None),
    ("Neuf", 0, 10, None, 9, None, None),
    ("dix", 0, 10, None, 10, None, None),
    # fractions, a comment, ambiguity
    ("neuf sur dix", 0, 10, None, 9, None, None),
    ("8 sur 10", 0, 10, "fr", 8, None, None),
    ("Quatre, très bien", 1, 5, None, 4, "très bien", None),
    ("4 - rapide et aimable", 1, 5, "fr", 4, "rapide et aimable", None),
    ("quatre ou cinq", 1, 5, None, None, None, "ambiguous"),
    ("4 à 5", 1, 5, None, None, None, "ambiguous"),
    ("4 et 5", 1, 5, "fr", None, None, "ambiguous"),
    ("deux ou trois", 1, 5, "fr", None, None, "ambiguous"),
    # "un" and "une" are articles too: numbers only at the start, alone or before a separator
    ("Une 4", 1, 5, None, 4, "Une 4", None),
    ("Un peu lent", 1, 5, None, None, None, "no_number"),
    ("Une des meilleures", 1, 5, "fr", None, None, "no_number"),
    # words in the middle of a sentence are not read; "très" is no number in French
    ("J'ai attendu deux jours", 1, 5, None, None, None, "no_number"),
    ("Très bien", 1, 5, "fr", None, None, "no_number"),
    ("Je donne un 4", 1, 5, "fr", 4, "Je donne un 4", None),
    ("dix", 1, 5, None, None, None, "out_of_range"),
]

# Read only for a survey in that language.
ASKED: list[tuple[str, int, int, str | None, int | None, str | None, ParseProblem | None]] = [
    ("dos", 1, 5, "es", 2, None, None),
    ("dos", 1, 5, None, None, None, "no_number"),
    ("Cuatro.", 1, 5, "es", 4, None, None),
    ("ocho de diez", 0, 10, "es", 8, None, None),
    ("cuatro o cinco", 1, 5, "es", None, None, "ambiguous"),
    ("Uno de los mejores", 1, 5, "es", None, None, "no_number"),
    ("Très bien", 1, 5, "es", 3, "bien", None),  # "tres" in Spanish, whatever the accent
    ("due", 1, 5, "it", 2, None, None),
    ("Due to the wait, 2", 1, 5, "en", 2, "Due to the wait, 2", None),
    ("sei", 1, 7, "it", 6, None, None),
    ("Sei ehrlich: 4", 1, 5, "de", 4, "Sei ehrlich: 4", None),
    ("otto su dieci", 0, 10, "it", 8, None, None),
    ("vijf", 1, 5, "nl", 5, None, None),
    ("één", 1, 5, "nl", 1, None, None),
    ("een", 1, 5, "nl", 1, None, None),
    ("Een 4", 1, 5, "nl", 4, "Een 4", None),
    ("acht van tien", 0, 10, "nl", 8, None, None),
    ("4 of 5", 1, 5, "nl", None, None, "ambiguous"),  # Dutch "of" is "or"
    ("4 of 5", 1, 5, "en", 4, None, None),  # English "of" makes a fraction
    ("três", 1, 5, "pt", 3, None, None),
    ("tres", 1, 5, "pt", 3, None, None),
    ("Um", 1, 5, "pt", 1, None, None),
    ("Um, 4", 1, 5, "en", 4, "Um, 4", None),
    ("nove em dez", 0, 10, "pt", 9, None, None),
    ("pięć", 1, 5, "pl", 5, None, None),
    ("piec", 1, 5, "pl", 5, None, None),
    ("osiem na dziesięć", 0, 10, "pl", 8, None, None),
    ("dwa lub trzy", 1, 5, "pl", None, None, "ambiguous"),
    ("cztery", 1, 5, "fr", None, None, "no_number"),  # Polish only for a Polish survey
    # German, English and French stay readable in every language, an unknown one reads those
    ("vier", 1, 5, "pl", 4, None, None),
    ("four", 1, 5, "es", 4, None, None),
    ("quatre", 1, 5, "nl", 4, None, None),
    ("quatre", 1, 5, "ja", 4, None, None),
    ("dos", 1, 5, "ja", None, None, "no_number"),
]


@pytest.mark.parametrize(("text", "low", "high", "language", "score", "comment", "problem"), FRENCH + ASKED)
def test_parse_score_in_other_languages(
    text: str,
    low: int,
    high: int,
    language: str | None,
    score: int | None,
    comment: str | None,
    problem: ParseProblem | None,
) -> None:
    """Each answer reads as the expected score, comment and problem for a survey in ``language``."""
    assert ParsedAnswer(score, comment, problem) == parse_score(text, low, high, language=language)


WORDS = {
    "fr": "zéro un deux trois quatre cinq six sept huit neuf dix",
    "es": "cero uno dos tres cuatro cinco seis siete ocho nueve diez",
    "it": "zero uno due tre quattro cinque sei sette otto nove dieci",
    "nl": "nul één twee drie vier vijf zes zeven acht negen tien",
    "pt": "zero um dois três quatro cinco seis sete oito nove dez",
    "pl": "zero jeden dwa trzy cztery pięć sześć siedem osiem dziewięć dziesięć",
}
# The same words typed without accents, as on a keyboard without them.
UNACCENTED = {
    "fr": "zero un deux trois quatre cinq six sept huit neuf dix",
    "nl": "nul een twee drie vier vijf zes zeven acht negen tien",
    "pt": "zero um dois tres quatro cinco seis sete oito nove dez",
    "pl": "zero jeden dwa trzy cztery piec szesc siedem osiem dziewiec dziesiec",
}


@pytest.mark.parametrize(
    ("language", "words"),
    [*WORDS.items(), *UNACCENTED.items()],
    ids=[*WORDS, *(f"{code}-unaccented" for code in UNACCENTED)],
)
def test_every_number_word_from_zero_to_ten(language: str, words: str) -> None:
    """Zero to ten in each language read back as 0-10 for a survey in it, with or without accents."""
    assert list(range(11)) == [parse_score(w, 0, 10, language=language).score for w in words.split()]


@pytest.mark.parametrize("language", [None, "de", "en", "fr"])
@pytest.mark.parametrize(("text", "low", "high", "score", "comment", "problem"), CASES)
def test_german_and_english_answers_read_the_same_in_any_such_survey(
    text: str,
    low: int,
    high: int,
    score: int | None,
    comment: str | None,
    problem: ParseProblem | None,
    language: str | None,
) -> None:
    """Every hand case of test_parser reads the same for a survey in de, en or fr as with no language."""
    labels = LABELS if (low, high) == (1, 5) else None
    assert ParsedAnswer(score, comment, problem) == parse_score(text, low, high, labels, language=language)


_texts = st.one_of(st.text(), st.binary().map(lambda b: b.decode("utf-8", "surrogateescape")))


@given(
    text=_texts,
    low=st.integers(-5, 10),
    span=st.integers(0, 20),
    language=st.sampled_from([None, "de", "en", "fr", "es", "it", "nl", "pt", "pl", "ja", ""]),
)
def test_parse_score_never_raises_in_any_language(
    text: str, low: int, span: int, language: str | None
) -> None:
    """Any text on any scale in any language parses without raising; an accepted score is on the scale."""
    answer = parse_score(text, low, low + span, language=language)
    on_scale = answer.score is not None and low <= answer.score <= low + span
    assert (answer.ok, answer.ok) == (on_scale, answer.problem is None)
