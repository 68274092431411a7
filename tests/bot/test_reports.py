"""Reports from SQL histograms: the numbers are the hand-counted ones, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import itertools
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Connection

from bot.apikeys import create_key
from bot.errors import ReportError
from bot.importer import import_csv
from bot.inbound import Inbound, handle
from bot.report_format import render
from bot.reports import (
    COVERING_INDEXES,
    CsiSpec,
    build_report,
    histogram_query,
    load_csi_config,
    report_query,
)
from bot.service import Service
from bot.surveys import NewSurvey, closing, create_survey
from bot.web.app import create_app
from scoring.report import Report
from tests.support import Clock

# now = 2026-11-23 10:00 UTC (tests.support.Clock). anna answered on Tue 2026-11-10 (ISO week
# of Mon 11-09), ben on Fri 2026-11-20 (week of Mon 11-16); two CSAT answers fall in the
# previous 30 days.
ROWS = [
    *[("anna", "2026-11-10T09:00:00Z", "csat", s, "") for s in (5, 5, 4, 3)],
    *[("ben", "2026-11-20T09:00:00Z", "csat", s, "") for s in (4, 2, 1, 5, 4, 3)],
    ("anna", "2026-11-10T09:00:00Z", "nps", 10, ""),
    ("anna", "2026-11-10T09:00:00Z", "nps", 9, ""),
    ("anna", "2026-11-10T09:00:00Z", "nps", 6, ""),
    ("ben", "2026-11-20T09:00:00Z", "nps", 8, "super Service"),
    ("ben", "2026-11-19T09:00:00Z", "nps", 0, "viel zu langsam"),
    *[("ben", "2026-11-20T09:00:00Z", "ces", s, "") for s in (7, 5, 6)],
    *[("anna", "2026-10-10T09:00:00Z", "csat", s, "") for s in (1, 1)],
]


async def load(service: Service, tmp_path: Path) -> None:
    lines = ["response_id,agent,submitted_at,metric,score,comment"]
    lines += [f"r{i},{a},{t},{m},{s},{c}" for i, (a, t, m, s, c) in enumerate(ROWS)]
    path = tmp_path / "rows.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    await import_csv(service.db, path)


async def report(service: Service, **params: Any) -> Report:
    return await build_report(service.db, report_query(now=service.clock(), **params))


async def test_overall_scores_match_hand_counts(service: Service, tmp_path: Path) -> None:
    """CSAT 6 of 10 on the two best points = 60 %; NPS (2 − 2) / 5 = 0; CES mean (7+5+6)/3 = 6."""
    await load(service, tmp_path)
    data = await report(service)
    assert (60.0, 10, 6) == (data.csat.value, data.csat.n, data.csat.satisfied)
    assert (0.0, 5, 2, 1, 2) == tuple(
        getattr(data.nps, k) for k in ("value", "n", "promoters", "passives", "detractors")
    )
    assert (6.0, 3) == (data.ces.value, data.ces.n)
    assert data.csat.ci95_low < 60.0 < data.csat.ci95_high
    assert (True, True) == (data.csat.too_few, data.nps.too_few)


async def test_change_against_previous_period(service: Service, tmp_path: Path) -> None:
    """The previous 30 days hold two CSAT answers of 1, so CSAT moved from 0 % to 60 %: +60 points."""
    await load(service, tmp_path)
    data = await report(service)
    assert (0.0, 2, 60.0) == (
        data.csat.previous.value,
        data.csat.previous.n,
        data.csat.change.delta,
    )


async def test_targets_are_checked(service: Service, tmp_path: Path) -> None:
    """CSAT 60 % misses the default 80 % target; NPS 0 misses 50."""
    await load(service, tmp_path)
    data = await report(service)
    assert (80.0, False, 50.0, False) == (
        data.csat.target.target,
        data.csat.target.met,
        data.nps.target.target,
        data.nps.target.met,
    )


async def test_grouped_by_agent(service: Service, tmp_path: Path) -> None:
    """anna: CSAT 3/4 = 75 %, NPS (2 − 1)/3 = 33.3; ben: CSAT 3/6 = 50 %, NPS (0 − 1)/2 = −50."""
    await load(service, tmp_path)
    data = await report(service, by="agent")
    got = {g.key: (g.csat.value, round(g.nps.value, 6)) for g in data.groups}
    assert {"anna": (75.0, 33.333333), "ben": (50.0, -50.0)} == got


@pytest.mark.parametrize("by", ["channel", "team"])
async def test_one_group_equals_the_whole(service: Service, tmp_path: Path, by: str) -> None:
    """Every imported answer has channel "import" and no team: that one group is the overall report."""
    await load(service, tmp_path)
    data = await report(service, by=by)
    expected_key = "import" if by == "channel" else None
    assert [(expected_key, 60.0, 10, 0.0, 5, 6.0, 3)] == [
        (g.key, *(getattr(getattr(g, m), k) for m in ("csat", "nps", "ces") for k in ("value", "n")))
        for g in data.groups
    ]
    assert (60.0, 0.0, 6.0) == (data.csat.value, data.nps.value, data.ces.value)


# sqlite_stat1 as ANALYZE left it after importing a million answers (bench/report_bench.py):
# with these statistics SQLite once skip-scanned an index led by `headline` and sorted for
# the GROUP BY (1.5 s instead of 0.2 s); without statistics it planned well.
MILLION_STATS = {
    "ix_answers_report": "1000000 333334 333334 333334 333334 43479 1 1",
    "ix_answers_report_agent": "1000000 40000 13334 13334 13334 13334 1740 1 1",
    "ix_answers_report_team": "1000000 250000 83334 83334 83334 83334 10870 1 1",
    "ix_answers_report_channel": "1000000 1000000 333334 333334 333334 333334 43479 1 1",
    "ix_answers_report_question": "1000000 333334 333334 333334 333334 333334 43479 1",
    "ix_answers_metric_answered_at": "1000000 333334 1",
    "ix_answers_answered_at": "1000000 1",
}


@pytest.mark.parametrize("stats", [False, True], ids=["fresh", "a million answers analysed"])
@pytest.mark.parametrize("by", sorted(COVERING_INDEXES, key=str))
async def test_sqlite_reads_histograms_from_the_covering_index(
    service: Service, by: str | None, stats: bool
) -> None:
    """On SQLite every grouping with a covering index is read from it alone: no table rows, no sort."""
    if not service.db.is_sqlite:
        pytest.skip("INDEXED BY is SQLite's; PostgreSQL plans each query with its values")
    stmt = histogram_query(by, "sqlite")
    if stats:

        def million_stats(conn: Connection) -> None:
            conn.exec_driver_sql("ANALYZE")
            for index, stat in MILLION_STATS.items():
                conn.exec_driver_sql(
                    "INSERT OR REPLACE INTO sqlite_stat1 (tbl, idx, stat) VALUES ('answers', ?, ?)",
                    (index, stat),
                )

        await service.db.transact(million_stats)
        await service.db.dispose()  # new connections read the statistics afresh
    async with service.db.read() as conn:
        compiled = stmt.compile(dialect=conn.dialect)
        values = compiled.construct_params({"start": "2026-01-01", "end": "2027-01-01"})
        params = tuple(values[name] for name in compiled.positiontup or ())
        plan = (await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {compiled}", params)).all()
    # One step (no "USE TEMP B-TREE FOR GROUP BY"); SCAN, or SEARCH once ANALYZE has run.
    assert [f"COVERING INDEX {COVERING_INDEXES[by]}"] == [
        row.detail.split(" USING ")[1].split(" (")[0] for row in plan
    ]


async def test_trend_by_week_starts_on_monday(service: Service, tmp_path: Path) -> None:
    """Weekly buckets start on Monday: anna's answers in the week of 11-09, ben's in the week of 11-16."""
    await load(service, tmp_path)
    data = await report(service, trend="week")
    assert [("2026-11-09", 75.0), ("2026-11-16", 50.0)] == [
        (b.start, b.csat.value) for b in data.trend if b.csat.n
    ]


async def test_trend_lists_empty_weeks_so_a_gap_shows(service: Service, tmp_path: Path) -> None:
    """Every Monday of the 30 days is a bucket; the weeks without answers have n 0 and no value."""
    await load(service, tmp_path)
    data = await report(service, trend="week")
    starts = [b.start for b in data.trend]
    period = data.period
    first = date.fromisoformat(period.first_day)
    assert starts[0] == (first - timedelta(days=first.weekday())).isoformat()
    assert {7} == {
        (date.fromisoformat(b) - date.fromisoformat(a)).days for a, b in itertools.pairwise(starts)
    }
    assert starts[-1] <= period.last_day < (date.fromisoformat(starts[-1]) + timedelta(days=7)).isoformat()
    empty = [b for b in data.trend if b.start not in ("2026-11-09", "2026-11-16")]
    assert len(empty) >= 2
    assert {(0, None)} == {(b.csat.n, b.csat.value) for b in empty}


async def test_comments_put_detractors_first(service: Service, tmp_path: Path) -> None:
    """The detractor's comment (NPS 0) comes before a later passive's comment."""
    await load(service, tmp_path)
    data = await report(service)
    assert [("viel zu langsam", True), ("super Service", False)] == [
        (c.text, c.detractor) for c in data.comments
    ]


async def test_empty_period_says_no_answers(service: Service, tmp_path: Path) -> None:
    """A period without answers has value None everywhere and the table says 'no answers', never 0 %."""
    await load(service, tmp_path)
    data = await report(service, since=None, from_="2025-01-01", to="2025-01-31")
    assert (None, None, None, 0) == (
        data.csat.value,
        data.nps.value,
        data.ces.value,
        data.csat.n,
    )
    assert "no answers" in render(data, "table")
    assert "0.0 %" not in render(data, "table")


async def test_school_grade_answers_from_a_flow(service: Service, clock: Clock) -> None:
    """One customer is one observation: CSAT is the satisfaction question, the others stand beside it.

    Customer A answers satisfaction 1, resolution 2, speed 3; customer B 4, 1, 5 (1 best, top 2).
    CSAT = satisfaction: A satisfied, B not → 1 of 2 = 50 %, n = 2 (not 6 answers).
    Per question: satisfaction 1 of 2 = 50 %, resolution 2 of 2 = 100 %, speed 0 of 2 = 0 %.
    """
    for address, answers in (("+4915112345678", "123"), ("+4915112345679", "415")):
        await create_survey(
            service.db,
            service.flows,
            NewSurvey(flow_id="support-csat", channel="sms", address=address),
            now=service.clock(),
            ttl=service.survey_ttl,
        )
        for text in answers:
            await handle(
                service.db,
                service.flows,
                Inbound(channel="sms", address=address, received_at=service.clock(), text=text),
            )
    clock.advance(minutes=1)  # periods are half-open: [now - 1d, now)
    data = await report(service, since="1d")
    assert (50.0, 2, 1) == (data.csat.value, data.csat.n, data.csat.satisfied)
    per_question = {q.question: (q.csat.value, q.csat.n) for q in data.questions}
    assert {"satisfaction": (50.0, 2), "resolution": (100.0, 2), "speed": (0.0, 2)} == per_question
    by_question = await report(service, since="1d", by="question")
    assert (50.0, 2) == (by_question.csat.value, by_question.csat.n)
    assert {"resolution": 2, "satisfaction": 2, "speed": 2} == {g.key: g.csat.n for g in by_question.groups}


async def test_api_report_matches_cli_json(service: Service, tmp_path: Path) -> None:
    """GET /api/report returns the same JSON as the report builder, and 400 naming a bad parameter."""
    await load(service, tmp_path)
    key = await create_key(service.db, "reports", now=service.clock())
    app = create_app(service.settings, service, scheduler=False)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        ok = await client.get("/api/report", params={"by": "agent", "trend": "week"}, headers=headers)
        bad = await client.get("/api/report", params={"by": "agnt"}, headers=headers)
        mixed = await client.get("/api/report", params={"since": "7d", "to": "2026-11-01"}, headers=headers)
    assert (200, (await report(service, by="agent", trend="week")).json_data()) == (ok.status_code, ok.json())
    assert (400, "by") == (bad.status_code, bad.json()["error"]["field"])
    assert (400, "since") == (mixed.status_code, mixed.json()["error"]["field"])


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"by": "agnt"}, "by"),
        ({"trend": "hour"}, "trend"),
        ({"since": "30"}, "since"),
        ({"since": None, "from_": "2026-13-01"}, "from"),
        ({"since": None, "from_": "2026-11-20", "to": "2026-11-01"}, "from"),
        ({"since": "7d", "to": "2026-11-01"}, "since"),  # either a period ending now or days, never both
        ({"since": "", "from_": None}, "since"),
        ({"rule": "top3"}, "rule"),
    ],
)
def test_bad_report_parameters_name_the_field(params: dict[str, Any], field: str) -> None:
    """Each bad report parameter raises ReportError naming that parameter."""
    with pytest.raises(ReportError) as raised:
        report_query(now=Clock()(), **params)
    assert field == raised.value.field


def test_from_after_to_is_refused_not_called_empty() -> None:
    """--from 2026-11-20 --to 2026-11-01 is a reversed period: refused naming both days."""
    with pytest.raises(ReportError) as raised:
        report_query(now=Clock()(), from_="2026-11-20", to="2026-11-01")
    assert ("from", "2026-11-20 is after to 2026-11-01: give the first day, then the last") == (
        raised.value.field,
        str(raised.value).split(": ", 1)[1],
    )


async def test_period_label_names_the_last_day_included(service: Service) -> None:
    """--to 2026-11-01 ends the period with that day: the label says 2026-11-01, not the exclusive 11-02."""
    data = await report(service, since=None, from_="2026-10-01", to="2026-11-01")
    assert ("2026-10-01", "2026-11-01", "2026-11-02T00:00:00+00:00") == (
        data.period.first_day,
        data.period.last_day,
        data.period.to,
    )
    for fmt in ("table", "md"):
        assert "2026-10-01 … 2026-11-01" in render(data, fmt)
        assert "2026-11-02" not in render(data, fmt)
    one_day = await report(service, since=None, from_="2026-11-01", to="2026-11-01")
    assert ("2026-11-01", "2026-11-01") == (one_day.period.first_day, one_day.period.last_day)


async def test_question_means_and_csi(service: Service, tmp_path: Path) -> None:
    """Per-question means are reported; CSI = Σ w (P − E) = 0.5·(3.6 − 2.6) + 0.5·(6 − 5) = 1.0."""
    await load(service, tmp_path)
    # csat answers in the period: 5,5,4,3 and 4,2,1,5,4,3 → mean 36/10 = 3.6; ces: 7,5,6 → mean 6.
    config = tmp_path / "csi.yaml"
    config.write_text(
        "attributes:\n  - {question: csat, weight: 0.5, expected: 2.6}\n  - {question: ces, weight: 0.5, expected: 5}\n",
        encoding="utf-8",
    )
    data = await report(service, csi=load_csi_config(config))
    means = {q.question: q.mean.value for q in data.questions}
    assert {"csat": pytest.approx(3.6), "ces": pytest.approx(6.0), "nps": pytest.approx(33 / 5)} == means
    assert (pytest.approx(1.0), []) == (data.csi.value, data.csi.missing)


async def test_csi_is_a_row_of_csv_and_markdown(service: Service, tmp_path: Path) -> None:
    """The CSI is the CSV row (period, all, csi, value) and a Markdown line; empty while a question has none."""
    await load(service, tmp_path)
    known = await report(service, csi=(CsiSpec("csat", 0.5, 2.6), CsiSpec("ces", 0.5, 5)))
    unknown = await report(service, csi=(CsiSpec("q9", 1, 3),))
    rows = [
        next(r for r in csv.DictReader(render(d, "csv").splitlines()) if r["metric"] == "csi")
        for d in (known, unknown)
    ]
    assert (pytest.approx(1.0), "", "- CSI: 1.000", "- CSI: no answers for q9") == (
        float(rows[0]["value"]),
        rows[1]["value"],
        next(line for line in render(known, "md").splitlines() if "CSI" in line),
        next(line for line in render(unknown, "md").splitlines() if "CSI" in line),
    )


async def test_csv_and_markdown_hold_what_the_table_shows(service: Service, tmp_path: Path) -> None:
    """CSV and Markdown carry targets, change, response rate, questions and comments; no 'None' key.

    The imported answers have no agent for one row: every format shows '(none)' there.
    """
    await load(service, tmp_path)
    extra = tmp_path / "no-agent.csv"
    extra.write_text(
        "response_id,agent,submitted_at,metric,score\nx-1,,2026-11-17T10:00:00Z,csat,5\n", encoding="utf-8"
    )
    await import_csv(service.db, extra)
    data = await report(service, by="agent")
    table, md, text = render(data, "table"), render(data, "md"), render(data, "csv")
    rows = list(csv.DictReader(text.splitlines()))
    period_csat = next(r for r in rows if (r["scope"], r["metric"]) == ("period", "csat"))
    assert ("80.0", "False", "False") == (
        period_csat["target"],
        period_csat["target_met"],
        period_csat["target_certain"],
    )
    assert period_csat["change"] != ""  # the previous period is compared
    assert {"completion_rate", "answer_rate", "sci"} <= {r["metric"] for r in rows if r["scope"] == "period"}
    assert {"viel zu langsam", "super Service"} == {r["text"] for r in rows if r["scope"].endswith("comment")}
    assert "(none)" in {r["key"] for r in rows if r["scope"] == "agent"}
    assert {"question"} <= {r["scope"] for r in rows}
    for shown in (table, md):
        assert "(none)" in shown
        assert "missed 80" in shown
        assert "viel zu langsam" in shown
        assert "Each question" in shown or "| question |" in shown
    assert "None" not in md
    assert "None" not in text


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read it: No such file or directory"),
        (
            "attributes: [\n  - a: b\n",
            "not YAML: expected the node content, but found '-' (line 2, column 3)",
        ),
        ("x: 1\n", "needs a non-empty list 'attributes' of {question, weight, expected}"),
        (
            "\n".join(
                [
                    "a: &a [x]",
                    *(
                        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]"
                        for i in range(8)
                    ),
                    "attributes: *i",
                ]
            ),
            "the YAML expands to more than 100,000 values through its anchors and aliases",
        ),
    ],
)
def test_csi_file_errors_are_one_line_naming_the_file(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    """A missing, malformed or empty CSI file gives one line: the file's name, then what is wrong."""
    config = tmp_path / "csi.yaml"
    if content is not None:
        config.write_text(content, encoding="utf-8")
    with pytest.raises(ReportError) as raised:
        load_csi_config(config)
    assert f"{config}: {problem}" == raised.value.message


def test_csi_config_errors_name_the_problem(tmp_path: Path) -> None:
    """A CSI file without numbers for weight and expected is refused, naming the attribute."""
    config = tmp_path / "csi.yaml"
    config.write_text("attributes:\n  - {question: csat, weight: heavy, expected: 2}\n", encoding="utf-8")
    with pytest.raises(ReportError, match="attribute 1 needs question, weight and expected"):
        load_csi_config(config)


def test_metric_cell_shows_value_interval_and_n() -> None:
    """'-44.1 [-48.8, -39.1], n=1000'; under 30 answers '(few)'; under 5 no interval, said in words."""
    from bot.report_format import metric_cell
    from scoring.report import CsatScore, NpsScore

    # Only the fields metric_cell reads: model_construct checks nothing.
    item = NpsScore.model_construct(value=-44.1, ci95_low=-48.8, ci95_high=-39.1, n=1000, too_few=False)
    few = CsatScore.model_construct(value=40.0, ci95_low=11.8, ci95_high=76.9, n=5, too_few=True)
    one = NpsScore.model_construct(value=-100.0, ci95_low=None, ci95_high=None, n=1, too_few=True)
    assert (
        "-44.1 [-48.8, -39.1], n=1000",
        "40.0 % [11.8, 76.9], n=5 (few)",
        "-100.0, n=1 (too few for an interval)",
    ) == (metric_cell("nps", item), metric_cell("csat", few), metric_cell("nps", one))


async def test_response_rate_counts_only_delivered_surveys(service: Service, clock: Clock) -> None:
    """4 sent, 1 failed: 2 answered of 3 delivered is 66.7 %, 1 completed is 33.3 %."""
    ids = []
    for i in range(4):
        created = await create_survey(
            service.db,
            service.flows,
            NewSurvey("nps", "sms", f"+4915100000{i:03d}", ticket=f"T-{i}", language="de"),
            now=service.clock(),
            ttl=service.survey_ttl,
        )
        ids.append(created.survey_id)
    for i, replies in ((0, ["9", "super"]), (1, ["3"])):
        for text in replies:
            inbound = Inbound("sms", f"+4915100000{i:03d}", service.clock(), text=text)
            await handle(service.db, service.flows, inbound)
    await service.db.run(closing(ids[3], "failed"))
    clock.advance(minutes=1)  # the period ends before now; the surveys were sent at now
    rate = (await report(service)).response_rate.model_dump()
    assert {
        "sent": 4,
        "not_delivered": 1,
        "delivered": 3,
        "completed": 1,
        "answered": 2,
        "completion_rate": 33.3,
        "answer_rate": 66.7,
    } == rate


async def test_trend_chart_shows_an_empty_week_as_a_gap(service: Service, tmp_path: Path) -> None:
    """Answers in the weeks of 10-26 and 11-09, none in the week of 11-02: the CSAT line is broken there.

    The chart drawn from the report has fewer pixels in the CSAT colour than one drawn from
    the answered weeks alone, where matplotlib joins 10-26 straight to 11-09.
    """
    from matplotlib.image import imread

    from bot.reports import trend_points
    from scoring.chart import COLOURS, TrendPoint, trend_chart

    await load(service, tmp_path)
    extra = tmp_path / "october.csv"
    extra.write_text(
        "response_id,submitted_at,metric,score\n"
        + "".join(f"o{i},2026-10-28T09:00:00Z,csat,5\n" for i in range(5)),
        encoding="utf-8",
    )
    await import_csv(service.db, extra)
    points = trend_points(await report(service, trend="week"))
    gap = next(p for p in points if p.start == date(2026, 11, 2))
    assert (None, None) == (gap.csat, gap.nps)

    def csat_pixels(chosen: list[TrendPoint]) -> int:
        image = imread(io.BytesIO(trend_chart(chosen)), format="png")[:, :, :3]
        colour = [int(COLOURS["csat"][i : i + 2], 16) / 255 for i in (1, 3, 5)]
        return int((abs(image - colour).max(axis=2) < 0.02).sum())

    joined = [p for p in points if p.csat is not None or p.nps is not None]
    assert csat_pixels(points) < csat_pixels(joined)


async def test_report_csv_is_safe_against_formulas_and_line_breaks(service: Service, tmp_path: Path) -> None:
    """Comments and keys that start like a formula get a leading '; CR and LF stay inside their cell."""
    path = tmp_path / "formulas.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["response_id", "submitted_at", "metric", "score", "agent", "comment"])
        writer.writerow(
            ["f1", "2026-11-20T09:00:00Z", "nps", "0", "=cmd|' /C calc'!A0", '=HYPERLINK("http://x","y")']
        )
        writer.writerow(["f2", "2026-11-20T09:00:00Z", "nps", "10", "@agent", "eins\rzwei"])
    await import_csv(service.db, path)
    data = await report(service, by="agent")
    rows = list(csv.DictReader(io.StringIO(render(data, "csv"), newline="")))
    comments = {r["text"] for r in rows if r["scope"].endswith("comment")}
    agents = {r["key"] for r in rows if r["scope"] == "agent"}
    assert ({'\'=HYPERLINK("http://x","y")', "eins\rzwei"}, {"'=cmd|' /C calc'!A0", "'@agent"}) == (
        comments,
        agents,
    )
    assert "-100.0" in {
        r["value"] for r in rows if (r["scope"], r["metric"]) == ("agent", "nps")
    }  # numbers stay numbers


# Reports of one fixed database in every format, as the untyped dict of the code before issue 17
# rendered them (tests/bot/report_golden.json): the typed report changed no key, value or line.
GOLDEN = Path(__file__).with_name("report_golden.json")
GOLDEN_REPORTS: dict[str, dict[str, Any]] = {
    "default": {},
    "agent_week": {"by": "agent", "trend": "week"},
    "question_day": {"by": "question", "trend": "day"},
    "channel_csi": {"by": "channel", "csi": (CsiSpec("csat", 0.5, 2.6), CsiSpec("ces", 0.5, 5))},
    "csi_missing": {"csi": (CsiSpec("q9", 1, 3),)},
    "empty": {"since": None, "from_": "2025-01-01", "to": "2025-01-31"},
    "team_month_top1": {"by": "team", "trend": "month", "rule": "top1"},
    "flow_90d": {"by": "flow", "since": "90d"},
    "language_7d": {"by": "language", "since": "7d"},
}


async def load_golden(service: Service, clock: Clock, tmp_path: Path) -> None:
    """ROWS, and four NPS surveys by SMS: two answered (one with a formula-like comment), one failed."""
    await load(service, tmp_path)
    ids = []
    for i in range(4):
        created = await create_survey(
            service.db,
            service.flows,
            NewSurvey("nps", "sms", f"+4915100000{i:03d}", ticket=f"T-{i}", agent="cara", language="de"),
            now=service.clock(),
            ttl=service.survey_ttl,
        )
        ids.append(created.survey_id)
    for i, replies in ((0, ["9", "super"]), (1, ["3", "=schlecht|x"])):
        for text in replies:
            await handle(
                service.db, service.flows, Inbound("sms", f"+4915100000{i:03d}", service.clock(), text=text)
            )
    await service.db.run(closing(ids[3], "failed"))
    clock.advance(minutes=1)


async def test_reports_render_exactly_as_before_the_typed_model(
    service: Service, clock: Clock, tmp_path: Path
) -> None:
    """JSON, table, CSV, Markdown and the Telegram message of nine reports equal the recorded ones."""
    from bot.channels.telegram.staff import report_message

    await load_golden(service, clock, tmp_path)
    found = {}
    for name, params in GOLDEN_REPORTS.items():
        query = report_query(now=service.clock(), **params)
        data = await build_report(service.db, query, service.settings.targets)
        found[name] = {
            **{fmt: render(data, fmt) for fmt in ("json", "table", "csv", "md")},
            "telegram": report_message(data, "30d"),
        }
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    for name in GOLDEN_REPORTS:
        for fmt in ("json", "table", "csv", "md", "telegram"):
            assert (name, fmt, expected[name][fmt]) == (name, fmt, found[name][fmt])


async def test_report_json_round_trips_through_the_model(
    service: Service, clock: Clock, tmp_path: Path
) -> None:
    """Report.model_validate of a report's JSON gives the same report, and the same JSON again."""
    await load_golden(service, clock, tmp_path)
    for params in GOLDEN_REPORTS.values():
        data = await report(service, **params)
        again = Report.model_validate(json.loads(render(data, "json")))
        assert (data, data.json_data()) == (again, again.json_data())
