"""scoring.metrics: CSAT, NPS, CES, CSI, SCI, targets and change, from score histograms.

Three kinds of test: examples worked out by hand (the arithmetic is in each docstring or
comment), comparisons with independent implementations (statsmodels, scipy, the published
adjusted-Wald formula written out again here) to 1e-9, and Hypothesis properties.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import stats
from statsmodels.stats.proportion import proportion_confint, proportions_ztest

from scoring.metrics import (
    DEFAULT_TARGETS,
    MIN_INTERVAL_N,
    MIN_TRUSTED_N,
    NPS_SCALE,
    Z95,
    Change,
    Csat,
    CsiAttribute,
    Histogram,
    Nps,
    Scale,
    ScoreOutOfScale,
    TargetCheck,
    ces,
    check_target,
    csat,
    csat_change,
    csi,
    is_detractor,
    mean,
    nps,
    nps_change,
    sci,
    t_quantile,
    wilson,
    worst_points,
)

REF = {"rel": 1e-9, "abs": 1e-9}  # tolerance against independent implementations
HAND = {"abs": 5e-8}  # tolerance for values worked out by hand to 8 decimals
HAND_PERCENT = {"abs": 5e-6}  # the same shares ×100: 6 decimals

GRADES = Scale(1, 5, "low")  # seed 000: school grades, 1 is best
FIVE_HIGH = Scale(1, 5, "high")  # seed 004: 5 is best
SEVEN_HIGH = Scale(1, 7, "high")  # CES, 7 is least effort


def _shares(result: Csat) -> tuple[float | None, float | None]:
    return result.ci95_low, result.ci95_high


# ---------------------------------------------------------------------------------------
# Scale and Histogram


def test_best_points_follow_the_good_end() -> None:
    """The best points are the low end when best is low and the high end when it is high."""
    assert ((1, 2), (5, 4), (7,)) == (
        GRADES.best_points(2),
        FIVE_HIGH.best_points(2),
        SEVEN_HIGH.best_points(1),
    )


def test_worst_points_mirror_the_best() -> None:
    """The worst points are the opposite end of the best ones, worst first."""
    assert ((5, 4), (1, 2), (1, 2)) == (
        worst_points(GRADES),
        worst_points(FIVE_HIGH),
        worst_points(SEVEN_HIGH),
    )


@pytest.mark.parametrize(
    ("metric", "score", "scale", "expected"),
    [
        ("nps", 6, NPS_SCALE, True),  # seed 004: detractors are 0-6
        ("nps", 0, NPS_SCALE, True),
        ("nps", 7, NPS_SCALE, False),  # passive
        ("csat", 5, GRADES, True),  # school grades, 1 best: 4 and 5 are the worst two
        ("csat", 4, GRADES, True),
        ("csat", 3, GRADES, False),
        ("csat", 1, FIVE_HIGH, True),  # 5 best: 1 and 2 are the worst two
        ("csat", 3, FIVE_HIGH, False),
        ("ces", 2, SEVEN_HIGH, True),
        ("ces", 3, SEVEN_HIGH, False),
        ("other", 1, FIVE_HIGH, False),  # an unscored metric never alerts
    ],
)
def test_is_detractor_hand_cases(metric: str, score: int, scale: Scale, expected: bool) -> None:
    """NPS 0-6 and CSAT/CES on the two worst points of their own scale are detractors."""
    assert expected == is_detractor(metric, score, scale)


def test_points_cover_the_scale() -> None:
    """points() lists every score from min to max."""
    assert (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10) == Scale(0, 10).points()


@pytest.mark.parametrize(("low", "high"), [(5, 5), (5, 1)])
def test_scale_needs_min_below_max(low: int, high: int) -> None:
    """A scale whose min is not below its max is refused."""
    with pytest.raises(ValueError, match=f"min < max, got {low}..{high}"):
        Scale(low, high)


def test_score_off_the_scale_names_value_and_range() -> None:
    """A score outside the scale raises ScoreOutOfScale with the score and the allowed range."""
    with pytest.raises(ScoreOutOfScale, match=r"score 6 is not on the scale 1\.\.5") as caught:
        Histogram(GRADES, {1: 3, 6: 1})
    assert (6, 1, 5) == (caught.value.score, caught.value.low, caught.value.high)


def test_nps_score_off_the_scale_is_refused() -> None:
    """An NPS answer of 11 is not on 0..10."""
    with pytest.raises(ScoreOutOfScale, match=r"score 11 is not on the scale 0\.\.10"):
        nps({10: 1, 11: 1})


def test_negative_count_is_refused() -> None:
    """A count below zero is a ValueError naming the score and the count."""
    with pytest.raises(ValueError, match="count of score 2 must be a whole number >= 0, got -1"):
        Histogram(GRADES, {2: -1})


def test_histogram_drops_zero_counts_and_copies() -> None:
    """Zero counts are dropped, and changing the caller's dict afterwards changes nothing."""
    counts = {1: 2, 3: 0}
    hist = Histogram(GRADES, counts)
    counts[2] = 5
    assert ({1: 2}, 2, Histogram(GRADES, {1: 2})) == (dict(hist.counts), hist.n, hist)


# ---------------------------------------------------------------------------------------
# CSAT


def test_csat_school_grades_top2_and_top1() -> None:
    """Seed 000: {1: 4, 2: 3, 3: 2, 4: 1, 5: 0} with 1 best gives 70.0 % top-2 and 40.0 % top-1."""
    # top-2: (4 + 3) / 10 × 100 = 70.0; top-1: 4 / 10 × 100 = 40.0.
    # Wilson for 7 of 10, z = 1.95996398, z² = 3.84145882:
    #   denominator = 1 + z²/10 = 1.38414588
    #   centre = (0.7 + z²/20) / 1.38414588 = 0.89207294 / 1.38414588 = 0.64449344
    #   half = z · sqrt(0.7 · 0.3 / 10 + z²/400) / 1.38414588
    #        = 1.95996398 · sqrt(0.021 + 0.00960365) / 1.38414588 = 0.24771529
    #   interval = (0.39677815, 0.89220873) → (39.677815 %, 89.220873 %)
    hist = Histogram(GRADES, {1: 4, 2: 3, 3: 2, 4: 1, 5: 0})
    top2, top1 = csat([hist]), csat([hist], "top1")
    assert (70.0, 10, 7, "top2", True) == (top2.value, top2.n, top2.satisfied, top2.rule, top2.too_few)
    assert (40.0, 4, "top1") == (top1.value, top1.satisfied, top1.rule)
    assert pytest.approx((39.677815, 89.220873), **HAND_PERCENT) == _shares(top2)


def test_csat_same_answers_with_best_high() -> None:
    """The mirrored histogram on 1–5 with 5 best gives the same 70.0 % and 40.0 %."""
    hist = Histogram(FIVE_HIGH, {5: 4, 4: 3, 3: 2, 2: 1, 1: 0})
    assert (70.0, 40.0) == (csat([hist]).value, csat([hist], "top1").value)
    assert csat([Histogram(GRADES, {1: 4, 2: 3, 3: 2, 4: 1})]) == csat([hist])


def test_csat_mixed_scales_use_each_scales_best_points() -> None:
    """Grades 1–5 (1 best) plus 1–7 (7 best): each question counts its own best points."""
    # grades {1: 4, 2: 3, 3: 2, 4: 1}: top-2 = 4 + 3 = 7, top-1 = 4
    # 1–7 {7: 2, 6: 3, 5: 1, 1: 4}:    top-2 = 2 + 3 = 5, top-1 = 2
    # n = 10 + 10 = 20 → top-2 (7 + 5) / 20 = 60.0 %, top-1 (4 + 2) / 20 = 30.0 %
    hists = [Histogram(GRADES, {1: 4, 2: 3, 3: 2, 4: 1}), Histogram(SEVEN_HIGH, {7: 2, 6: 3, 5: 1, 1: 4})]
    assert (60.0, 12, 20, 30.0) == (
        csat(hists).value,
        csat(hists).satisfied,
        csat(hists).n,
        csat(hists, "top1").value,
    )


def test_csat_seed_004_share_of_fives() -> None:
    """Seed 004: CSAT as the share of 5s on 1–5, 8 of 10 fives → 80.0 % top-1."""
    assert 80.0 == csat([Histogram(FIVE_HIGH, {5: 8, 4: 1, 1: 1})], "top1").value


def test_csat_empty_is_none_not_zero() -> None:
    """No answers (no histograms, or only empty ones) give value None and no interval."""
    expected = Csat(None, 0, 0, None, None, "top2", too_few=True)
    assert (expected, expected) == (csat([]), csat([Histogram(GRADES, {})]))


def test_csat_unknown_rule_is_refused() -> None:
    """A rule other than top2 or top1 is a ValueError."""
    with pytest.raises(ValueError, match="'top3'"):
        csat([Histogram(GRADES, {1: 1})], "top3")  # type: ignore[arg-type]


def test_csat_interval_matches_statsmodels_wilson() -> None:
    """CSAT's interval equals statsmodels' Wilson interval (×100) for every count of n ≤ 120 and some large n."""
    pairs = [(count, n) for n in range(1, 121) for count in range(n + 1)]
    pairs += [(0, 5000), (1, 5000), (4321, 5000), (5000, 5000), (123_456, 200_000), (1, 10**7)]
    for count, n in pairs:
        low, high = proportion_confint(count, n, alpha=0.05, method="wilson")
        result = csat([Histogram(FIVE_HIGH, {5: count, 1: n - count})])
        if n < MIN_INTERVAL_N:
            assert (None, None, True) == (*_shares(result), result.too_few), (count, n)
            continue
        assert pytest.approx((100 * low, 100 * high), **REF) == _shares(result), (count, n)


def test_wilson_edges_are_exact() -> None:
    """With 0 or all successes the Wilson interval ends exactly at 0 or 1."""
    assert (0.0, 1.0) == (wilson(0, 7)[0], wilson(7, 7)[1])


@pytest.mark.parametrize(("successes", "n"), [(-1, 5), (6, 5), (0, 0)])
def test_wilson_refuses_impossible_counts(successes: int, n: int) -> None:
    """Wilson needs 0 <= successes <= n and n >= 1."""
    with pytest.raises(ValueError, match="0 <= successes <= n"):
        wilson(successes, n)


# ---------------------------------------------------------------------------------------
# NPS


def _published_adjusted_wald(
    promoters: int, passives: int, detractors: int
) -> tuple[float, float, float, float]:
    """Rocks (2016) / measuringu adjusted Wald, written out again: (adjusted, se, low, high) × 100."""
    n_adj = promoters + passives + detractors + 3
    p_adj = (promoters + 3 / 4) / n_adj
    d_adj = (detractors + 3 / 4) / n_adj
    nps_adj = p_adj - d_adj
    se = ((p_adj + d_adj - (p_adj - d_adj) ** 2) / n_adj) ** 0.5
    z = stats.norm.ppf(0.975)
    low, high = max(nps_adj - z * se, -1.0), min(nps_adj + z * se, 1.0)
    return 100 * nps_adj, 100 * se, 100 * low, 100 * high


def test_nps_hand_example() -> None:
    """5 promoters, 3 passives, 2 detractors of 10 → NPS 30.0 and the adjusted-Wald interval."""
    # value = (5 − 2) / 10 × 100 = 30.0
    # n' = 13, p' = 5.75/13 = 0.44230769, d' = 2.75/13 = 0.21153846, nps' = 3/13 = 0.23076923
    # var = (p' + d' − nps'²) / n' = (8.5/13 − 9/169) / 13 = (0.65384615 − 0.05325444) / 13
    #     = 0.04619936, se = 0.21494037, z·se = 1.95996398 · 0.21494037 = 0.42127538
    # interval = (0.23076923 − 0.42127538, 0.23076923 + 0.42127538) = (−0.19050615, 0.65204462)
    result = nps({10: 3, 9: 2, 8: 2, 7: 1, 6: 1, 0: 1})
    assert (30.0, 10, 5, 3, 2, True) == (
        result.value,
        result.n,
        result.promoters,
        result.passives,
        result.detractors,
        result.too_few,
    )
    # The shares above, ×100, to the 6 decimals they carry.
    assert pytest.approx((23.076923, 21.494037, -19.050615, 65.204462), **HAND_PERCENT) == (
        result.adjusted,
        result.se,
        result.ci95_low,
        result.ci95_high,
    )


def test_nps_all_detractors_is_minus_100() -> None:
    """Seed 004: all critics give −100, and the lower bound is clipped at −100."""
    # n' = 53, nps' = −50/53 = −0.94339623, var = (51.5/53 − (50/53)²)/53 = 0.00154154,
    # se = 0.03926246, low = −0.94339623 − 1.95996398 · 0.03926246 = −1.02034924 → clipped to −1
    result = nps({0: 40, 6: 10})
    assert (-100.0, 50, 0, 50, -100.0) == (
        result.value,
        result.n,
        result.promoters,
        result.detractors,
        result.ci95_low,
    )


def test_nps_empty_is_none_not_zero() -> None:
    """No answers give an NPS of None, with every estimate None."""
    assert Nps(None, 0, 0, 0, 0, None, None, too_few=True, adjusted=None, se=None) == nps({})


def test_nps_matches_published_adjusted_wald() -> None:
    """The interval, adjusted value and se equal the published formula for every (P, A, D) up to n = 40."""
    for n in range(1, 41):
        for promoters in range(n + 1):
            for detractors in range(n - promoters + 1):
                passives = n - promoters - detractors
                result = nps({10: promoters, 7: passives, 3: detractors})
                expected = _published_adjusted_wald(promoters, passives, detractors)
                if n < MIN_INTERVAL_N:  # no interval shown, the estimate kept for nps_change
                    assert (None, None) == (result.ci95_low, result.ci95_high)
                    expected, actual = expected[:2], (result.adjusted, result.se)
                else:
                    actual = (result.adjusted, result.se, result.ci95_low, result.ci95_high)
                assert pytest.approx(expected, **REF) == actual, (promoters, passives, detractors)


def test_nps_interval_would_miss_the_value_at_n_1_so_none_is_shown() -> None:
    """At n = 1 the adjusted-Wald interval would not hold the reported NPS of ±100: none is given."""
    # One promoter: n' = 4, p' = 1.75/4 = 0.4375, d' = 0.75/4 = 0.1875, nps' = 0.25,
    # var = (0.625 − 0.0625) / 4 = 0.140625, se = 0.375, high = 0.25 + 1.95996398 · 0.375
    # = 0.98498649 → 98.498649 < 100 = the value.
    promoter, detractor = nps({10: 1}), nps({0: 1})
    high = promoter.adjusted + Z95 * promoter.se  # type: ignore[operator]
    assert (100.0, pytest.approx(98.498649, **HAND_PERCENT)) == (promoter.value, high)
    assert (-100.0, None, None, True) == (
        detractor.value,
        detractor.ci95_low,
        detractor.ci95_high,
        detractor.too_few,
    )
    assert (None, None) == (promoter.ci95_low, promoter.ci95_high)


@pytest.mark.parametrize("n", range(1, MIN_INTERVAL_N + 1))
def test_interval_only_from_min_interval_n(n: int) -> None:
    """Below MIN_INTERVAL_N (5) answers no metric has an interval, from 5 on every one has."""
    shown = n >= MIN_INTERVAL_N
    results = [
        csat([Histogram(FIVE_HIGH, {5: n})]),
        nps({0: n}),
        ces(Histogram(SEVEN_HIGH, {6: 1, 7: n - 1})),
        sci(n // 2, n),
    ]
    assert [shown] * 4 == [r.ci95_low is not None and r.ci95_high is not None for r in results]
    assert [True] * 4 == [r.too_few for r in results]


def test_nps_interval_holds_the_value_for_every_histogram_from_n_2_to_60() -> None:
    """Exhaustively, for 2 <= n <= 60, low <= NPS <= high for every split into P, A and D."""
    # Why it holds for every n >= 2 (with a = |P − D|, m = n + 3): the gap between the value and
    # the centre is |(P − D)/n − (P − D)/m| = 3a / (n m). The variance is smallest, for a given a,
    # when min(P, D) = 0, where it is (m(a + 3/2) − a²) / m³. The gap fits inside z·se iff
    # g(a) = z² n² (m a + 3m/2 − a²) − 9 m a² >= 0. g is concave in a, g(0) > 0 and
    # g(n) = n² ((4.5 z² − 9) n + 4.5 z² − 27) = n² (8.2866 n − 9.7134), which is >= 0 from
    # n = 2 on and negative at n = 1. Larger n is covered by the Hypothesis property below.
    misses = []
    for n in range(2, 61):
        for promoters in range(n + 1):
            for detractors in range(n - promoters + 1):
                r = nps({9: promoters, 8: n - promoters - detractors, 0: detractors})
                high = r.adjusted + Z95 * r.se  # type: ignore[operator]
                low = max(-100.0, r.adjusted - Z95 * r.se)  # type: ignore[operator]
                if not low <= r.value <= min(100.0, high):  # type: ignore[operator]
                    misses.append((promoters, detractors))
    assert [] == misses


@given(st.dictionaries(st.integers(0, 10), st.integers(0, 2000), max_size=11))
def test_nps_bounds_and_containment(counts: dict[int, int]) -> None:
    """NPS and its interval stay within ±100; the interval holds the value whenever n >= 2."""
    result = nps(counts)
    n = sum(counts.values())
    if n == 0:
        assert (None, None, None) == (result.value, result.ci95_low, result.ci95_high)
        return
    low, value, high = result.ci95_low, result.value, result.ci95_high
    if n < MIN_INTERVAL_N:
        assert (None, None, True) == (low, high, -100 <= value <= 100)  # type: ignore[operator]
        return
    assert (True, True) == (-100 <= low <= high <= 100, -100 <= value <= 100)  # type: ignore[operator]
    assert True is (low <= value <= high)  # type: ignore[operator]


# ---------------------------------------------------------------------------------------
# Mean, CES and the t quantile


def test_ces_hand_example() -> None:
    """CES on 1–7 (7 easiest) with {5: 1, 6: 2, 7: 2}: mean 6.2 and its t interval."""
    # n = 5, mean = (5 + 6 + 6 + 7 + 7) / 5 = 6.2; deviations −1.2, −0.2, −0.2, 0.8, 0.8
    # → Σ squares = 1.44 + 0.04 + 0.04 + 0.64 + 0.64 = 2.8; sd = sqrt(2.8 / 4) = 0.83666003,
    # se = sd / sqrt(5) = 0.37416574; t(0.975, 4) = 2.77644511 (t table),
    # half = 2.77644511 · 0.37416574 = 1.03885063; interval = (5.16114937, 7.23885063);
    # easy = answers on 6 or 7 = 4 of 5 = 80.0 %
    result = ces(Histogram(SEVEN_HIGH, {5: 1, 6: 2, 7: 2}))
    assert (6.2, 5, 4, 80.0, True) == (result.value, result.n, result.easy, result.easy_share, result.too_few)
    assert pytest.approx((0.83666003, 5.16114937, 7.23885063), **HAND) == (
        result.sd,
        result.ci95_low,
        result.ci95_high,
    )


def test_ces_of_four_answers_has_no_interval() -> None:
    """With {5: 1, 6: 2, 7: 1} (n = 4 < 5) the mean 6.0 and sd sqrt(2/3) are given, no interval."""
    result = ces(Histogram(SEVEN_HIGH, {5: 1, 6: 2, 7: 1}))
    assert (6.0, None, None, True) == (result.value, result.ci95_low, result.ci95_high, result.too_few)
    assert pytest.approx(0.81649658, **HAND) == result.sd


def test_ces_easy_points_follow_best_low() -> None:
    """On 1–5 with 1 as least effort, the easy answers are the 1s and 2s."""
    result = ces(Histogram(GRADES, {1: 2, 2: 1, 5: 1}))
    assert (3, 75.0, 2.25) == (result.easy, result.easy_share, result.value)


def test_mean_of_one_answer_has_no_interval() -> None:
    """One answer: the value is that answer; sd and both bounds are None."""
    result = mean(Histogram(SEVEN_HIGH, {3: 1}))
    assert (3.0, 1, None, None, None, True) == (
        result.value,
        result.n,
        result.sd,
        result.ci95_low,
        result.ci95_high,
        result.too_few,
    )


def test_mean_and_ces_of_nothing_are_none() -> None:
    """No answers: mean, sd, bounds and the easy share are None, never 0."""
    result = ces(Histogram(SEVEN_HIGH, {}))
    assert (None, 0, None, None, None, 0, None) == (
        result.value,
        result.n,
        result.sd,
        result.ci95_low,
        result.ci95_high,
        result.easy,
        result.easy_share,
    )


def test_mean_of_identical_answers_has_a_zero_width_interval() -> None:
    """All answers equal: sd 0 and the interval collapses onto the value."""
    result = mean(Histogram(SEVEN_HIGH, {6: 40}))
    assert (6.0, 0.0, 6.0, 6.0, False) == (
        result.value,
        result.sd,
        result.ci95_low,
        result.ci95_high,
        result.too_few,
    )


@given(st.dictionaries(st.integers(1, 7), st.integers(0, 300), min_size=1, max_size=7))
def test_mean_interval_matches_scipy(counts: dict[int, int]) -> None:
    """Mean, sd and interval equal scipy's t.interval on the expanded answers."""
    answers = [score for score, count in counts.items() for _ in range(count)]
    assume(len(set(answers)) >= 2)  # scipy needs a spread; one answer and sd 0 have their own tests
    sd = float(stats.tstd(answers))  # sample sd, ddof = 1
    expected_low, expected_high = stats.t.interval(
        0.95, len(answers) - 1, loc=sum(answers) / len(answers), scale=sd / math.sqrt(len(answers))
    )
    result = mean(Histogram(SEVEN_HIGH, counts))
    if len(answers) < MIN_INTERVAL_N:  # value and sd, but too few answers for an interval
        assert (None, None) == (result.ci95_low, result.ci95_high)
        assert pytest.approx((sum(answers) / len(answers), sd), **REF) == (result.value, result.sd)
        return
    assert pytest.approx((sum(answers) / len(answers), sd, expected_low, expected_high), **REF) == (
        result.value,
        result.sd,
        result.ci95_low,
        result.ci95_high,
    )


# Both tails, the middle and the 95 % points.
T_LOWER = [1e-12, 1e-6, 0.0005, 0.005, 0.025, 0.05, 0.1, 0.2, 0.3, 0.45]
T_UPPER = [0.55, 0.7, 0.8, 0.9, 0.95, 0.975, 0.995, 0.9995]
T_PS = [*T_LOWER, *T_UPPER]


@pytest.mark.parametrize("df", range(1, 201))
def test_t_quantile_matches_scipy(df: int) -> None:
    """t_quantile equals scipy.stats.t.ppf to 1e-9 for df 1..200 across the p range."""
    expected = [float(stats.t.ppf(p, df)) for p in T_PS]
    assert pytest.approx(expected, rel=1e-9, abs=0) == [t_quantile(p, df) for p in T_PS]


@pytest.mark.parametrize("df", [250, 500, 1000, 4_999, 5000, 10_000, 99_999, 100_000, 1_000_000, 10**9])
def test_t_quantile_matches_scipy_for_large_df(df: int) -> None:
    """For large df (both sides of the switches to the 1/df expansion, 5,000 and 10⁵) t_quantile equals scipy."""
    expected = [float(stats.t.ppf(p, df)) for p in T_PS]
    assert pytest.approx(expected, rel=1e-9, abs=0) == [t_quantile(p, df) for p in T_PS]


@pytest.mark.parametrize("p", [0.5 - 1e-7, 0.5 + 1e-7, 0.5 + 1e-12, 0.3, 0.9])
def test_t_quantile_near_the_median_matches_closed_forms(p: float) -> None:
    """Near p = ½ (where scipy's ppf is off by up to 4e-4 relative) df 1 and 2 match their closed forms."""
    # df = 1 (Cauchy): t = tan(π (p − ½)); df = 2: t = (2p − 1) / sqrt(2 p (1 − p)).
    expected = (math.tan(math.pi * (p - 0.5)), (2 * p - 1) / math.sqrt(2 * p * (1 - p)))
    assert pytest.approx(expected, rel=1e-12, abs=0) == (t_quantile(p, 1), t_quantile(p, 2))


def test_t_quantile_far_tail_and_symmetry() -> None:
    """Far tails work (df = 1, p = 1e-300 is −1/(π p)), the median is 0 and t(1 − p) = −t(p)."""
    assert pytest.approx(-1 / (math.pi * 1e-300), rel=1e-12) == t_quantile(1e-300, 1)
    # 0.0625 and 0.9375 are exact in binary, so 1 − p is exactly the other one.
    assert (0.0, -t_quantile(0.0625, 7)) == (t_quantile(0.5, 7), t_quantile(0.9375, 7))


@pytest.mark.parametrize(("p", "df"), [(0.0, 5), (1.0, 5), (float("nan"), 5), (0.5, 0), (0.5, True)])
def test_t_quantile_refuses_bad_arguments(p: float, df: int) -> None:
    """p outside (0, 1) or df not a whole number >= 1 is a ValueError."""
    with pytest.raises(ValueError, match=r"probability|degrees of freedom"):
        t_quantile(p, df)


# ---------------------------------------------------------------------------------------
# CSI, SCI and targets


def test_csi_two_attributes() -> None:
    """Seed 004: CSI = Σ w_j (P_j − E_j) = 0.6 · (3.5 − 4.5) + 0.4 · (4.8 − 4.0) = −0.6 + 0.32 = −0.28."""
    result = csi(
        [CsiAttribute("speed", 0.6, perceived=3.5, expected=4.5), CsiAttribute("friendliness", 0.4, 4.8, 4.0)]
    )
    assert pytest.approx(-0.28, abs=1e-12) == result.value
    assert (["speed", "friendliness"], pytest.approx([-0.6, 0.32], abs=1e-12)) == (
        [name for name, _ in result.parts],
        [part for _, part in result.parts],
    )


def test_csi_without_attributes_is_refused() -> None:
    """An empty CSI is a ValueError that says an attribute is needed."""
    with pytest.raises(ValueError, match="CSI needs at least one attribute"):
        csi([])


def test_csi_refuses_repeated_names_and_bad_numbers() -> None:
    """Repeated attribute names, NaN levels and negative weights are ValueErrors."""
    with pytest.raises(ValueError, match=r"repeated: \['speed'\]"):
        csi([CsiAttribute("speed", 0.5, 4, 4), CsiAttribute("speed", 0.5, 3, 4)])
    with pytest.raises(ValueError, match="perceived nan is not a finite number"):
        CsiAttribute("speed", 0.5, float("nan"), 4)
    with pytest.raises(ValueError, match="weight must be >= 0"):
        CsiAttribute("speed", -0.5, 4, 4)


@pytest.mark.parametrize(
    ("secure", "band"), [(69, "at_risk"), (70, "neutral"), (89, "neutral"), (90, "secure"), (100, "secure")]
)
def test_sci_band_edges(secure: int, band: str) -> None:
    """Seed 004 bands: 0.69 at risk, 0.7 neutral, 0.89 neutral, 0.9 secure (of 100 customers)."""
    result = sci(secure, 100)
    assert (secure / 100, band, False) == (result.value, result.band, result.too_few)
    low, high = proportion_confint(secure, 100, alpha=0.05, method="wilson")
    assert pytest.approx((low, high), **REF) == (result.ci95_low, result.ci95_high)


def test_sci_empty_and_impossible() -> None:
    """SCI of nobody is None with no band; more secure customers than customers is refused."""
    assert (None, None, True) == (sci(0, 0).value, sci(0, 0).band, sci(0, 0).too_few)
    with pytest.raises(ValueError, match="0 <= secure <= n, got 5 of 4"):
        sci(5, 4)


def test_default_targets_come_from_seed_004() -> None:
    """NPS not below 50 and CSAT near 80 %."""
    assert {"nps": 50.0, "csat": 80.0} == dict(DEFAULT_TARGETS)


@pytest.mark.parametrize(
    ("value", "low", "high", "expected"),
    [
        (85.0, 81.0, 89.0, TargetCheck(80.0, met=True, certain=True)),  # whole interval above
        (85.0, 80.0, 89.0, TargetCheck(80.0, met=True, certain=True)),  # low on the target counts
        (85.0, 75.0, 92.0, TargetCheck(80.0, met=True, certain=False)),  # interval straddles
        (80.0, 70.0, 90.0, TargetCheck(80.0, met=True, certain=False)),  # exactly on target is met
        (70.0, 60.0, 79.0, TargetCheck(80.0, met=False, certain=True)),  # whole interval below
        (70.0, 60.0, 80.0, TargetCheck(80.0, met=False, certain=False)),  # high reaches the target
        (85.0, None, None, TargetCheck(80.0, met=True, certain=False)),  # no interval, not certain
    ],
)
def test_check_target(value: float, low: float | None, high: float | None, expected: TargetCheck) -> None:
    """met is value >= target; certain needs the whole interval on the value's side."""
    assert expected == check_target(value, low, high, 80.0)


def test_check_target_without_value_is_none() -> None:
    """No value, no verdict."""
    assert None is check_target(None, None, None, 50.0)


# ---------------------------------------------------------------------------------------
# Change between periods


def _csat_of(satisfied: int, n: int) -> Csat:
    return csat([Histogram(FIVE_HIGH, {5: satisfied, 1: n - satisfied})])


def test_csat_change_significant() -> None:
    """80 of 100 now against 60 of 100 before: +20 points, z = 3.086, significant."""
    # pooled = 140 / 200 = 0.7, se = sqrt(0.7 · 0.3 · (1/100 + 1/100)) = sqrt(0.0042) = 0.06480741
    # z = (0.8 − 0.6) / 0.06480741 = 3.08606700, p = 2 · (1 − Φ(3.086067)) = 0.00202823 < 0.05
    result = csat_change(_csat_of(80, 100), _csat_of(60, 100))
    assert (pytest.approx((20.0, 3.08606700, 0.00202823), **HAND), True) == (
        (result.delta, result.z, result.p_value),
        result.significant,
    )


def test_csat_change_not_significant() -> None:
    """55 of 100 against 50 of 100: +5 points, z = 0.708, not significant."""
    # pooled = 105 / 200 = 0.525, se = sqrt(0.525 · 0.475 · 0.02) = sqrt(0.0049875) = 0.07062223
    # z = 0.05 / 0.07062223 = 0.70799233, p = 2 · (1 − Φ(0.707992)) = 0.47895002 >= 0.05
    result = csat_change(_csat_of(55, 100), _csat_of(50, 100))
    assert (pytest.approx((5.0, 0.70799233, 0.47895002), **HAND), False) == (
        (result.delta, result.z, result.p_value),
        result.significant,
    )


def test_csat_change_matches_statsmodels() -> None:
    """z and p equal statsmodels' pooled proportions_ztest for a spread of count pairs."""
    cases = [(80, 100, 60, 100), (3, 7, 5, 9), (1, 30, 29, 30), (512, 1000, 498, 1011), (0, 12, 4, 40)]
    for s1, n1, s2, n2 in cases:
        z, p = proportions_ztest([s1, s2], [n1, n2])
        result = csat_change(_csat_of(s1, n1), _csat_of(s2, n2))
        assert pytest.approx((float(z), float(p)), **REF) == (result.z, result.p_value), (s1, n1, s2, n2)


def test_csat_change_undefined_cases() -> None:
    """An empty period gives no change; all satisfied in both gives delta 0 and no z."""
    assert Change(None, None, None, significant=False) == csat_change(_csat_of(5, 10), csat([]))
    assert Change(0.0, None, None, significant=False) == csat_change(_csat_of(10, 10), _csat_of(20, 20))


def test_csat_change_refuses_mixed_rules() -> None:
    """Comparing a top-2 CSAT with a top-1 CSAT is a ValueError."""
    hist = Histogram(FIVE_HIGH, {5: 3})
    with pytest.raises(ValueError, match="rule 'top2' with rule 'top1'"):
        csat_change(csat([hist]), csat([hist], "top1"))


def test_nps_change_significant() -> None:
    """60/20/20 of 100 (NPS 40) against 30/30/40 of 100 (NPS −10): +50, z = 4.280, significant."""
    # n' = 103. Now: nps' = 40/103 = 0.38834951, var = (81.5/103 − (40/103)²)/103 = 6794.5/103³
    # = 0.00621793. Before: nps' = −10/103 = −0.09708738, var = (71.5/103 − (10/103)²)/103
    # = 7264.5/103³ = 0.00664805. z = (50/103) / sqrt(14059/103³) = 0.48543689 / 0.11342829 = 4.27968103
    result = nps_change(nps({10: 60, 8: 20, 0: 20}), nps({10: 30, 8: 30, 0: 40}))
    assert (50.0, pytest.approx(4.27968103, **HAND), True) == (result.delta, result.z, result.significant)


def test_nps_change_not_significant() -> None:
    """5/3/2 of 10 (NPS 30) against 4/3/3 of 10 (NPS 10): +20, z = 0.496, not significant."""
    # n' = 13. Now: nps' = 3/13, var = (8.5/13 − 9/169)/13 = 101.5/2197 = 0.04619936.
    # Before: nps' = 1/13, var = (8.5/13 − 1/169)/13 = 109.5/2197 = 0.04984069.
    # z = (2/13) / sqrt(211/2197) = 0.15384615 / 0.30990330 = 0.49643277 < 1.95996398
    result = nps_change(nps({9: 5, 7: 3, 6: 2}), nps({9: 4, 7: 3, 6: 3}))
    assert (pytest.approx(20.0), pytest.approx(0.49643277, **HAND), False) == (
        result.delta,
        result.z,
        result.significant,
    )


def test_nps_change_matches_the_published_difference_test() -> None:
    """z is the difference of the adjusted estimates over the combined standard error, p = 2(1 − Φ(|z|))."""
    now_adj, now_se, _, _ = _published_adjusted_wald(41, 30, 29)
    before_adj, before_se, _, _ = _published_adjusted_wald(300, 100, 200)
    z = (now_adj - before_adj) / math.sqrt(now_se**2 + before_se**2)
    result = nps_change(nps({9: 41, 7: 30, 0: 29}), nps({10: 300, 8: 100, 5: 200}))
    assert pytest.approx((12.0 - 100 / 6, z, 2 * stats.norm.sf(abs(z))), **REF) == (
        result.delta,
        result.z,
        result.p_value,
    )


def test_nps_change_with_an_empty_period() -> None:
    """No answers in either period: no change, not significant."""
    assert Change(None, None, None, significant=False) == nps_change(nps({}), nps({9: 3}))


# ---------------------------------------------------------------------------------------
# Properties


@st.composite
def scales(draw: st.DrawFn) -> Scale:
    """A scale of 2 to 11 points starting between −3 and 3, best at either end."""
    low = draw(st.integers(-3, 3))
    return Scale(low, low + draw(st.integers(1, 10)), draw(st.sampled_from(["high", "low"])))


@st.composite
def histograms(draw: st.DrawFn, max_count: int = 300) -> Histogram:
    """A histogram on a random scale."""
    scale = draw(scales())
    counts = draw(st.dictionaries(st.sampled_from(scale.points()), st.integers(0, max_count)))
    return Histogram(scale, counts)


@given(st.lists(histograms(), max_size=4), st.sampled_from(["top2", "top1"]))
def test_csat_bounds_and_containment(hists: list[Histogram], rule: str) -> None:
    """CSAT lies in 0..100 and always inside its own interval, which lies in 0..100 too."""
    result = csat(hists, rule)  # type: ignore[arg-type]
    if result.n == 0:
        assert (None, None, None) == (result.value, result.ci95_low, result.ci95_high)
        return
    low, value, high = result.ci95_low, result.value, result.ci95_high
    if result.n < MIN_INTERVAL_N:
        assert (None, None, True) == (low, high, 0.0 <= value <= 100.0)  # type: ignore[operator]
        return
    assert True is (0.0 <= low <= value <= high <= 100.0)  # type: ignore[operator]


@given(st.lists(histograms(), max_size=4))
def test_top_box_never_exceeds_top_two_box(hists: list[Histogram]) -> None:
    """Top-1 CSAT is at most top-2 CSAT."""
    top1, top2 = csat(hists, "top1"), csat(hists, "top2")
    assert (top1.n, True) == (top2.n, top1.value is None or top1.value <= top2.value)  # type: ignore[operator]


@given(st.data())
def test_order_of_answers_is_irrelevant(data: st.DataObject) -> None:
    """Histograms counted from the answers in any order give identical CSAT, CES and NPS."""
    scale = data.draw(scales())
    answers = data.draw(st.lists(st.sampled_from(scale.points()), max_size=80))
    shuffled = data.draw(st.permutations(answers))
    first, second = Histogram(scale, Counter(answers)), Histogram(scale, Counter(shuffled))
    assert (csat([first]), ces(first)) == (csat([second]), ces(second))
    nps_answers = data.draw(st.lists(st.integers(0, 10), max_size=80))
    assert nps(Counter(nps_answers)) == nps(Counter(data.draw(st.permutations(nps_answers))))


@given(histograms(max_count=20))
def test_too_few_iff_fewer_than_30_answers(hist: Histogram) -> None:
    """too_few is set exactly when n < 30, for CSAT, CES and SCI alike."""
    expected = hist.n < MIN_TRUSTED_N
    assert (expected, expected, expected) == (
        csat([hist]).too_few,
        ces(hist).too_few,
        sci(hist.count_of(hist.scale.best_points(1)), hist.n).too_few,
    )


@given(scales())
def test_empty_histogram_gives_none_never_zero(scale: Scale) -> None:
    """An empty histogram gives value None for CSAT, mean and CES."""
    empty = Histogram(scale, {})
    assert (None, None, None, None) == (
        csat([empty]).value,
        mean(empty).value,
        ces(empty).value,
        ces(empty).easy_share,
    )


def test_z95_is_the_normal_975_quantile() -> None:
    """Z95 is Φ⁻¹(0.975) = 1.959963984540054."""
    assert pytest.approx(float(stats.norm.ppf(0.975)), rel=1e-15) == Z95


def test_metrics_import_only_the_standard_library() -> None:
    """Importing scoring.metrics pulls in no numpy, scipy, database, web or bot/flows modules."""
    code = "import sys, scoring.metrics; print(' '.join(sorted(sys.modules)))"
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    loaded = set(run.stdout.split())
    banned = {"numpy", "scipy", "statsmodels", "sqlalchemy", "fastapi", "bot", "flows", "matplotlib"}
    assert set() == {name for name in loaded if name.split(".")[0] in banned}
