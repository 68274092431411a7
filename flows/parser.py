"""Read a score from a customer's free-text answer, the same way for every channel.

Rules, in order:

* Text is read after NFKC normalisation and casefolding; only the first 2,000 characters
  are looked at, so the work stays linear and bounded. Nothing here ever raises.
* A label answer (``labels``) wins when the whole answer equals one label, ignoring case,
  surrounding punctuation and repeated spaces.
* An answer of only stars ("⭐⭐⭐⭐") is a star rating, where more stars are always better:
  it is read only on a five-point scale, as that many points from the worst end, so five
  stars are 5 where 5 is best and 1 on the school-grade scale where 1 is best. On any other
  scale stars are "ambiguous" (is ⭐⭐⭐ on 0-10 a 3 or a 6?). Other symbols and words of
  praise ("👍", "😀", "super", "top") are no number on any scale: the customer is asked again
  rather than given a score whose direction we guessed.
* A number at the start may be digits ("04", "４", "-1"), a keycap ("4️⃣", "🔟") or a
  number word from zero to ten ("Fünf.", "ten", "quatre"). A fraction ("8/10", "8 von 10",
  "8 out of 10", "8 sur 10") is its numerator. Words after the leading number are the
  comment, with separators such as "-", ":", "," dropped and the customer's own spelling kept.
* Number words: German, English and French are always read, as no French number word is
  another word in German or English ("six" is 6 in both). German and English words are
  matched as written ("fünf", "fuenf", "funf"), French ignores accents ("zéro", "zero").
  Spanish, Italian, Dutch, Portuguese and Polish are read only when ``language`` names
  them, because their words are everyday words elsewhere ("due" and "um" in English, "sei"
  in German, "très" in French would be "tres", 3 in Spanish); they ignore accents too
  ("três", "tres", "pięć").
* "ein", "eine", "one", "un" and "une" (and, for their language, "uno", "una", "um", "uma",
  "een", "jeden" ...) are numbers only at the start and not when a word or a digit follows
  them ("Eine 4" is 4, "One of the best" is no number, "Eine." is 1).
* Ambiguity: a second number competes with the leading one when only separators and
  connectors stand between them (whitespace, "-", "–", "/", ",", ".", ";", "&", "+", "~",
  oder/or/ou, bis/to/à, und/and/et, articles, and the connectors of ``language``), so
  "4 oder 5", "4-5", "4,5", "4 5", "4 ou 5" and "zwei oder drei" are ambiguous while
  "4 - schnell, 2 Tage gewartet" is 4 with a comment. The fraction forms above are read
  first and never compete (a word that is a connector in ``language``, Dutch "of" = or,
  is no fraction there).
* Without a leading number, exactly one digit number anywhere is the score and the
  whole answer is the comment ("Ich gebe eine 4"); two or more are ambiguous. Number
  words in the middle of a sentence are not read ("Ich habe zwei Tage gewartet").
* A number outside [low, high] is "out_of_range". A rejected answer has no comment.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

ParseProblem = Literal["empty", "no_number", "out_of_range", "ambiguous"]

_HEAD = 2000
_COMMAND_MAX = 40

_NUMBER_WORDS: dict[str, int] = {
    "null": 0, "eins": 1, "ein": 1, "eine": 1, "zwei": 2, "zwo": 2, "drei": 3, "vier": 4,
    "fünf": 5, "fuenf": 5, "funf": 5, "sechs": 6, "sieben": 7, "acht": 8, "neun": 9,
    "zehn": 10, "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
# Also indefinite articles, so they only count at the very start of an answer.
_ARTICLES = frozenset({"ein", "eine", "one"})
_CONNECTORS = frozenset({"oder", "or", "bis", "to", "und", "and", "ein", "eine", "a", "an"})
_FRACTIONS = frozenset({"/", "von", "of"})  # and "out of"


@dataclass(frozen=True)
class _Words:
    """One more language's words: numbers 0-10, the articles among them, "or"/"to"/"and", "of"."""

    numbers: Mapping[str, int]
    articles: frozenset[str] = frozenset()
    connectors: frozenset[str] = frozenset()
    fractions: frozenset[str] = frozenset()


# Number words as people write them and as Twilio's speech recognition spells them; read
# with accents ignored (see _plain), so each is written here once, with its accents.
_FRENCH = _Words(
    {"zéro": 0, "un": 1, "une": 1, "deux": 2, "trois": 3, "quatre": 4, "cinq": 5, "six": 6,
     "sept": 7, "huit": 8, "neuf": 9, "dix": 10},
    articles=frozenset({"un", "une"}),
    connectors=frozenset({"ou", "à", "et", "un", "une"}),
    fractions=frozenset({"sur"}),
)  # fmt: skip
# Read only for a survey in that language (see the module docstring).
_ASKED: dict[str, _Words] = {
    "es": _Words(
        {"cero": 0, "uno": 1, "una": 1, "un": 1, "dos": 2, "tres": 3, "cuatro": 4, "cinco": 5,
         "seis": 6, "siete": 7, "ocho": 8, "nueve": 9, "diez": 10},
        articles=frozenset({"un", "una", "uno"}),
        connectors=frozenset({"o", "u", "y", "e", "hasta", "un", "una"}),
        fractions=frozenset({"de", "sobre"}),
    ),
    "it": _Words(
        {"zero": 0, "uno": 1, "una": 1, "un": 1, "due": 2, "tre": 3, "quattro": 4, "cinque": 5,
         "sei": 6, "sette": 7, "otto": 8, "nove": 9, "dieci": 10},
        articles=frozenset({"un", "una", "uno"}),
        connectors=frozenset({"o", "oppure", "e", "ed", "un", "una", "uno"}),
        fractions=frozenset({"su"}),
    ),
    "nl": _Words(
        {"nul": 0, "één": 1, "twee": 2, "drie": 3, "vier": 4, "vijf": 5, "zes": 6, "zeven": 7,
         "acht": 8, "negen": 9, "tien": 10},
        articles=frozenset({"een"}),
        connectors=frozenset({"of", "tot", "en", "een"}),
        fractions=frozenset({"van", "uit", "op"}),
    ),
    "pt": _Words(
        {"zero": 0, "um": 1, "uma": 1, "dois": 2, "duas": 2, "três": 3, "quatro": 4, "cinco": 5,
         "seis": 6, "sete": 7, "oito": 8, "nove": 9, "dez": 10},
        articles=frozenset({"um", "uma"}),
        connectors=frozenset({"ou", "até", "e", "um", "uma"}),
        fractions=frozenset({"de", "em"}),
    ),
    "pl": _Words(
        {"zero": 0, "jeden": 1, "jedna": 1, "jedno": 1, "dwa": 2, "dwie": 2, "trzy": 3,
         "cztery": 4, "pięć": 5, "sześć": 6, "siedem": 7, "osiem": 8, "dziewięć": 9,
         "dziesięć": 10},
        articles=frozenset({"jeden", "jedna", "jedno"}),
        connectors=frozenset({"lub", "albo", "czy", "do", "i"}),
        fractions=frozenset({"na", "z"}),
    ),
}  # fmt: skip
_JOINERS = frozenset("-–—−‐/,.;&+~|")
_MINUS = frozenset("-−")
_APOSTROPHES = frozenset("'’")
_KEYCAP_TEN = "\U0001f51f"
_VS16, _KEYCAP = "\ufe0f", "\u20e3"
_STARS = frozenset("⭐★")
_STAR_PARTS = _STARS | {_VS16}
_STAR_POINTS = 5  # star ratings have five points
# Left out of a comment's start: dashes, colons, closing brackets, invisible leftovers.
# Opening brackets and quotes stay, they belong to what the customer wrote next.
_COMMENT_STRIP = frozenset({"Pd", "Po", "Pe", "Pf", "Pc", "Mn", "Me", "Cf"})

_STOP = frozenset({"stop", "stopp", "abbrechen", "cancel"})
_SKIP = frozenset(
    {
        "skip",
        "überspringen",
        "ueberspringen",
        "uberspringen",
        "weiter",
        "next",
        "nein danke",
        "no thanks",
        "nichts",
    }
)


def _plain(word: str) -> str:
    """``word`` without its accents: "zéro" is "zero", "pięć" is "piec"."""
    return "".join(c for c in unicodedata.normalize("NFD", word) if not unicodedata.combining(c))


class _Vocabulary(NamedTuple):
    """The words one parse reads: German and English as written, the others without accents."""

    numbers: Mapping[str, int]  # keys without accents
    articles: frozenset[str]
    connectors: frozenset[str]
    fractions: frozenset[str]


def _vocabulary(*extra: _Words) -> _Vocabulary:
    numbers = {_plain(word): value for words in extra for word, value in words.numbers.items()}
    own_connectors = frozenset().union(*(_plain_all(w.connectors) for w in extra))
    return _Vocabulary(
        numbers,
        _ARTICLES.union(*(_plain_all(w.articles) for w in extra)),
        _CONNECTORS | own_connectors,
        # Dutch "of" is "or": there "4 of 5" is two numbers, not a fraction.
        _FRACTIONS.union(*(_plain_all(w.fractions) for w in extra)) - own_connectors,
    )


def _plain_all(words: frozenset[str]) -> frozenset[str]:
    return frozenset(_plain(w) for w in words)


_ALWAYS = _vocabulary(_FRENCH)
_BY_LANGUAGE = {language: _vocabulary(_FRENCH, words) for language, words in _ASKED.items()}


@dataclass(frozen=True)
class ParsedAnswer:
    """What an answer said: a score with an optional comment, or why there is none."""

    score: int | None
    comment: str | None
    problem: ParseProblem | None

    @property
    def ok(self) -> bool:
        """Whether the answer gave a usable score."""
        return self.score is not None


class _Tok(NamedTuple):
    kind: Literal["num", "word", "sep"]
    text: str  # normalised
    start: int  # index into the stripped original answer
    value: int  # only meaningful for "num"


def parse_score(
    text: str,
    low: int,
    high: int,
    labels: Mapping[int, str] | None = None,
    best: Literal["high", "low"] = "high",
    language: str | None = None,
) -> ParsedAnswer:
    """Read a score between low and high (inclusive) from a customer's answer.

    `best` says which end of the scale is the good one; only star ratings need it.
    `language` (the survey's) adds its number words to German, English and French ones.
    """
    words = _BY_LANGUAGE.get(language or "", _ALWAYS)
    body = text.strip()
    head = body[:_HEAD]
    toks = _tokens(head)
    if not toks:
        return ParsedAnswer(None, None, "empty")
    key = _label_key(head) if labels else ""
    if labels and key:
        found = {value for value, label in labels.items() if _label_key(label) == key}
        if len(found) > 1:
            return ParsedAnswer(None, None, "ambiguous")
        if found:
            return _checked(found.pop(), None, low, high)
    if all(t.kind == "sep" and t.text in _STAR_PARTS for t in toks):
        stars = sum(t.text in _STARS for t in toks)
        if stars:
            return _stars(stars, low, high, best)

    first = next((i for i, t in enumerate(toks) if not (t.kind == "sep" and _is_punct(t.text))), len(toks))
    lead = _number_at(toks, first, words, leading=True)
    if lead is not None:
        value, after = lead
        rival_at = _skip_joiners(toks, after, words)
        rival = rival_at < len(toks) and _number_at(toks, rival_at, words, leading=False) is not None
        is_number = not _is_article(toks[first], words) or (
            after == len(toks)
            or after > first + 1  # a fraction: "eine von zehn"
            or toks[after].kind == "sep"
            or (rival and rival_at > after)  # "one or two"
        )
        if is_number:
            if rival:
                return ParsedAnswer(None, None, "ambiguous")
            comment = _comment(body, toks[after].start) if after < len(toks) else None
            return _checked(value, comment, low, high)

    values: list[int] = []
    i = 0
    while i < len(toks):
        found_num = _number_at(toks, i, words, leading=False) if toks[i].kind == "num" else None
        if found_num is None:
            i += 1
            continue
        values.append(found_num[0])
        i = found_num[1]
    if not values:
        return ParsedAnswer(None, None, "no_number")
    if len(values) > 1:
        return ParsedAnswer(None, None, "ambiguous")
    return _checked(values[0], head.rstrip(), low, high)


def is_stop(text: str) -> bool:
    """Whether the answer asks to end the survey: stop, abbrechen, cancel (also stopp, /stop, 'Abbrechen!')."""
    return _command(text) in _STOP


def is_skip(text: str) -> bool:
    """Whether the answer asks to skip an optional question: skip, /skip, überspringen, weiter, next, '-', ..."""
    body = text.strip()
    if body and len(body) <= _COMMAND_MAX and all(unicodedata.category(c) == "Pd" for c in body):
        return True
    return _command(text) in _SKIP


def _stars(stars: int, low: int, high: int, best: Literal["high", "low"]) -> ParsedAnswer:
    """A star rating (1 to 5 stars, more is better) as a point of a five-point scale."""
    if high - low + 1 != _STAR_POINTS:
        return ParsedAnswer(None, None, "ambiguous")
    if not 1 <= stars <= _STAR_POINTS:
        return ParsedAnswer(None, None, "out_of_range")
    return ParsedAnswer(low + stars - 1 if best == "high" else high - stars + 1, None, None)


def _checked(value: int, comment: str | None, low: int, high: int) -> ParsedAnswer:
    if low <= value <= high:
        return ParsedAnswer(value, comment or None, None)
    return ParsedAnswer(None, None, "out_of_range")


def _tokens(head: str) -> list[_Tok]:
    # Normalising per character keeps every token's position in the original text,
    # which the comment is cut from; words are normalised again as a whole below.
    pieces = [unicodedata.normalize("NFKC", c).casefold() for c in head]
    toks: list[_Tok] = []
    i, n = 0, len(pieces)
    while i < n:
        p, start = pieces[i], i
        if p.isspace():
            i += 1
        elif p == _KEYCAP_TEN:
            toks.append(_Tok("num", p, start, 10))
            i += 1
        elif _is_digits(p) or (
            p in _MINUS
            and i + 1 < n
            and _is_digits(pieces[i + 1])
            and (i == 0 or not _is_alnum(pieces[i - 1]))
        ):
            sign = -1 if p in _MINUS else 1
            if sign < 0:
                i += 1
            value = 0
            # Built digit by digit: int(str) would hit Python's digit-count limit.
            while i < n and _is_digits(pieces[i]):
                for ch in pieces[i]:
                    value = value * 10 + unicodedata.decimal(ch)
                i += 1
            keycap = i + 1 if i < n and pieces[i] == _VS16 else i
            if keycap < n and pieces[keycap] == _KEYCAP:
                i = keycap + 1
            toks.append(_Tok("num", "".join(pieces[start:i]), start, sign * value))
        elif p[:1].isalpha():
            i += 1
            while i < n and (
                _is_letter(pieces[i])
                or (pieces[i] in _APOSTROPHES and i + 1 < n and _is_letter(pieces[i + 1]))
            ):
                i += 1
            toks.append(_Tok("word", unicodedata.normalize("NFKC", "".join(pieces[start:i])), start, 0))
        else:
            toks.append(_Tok("sep", p, start, 0))
            i += 1
    return toks


def _number_at(toks: list[_Tok], i: int, words: _Vocabulary, *, leading: bool) -> tuple[int, int] | None:
    """The number starting at token i and the index after it (past a fraction's denominator)."""
    value = _single_number(toks, i, words, leading=leading)
    if value is None:
        return None
    j = i + 1
    if j < len(toks) and _word_key(toks[j]) in words.fractions:
        k = j + 1
    elif j + 1 < len(toks) and toks[j].text == "out" and toks[j + 1].text == "of":
        k = j + 2
    else:
        return value, j
    if _single_number(toks, k, words, leading=True) is None:
        return value, j
    return value, k + 1


def _single_number(toks: list[_Tok], i: int, words: _Vocabulary, *, leading: bool) -> int | None:
    if i >= len(toks):
        return None
    tok = toks[i]
    if tok.kind == "num":
        return tok.value
    if tok.kind == "word" and (leading or not _is_article(tok, words)):
        found = _NUMBER_WORDS.get(tok.text)
        return found if found is not None else words.numbers.get(_plain(tok.text))
    return None


def _word_key(tok: _Tok) -> str:
    """A word as the word lists hold it (without accents); a separator as it is."""
    return _plain(tok.text) if tok.kind == "word" else tok.text


def _is_article(tok: _Tok, words: _Vocabulary) -> bool:
    return tok.kind == "word" and _plain(tok.text) in words.articles


def _skip_joiners(toks: list[_Tok], i: int, words: _Vocabulary) -> int:
    while i < len(toks) and (
        (toks[i].kind == "sep" and toks[i].text in _JOINERS)
        or (toks[i].kind == "word" and _plain(toks[i].text) in words.connectors)
    ):
        i += 1
    return i


def _comment(body: str, start: int) -> str | None:
    # Bounded slice: the comment is capped anyway, and this keeps huge answers cheap.
    rest = body[start : start + 2 * _HEAD]
    skip = 0
    while skip < len(rest) and (rest[skip].isspace() or unicodedata.category(rest[skip]) in _COMMENT_STRIP):
        skip += 1
    return rest[skip : skip + _HEAD].rstrip() or None


def _label_key(text: str) -> str:
    norm = unicodedata.normalize("NFKC", text[: 2 * _HEAD]).casefold()
    begin, end = 0, len(norm)
    while begin < end and (norm[begin].isspace() or _is_punct(norm[begin])):
        begin += 1
    while end > begin and (norm[end - 1].isspace() or _is_punct(norm[end - 1])):
        end -= 1
    return " ".join(norm[begin:end].split())


def _command(text: str) -> str | None:
    body = text.strip()
    if len(body) > _COMMAND_MAX:  # commands are short; a long answer is never one
        return None
    norm = unicodedata.normalize("NFKC", body).casefold()
    return " ".join("".join(" " if _is_punct(c) else c for c in norm).split())


def _is_digits(piece: str) -> bool:
    return bool(piece) and all(unicodedata.decimal(c, None) is not None for c in piece)


def _is_letter(piece: str) -> bool:
    return bool(piece) and all(c.isalpha() or unicodedata.category(c) in {"Mn", "Mc", "Me"} for c in piece)


def _is_alnum(piece: str) -> bool:
    return any(c.isalnum() for c in piece)


def _is_punct(text: str) -> bool:
    return bool(text) and all(unicodedata.category(c).startswith("P") for c in text)
