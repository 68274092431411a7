"""The distributions behind the metrics' intervals and tests: normal, Wilson and Student's t.

`scoring` is standard library only, and `statistics` has the normal distribution but not
Student's t. The t distribution function is a regularized incomplete beta function,

    P(T > t) = I_x(df/2, 1/2) / 2   with   x = df / (df + t²),

evaluated by its continued fraction (modified Lentz, as `betacf` in Press et al., Numerical
Recipes, 3rd ed., 2007, §6.4) and inverted by safeguarded Newton steps.
"""

from __future__ import annotations

import math
import statistics

_EPS = 1e-16  # the continued fraction stops when a step changes it by less than this
_TINY = 1e-300  # stands in for a zero denominator in Lentz's method
_MAX_TERMS = 10_000  # the fraction needs O(sqrt(a)) terms; a = 5·10⁴ takes a few hundred
_STIRLING_FROM = 20.0  # above this the Stirling tail is below 1e-15, so it is exact enough
# From here on the expansion in 1/df is good to 1e-13 relative or better, while the continued
# fraction, which needs ~sqrt(df) terms near the mean of the beta distribution, gathers
# rounding error (4e-13 relative at df = 10⁵, 1e-11 at 10⁶, 5e-10 at 10⁸).
_ASYMPTOTIC_FROM = 100_000
# For the quantiles reports ask for (|z| ≤ 5, p from 3e-7 to 1 − 3e-7) the omitted terms fall
# like z⁹/df⁵ and are below 1e-15 of t from df = 5,000 (checked against mpmath at 40 digits).
_ASYMPTOTIC_NEAR_FROM = 5_000
_ASYMPTOTIC_NEAR_Z = 5.0
_GUESS_FROM_EXPANSION = 30
_STEP_TOLERANCE = 1e-13
# Newton's error after a step is about |g''/(2g')| · step², and |g''/g'| · t stays near 1 for
# these curves (the log tail falls like −t²/2 for the normal shape and like −ln t for df = 1,
# the log central probability rises like ln t), so a step below 1e-7 of t leaves about 1e-14.
_LAST_STEP = 1e-7
MIN_P = 1e-300  # smaller p would need tail probabilities below the smallest normal float

Z95 = statistics.NormalDist().inv_cdf(0.975)  # 1.959963984540054, the two-sided 95 % z


def is_whole(value: object) -> bool:
    """Whether `value` is an int, as counts and scores must be; bool, though an int, is not."""
    return isinstance(value, int) and not isinstance(value, bool)


def wilson(successes: int, n: int) -> tuple[float, float]:
    """Wilson score interval (95 %) of the proportion successes / n, as shares 0..1.

    Source: Wilson (1927), JASA 22, 209–212. Unlike the plain Wald interval it stays inside
    0..1 and does not collapse to a point at 0 or n successes.
    """
    if not (is_whole(successes) and is_whole(n)) or n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need whole numbers 0 <= successes <= n and n >= 1, got {successes!r} of {n!r}")
    share = successes / n
    z2 = Z95 * Z95
    denominator = 1 + z2 / n
    centre = (share + z2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(share * (1 - share) / n + z2 / (4 * n * n)) / denominator
    # At 0 and n successes the exact bound is 0 or 1; the float formula can miss it by an ulp.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def two_sided_p(z: float) -> float:
    """Two-sided p value of a standard normal test statistic, 2·Φ(−|z|).

    Source: the normal distribution function, Φ(x) = erfc(−x/√2) / 2. Written with erfc,
    which keeps its digits far out in the tail where 1 − erf would round to 0.
    """
    return math.erfc(abs(z) / math.sqrt(2))


def _stirling_tail(x: float) -> float:
    """ln Γ(x) minus its Stirling approximation (x − ½) ln x − x + ½ ln 2π, for x ≥ 20."""
    x2 = x * x
    return (1 / 12 - (1 / 360 - (1 / 1260 - 1 / (1680 * x2)) / x2) / x2) / x


def _log_beta(a: float, b: float) -> float:
    """ln B(a, b) = ln Γ(a) + ln Γ(b) − ln Γ(a + b).

    With one argument large, ln Γ(a) − ln Γ(a + b) is a difference of two nearly equal
    numbers (about 5·10⁵ for df = 10⁵), and `math.lgamma` would lose 1e-10 and more to
    cancellation. Written through Stirling's series the difference comes out directly.
    """
    small, big = min(a, b), max(a, b)
    if big < _STIRLING_FROM:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    ratio = (
        -(big - 0.5) * math.log1p(small / big)
        - small * math.log(big + small)
        + small
        + _stirling_tail(big)
        - _stirling_tail(big + small)
    )
    return math.lgamma(small) + ratio


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b); converges fast for x < (a + 1) / (a + b + 2)."""
    c, d = 1.0, _nonzero(1.0 - (a + b) * x / (a + 1.0))
    d = 1.0 / d
    h = d
    for m in range(1, _MAX_TERMS + 1):
        # Each m brings an even and an odd coefficient (Numerical Recipes eq. 6.4.6).
        even = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        odd = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        for coefficient in (even, odd):
            d = 1.0 / _nonzero(1.0 + coefficient * d)
            c = _nonzero(1.0 + coefficient / c)
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"incomplete beta fraction for a={a}, b={b}, x={x} did not converge")


def _nonzero(value: float) -> float:
    """Lentz's guard: a denominator of exactly 0 is replaced by a tiny number."""
    return value if abs(value) > _TINY else _TINY


def _betainc(a: float, b: float, x: float, y: float, log_x: float, log_y: float) -> float:
    """Regularized incomplete beta I_x(a, b), given x, y = 1 − x and their logarithms.

    The caller works out y and both logarithms itself, each from the form that keeps its
    digits: 1 − x cancels where x is near 1 (small |t|), and x underflows far in the tail.
    """
    front = math.exp(a * log_x + b * log_y - _log_beta(a, b))  # x^a y^b / B(a, b)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, y) / b


def _beta_arguments(t: float, df: int) -> tuple[float, float, float, float]:
    """x = df / (df + t²), y = t² / (df + t²) and their logarithms, for t > 0.

    Beyond t = sqrt(df) everything is written through u = sqrt(df) / t, because t² overflows
    for the far quantiles of small df (df = 1, p = 1e-300 has t near 3e299).
    """
    if t * t <= df:
        ratio = t * t / df
        return (
            1.0 / (1.0 + ratio),
            ratio / (1.0 + ratio),
            -math.log1p(ratio),
            math.log(ratio) - math.log1p(ratio),
        )
    u = math.sqrt(df) / t
    u2 = u * u  # may underflow to 0, which log1p takes in its stride
    return u2 / (1.0 + u2), 1.0 / (1.0 + u2), 2.0 * math.log(u) - math.log1p(u2), -math.log1p(u2)


def _probability(t: float, df: int, central: bool) -> float:
    """P(T > t) or, when `central`, P(0 < T < t), for t > 0; each computed without cancellation."""
    x, y, log_x, log_y = _beta_arguments(t, df)
    if central:
        return 0.5 * _betainc(0.5, df / 2.0, y, x, log_y, log_x)
    return 0.5 * _betainc(df / 2.0, 0.5, x, y, log_x, log_y)


def _log_density(t: float, df: int) -> float:
    """ln of the t density at t > 0; ln(1 + t²/df) is −ln x, which stays finite for huge t."""
    log_x = _beta_arguments(t, df)[2]
    return (df + 1) / 2.0 * log_x - 0.5 * math.log(df) - _log_beta(df / 2.0, 0.5)


def _solve(target: float, df: int, central: bool, guess: float) -> float:
    """The t > 0 where P(0 < T < t) (central) or P(T > t) (upper tail) equals `target`.

    Newton's method on g(t) = ln P − ln target, started at `guess`: on the log scale the heavy
    tail of df = 1 is nearly straight, so few steps are needed even far out. A bracket that
    always holds the root (its upper end found by doubling) catches any step that would
    leave it; such a step bisects instead.
    """
    lo, hi = 0.0, math.inf
    t = guess
    log_target = math.log(target)
    sign = -1.0 if central else 1.0  # the central probability rises with t, the tail falls
    for _ in range(400):
        probability = _probability(t, df, central)
        if (probability < target) == central:
            lo = t
        else:
            hi = t
        candidate = hi  # a tail that underflowed to 0 (far beyond the root) makes the step bisect
        if probability > 0.0:
            # g'(t) = ∓density / P, so the Newton step −g/g' is ±(ln P − ln target) · P / density.
            log_p = math.log(probability)
            candidate = t + sign * (log_p - log_target) * math.exp(log_p - _log_density(t, df))
            # Newton converges quadratically: after a step below 1e-7 of t the error left is far
            # smaller than the rounding in P itself, so further steps would only chase that noise.
            if abs(candidate - t) <= _LAST_STEP * t:
                return candidate
        if not lo < candidate < hi:
            candidate = (lo + hi) / 2.0 if hi < math.inf else 2.0 * max(t, 1.0)
        if hi < math.inf and hi - lo <= 2 * math.ulp(hi):
            return candidate
        t = candidate
    return t


def _asymptotic(p: float, df: int) -> float:
    """The expansion of t in powers of 1/df around the normal quantile z.

    Abramowitz and Stegun, Handbook of Mathematical Functions (1964), 26.7.5 (Fisher and
    Cornish). For df ≥ 10⁵ and p ≥ 1e-300 (|z| < 37) the omitted terms are below 1e-13 of t.
    """
    z = statistics.NormalDist().inv_cdf(p)
    z2 = z * z
    g1 = z * (z2 + 1) / 4
    g2 = z * ((5 * z2 + 16) * z2 + 3) / 96
    g3 = z * (((3 * z2 + 19) * z2 + 17) * z2 - 15) / 384
    g4 = z * ((((79 * z2 + 776) * z2 + 1482) * z2 - 1920) * z2 - 945) / 92160
    return z + (g1 + (g2 + (g3 + g4 / df) / df) / df) / df


def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution with `df` degrees of freedom: the t with P(T ≤ t) = p.

    Source: Student (W. S. Gosset), "The probable error of a mean", Biometrika 6 (1908); the
    incomplete beta form and its continued fraction from Press et al., Numerical Recipes,
    §6.4 and §6.14; for df ≥ 10⁵, and for df ≥ 5,000 with |z| ≤ 5, the expansion of Abramowitz
    and Stegun 26.7.5. Agrees with scipy.stats.t.ppf to 1e-12 relative for p in [1e-300, 1) and
    df from 1 to 10¹⁵ (with mpmath at 40 digits to 1e-13 on a grid of df 1 … 10⁵, p 1e-30 … 1 − 3e-7).
    """
    if not is_whole(df) or df < 1:
        raise ValueError(f"degrees of freedom must be a whole number of at least 1, got {df!r}")
    if not MIN_P <= p < 1.0:
        raise ValueError(f"probability must lie in [{MIN_P}, 1), got {p!r}")
    if p == 0.5:
        return 0.0
    # By symmetry only the upper half is solved. Near the middle the target is the central
    # probability |p − ½|, further out the tail min(p, 1 − p); both are exact in floating
    # point (Sterbenz), which a tail near ½ would not be: 0.5 − 1e-12 keeps 4 digits of 1e-12.
    near = df >= _ASYMPTOTIC_NEAR_FROM and abs(statistics.NormalDist().inv_cdf(p)) <= _ASYMPTOTIC_NEAR_Z
    if near or df >= _ASYMPTOTIC_FROM:
        return _asymptotic(p, df)
    # From df = 30 the expansion is within 1e-7 of t, so one Newton step from it is enough
    # (a report scores dozens of CES means; it made t_quantile a third of a report's time).
    guess = abs(_asymptotic(p, df) if df >= _GUESS_FROM_EXPANSION else statistics.NormalDist().inv_cdf(p))
    if 0.25 <= p <= 0.75:
        t = _solve(abs(p - 0.5), df, central=True, guess=guess)
    else:
        t = _solve(min(p, 1.0 - p), df, central=False, guess=guess)
    return t if p > 0.5 else -t
