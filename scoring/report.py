"""The report model: histogram rows in, a typed report of CSAT/NPS/CES with targets and change out.

Pure: bot/ runs the GROUP BY queries and hands the rows here; this module only counts, and
holds the pydantic models that every renderer reads (the terminal formats, Telegram
`/report`, the dashboard, the chart) and that FastAPI declares as `GET /api/report`'s
response, so the numbers agree everywhere and `/openapi.json` describes them.

Keys that only some reports have (`change` and `previous` of the period's metrics, `target`
of a question's metric, `csi`, `by`/`groups`, `trend_by`/`trend`, a question's one metric)
are written to JSON only when the builder set them: `Report.json_data()` dumps with
``exclude_unset``, so the JSON is key for key what the builder put in.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from scoring.metrics import (
    DEFAULT_TARGETS,
    Ces,
    Csat,
    CsatRule,
    Histogram,
    Nps,
    Scale,
    SciBand,
    ces,
    check_target,
    csat,
    csat_change,
    nps,
    nps_change,
)

Metric = Literal["csat", "nps", "ces"]
TrendBy = Literal["day", "week", "month"]


@dataclass(frozen=True)
class HistogramRow:
    """One row of ``SELECT metric, scale, score, count(*) … GROUP BY``."""

    metric: str
    scale: Scale
    score: int
    count: int


@dataclass(frozen=True)
class Scores:
    """CSAT, NPS and CES of one slice of answers (a period, a group or a bucket)."""

    csat: Csat
    nps: Nps
    ces: Ces


def scores(rows: Iterable[HistogramRow], rule: CsatRule = "top2") -> Scores:
    """The three metrics of a slice; CES uses the scale most of its answers were given on."""
    by_scale: dict[tuple[str, Scale], dict[int, int]] = defaultdict(dict)
    for row in rows:
        counts = by_scale[(row.metric, row.scale)]
        counts[row.score] = counts.get(row.score, 0) + row.count
    csat_hists = [
        Histogram(scale, counts) for (metric, scale), counts in by_scale.items() if metric == "csat"
    ]
    nps_counts: dict[int, int] = {}
    for (metric, _scale), counts in by_scale.items():
        if metric == "nps":
            for score, count in counts.items():
                nps_counts[score] = nps_counts.get(score, 0) + count
    ces_hists = [Histogram(scale, counts) for (metric, scale), counts in by_scale.items() if metric == "ces"]
    ces_hist = max(ces_hists, key=lambda h: h.n, default=Histogram(Scale(1, 7, "high"), {}))
    return Scores(csat(csat_hists, rule), nps(nps_counts), ces(ces_hist))


class _Model(BaseModel):
    """Frozen, and no key beyond the declared ones (the schema says additionalProperties: false)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class TargetCheck(_Model):
    """Whether the value meets its target, and whether the whole 95 % interval agrees."""

    target: float
    met: bool
    certain: bool


class Change(_Model):
    """The change from the previous period of the same length, with its test (95 %)."""

    delta: float | None = Field(description="Percentage points for CSAT, NPS points for NPS.")
    z: float | None
    p_value: float | None = Field(description="Two-sided.")
    significant: bool


class Previous(_Model):
    """A metric of the previous period, in brief."""

    value: float | None
    n: int
    ci95_low: float | None
    ci95_high: float | None


class CsatScore(_Model):
    """CSAT in percent with its Wilson interval; value and bounds are null when nobody answered."""

    value: float | None
    n: int
    satisfied: int
    ci95_low: float | None
    ci95_high: float | None
    rule: CsatRule
    too_few: bool
    target: TargetCheck | None = Field(None, description="Null without a target or a value.")
    change: Change | None = Field(None, description="The period's only.")
    previous: Previous | None = Field(None, description="The period's only.")


class NpsScore(_Model):
    """NPS (−100..100) with its adjusted-Wald interval; `adjusted` and `se` are that estimate's."""

    value: float | None
    n: int
    promoters: int
    passives: int
    detractors: int
    ci95_low: float | None
    ci95_high: float | None
    too_few: bool
    adjusted: float | None
    se: float | None
    target: TargetCheck | None = Field(None, description="Null without a target or a value.")
    change: Change | None = Field(None, description="The period's only.")
    previous: Previous | None = Field(None, description="The period's only.")


class CesScore(_Model):
    """CES: the mean effort score with its t interval, and the share of easy answers (percent)."""

    value: float | None
    n: int
    sd: float | None
    ci95_low: float | None
    ci95_high: float | None
    easy: int
    easy_share: float | None
    too_few: bool
    target: TargetCheck | None = Field(None, description="Null without a target or a value.")
    previous: Previous | None = Field(None, description="The period's only.")

    @property
    def change(self) -> None:
        """CES has no test of its change: always None, so that renderers treat the three alike."""
        return None


Score = CsatScore | NpsScore | CesScore


class MeanScore(_Model):
    """A question's mean score on its scale with its t interval."""

    value: float | None
    n: int
    sd: float | None
    ci95_low: float | None
    ci95_high: float | None
    too_few: bool


class QuestionScale(_Model):
    """The points min..max of a question; best says which end is the good one."""

    min: int
    max: int
    best: Literal["high", "low"]


class QuestionScore(_Model):
    """One rating question with all its answers: its metric (under the metric's own key) and mean."""

    question: str
    metric: Metric
    scale: QuestionScale
    mean: MeanScore
    csat: CsatScore | None = Field(None, description="Present when metric is csat.")
    nps: NpsScore | None = Field(None, description="Present when metric is nps.")
    ces: CesScore | None = Field(None, description="Present when metric is ces.")

    @property
    def score(self) -> Score:
        """The question's metric (the one of csat, nps, ces that `metric` names)."""
        found: Score | None = getattr(self, self.metric)
        if found is None:
            raise ValueError(f"question {self.question!r} has no {self.metric} score")
        return found


class Sci(_Model):
    """Secure Customer Index: the share (0..1) of secure customers, its Wilson interval and band."""

    value: float | None
    n: int
    secure: int
    ci95_low: float | None
    ci95_high: float | None
    band: SciBand | None
    too_few: bool


class Csi(_Model):
    """CSI = Σ w (P − E) over the configured questions; null while one of them has no answers."""

    value: float | None
    parts: list[tuple[str, float]] = Field(description="[question, w (P − E)] in the order configured.")
    missing: list[str] = Field(description="Configured questions without answers in the period.")


class ResponseRate(_Model):
    """Surveys sent in the period; completed and answered as percentages of those delivered."""

    sent: int
    not_delivered: int
    delivered: int
    completed: int
    answered: int
    completion_rate: float | None
    answer_rate: float | None


class Comment(_Model):
    """One of the latest comments; detractors' come first."""

    text: str
    answered_at: str = Field(description="ISO 8601.")
    ticket: str | None
    agent: str | None
    channel: str
    question: str
    detractor: bool


class Period(_Model):
    """The report's half-open period [from, to), its first and last day, and the previous period's start."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str = Field(alias="from", description="ISO 8601, included.")
    to: str = Field(description="ISO 8601, excluded: the first moment after the period.")
    first_day: str = Field(description="YYYY-MM-DD, included.")
    last_day: str = Field(description="YYYY-MM-DD, included.")
    previous_from: str = Field(description="ISO 8601: the previous period is [previous_from, from).")


class Group(_Model):
    """The scores of one group (an agent, a team, …); key null for answers without one."""

    key: str | None
    csat: CsatScore
    nps: NpsScore
    ces: CesScore

    def metrics(self) -> tuple[Score, Score, Score]:
        """CSAT, NPS and CES, in the order of METRICS."""
        return self.csat, self.nps, self.ces


class Bucket(_Model):
    """The scores of one trend bucket: a day, an ISO week (from Monday) or a month."""

    start: str = Field(description="The bucket's first day, YYYY-MM-DD.")
    csat: CsatScore
    nps: NpsScore
    ces: CesScore

    def metrics(self) -> tuple[Score, Score, Score]:
        """CSAT, NPS and CES, in the order of METRICS."""
        return self.csat, self.nps, self.ces


class Report(_Model):
    """A whole report, as `afterword report --format json` and `GET /api/report` give it."""

    period: Period
    rule: CsatRule
    targets: dict[str, float]
    csat: CsatScore
    nps: NpsScore
    ces: CesScore
    sci: Sci
    response_rate: ResponseRate
    comments: list[Comment]
    questions: list[QuestionScore]
    csi: Csi | None = Field(None, description="Present when CSI attributes were given.")
    by: str | None = Field(None, description="The grouping; present with groups.")
    groups: list[Group] = Field(default_factory=list, description="Present with a grouping.")
    trend_by: TrendBy | None = Field(None, description="The bucket size; present with trend.")
    trend: list[Bucket] = Field(default_factory=list, description="Present with a trend.")

    def metrics(self) -> tuple[Score, Score, Score]:
        """CSAT, NPS and CES, in the order of METRICS."""
        return self.csat, self.nps, self.ces

    def json_data(self) -> dict[str, Any]:
        """The report as JSON-ready data: the keys the builder set, in declaration order."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


METRICS: tuple[Metric, ...] = ("csat", "nps", "ces")


def metric_scores(
    current: Scores, previous: Scores | None = None, targets: Mapping[str, float] = DEFAULT_TARGETS
) -> tuple[CsatScore, NpsScore, CesScore]:
    """The three metrics as models, each with its target check; with `previous`, also change and previous."""
    checks = {
        name: _check(result, targets.get(name))
        for name, result in (("csat", current.csat), ("nps", current.nps), ("ces", current.ces))
    }
    if previous is None:
        return (
            CsatScore(**vars(current.csat), target=checks["csat"]),
            NpsScore(**vars(current.nps), target=checks["nps"]),
            CesScore(**vars(current.ces), target=checks["ces"]),
        )
    return (
        CsatScore(
            **vars(current.csat),
            target=checks["csat"],
            change=Change(**vars(csat_change(current.csat, previous.csat))),
            previous=_brief(previous.csat),
        ),
        NpsScore(
            **vars(current.nps),
            target=checks["nps"],
            change=Change(**vars(nps_change(current.nps, previous.nps))),
            previous=_brief(previous.nps),
        ),
        CesScore(**vars(current.ces), target=checks["ces"], previous=_brief(previous.ces)),
    )


def bare_score(result: Csat | Nps | Ces) -> Score:
    """One metric as a model without target, change or previous: a question's."""
    if isinstance(result, Csat):
        return CsatScore(**vars(result))
    if isinstance(result, Nps):
        return NpsScore(**vars(result))
    return CesScore(**vars(result))


def _check(result: Csat | Nps | Ces, target: float | None) -> TargetCheck | None:
    if target is None:
        return None
    check = check_target(result.value, result.ci95_low, result.ci95_high, target)
    return None if check is None else TargetCheck(target=check.target, met=check.met, certain=check.certain)


def _brief(result: Csat | Nps | Ces) -> Previous:
    return Previous(value=result.value, n=result.n, ci95_low=result.ci95_low, ci95_high=result.ci95_high)
