"""Rendering a report (`scoring.report.Report`) as a terminal table, JSON, CSV or Markdown."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from scoring.report import Comment, Csi, MeanScore, QuestionScore, Report, ResponseRate, Score

Format = Literal["table", "json", "csv", "md"]
FORMATS: tuple[Format, ...] = ("table", "json", "csv", "md")
METRICS = ("csat", "nps", "ces")
NO_ANSWERS = "no answers"


def render(report: Report, fmt: Format, width: int = 120) -> str:
    """The report in ``fmt``."""
    if fmt == "json":
        return json.dumps(report.json_data(), indent=2, ensure_ascii=False)
    if fmt == "csv":
        return _csv(report)
    if fmt == "md":
        return _markdown(report)
    return _table(report, width)


def metric_cell(name: str, item: Score) -> str:
    """'72.0 % [61.3, 80.6], n=50', or 'no answers'.

    Fewer than 30 answers add '(few)'; fewer than 5 have no interval and say so:
    '100.0 %, n=3 (too few for an interval)'.
    """
    if item.value is None:
        return NO_ANSWERS
    unit = " %" if name == "csat" else ""
    if item.ci95_low is None or item.ci95_high is None:
        return f"{item.value:.1f}{unit}, n={item.n} (too few for an interval)"
    few = " (few)" if item.too_few else ""
    return f"{item.value:.1f}{unit} [{item.ci95_low:.1f}, {item.ci95_high:.1f}], n={item.n}{few}"


FOOTNOTE = (
    "One answer per customer and metric (the flow's headline question). 95 % intervals in brackets; "
    "(few): fewer than 30 answers, (too few): fewer than 5, no interval."
)


# OWASP "CSV Injection": a cell that starts with one of these is run as a formula by
# spreadsheets (=HYPERLINK(…), +cmd|…, @SUM(…), -2+3); tab and CR lead such a payload too.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# RFC 4180 line ends: the csv module quotes a field only for the characters of its line
# terminator, so with "\n" a bare CR in a comment went out unquoted and split the row.
CSV_LINE_END = "\r\n"


def spreadsheet_safe(value: object) -> object:
    """A CSV cell that a spreadsheet shows as text: a leading ' before a formula's first character.

    Only text is changed, so scores and numbers (-44.1 as a float) stay numbers.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def period_label(report: Report) -> str:
    """'2026-10-03 … 2026-11-01': the first and the last day of the period, both included."""
    return f"{report.period.first_day} … {report.period.last_day}"


def group_key(key: Any) -> str:
    """A group's key as shown: '(none)' where the answers had none (no agent, say)."""
    return "(none)" if key is None else str(key)


def target_cell(item: Score) -> str:
    """'met 80', 'missed 50 (not certain)', or '' without a target or a value."""
    target = item.target
    if target is None or item.value is None:
        return ""
    verdict = "met" if target.met else "missed"
    sure = "" if target.certain else " (not certain)"
    return f"{verdict} {target.target:g}{sure}"


def change_cell(item: Score) -> str:
    """'+60.0 significant', '-3.0 (noise)', or '' without a change (CES, groups, an empty period)."""
    change = item.change
    if change is None or change.delta is None:
        return ""
    mark = " significant" if change.significant else " (noise)"
    return f"{change.delta:+.1f}{mark}"


def csi_cell(csi: Csi) -> str:
    """'1.000', or 'no answers for q3' while a configured question has none."""
    if csi.value is None:
        return f"no answers for {', '.join(csi.missing)}"
    return f"{csi.value:.3f}"


def _rows(report: Report) -> Iterator[tuple[str, str, str, Score]]:
    """(scope, key, metric, item) for the whole period, each group, each bucket and each question."""
    for name, item in zip(METRICS, report.metrics(), strict=True):
        yield "period", "all", name, item
    for group in report.groups:
        for name, item in zip(METRICS, group.metrics(), strict=True):
            yield str(report.by), group_key(group.key), name, item
    for bucket in report.trend:
        for name, item in zip(METRICS, bucket.metrics(), strict=True):
            yield str(report.trend_by), bucket.start, name, item
    for question in report.questions:
        yield "question", question.question, question.metric, question.score


def _summary_lines(report: Report) -> list[str]:
    """The response rate, CSI and SCI lines that the table and the Markdown both show, where known."""
    lines = []
    if (line := _rate_line(report.response_rate)) is not None:
        lines.append(line)
    if report.csi is not None:
        lines.append(f"CSI: {csi_cell(report.csi)}")
    sci = report.sci
    if sci.value is not None:
        lines.append(f"SCI: {sci.value:.2f} ({sci.band}), n={sci.n}")
    return lines


def _rate_line(rate: ResponseRate) -> str | None:
    if not rate.delivered:
        return None
    return (
        f"Response rate: {rate.completion_rate} % completed, {rate.answer_rate} % answered "
        f"({rate.completed} and {rate.answered} of {rate.delivered} surveys delivered; "
        f"{rate.not_delivered} of {rate.sent} not delivered)"
    )


def _comment_line(c: Comment) -> str:
    flag = "! " if c.detractor else "  "
    return f"{flag}{c.answered_at[:10]} {c.ticket or '-'} {c.agent or '-'}: {c.text}"


def _sections(report: Report) -> Iterator[tuple[str, list[tuple[str, Score, Score, Score]]]]:
    """(key name, [(key, csat, nps, ces), …]) for the groups and the trend, when the report has them."""
    if report.groups:
        yield str(report.by), [(group_key(g.key), *g.metrics()) for g in report.groups]
    if report.trend:
        yield str(report.trend_by), [(b.start, *b.metrics()) for b in report.trend]


def _table(report: Report, width: int) -> str:
    from rich.console import Console  # only here: the other formats start faster without rich
    from rich.table import Table

    console = Console(file=io.StringIO(), width=width, highlight=False, color_system=None)
    console.print(f"Period {period_label(report)} (CSAT rule {report.rule})")
    overall = Table("metric", "value (95 % CI), n", "target", "change vs previous", title="Overall")
    for name, item in zip(METRICS, report.metrics(), strict=True):
        overall.add_row(name.upper(), metric_cell(name, item), target_cell(item), change_cell(item))
    console.print(overall)
    for key_name, entries in _sections(report):
        table = Table(key_name, "CSAT", "NPS", "CES", title=f"By {key_name}")
        for key, *items in entries:
            table.add_row(key, *(metric_cell(m, item) for m, item in zip(METRICS, items, strict=True)))
        console.print(table)
    if report.questions:
        table = Table("question", "metric", "value (95 % CI), n", "mean (95 % CI)", title="Each question")
        for q in report.questions:
            table.add_row(q.question, q.metric.upper(), metric_cell(q.metric, q.score), _mean(q.mean))
        console.print(table)
    for line in _summary_lines(report):
        console.print(line)
    if report.comments:
        console.print("Latest comments (detractors first):")
        for c in report.comments:
            console.print(_comment_line(c))
    console.print(FOOTNOTE)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    return str(output)


def _mean(mean: MeanScore) -> str:
    if mean.value is None:
        return ""
    if mean.ci95_low is None or mean.ci95_high is None:
        return f"{mean.value:.2f}"
    return f"{mean.value:.2f} [{mean.ci95_low:.2f}, {mean.ci95_high:.2f}]"


CSV_COLUMNS = (
    "scope",
    "key",
    "metric",
    "value",
    "n",
    "ci95_low",
    "ci95_high",
    "too_few",
    "target",
    "target_met",
    "target_certain",
    "change",
    "change_p_value",
    "change_significant",
    "ticket",
    "agent",
    "text",
)


def _csv(report: Report) -> str:
    """One table with a row per number: metrics (period, groups, trend, questions), then the
    response rate, SCI, CSI and the latest comments, so that nothing the table shows is missing."""
    out = io.StringIO()
    plain = csv.DictWriter(out, CSV_COLUMNS, lineterminator=CSV_LINE_END)
    plain.writeheader()

    def write(row: Mapping[str, Any]) -> None:
        plain.writerow({key: spreadsheet_safe(value) for key, value in row.items()})

    for scope, key, name, item in _rows(report):
        target, change = item.target, item.change
        write(
            {
                "scope": scope,
                "key": key,
                "metric": name,
                "value": item.value,
                "n": item.n,
                "ci95_low": item.ci95_low,
                "ci95_high": item.ci95_high,
                "too_few": item.too_few,
                "target": None if target is None else target.target,
                "target_met": None if target is None else target.met,
                "target_certain": None if target is None else target.certain,
                "change": None if change is None else change.delta,
                "change_p_value": None if change is None else change.p_value,
                "change_significant": None if change is None else change.significant,
            }
        )
    rate = report.response_rate
    for name, value in (("completion_rate", rate.completion_rate), ("answer_rate", rate.answer_rate)):
        write({"scope": "period", "key": "all", "metric": name, "value": value, "n": rate.delivered})
    sci = report.sci
    write(
        {
            "scope": "period",
            "key": "all",
            "metric": "sci",
            "value": sci.value,
            "n": sci.n,
            "ci95_low": sci.ci95_low,
            "ci95_high": sci.ci95_high,
            "too_few": sci.too_few,
        }
    )
    if report.csi is not None:  # an index without n or interval; empty while a question has no answers
        write({"scope": "period", "key": "all", "metric": "csi", "value": report.csi.value})
    for c in report.comments:
        write(
            {
                "scope": "detractor comment" if c.detractor else "comment",
                "key": c.answered_at,
                "metric": c.question,
                "ticket": c.ticket,
                "agent": c.agent,
                "text": c.text,
            }
        )
    return out.getvalue()


def _markdown(report: Report) -> str:
    """The table format's sections as Markdown tables and lists."""
    lines = [
        f"**Period {period_label(report)}** (CSAT rule {report.rule})",
        "",
        "| metric | value (95 % CI), n | target | change vs previous |",
        "| --- | --- | --- | --- |",
    ]
    lines.extend(
        f"| {name.upper()} | {metric_cell(name, item)} | {target_cell(item)} | {change_cell(item)} |"
        for name, item in zip(METRICS, report.metrics(), strict=True)
    )
    for key_name, entries in _sections(report):
        lines += ["", f"| {key_name} | CSAT | NPS | CES |", "| --- | --- | --- | --- |"]
        for key, *items in entries:
            cells = " | ".join(metric_cell(m, item) for m, item in zip(METRICS, items, strict=True))
            lines.append(f"| {_md(key)} | {cells} |")
    if report.questions:
        lines += [
            "",
            "| question | metric | value (95 % CI), n | mean (95 % CI) |",
            "| --- | --- | --- | --- |",
        ]
        lines.extend(_question_row(q) for q in report.questions)
    lines.append("")
    lines.extend(f"- {line}" for line in _summary_lines(report))
    if report.comments:
        lines += ["", "Latest comments (detractors first):", ""]
        lines.extend(
            f"- {'**detractor** ' if c.detractor else ''}{c.answered_at[:10]} {_md(c.ticket or '-')} "
            f"{_md(c.agent or '-')}: {_md(c.text)}"
            for c in report.comments
        )
    lines += ["", f"_{FOOTNOTE}_"]
    return "\n".join(lines) + "\n"


def _question_row(q: QuestionScore) -> str:
    return f"| {_md(q.question)} | {q.metric.upper()} | {metric_cell(q.metric, q.score)} | {_mean(q.mean)} |"


def _md(text: str) -> str:
    """Text that cannot break a Markdown table or list: pipes escaped, line breaks as spaces."""
    return " ".join(text.replace("|", "\\|").split())
