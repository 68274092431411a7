"""The CSAT/NPS trend chart: a PNG of the requested size, the same bytes for the same input."""

from __future__ import annotations

import datetime
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from scoring.chart import Band, Language, TrendPoint, trend_chart

ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MONDAY = datetime.date(2024, 10, 7)


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which the PNG format puts right after the signature."""
    assert PNG_SIGNATURE == png[:8]
    assert b"IHDR" == png[12:16]
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def weekly(
    count: int, *, gaps: frozenset[int] = frozenset(), small: frozenset[int] = frozenset()
) -> list[TrendPoint]:
    """`count` weekly buckets with plausible, varying values; `gaps` have no answers, `small` fewer than 30."""
    points = []
    for i in range(count):
        start = MONDAY + datetime.timedelta(weeks=i)
        if i in gaps:
            points.append(TrendPoint(start, Band(None, None, None, 0), None))
            continue
        n = 12 if i in small else 40 + (i * 37) % 160
        csat, nps = 72.0 + (i * 7) % 20, 10.0 + (i * 13) % 45
        csat_half, nps_half = 150 / n**0.5, 400 / n**0.5
        points.append(
            TrendPoint(
                start,
                Band(csat, max(0.0, csat - csat_half), min(100.0, csat + csat_half), n),
                Band(nps, max(-100.0, nps - nps_half), min(100.0, nps + nps_half), n),
            )
        )
    return points


@pytest.mark.parametrize(("width", "height"), [(1000, 560), (1280, 720), (533, 301), (480, 270)])
def test_png_has_requested_size(width: int, height: int) -> None:
    """The PNG is exactly width_px x height_px pixels."""
    png = trend_chart(weekly(12, gaps=frozenset({4}), small=frozenset({2})), width_px=width, height_px=height)
    assert (width, height) == png_size(png)


def test_default_size() -> None:
    """Without a size the chart is 1000 x 560 pixels."""
    assert (1000, 560) == png_size(trend_chart(weekly(8)))


def test_same_input_same_bytes() -> None:
    """The same input renders to identical bytes, even with other charts drawn in between."""
    points = weekly(20, gaps=frozenset({5, 6}), small=frozenset({9}))
    first = trend_chart(points, language="de")
    trend_chart(weekly(3), language="en", width_px=640, height_px=360)
    assert first == trend_chart(points, language="de")


def test_same_bytes_from_many_threads() -> None:
    """Charts drawn at once in threads, as in the web server, equal the one drawn alone."""
    points = weekly(30, small=frozenset({1, 2}))
    alone = trend_chart(points)
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = list(pool.map(lambda _: trend_chart(points), range(8)))
    assert [alone] * 8 == together


@pytest.mark.parametrize("language", ["de", "en"])
def test_empty_input_is_a_png(language: Language) -> None:
    """No points at all still give a valid PNG (saying there were no answers)."""
    assert (1000, 560) == png_size(trend_chart([], language=language))


@pytest.mark.parametrize(
    "points",
    [
        [TrendPoint(MONDAY, None, None)],
        [TrendPoint(MONDAY + datetime.timedelta(weeks=i), Band(None, None, None, 0), None) for i in range(6)],
        [TrendPoint(MONDAY, Band(float("nan"), None, None, 0), Band(None, 1.0, 2.0, 0))],
    ],
    ids=["no-bands", "values-none", "value-nan"],
)
def test_all_none_input_is_a_png(points: list[TrendPoint]) -> None:
    """Buckets that all lack a value give the same valid PNG as no buckets."""
    png = trend_chart(points)
    assert (1000, 560) == png_size(png)
    assert trend_chart([]) == png


@pytest.mark.parametrize("language", ["de", "en"])
def test_both_languages(language: Language) -> None:
    """German and English charts render, and differ from each other."""
    points = weekly(10, small=frozenset({3}))
    other: Language = "en" if language == "de" else "de"
    png = trend_chart(points, language=language)
    assert (1000, 560) == png_size(png)
    assert trend_chart(points, language=other) != png


def test_long_series() -> None:
    """Two years of weekly buckets (104 points) render."""
    png = trend_chart(weekly(104, gaps=frozenset({20, 21}), small=frozenset({3, 50})), language="de")
    assert (1000, 560) == png_size(png)


@pytest.mark.parametrize(
    "points",
    [
        weekly(1),
        weekly(9, gaps=frozenset({1, 3, 5, 7})),  # every value stands alone between gaps
        [TrendPoint(MONDAY, None, Band(20.0, -5.0, 45.0, 31))],  # NPS only
        [TrendPoint(datetime.date(2024, m, 1), Band(85.0, None, None, 50), None) for m in range(1, 13)],
        list(reversed(weekly(6))),  # unordered
    ],
    ids=["single", "lone-points", "nps-only", "monthly-no-interval", "unordered"],
)
def test_unusual_series(points: list[TrendPoint]) -> None:
    """Single buckets, lone values between gaps, one metric only, missing intervals, any order."""
    assert (1000, 560) == png_size(trend_chart(points))


def test_targets_change_the_chart() -> None:
    """Own targets, or none, draw other target lines than the defaults."""
    points = weekly(6)
    default = trend_chart(points)
    assert default == trend_chart(points, targets={"csat": 80.0, "nps": 50.0})
    assert default != trend_chart(points, targets={"csat": 85.5})
    assert default != trend_chart(points, targets={})


def test_title_changes_the_chart() -> None:
    """An own title replaces the default one."""
    points = weekly(6)
    assert trend_chart(points) != trend_chart(points, title="Team Nord – Q4")


def test_unknown_target_is_refused() -> None:
    """A misspelt target metric is an error rather than a silently missing line."""
    with pytest.raises(ValueError, match="CSAT"):
        trend_chart(weekly(3), targets={"CSAT": 80.0})


def test_too_small_is_refused() -> None:
    """A size too small for the labels is an error rather than a broken layout."""
    with pytest.raises(ValueError, match="below"):
        trend_chart(weekly(3), width_px=300, height_px=200)


def test_sample_chart() -> None:
    """A typical chart renders; with AFTERWORD_TEST_OUTPUT set it is saved for a human to look at."""
    png = trend_chart(weekly(16, gaps=frozenset({6}), small=frozenset({2, 11})), language="de")
    assert (1000, 560) == png_size(png)
    if os.environ.get("AFTERWORD_TEST_OUTPUT"):
        out = ROOT / "test-output" / "trend-sample.png"
        out.parent.mkdir(exist_ok=True)
        out.write_bytes(png)
        assert png == out.read_bytes()
