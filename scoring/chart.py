"""A PNG trend chart of CSAT and NPS, for staff reports and the Telegram bot.

Pure like the rest of `scoring`: points in, PNG bytes out. Drawn on matplotlib's Agg canvas
through `Figure` directly, never pyplot: pyplot keeps a global registry of figures that is
not thread-safe, and this chart is drawn inside the web server. For the same reason nothing
here touches the global `rcParams`; every size and colour is passed explicitly.

matplotlib is imported only when a chart is drawn: `Band` and `TrendPoint` are used by the
reports, and importing matplotlib cost `afterword report` more CPU than the report itself.
"""

from __future__ import annotations

import datetime
import io
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from scoring.metrics import DEFAULT_TARGETS

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Language = Literal["de", "en"]
Metric = Literal["csat", "nps"]

SMALL_N = 30  # below this many answers a bucket's value is shaky; its marker is drawn hollow
DPI = 100  # fixed, so that width_px x height_px is the PNG's exact size
MIN_SIZE = (480, 270)  # px; smaller and the labels no longer fit beside the panels

# Okabe-Ito blue and orange (vermillion): told apart with every common colour-vision deficiency.
COLOURS: Mapping[Metric, str] = {"csat": "#0072B2", "nps": "#D55E00"}
GREY = "#444444"
BAND_ALPHA = 0.22
# Legend as a strip above its panel, where it can never hide a data point.
LEGEND_STRIP: Mapping[str, Any] = {
    "loc": "lower left",
    "bbox_to_anchor": (0, 1),
    "borderaxespad": 0.2,
    "columnspacing": 1.4,
    "frameon": False,
}

# Every label as (German, English).
PHRASES: Mapping[str, tuple[str, str]] = {
    "title": ("CSAT und NPS", "CSAT and NPS"),
    "csat": ("CSAT in %", "CSAT in %"),
    "nps": ("NPS", "NPS"),
    "interval": ("95-%-Intervall", "95 % interval"),
    "target": ("Ziel", "target"),
    "small": (f"weniger als {SMALL_N} Antworten", f"fewer than {SMALL_N} answers"),
    "empty": ("Keine Antworten im Zeitraum", "No answers in this period"),
    "week": ("Wochenbeginn (Montag)", "week starting (Monday)"),
}
TEXT: Mapping[Language, Mapping[str, str]] = {
    "de": {key: de for key, (de, _) in PHRASES.items()},
    "en": {key: en for key, (_, en) in PHRASES.items()},
}
# Own month names rather than strftime("%b"), which follows the process locale.
MONTHS: Mapping[Language, tuple[str, ...]] = {
    "de": ("Jan", "Feb", "Mär", "Apr", "Mai", "Jun", "Jul", "Aug", "Sep", "Okt", "Nov", "Dez"),
    "en": ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"),
}


@dataclass(frozen=True)
class Band:
    """One metric in one time bucket: the value, its 95 % interval and the number of answers."""

    value: float | None
    low: float | None
    high: float | None
    n: int


@dataclass(frozen=True)
class TrendPoint:
    """One time bucket; `start` is its first day (day, ISO week or month)."""

    start: datetime.date
    csat: Band | None  # percent 0..100
    nps: Band | None  # -100..100


def trend_chart(
    points: Sequence[TrendPoint],
    *,
    targets: Mapping[str, float] | None = None,
    title: str | None = None,
    language: Language = "en",
    width_px: int = 1000,
    height_px: int = 560,
) -> bytes:
    """A PNG trend chart of CSAT and NPS with their 95 % intervals as bands and the target lines.

    `targets` replaces the defaults as a whole; a metric missing from it gets no target line.
    Empty input gives a chart that says so. The same input always gives the same bytes.
    """
    targets = DEFAULT_TARGETS if targets is None else targets
    if unknown := set(targets) - {"csat", "nps"}:
        raise ValueError(f"unknown target metric(s): {sorted(unknown)}")
    if width_px < MIN_SIZE[0] or height_px < MIN_SIZE[1]:
        raise ValueError(f"a {width_px}x{height_px} px chart is below {MIN_SIZE[0]}x{MIN_SIZE[1]} px")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    text = TEXT[language]
    # Fonts grow with the image; at the default size they stay legible in a Telegram preview,
    # which shows the photo at roughly half its width.
    scale = max(0.6, min(width_px / 1000, height_px / 560))
    points = sorted(points, key=lambda p: p.start)
    has_data = any(not math.isnan(row[0]) for m in ("csat", "nps") for row in _series(points, m))

    # Constrained layout makes room for the slanted dates and the legend strips.
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, facecolor="white", layout="constrained")
    FigureCanvasAgg(fig)  # attaches itself to fig: Agg, whatever the default backend is
    fig.suptitle(text["title"] if title is None else title, fontsize=19 * scale, fontweight="bold")
    if has_data:
        _draw(fig, points, targets, language, width_px, scale)
    else:
        fig.text(0.5, 0.5, text["empty"], ha="center", va="center", fontsize=17 * scale, color=GREY)

    buffer = io.BytesIO()
    # No "Software" chunk: it carries the matplotlib version, so bytes would change on upgrade.
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _series(points: Sequence[TrendPoint], metric: Metric) -> list[tuple[float, float, float, int]]:
    """(value, low, high, n) per bucket; NaN where missing, which matplotlib draws as a gap."""
    rows = []
    for point in points:
        band = point.csat if metric == "csat" else point.nps
        if band is None or band.value is None or math.isnan(band.value):  # a gap, interval included
            rows.append((math.nan, math.nan, math.nan, 0))
        else:
            low, high = (math.nan if v is None else v for v in (band.low, band.high))
            rows.append((band.value, low, high, band.n))
    return rows


def _draw(
    fig: Figure,
    points: list[TrendPoint],
    targets: Mapping[str, float],
    language: Language,
    width_px: int,
    scale: float,
) -> None:
    """Both panels on a shared date axis, with ticks that suit the length of the series."""
    text, dates = TEXT[language], [p.start for p in points]
    # Day numbers, not matplotlib's date units: ticks and labels are set here, locale-free.
    x = [float(d.toordinal()) for d in dates]
    top = fig.add_subplot(2, 1, 1)
    bottom = fig.add_subplot(2, 1, 2, sharex=top)
    tick_pt = 13 * scale
    plot_px = width_px - 130 * scale  # minus the y labels and tick labels on the left
    # Markers shrink on long series so that neighbours do not merge into a sausage; on very
    # long ones (0) only the line and the hollow small-sample markers remain.
    marker_pt = min(7 * scale, 0.4 * plot_px / len(x))
    marker_pt = marker_pt if marker_pt >= 3 * scale else 0
    panels: tuple[tuple[Axes, Metric, float, int], ...] = ((top, "csat", 0, 20), (bottom, "nps", -100, 50))
    for ax, metric, y_min, y_step in panels:
        # Fixed scales with a little air, so charts of different periods compare at a glance.
        ax.set_ylim(y_min - (100 - y_min) * 0.04, 100 + (100 - y_min) * 0.04)
        ax.set_yticks(list(range(int(y_min), 101, y_step)))
        ax.set_ylabel(text[metric], fontsize=14 * scale)
        ax.tick_params(labelsize=tick_pt, length=4 * scale)
        ax.grid(axis="y", color="#e3e3e3", linewidth=0.8 * scale)
        ax.set_axisbelow(True)
        ax.spines[["top", "right"]].set_visible(False)
        _panel(ax, x, points, metric, targets.get(metric), language, scale, marker_pt)
    fig.align_ylabels([top, bottom])
    bottom.axhline(0, color="#999999", linewidth=0.8 * scale, zorder=1)
    top.tick_params(axis="x", labelbottom=False)

    if len(x) == 1:  # a single date has no extent; give it room instead of a degenerate axis
        bottom.set_xlim(x[0] - 3, x[0] + 3)
    max_labels = max(2, min(12, int(plot_px / (2.4 * tick_pt * DPI / 72))))
    ticks, labels = _ticks(dates, language, max_labels)
    bottom.set_xticks([float(d.toordinal()) for d in ticks], labels)
    label_px = max(len(s) for s in labels) * 0.62 * tick_pt * DPI / 72
    if len(labels) * (label_px + tick_pt * DPI / 72) > plot_px:  # they would touch: slant them
        bottom.tick_params(axis="x", labelrotation=30)
        for label in bottom.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    steps = {(b - a).days for a, b in itertools.pairwise(dates)}
    if steps and all(d.weekday() == 0 for d in dates) and all(s % 7 == 0 for s in steps):
        bottom.set_xlabel(text["week"], fontsize=13 * scale)


def _panel(
    ax: Axes,
    x: list[float],
    points: list[TrendPoint],
    metric: Metric,
    target: float | None,
    language: Language,
    scale: float,
    marker_pt: float,
) -> None:
    """One metric: line, markers, interval band, target line and its legend strip."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    colour, text = COLOURS[metric], TEXT[language]
    rows = _series(points, metric)
    values, lows, highs = ([row[k] for row in rows] for k in range(3))
    has_band = [False, *(not math.isnan(low + high) for _, low, high, _ in rows), False]  # padded

    ax.fill_between(x, lows, highs, color=colour, alpha=BAND_ALPHA, linewidth=0)
    # A bucket between two gaps spans no area, so its interval is drawn as a bar instead.
    lone = [i for i in range(len(x)) if has_band[i + 1] and not (has_band[i] or has_band[i + 2])]
    if lone:
        ys = [lows[i] for i in lone], [highs[i] for i in lone]
        ax.vlines([x[i] for i in lone], *ys, colors=colour, alpha=BAND_ALPHA, linewidth=9 * scale)
    ax.plot(x, values, color=colour, linewidth=2.2 * scale, zorder=3)
    shown = [i for i, v in enumerate(values) if not math.isnan(v)]
    small = [i for i in shown if rows[i][3] < SMALL_N]
    full = [i for i in shown if i not in small]
    dot: dict[str, Any] = {"marker": "o", "linestyle": "none", "color": colour, "zorder": 4}
    # Hollow markers never shrink below legible size: they are the warning, not the trend.
    hollow: dict[str, Any] = {**dot, "markerfacecolor": "white", "markeredgewidth": 1.6 * scale}
    ax.plot([x[i] for i in full], [values[i] for i in full], markersize=marker_pt, **dot)
    ax.plot([x[i] for i in small], [values[i] for i in small], markersize=max(marker_pt, 5 * scale), **hollow)

    line: dict[str, Any] = {"color": colour, "linewidth": 2.2 * scale}
    handles: list[Artist] = [
        Line2D([], [], markersize=7 * scale, label=metric.upper(), **{**dot, **line, "linestyle": "-"}),
        Patch(facecolor=colour, alpha=BAND_ALPHA, label=text["interval"]),
    ]
    if target is not None:
        number = f"{target:g}".replace(".", "," if language == "de" else ".")
        label = f"{text['target']} {number}" + (" %" if metric == "csat" else "")
        dashed: dict[str, Any] = {"color": GREY, "linestyle": "--", "linewidth": 1.4 * scale}
        ax.axhline(target, zorder=2, **dashed)
        handles.append(Line2D([], [], label=label, **dashed))
    if small:
        handles.append(Line2D([], [], markersize=7 * scale, label=text["small"], **hollow))
    if not shown:
        ax.text(
            0.5, 0.5, text["empty"], transform=ax.transAxes, ha="center", va="center", fontsize=14 * scale
        )
    ax.legend(handles=handles, ncols=len(handles), fontsize=12 * scale, **LEGEND_STRIP)


def _ticks(
    dates: list[datetime.date], language: Language, most: int
) -> tuple[list[datetime.date], list[str]]:
    """Tick dates and labels: on buckets for short ranges, on month starts for long or monthly ones."""
    first, last = dates[0], dates[-1]
    months = MONTHS[language]
    monthly = len(dates) > 1 and all(d.day == 1 for d in dates)
    if (last - first).days <= 180 and not monthly:
        chosen = dates[:: math.ceil(len(dates) / most)]
        if language == "de":
            return chosen, [f"{d.day:02d}.{d.month:02d}." for d in chosen]
        return chosen, [f"{months[d.month - 1]} {d.day}" for d in chosen]
    # Months counted from year 0, so that a step of 3 lands on quarters and 12 on Januaries.
    first_month = first.year * 12 + first.month - 1 + (first.day > 1)
    last_month = last.year * 12 + last.month - 1
    for step in (1, 2, 3, 6, 12, 24, 60, 120, 600):
        start = first_month + (-first_month) % step
        chosen = [datetime.date(m // 12, m % 12 + 1, 1) for m in range(start, last_month + 1, step)]
        if len(chosen) <= most:
            break
    return chosen, [f"{months[d.month - 1]} {d.year}" for d in chosen]
