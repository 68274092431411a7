"""The report model: histogram rows in, CSAT/NPS/CES objects with targets and change out.

Pure: bot/ runs the GROUP BY queries and hands the rows here; this module only counts
and formats, so the numbers in the CLI, the API, Telegram and the dashboard agree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scoring.metrics import (
    DEFAULT_TARGETS,
    Ces,
    Csat,
    CsatRule,
    Histogram,
    Nps,
    Scale,
    ces,
    check_target,
    csat,
    csat_change,
    nps,
    nps_change,
)


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


def scores_json(
    current: Scores, previous: Scores | None = None, targets: Mapping[str, float] = DEFAULT_TARGETS
) -> dict[str, Any]:
    """``{"csat": {...}, "nps": {...}, "ces": {...}}``, each with value, n, ci95_low, ci95_high."""
    out: dict[str, Any] = {}
    for name, result in (("csat", current.csat), ("nps", current.nps), ("ces", current.ces)):
        item = flat(result)
        target = targets.get(name)
        check = (
            None if target is None else check_target(result.value, result.ci95_low, result.ci95_high, target)
        )
        item["target"] = None if check is None else flat(check)
        out[name] = item
    if previous is not None:
        out["csat"]["change"] = flat(csat_change(current.csat, previous.csat))
        out["nps"]["change"] = flat(nps_change(current.nps, previous.nps))
        out["csat"]["previous"] = _brief(previous.csat)
        out["nps"]["previous"] = _brief(previous.nps)
        out["ces"]["previous"] = _brief(previous.ces)
    return out


def flat(result: Any) -> dict[str, Any]:
    """A result of scoring.metrics (a dataclass of plain values) as a dict of its fields.

    The same as ``dataclasses.asdict`` for these, without its deep copy of every value, which
    took half the scoring time of a report with 25 groups.
    """
    return dict(vars(result))


def _brief(result: Csat | Nps | Ces) -> dict[str, Any]:
    return {"value": result.value, "n": result.n, "ci95_low": result.ci95_low, "ci95_high": result.ci95_high}
