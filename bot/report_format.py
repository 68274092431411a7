"""Rendering a report (`scoring.report.Report`) as a terminal table, JSON, CSV or Markdown.

The table and the Markdown are for people and follow the staff member's language (German
with a decimal comma, or English); JSON and CSV are an interface and never change with it.
The cell functions take the language too, for Telegram's /report and the dashboard.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from typing import Any, Literal

from bot.texts import CATALOGUE, LAST_RESORT, day, decimal, staff_text
from scoring.report import Comment, Csi, MeanScore, QuestionScore, Report, ResponseRate, Score

Format = Literal["table", "json", "csv", "md"]
FORMATS: tuple[Format, ...] = ("table", "json", "csv", "md")
METRICS = ("csat", "nps", "ces")
NO_ANSWERS = staff_text("staff.report.no_answers", LAST_RESORT)


def render(report: Report, fmt: Format, width: int = 120, language: str = LAST_RESORT) -> str:
    """The report in ``fmt``; the table and the Markdown in ``language`` (de or en)."""
    if fmt == "json":
        return json.dumps(report.json_data(), indent=2, ensure_ascii=False)
    if fmt == "csv":
        return _csv(report)
    if fmt == "md":
        return _markdown(report, language)
    return _table(report, width, language)


def metric_cell(name: str, item: Score, language: str = LAST_RESORT) -> str:
    """'72.0 % [61.3, 80.6], n=50' ('72,0 % [61,3; 80,6], n=50' in German), or 'no answers'.

    Fewer than 30 answers add '(few)'; fewer than 5 have no interval and say so:
    '100.0 %, n=3 (too few for an interval)'.
    """
    if item.value is None:
        return staff_text("staff.report.no_answers", language)
    value = decimal(item.value, ".1f", language) + (" %" if name == "csat" else "")
    if item.ci95_low is None or item.ci95_high is None:
        return staff_text("staff.report.cell_no_interval", language, value=value, n=item.n)
    return staff_text(
        "staff.report.cell_few" if item.too_few else "staff.report.cell",
        language,
        value=value,
        low=decimal(item.ci95_low, ".1f", language),
        high=decimal(item.ci95_high, ".1f", language),
        n=item.n,
    )


def footnote(language: str = LAST_RESORT) -> str:
    """What the numbers count and what (few) and (too few) mean."""
    return staff_text("staff.report.footnote", language)


FOOTNOTE = footnote()


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


def period_label(report: Report, language: str = LAST_RESORT) -> str:
    """'2026-10-03 … 2026-11-01' ('03.10.2026 … 01.11.2026'): the first and last day, both included."""
    return f"{day(report.period.first_day, language)} … {day(report.period.last_day, language)}"


def group_key(key: Any, language: str = LAST_RESORT) -> str:
    """A group's key as shown: '(none)' where the answers had none (no agent, say)."""
    return staff_text("staff.report.none", language) if key is None else str(key)


def key_name(name: str, language: str = LAST_RESORT) -> str:
    """What a report is grouped or bucketed by, as a heading: 'agent', 'Agent'; 'week', 'Woche'."""
    key = f"staff.by.{name}"
    return staff_text(key, language) if key in CATALOGUE else name


def target_cell(item: Score, language: str = LAST_RESORT) -> str:
    """'met 80', 'missed 50 (not certain)', or '' without a target or a value."""
    target = item.target
    if target is None or item.value is None:
        return ""
    number = decimal(target.target, "g", language)
    verdict = staff_text(
        "staff.report.target_met" if target.met else "staff.report.target_missed", language, target=number
    )
    return verdict if target.certain else staff_text("staff.report.not_certain", language, verdict=verdict)


def change_cell(item: Score, language: str = LAST_RESORT) -> str:
    """'+60.0 significant', '-3.0 (noise)', or '' without a change (CES, groups, an empty period)."""
    change = item.change
    if change is None or change.delta is None:
        return ""
    key = "staff.report.significant" if change.significant else "staff.report.noise"
    return staff_text(key, language, delta=decimal(change.delta, "+.1f", language))


def csi_cell(csi: Csi, language: str = LAST_RESORT) -> str:
    """'1.000', or 'no answers for q3' while a configured question has none."""
    if csi.value is None:
        return staff_text("staff.report.csi_missing", language, questions=", ".join(csi.missing))
    return decimal(csi.value, ".3f", language)


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


def _summary_lines(report: Report, language: str) -> list[str]:
    """The response rate, CSI and SCI lines that the table and the Markdown both show, where known."""
    lines = []
    if (line := _rate_line(report.response_rate, language)) is not None:
        lines.append(line)
    if report.csi is not None:
        lines.append(f"CSI: {csi_cell(report.csi, language)}")
    sci = report.sci
    if sci.value is not None:
        band = staff_text(f"staff.sci.{sci.band}", language) if sci.band else "-"
        lines.append(f"SCI: {decimal(sci.value, '.2f', language)} ({band}), n={sci.n}")
    return lines


def _rate_line(rate: ResponseRate, language: str) -> str | None:
    if not rate.delivered:
        return None
    return staff_text(
        "staff.report.response_rate",
        language,
        completion_rate=_percent(rate.completion_rate, language),
        answer_rate=_percent(rate.answer_rate, language),
        completed=rate.completed,
        answered=rate.answered,
        delivered=rate.delivered,
        not_delivered=rate.not_delivered,
        sent=rate.sent,
    )


def _percent(value: float | None, language: str) -> str:
    """A rate as the report has it (66.7, 100.0), with a decimal comma in German."""
    return "-" if value is None else decimal(value, "", language)


def _comment_line(c: Comment, language: str) -> str:
    flag = "! " if c.detractor else "  "
    return f"{flag}{day(c.answered_at, language)} {c.ticket or '-'} {c.agent or '-'}: {c.text}"


def _sections(report: Report, language: str) -> Iterator[tuple[str, list[tuple[str, Score, Score, Score]]]]:
    """(key name, [(key, csat, nps, ces), …]) for the groups and the trend, when the report has them."""
    if report.groups:
        yield (
            key_name(str(report.by), language),
            [(group_key(g.key, language), *g.metrics()) for g in report.groups],
        )
    if report.trend:
        yield (
            key_name(str(report.trend_by), language),
            [(day(b.start, language), *b.metrics()) for b in report.trend],
        )


def _headline(report: Report, language: str) -> tuple[str, str]:
    """('Period 2026-10-03 … 2026-11-01', '(CSAT rule top2)') in ``language``."""
    return (
        staff_text("staff.report.period", language, period=period_label(report, language)),
        staff_text("staff.report.rule", language, rule=report.rule),
    )


def _columns(language: str, *names: str) -> list[str]:
    return [staff_text(f"staff.report.column_{name}", language) for name in names]


def _table(report: Report, width: int, language: str) -> str:
    from rich.console import Console  # only here: the other formats start faster without rich
    from rich.table import Table

    console = Console(file=io.StringIO(), width=width, highlight=False, color_system=None)
    console.print(" ".join(_headline(report, language)))
    overall = Table(
        *_columns(language, "metric", "value", "target", "change"),
        title=staff_text("staff.report.overall", language),
    )
    for name, item in zip(METRICS, report.metrics(), strict=True):
        overall.add_row(
            name.upper(),
            metric_cell(name, item, language),
            target_cell(item, language),
            change_cell(item, language),
        )
    console.print(overall)
    for name_of_key, entries in _sections(report, language):
        table = Table(
            name_of_key, "CSAT", "NPS", "CES", title=staff_text("staff.report.by", language, key=name_of_key)
        )
        for key, *items in entries:
            table.add_row(
                key, *(metric_cell(m, item, language) for m, item in zip(METRICS, items, strict=True))
            )
        console.print(table)
    if report.questions:
        table = Table(
            *_columns(language, "question", "metric", "value", "mean"),
            title=staff_text("staff.report.each_question", language),
        )
        for q in report.questions:
            table.add_row(
                q.question,
                q.metric.upper(),
                metric_cell(q.metric, q.score, language),
                _mean(q.mean, language),
            )
        console.print(table)
    for line in _summary_lines(report, language):
        console.print(line)
    if report.comments:
        console.print(staff_text("staff.report.comments", language))
        for c in report.comments:
            console.print(_comment_line(c, language))
    console.print(footnote(language))
    output = console.file.getvalue()  # type: ignore[attr-defined]
    return str(output)


def _mean(mean: MeanScore, language: str) -> str:
    if mean.value is None:
        return ""
    value = decimal(mean.value, ".2f", language)
    if mean.ci95_low is None or mean.ci95_high is None:
        return value
    low, high = decimal(mean.ci95_low, ".2f", language), decimal(mean.ci95_high, ".2f", language)
    return f"{value} [{low}; {high}]" if language == "de" else f"{value} [{low}, {high}]"


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


def _markdown(report: Report, language: str) -> str:
    """The table format's sections as Markdown tables and lists."""
    period, rule = _headline(report, language)
    lines = [
        f"**{period}** {rule}",
        "",
        f"| {' | '.join(_columns(language, 'metric', 'value', 'target', 'change'))} |",
        "| --- | --- | --- | --- |",
    ]
    lines.extend(
        f"| {name.upper()} | {metric_cell(name, item, language)} | {target_cell(item, language)} "
        f"| {change_cell(item, language)} |"
        for name, item in zip(METRICS, report.metrics(), strict=True)
    )
    for name_of_key, entries in _sections(report, language):
        lines += ["", f"| {name_of_key} | CSAT | NPS | CES |", "| --- | --- | --- | --- |"]
        for key, *items in entries:
            cells = " | ".join(metric_cell(m, item, language) for m, item in zip(METRICS, items, strict=True))
            lines.append(f"| {_md(key)} | {cells} |")
    if report.questions:
        lines += [
            "",
            f"| {' | '.join(_columns(language, 'question', 'metric', 'value', 'mean'))} |",
            "| --- | --- | --- | --- |",
        ]
        lines.extend(_question_row(q, language) for q in report.questions)
    lines.append("")
    lines.extend(f"- {line}" for line in _summary_lines(report, language))
    if report.comments:
        lines += ["", staff_text("staff.report.comments", language), ""]
        mark = f"**{staff_text('staff.report.detractor', language)}** "
        lines.extend(
            f"- {mark if c.detractor else ''}{day(c.answered_at, language)} {_md(c.ticket or '-')} "
            f"{_md(c.agent or '-')}: {_md(c.text)}"
            for c in report.comments
        )
    lines += ["", f"_{footnote(language)}_"]
    return "\n".join(lines) + "\n"


def _question_row(q: QuestionScore, language: str) -> str:
    cell, mean = metric_cell(q.metric, q.score, language), _mean(q.mean, language)
    return f"| {_md(q.question)} | {q.metric.upper()} | {cell} | {mean} |"


def _md(text: str) -> str:
    """Text that cannot break a Markdown table or list: pipes escaped, line breaks as spaces."""
    return " ".join(text.replace("|", "\\|").split())
