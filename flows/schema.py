"""The flow schema: what a survey flow file may say, as pydantic models.

Field-level rules live on the models; rules that span fields (a condition that names an
unknown question, a label outside its scale, a missing translation) live in
``problems()``, so that every one of them can be reported with its path and line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

QuestionKind = Literal["rating", "nps", "text"]
Metric = Literal["csat", "nps", "ces"]
Best = Literal["high", "low"]

_ID = r"^[a-z][a-z0-9_-]{0,63}$"
# Shorter, so that a Telegram button's data (64 bytes at most) holds the survey id, the
# question id and the value.
_QUESTION_ID = r"^[a-z][a-z0-9_-]{0,39}$"
_LANG = r"^[a-z]{2}$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Scale(_Model):
    """A numeric answer range and which end of it is best (``low`` for school grades)."""

    min: int = Field(ge=0, le=100)
    max: int = Field(ge=0, le=100)
    best: Best = "high"

    @model_validator(mode="after")
    def _ordered(self) -> Scale:
        if self.min >= self.max:
            raise ValueError(f"min ({self.min}) must be smaller than max ({self.max})")
        return self

    def contains(self, value: int) -> bool:
        """Whether ``value`` is a point of this scale."""
        return self.min <= value <= self.max

    def best_points(self, count: int) -> tuple[int, ...]:
        """The ``count`` best points of the scale, best first."""
        if self.best == "high":
            return tuple(range(self.max, max(self.max - count, self.min - 1), -1))
        return tuple(range(self.min, min(self.min + count, self.max + 1)))

    def worst_points(self, count: int) -> tuple[int, ...]:
        """The ``count`` worst points of the scale, worst first."""
        flipped = Scale(min=self.min, max=self.max, best="low" if self.best == "high" else "high")
        return flipped.best_points(count)


NPS_SCALE = Scale(min=0, max=10, best="high")


class Condition(_Model):
    """A test on the score of an earlier question; all given comparisons must hold.

    An earlier question that was not answered (skipped, or left after too many invalid
    answers) makes the condition false.
    """

    question: str
    eq: int | None = None
    lt: int | None = None
    lte: int | None = None
    gt: int | None = None
    gte: int | None = None
    in_: tuple[int, ...] | None = Field(default=None, alias="in")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _has_test(self) -> Condition:
        if all(v is None for v in (self.eq, self.lt, self.lte, self.gt, self.gte, self.in_)):
            raise ValueError("a condition needs at least one of eq, lt, lte, gt, gte, in")
        return self

    def holds(self, scores: Mapping[str, int | None]) -> bool:
        """Whether the condition holds for the scores given so far."""
        score = scores.get(self.question)
        if score is None:
            return False
        checks = (
            self.eq is None or score == self.eq,
            self.lt is None or score < self.lt,
            self.lte is None or score <= self.lte,
            self.gt is None or score > self.gt,
            self.gte is None or score >= self.gte,
            self.in_ is None or score in self.in_,
        )
        return all(checks)


class Variant(_Model):
    """Other wording of a question, used when ``when`` holds (first match wins)."""

    when: Condition
    prompt: dict[str, str]


class Question(_Model):
    """One question of a flow."""

    id: str = Field(pattern=_QUESTION_ID)
    kind: QuestionKind
    metric: Metric | None = None
    scale: Scale | None = None
    prompt: dict[str, str]
    labels: dict[str, dict[int, str]] = Field(default_factory=dict)
    optional: bool = False
    ask_if: Condition | None = None
    variants: tuple[Variant, ...] = ()

    @property
    def answer_scale(self) -> Scale | None:
        """The scale answers are parsed against: NPS is always 0-10, text has none."""
        if self.kind == "nps":
            return self.scale or NPS_SCALE
        if self.kind == "rating":
            return self.scale
        return None

    def text_for(self, language: str, scores: Mapping[str, int | None]) -> str:
        """The prompt in ``language``, in the wording of the first variant that holds."""
        for variant in self.variants:
            if variant.when.holds(scores):
                return variant.prompt[language]
        return self.prompt[language]


class FlowTexts(_Model):
    """The fixed texts of a flow in one language.

    ``reprompt`` may use ``{min}`` and ``{max}``; it is sent after an invalid answer.
    ``stop_hint`` ("Reply stop to end the survey") follows the intro only where the customer
    types a reply (SMS, WhatsApp, Telegram, the terminal): a web page has buttons and a
    caller hangs up, so there it would be wrong. It is optional, so an older flow whose
    intro says it itself stays valid and is shown as written everywhere.
    """

    intro: str
    thanks: str
    reprompt: str
    expired: str
    stopped: str
    stop_hint: str | None = None


class Flow(_Model):
    """A survey flow: ordered questions and the texts around them, in several languages."""

    id: str = Field(pattern=_ID)
    version: int = Field(ge=1)
    title: str | None = None
    languages: tuple[str, ...] = Field(min_length=1)
    default_language: str = Field(pattern=_LANG)
    max_reprompts: int = Field(default=2, ge=0, le=10)
    texts: dict[str, FlowTexts]
    questions: tuple[Question, ...] = Field(min_length=1)
    # The one question per metric whose answers are the flow's CSAT, NPS or CES, so that
    # one customer counts once: {csat: satisfaction}. A metric not named here takes its
    # first question. The other questions of a metric are reported per question.
    headline: dict[Metric, str] = Field(default_factory=dict)

    @field_validator("languages")
    @classmethod
    def _two_letter_codes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for code in value:
            if not re.fullmatch(_LANG, code):
                raise ValueError(f"'{code}' is not a two-letter lower-case language code such as de or en")
        if len(set(value)) != len(value):
            raise ValueError(f"languages {list(value)} name a language twice")
        return value

    def question(self, question_id: str) -> Question:
        """The question with this id; KeyError if there is none."""
        for q in self.questions:
            if q.id == question_id:
                return q
        raise KeyError(question_id)

    def headline_question(self, metric: Metric) -> str | None:
        """The id of the question whose answers are this flow's `metric`, or None without one."""
        named = self.headline.get(metric)
        if named is not None:
            return named
        return next((q.id for q in self.questions if q.metric == metric), None)

    def missing_language(self, language: str) -> str | None:
        """Why a survey cannot be in ``language`` ("flow nps has no language 'fr'; it has de, en"), or None."""
        if language in self.languages:
            return None
        return f"flow {self.id} has no language {language!r}; it has {', '.join(self.languages)}"

    def language_for(self, wanted: str | None) -> str:
        """``wanted`` if the flow speaks it, else the flow's default language."""
        if wanted:
            short = wanted.strip().lower()[:2]
            if short in self.languages:
                return short
        return self.default_language


Path = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """A rule a flow breaks, with the path of the offending field in the flow file."""

    path: Path
    message: str


def problems(flow: Flow) -> list[Problem]:
    """Every cross-field rule ``flow`` breaks, in file order; empty when it is sound."""
    found: list[Problem] = []
    langs = flow.languages
    if flow.default_language not in langs:
        found.append(
            Problem(("default_language",), f"'{flow.default_language}' is not in languages {list(langs)}")
        )
    for lang in langs:
        if lang not in flow.texts:
            found.append(Problem(("texts",), f"missing texts for declared language '{lang}'"))
    for lang, texts in flow.texts.items():
        if lang not in langs:
            found.append(Problem(("texts", lang), f"language '{lang}' is not declared in languages"))
        try:
            texts.reprompt.format(min=1, max=5)
        except (KeyError, IndexError, ValueError) as exc:
            found.append(
                Problem(
                    ("texts", lang, "reprompt"),
                    f"may use only the placeholders {{min}} and {{max}} ({type(exc).__name__}: {exc})",
                )
            )

    seen: dict[str, int] = {}
    for i, q in enumerate(flow.questions):
        at: Path = ("questions", i)
        if q.id in seen:
            found.append(
                Problem((*at, "id"), f"duplicate question id '{q.id}' (first at question {seen[q.id] + 1})")
            )
        found.extend(_question_problems(q, at, langs))
        for cond_at, cond in _conditions(q, at):
            found.extend(_condition_problems(flow, cond, cond_at, seen, q.id))
        seen.setdefault(q.id, i)
    found.extend(_headline_problems(flow))
    return found


def _headline_problems(flow: Flow) -> list[Problem]:
    """Each `headline` entry names a question of the flow that has that metric."""
    found: list[Problem] = []
    for metric, question_id in flow.headline.items():
        matching = [q.id for q in flow.questions if q.metric == metric]
        if question_id not in matching:
            allowed = ", ".join(matching) if matching else f"none: no question has metric {metric}"
            found.append(
                Problem(
                    ("headline", metric),
                    f"'{question_id}' is not a {metric} question of this flow (allowed: {allowed})",
                )
            )
    return found


def _conditions(q: Question, at: Path) -> list[tuple[Path, Condition]]:
    conds: list[tuple[Path, Condition]] = []
    if q.ask_if is not None:
        conds.append(((*at, "ask_if", "question"), q.ask_if))
    conds.extend(((*at, "variants", j, "when", "question"), v.when) for j, v in enumerate(q.variants))
    return conds


def _question_problems(q: Question, at: Path, langs: tuple[str, ...]) -> list[Problem]:
    found: list[Problem] = []
    if q.kind == "rating" and q.scale is None:
        found.append(Problem((*at, "kind"), "a rating question needs a scale (min, max, best)"))
    if q.kind == "text" and q.scale is not None:
        found.append(Problem((*at, "scale"), "a text question takes no scale"))
    if q.kind == "text" and q.metric is not None:
        found.append(Problem((*at, "metric"), "a text question has no metric"))
    if q.kind == "nps" and q.scale is not None and (q.scale.min, q.scale.max) != (0, 10):
        found.append(Problem((*at, "scale"), "an nps question is always 0-10"))
    if q.metric == "nps" and q.kind != "nps":
        found.append(Problem((*at, "metric"), "metric nps needs kind nps"))
    for lang in langs:
        if lang not in q.prompt:
            found.append(Problem((*at, "prompt"), f"missing prompt for declared language '{lang}'"))
        for j, v in enumerate(q.variants):
            if lang not in v.prompt:
                found.append(
                    Problem((*at, "variants", j, "prompt"), f"missing prompt for declared language '{lang}'")
                )
    scale = q.answer_scale
    for lang, labels in q.labels.items():
        if lang not in langs:
            found.append(Problem((*at, "labels", lang), f"language '{lang}' is not declared in languages"))
        if scale is None:
            found.append(Problem((*at, "labels"), "labels need a scale"))
            break
        for value in labels:
            if not scale.contains(value):
                found.append(
                    Problem(
                        (*at, "labels", lang, value),
                        f"label {value} is outside the scale {scale.min}-{scale.max}",
                    )
                )
    return found


def _condition_problems(
    flow: Flow, cond: Condition, at: Path, earlier: Mapping[str, int], own_id: str
) -> list[Problem]:
    if cond.question not in earlier:
        ids = [q.id for q in flow.questions]
        if cond.question == own_id:
            why = "the question itself"
        else:
            why = "a later question" if cond.question in ids else "an unknown question"
        return [Problem(at, f"'{cond.question}' is {why}; a condition may only name an earlier question")]
    target = flow.questions[earlier[cond.question]]
    if target.answer_scale is None:
        return [Problem(at, f"'{cond.question}' is a text question and has no score to test")]
    return []
