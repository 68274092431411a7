"""Survey metrics from score histograms: CSAT, NPS, CES, CSI and SCI, with 95 % intervals.

The database groups answers by score and hands over histograms ``{score: count}``; rows are
never loaded, so everything here works on counts. Pure: standard library only, no I/O.

Sources, cited again by each function:

* seed 000 (`000_2d0e14b2f63cb020.txt`): CSAT on the school-grade scale, the share of
  answers 1 or 2 (1 is best), ×100.
* seed 004 (`004_9636f44fbc894f86.txt`): NPS groups (promoters 9–10, passives 7–8,
  detractors 0–6, −100..+100), CSAT as the share of 5s on 1–5 (5 is best),
  CSI = Σ w_j (P_j − E_j), SCI bands (below 0.7 at risk, 0.9 and above secure) and the
  targets (NPS not below 50, CSAT near 80 %).
* Wilson (1927), JASA 22: the interval of a proportion (in `scoring.distributions`).
* Rocks (2016), "Interval estimation for the 'net promoter score'", The American
  Statistician 70(4), 365–372, and Lewis and Sauro on measuringu.com ("Confidence
  intervals for Net Promoter Scores", "How to statistically compare two Net Promoter
  Scores"): the adjusted-Wald NPS interval and the test of an NPS change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

# Re-exported (the "as" form tells mypy so): callers import everything from here.
from scoring.distributions import Z95 as Z95
from scoring.distributions import is_whole, two_sided_p
from scoring.distributions import t_quantile as t_quantile
from scoring.distributions import wilson as wilson
from scoring.errors import ScoreOutOfScale as ScoreOutOfScale

MIN_TRUSTED_N = 30  # fewer answers are flagged too_few: the interval is wide, the value shaky
# Fewer answers get no interval at all, only the value flagged too_few. With 1 to 4 answers
# every interval spans most of the scale, and the NPS one (centred on the adjusted estimate)
# need not even hold the value: one detractor is NPS -100 with [-98.5, 48.5]. Shown, that
# reads as a bug; left out, the reader sees "too few" and no false precision.
MIN_INTERVAL_N = 5

CsatRule = Literal["top2", "top1"]
SciBand = Literal["at_risk", "neutral", "secure"]
_TOP_BOXES: Mapping[str, int] = {"top2": 2, "top1": 1}


@dataclass(frozen=True)
class Scale:
    """The points `min`..`max` of a question; `best` says which end is the good one."""

    min: int
    max: int
    best: Literal["high", "low"] = "high"

    def __post_init__(self) -> None:
        if not (is_whole(self.min) and is_whole(self.max)) or self.min >= self.max:
            raise ValueError(f"a scale needs whole numbers min < max, got {self.min!r}..{self.max!r}")
        if self.best not in ("high", "low"):
            raise ValueError(f"scale best must be 'high' or 'low', got {self.best!r}")

    def points(self) -> tuple[int, ...]:
        """Every point of the scale, from `min` up to `max`."""
        return tuple(range(self.min, self.max + 1))

    def best_points(self, k: int) -> tuple[int, ...]:
        """The `k` best points, best first: (1, 2) on 1–5 with best low, (5, 4) with best high."""
        if not 1 <= k <= self.max - self.min + 1:
            raise ValueError(f"a scale {self.min}..{self.max} has no {k} best points")
        if self.best == "high":
            return tuple(range(self.max, self.max - k, -1))
        return tuple(range(self.min, self.min + k))


NPS_SCALE = Scale(0, 10, "high")  # seed 004: likelihood to recommend, 0 to 10


def worst_points(scale: Scale, k: int = 2) -> tuple[int, ...]:
    """The `k` worst points, worst first: (5, 4) on 1–5 with best low, (1, 2) with best high."""
    flipped = Scale(scale.min, scale.max, "low" if scale.best == "high" else "high")
    return flipped.best_points(k)


def is_detractor(metric: str, score: int, scale: Scale) -> bool:
    """Whether one answer calls for an alert: NPS 0–6, or CSAT/CES on the worst two points.

    NPS detractors are 0–6 (seed 004). For CSAT and CES the seeds name no detractor group;
    we mirror the top-two box: the two worst points of the answer's own scale, so 4 and 5
    on the school-grade scale with 1 best (seed 000) and 1 and 2 on 1–5 with 5 best (seed 004).
    """
    if metric == "nps":
        return score <= 6
    if metric in ("csat", "ces"):
        return score in worst_points(scale)
    return False


@dataclass(frozen=True)
class Histogram:
    """How many answers each score got, ``{score: count}``, on one scale.

    Scores that were never given may be left out; zero counts are dropped, so two histograms
    of the same answers compare equal. The counts are copied, so later changes to the
    caller's dict do not reach the histogram.
    """

    scale: Scale
    counts: Mapping[int, int] = field(hash=False)

    def __post_init__(self) -> None:
        for score, count in self.counts.items():
            if not is_whole(score) or not self.scale.min <= score <= self.scale.max:
                raise ScoreOutOfScale(score, self.scale.min, self.scale.max)
            if not is_whole(count) or count < 0:
                raise ValueError(f"the count of score {score} must be a whole number >= 0, got {count!r}")
        kept = {score: count for score, count in sorted(self.counts.items()) if count > 0}
        object.__setattr__(self, "counts", MappingProxyType(kept))

    @property
    def n(self) -> int:
        """The number of answers."""
        return sum(self.counts.values())

    def count_of(self, points: Sequence[int]) -> int:
        """The number of answers on any of `points`."""
        return sum(self.counts.get(point, 0) for point in points)


@dataclass(frozen=True)
class Csat:
    """CSAT in percent with its Wilson interval; all None when nobody answered."""

    value: float | None
    n: int
    satisfied: int
    ci95_low: float | None
    ci95_high: float | None
    rule: CsatRule
    too_few: bool


@dataclass(frozen=True)
class Nps:
    """NPS (−100..100) with its adjusted-Wald interval; `adjusted` and `se` feed `nps_change`."""

    value: float | None  # the unadjusted NPS, as reported
    n: int
    promoters: int
    passives: int
    detractors: int
    ci95_low: float | None
    ci95_high: float | None
    too_few: bool
    adjusted: float | None  # the adjusted-Wald estimate nps' × 100, the interval's centre
    se: float | None  # its standard error × 100


@dataclass(frozen=True)
class Mean:
    """The mean score on the question's scale with its t interval."""

    value: float | None
    n: int
    sd: float | None  # sample standard deviation (divisor n − 1)
    ci95_low: float | None
    ci95_high: float | None
    too_few: bool


@dataclass(frozen=True)
class Ces:
    """CES: the mean effort score with its t interval, and the share of easy answers."""

    value: float | None
    n: int
    sd: float | None
    ci95_low: float | None
    ci95_high: float | None
    easy: int  # answers on the two best points of the scale
    easy_share: float | None  # percent
    too_few: bool


@dataclass(frozen=True)
class CsiAttribute:
    """One attribute of the CSI: its weight w_j, perceived level P_j and expected level E_j."""

    name: str
    weight: float
    perceived: float
    expected: float

    def __post_init__(self) -> None:
        levels = {"weight": self.weight, "perceived": self.perceived, "expected": self.expected}
        for label, number in levels.items():
            if not math.isfinite(number):
                raise ValueError(f"CSI attribute {self.name!r}: {label} {number!r} is not a finite number")
        if self.weight < 0:
            raise ValueError(f"CSI attribute {self.name!r}: weight must be >= 0, got {self.weight!r}")


@dataclass(frozen=True)
class Csi:
    """The CSI and each attribute's part w_j (P_j − E_j), in the order given."""

    value: float
    parts: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Sci:
    """The share (0..1) of secure customers with its Wilson interval and its band."""

    value: float | None
    n: int
    secure: int
    ci95_low: float | None
    ci95_high: float | None
    band: SciBand | None
    too_few: bool


@dataclass(frozen=True)
class Target:
    """A goal for a metric, on the metric's own scale (percent for CSAT, points for NPS)."""

    metric: str
    value: float


# Seed 004: "NPS … sollte nicht unter 50 liegen", "Der CSAT sollte nahe bei 80 % liegen".
SEED_TARGETS = (Target("nps", 50.0), Target("csat", 80.0))
DEFAULT_TARGETS: Mapping[str, float] = MappingProxyType({t.metric: t.value for t in SEED_TARGETS})


@dataclass(frozen=True)
class TargetCheck:
    """Whether a value meets its target, and whether its whole interval agrees."""

    target: float
    met: bool
    certain: bool


@dataclass(frozen=True)
class Change:
    """The change from a previous period to the current one, with its test."""

    delta: float | None  # percentage points for CSAT, NPS points for NPS
    z: float | None
    p_value: float | None  # two-sided
    significant: bool  # at 95 %


def csat(histograms: Sequence[Histogram], rule: CsatRule = "top2") -> Csat:
    """CSAT in percent: the share of answers on the best points of their own scale, ×100.

    Source: seed 000 (top 2: answers 1 or 2 on the school-grade scale where 1 is best) and
    seed 004 (top 1: the share of 5s on 1–5 where 5 is best). "top2" takes each histogram's
    two best points and "top1" its best point, so questions on different scales (1–5 best
    low, 1–7 best high) can be summed. Interval: Wilson (1927), ×100.
    """
    if rule not in _TOP_BOXES:
        raise ValueError(f"CSAT rule must be 'top2' or 'top1', got {rule!r}")
    n = sum(hist.n for hist in histograms)
    satisfied = sum(hist.count_of(hist.scale.best_points(_TOP_BOXES[rule])) for hist in histograms)
    if n == 0:
        return Csat(None, 0, 0, None, None, rule, too_few=True)
    if n < MIN_INTERVAL_N:
        return Csat(100 * satisfied / n, n, satisfied, None, None, rule, too_few=True)
    low, high = wilson(satisfied, n)
    # 100 * satisfied / n divides two integers: one rounding, so 7 of 10 is exactly 70.0.
    return Csat(100 * satisfied / n, n, satisfied, 100 * low, 100 * high, rule, n < MIN_TRUSTED_N)


def nps(counts: Mapping[int, int]) -> Nps:
    """Net Promoter Score from a 0–10 histogram: % promoters (9–10) − % detractors (0–6).

    Source: seed 004 (groups and the range −100..+100). Interval: the adjusted Wald interval
    of Rocks (2016), The American Statistician 70(4), as given by Lewis and Sauro on
    measuringu.com ("Confidence intervals for Net Promoter Scores"): add 3/4 of an
    answer to promoters and to detractors (so 3 in all, with 3/2 to passives), then
    n' = n + 3, p' = (promoters + 3/4) / n', d' = (detractors + 3/4) / n',
    se = sqrt((p' + d' − (p' − d')²) / n') and the interval (p' − d' ± z·se) × 100, clipped to
    ±100. The interval is centred on the adjusted p' − d', not on the reported value; it
    holds the reported value for every n >= 2 but not always at n = 1 (see the tests), so
    below MIN_INTERVAL_N answers no interval is given (`adjusted` and `se` still are, for
    `nps_change`).
    """
    hist = Histogram(NPS_SCALE, counts)
    n = hist.n
    promoters = hist.count_of((9, 10))
    passives = hist.count_of((7, 8))
    detractors = n - promoters - passives
    if n == 0:
        return Nps(None, 0, 0, 0, 0, None, None, too_few=True, adjusted=None, se=None)
    n_adj = n + 3
    p_adj = (promoters + 0.75) / n_adj
    d_adj = (detractors + 0.75) / n_adj
    centre = (promoters - detractors) / n_adj  # p' − d' without the rounding of a subtraction
    se = math.sqrt((p_adj + d_adj - centre * centre) / n_adj)
    shown = n >= MIN_INTERVAL_N
    return Nps(
        value=100 * (promoters - detractors) / n,
        n=n,
        promoters=promoters,
        passives=passives,
        detractors=detractors,
        ci95_low=max(-100.0, 100 * (centre - Z95 * se)) if shown else None,
        ci95_high=min(100.0, 100 * (centre + Z95 * se)) if shown else None,
        too_few=n < MIN_TRUSTED_N,
        adjusted=100 * centre,
        se=100 * se,
    )


def mean(hist: Histogram) -> Mean:
    """Mean score with the t interval mean ± t(0.975, n − 1) · sd / sqrt(n), sd with divisor n − 1.

    Source: Student (1908), "The probable error of a mean", Biometrika 6. With one answer
    there is no spread to estimate: the value is given, sd and both bounds are None. Below
    MIN_INTERVAL_N answers the bounds are None too. With no answers everything is None.
    """
    n = hist.n
    if n == 0:
        return Mean(None, 0, None, None, None, too_few=True)
    total = sum(score * count for score, count in hist.counts.items())
    value = total / n
    if n == 1:
        return Mean(value, 1, None, None, None, too_few=True)
    squares = sum(score * score * count for score, count in hist.counts.items())
    # Sum of squared deviations as an exact integer, n·Σx² − (Σx)² over n: no cancellation,
    # and the same result whatever order the answers came in.
    sd = math.sqrt((n * squares - total * total) / (n * (n - 1)))
    if n < MIN_INTERVAL_N:
        return Mean(value, n, sd, None, None, too_few=True)
    half = t_quantile(0.975, n - 1) * sd / math.sqrt(n)
    return Mean(value, n, sd, value - half, value + half, n < MIN_TRUSTED_N)


def ces(hist: Histogram) -> Ces:
    """Customer Effort Score: the mean on the question's scale, and the share of easy answers.

    Source: seed 004 (CES measures the customer's effort; less effort, more loyalty). The
    value is `mean` (Student 1908 t interval); `easy` counts the two best points of the
    scale, wherever `best` puts them, and `easy_share` is their percentage.
    """
    result = mean(hist)
    easy = hist.count_of(hist.scale.best_points(2))
    share = None if result.n == 0 else 100 * easy / result.n
    return Ces(
        result.value, result.n, result.sd, result.ci95_low, result.ci95_high, easy, share, result.too_few
    )


def csi(attributes: Sequence[CsiAttribute]) -> Csi:
    """Customer Satisfaction Index CSI = Σ_j w_j (P_j − E_j).

    Source: seed 004: w_j weight, P_j perceived and E_j expected level of attribute j.
    Negative parts are attributes that fall short of what customers expected.
    """
    if not attributes:
        raise ValueError("CSI needs at least one attribute (weight, perceived, expected); got none")
    names = [attribute.name for attribute in attributes]
    if duplicates := sorted({name for name in names if names.count(name) > 1}):
        raise ValueError(f"CSI attributes must have distinct names; repeated: {duplicates}")
    parts = tuple((a.name, a.weight * (a.perceived - a.expected)) for a in attributes)
    return Csi(math.fsum(part for _, part in parts), parts)


def sci(secure: int, n: int) -> Sci:
    """Secure Customer Index: the share of secure customers, its Wilson interval and band.

    Source: seed 004: below 0.7 the customers are at risk, from 0.7 to below 0.9 neutral,
    0.9 and above secure. Interval: Wilson (1927), as shares 0..1; none below MIN_INTERVAL_N.
    """
    if not (is_whole(secure) and is_whole(n)) or n < 0 or not 0 <= secure <= n:
        raise ValueError(f"need whole numbers 0 <= secure <= n, got {secure!r} of {n!r}")
    if n == 0:
        return Sci(None, 0, 0, None, None, None, too_few=True)
    value = secure / n
    low, high = wilson(secure, n) if n >= MIN_INTERVAL_N else (None, None)
    band: SciBand = "at_risk" if value < 0.7 else "neutral" if value < 0.9 else "secure"
    return Sci(value, n, secure, low, high, band, n < MIN_TRUSTED_N)


def check_target(
    value: float | None, low: float | None, high: float | None, target: float
) -> TargetCheck | None:
    """Whether `value` meets `target` (value >= target), and whether that is certain.

    Source: seed 004 for the default targets (NPS 50, CSAT 80 %). Certain means the whole
    95 % interval lies on the value's side: low >= target when met, high < target when not.
    Without an interval (a bound is None) nothing is certain. None when there is no value.
    """
    if value is None:
        return None
    if value >= target:
        return TargetCheck(target, met=True, certain=low is not None and low >= target)
    return TargetCheck(target, met=False, certain=high is not None and high < target)


def csat_change(current: Csat, previous: Csat) -> Change:
    """CSAT change in percentage points, tested with the pooled two-proportion z test.

    Source: the pooled two-proportion z test (as in Agresti, Categorical Data Analysis;
    its square is Pearson's χ² of the 2×2 table): z = (p₁ − p₂) / sqrt(p̂(1 − p̂)(1/n₁ + 1/n₂)) with the pooled
    p̂ = (s₁ + s₂) / (n₁ + n₂); significant when the two-sided p < 0.05. Everything is None
    when a period has no answers. When every answer in both periods is satisfied (or none
    is), the pooled variance is 0 and z is undefined: delta is 0.0, z and p are None.
    """
    if current.rule != previous.rule:
        raise ValueError(f"cannot compare CSAT under rule {current.rule!r} with rule {previous.rule!r}")
    if current.value is None or previous.value is None:
        return Change(None, None, None, significant=False)
    delta = current.value - previous.value
    n1, n2 = current.n, previous.n
    pooled_satisfied, pooled_n = current.satisfied + previous.satisfied, n1 + n2
    variance = pooled_satisfied * (pooled_n - pooled_satisfied) / (pooled_n * pooled_n) * (1 / n1 + 1 / n2)
    if variance == 0:
        return Change(delta, None, None, significant=False)
    z = (current.satisfied / n1 - previous.satisfied / n2) / math.sqrt(variance)
    p_value = two_sided_p(z)
    return Change(delta, z, p_value, significant=p_value < 0.05)


def nps_change(current: Nps, previous: Nps) -> Change:
    """NPS change in points, tested on the adjusted-Wald estimates.

    Source: Lewis and Sauro, "How to statistically compare two Net Promoter Scores"
    (measuringu.com/nps-significance-test), after Rocks (2016):
    z = (nps'₁ − nps'₂) / sqrt(se₁² + se₂²) with each period's adjusted-Wald estimate and
    standard error; significant when |z| > Z95 (1.96). delta is the difference of the
    reported (unadjusted) values. Everything is None when a period has no answers.
    """
    now, before = _nps_estimate(current), _nps_estimate(previous)
    if now is None or before is None:
        return Change(None, None, None, significant=False)
    # se > 0 for n >= 1: the 3/4 answers added to each side keep p' and d' off 0 and 1.
    z = (now[1] - before[1]) / math.hypot(now[2], before[2])
    return Change(now[0] - before[0], z, two_sided_p(z), significant=abs(z) > Z95)


def _nps_estimate(result: Nps) -> tuple[float, float, float] | None:
    # (value, adjusted, se); all three are set together, or none when nobody answered.
    if result.value is None or result.adjusted is None or result.se is None:
        return None
    return result.value, result.adjusted, result.se
