"""Rendering a report (the JSON-ready dict of bot.reports) as a terminal table, CSV or Markdown."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from typing import Any, Literal

Format = Literal["table", "json", "csv", "md"]
FORMATS: tuple[Format, ...] = ("table", "json", "csv", "md")
METRICS = ("csat", "nps", "ces")
NO_ANSWERS = "no answers"


def render(report: dict[str, Any], fmt: Format, width: int = 120) -> str:
    """The report in ``fmt``."""
    if fmt == "json":
        return json.dumps(report, indent=2, ensure_ascii=False)
    if fmt == "csv":
        return _csv(report)
    if fmt == "md":
        return _markdown(report)
    return _table(report, width)


def metric_cell(name: str, item: dict[str, Any]) -> str:
    """'72.0 % [61.3, 80.6], n=50', or 'no answers'.

    Fewer than 30 answers add '(few)'; fewer than 5 have no interval and say so:
    '100.0 %, n=3 (too few for an interval)'.
    """
    if item["value"] is None:
        return NO_ANSWERS
    unit = " %" if name == "csat" else ""
    if item["ci95_low"] is None or item["ci95_high"] is None:
        return f"{item['value']:.1f}{unit}, n={item['n']} (too few for an interval)"
    few = " (few)" if item["too_few"] else ""
    return f"{item['value']:.1f}{unit} [{item['ci95_low']:.1f}, {item['ci95_high']:.1f}], n={item['n']}{few}"


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


def period_label(report: dict[str, Any]) -> str:
    """'2026-10-03 … 2026-11-01': the first and the last day of the period, both included."""
    period = report["period"]
    return f"{period['first_day']} … {period['last_day']}"


def group_key(key: Any) -> str:
    """A group's key as shown: '(none)' where the answers had none (no agent, say)."""
    return "(none)" if key is None else str(key)


def target_cell(item: dict[str, Any]) -> str:
    target = item.get("target")
    if not target or item["value"] is None:
        return ""
    verdict = "met" if target["met"] else "missed"
    sure = "" if target["certain"] else " (not certain)"
    return f"{verdict} {target['target']:g}{sure}"


def change_cell(item: dict[str, Any]) -> str:
    change = item.get("change")
    if not change or change["delta"] is None:
        return ""
    mark = " significant" if change["significant"] else " (noise)"
    return f"{change['delta']:+.1f}{mark}"


def csi_cell(csi: dict[str, Any]) -> str:
    """'1.000', or 'no answers for q3' while a configured question has none."""
    if csi["value"] is None:
        return f"no answers for {', '.join(csi['missing'])}"
    return f"{csi['value']:.3f}"


def _rows(report: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(scope, key, metric, item) for the whole period, each group, each bucket and each question."""
    for name in METRICS:
        yield "period", "all", name, report[name]
    for group in report.get("groups", []):
        for name in METRICS:
            yield report["by"], group_key(group["key"]), name, group[name]
    for bucket in report.get("trend", []):
        for name in METRICS:
            yield report["trend_by"], bucket["start"], name, bucket[name]
    for question in report.get("questions", []):
        yield "question", question["question"], question["metric"], question[question["metric"]]


def _rate_line(rate: dict[str, Any]) -> str | None:
    if not rate["delivered"]:
        return None
    return (
        f"Response rate: {rate['completion_rate']} % completed, {rate['answer_rate']} % answered "
        f"({rate['completed']} and {rate['answered']} of {rate['delivered']} surveys delivered; "
        f"{rate['not_delivered']} of {rate['sent']} not delivered)"
    )


def _comment_line(c: dict[str, Any]) -> str:
    flag = "! " if c["detractor"] else "  "
    return f"{flag}{c['answered_at'][:10]} {c['ticket'] or '-'} {c['agent'] or '-'}: {c['text']}"


def _table(report: dict[str, Any], width: int) -> str:
    from rich.console import Console  # only here: the other formats start faster without rich
    from rich.table import Table

    console = Console(file=io.StringIO(), width=width, highlight=False, color_system=None)
    console.print(f"Period {period_label(report)} (CSAT rule {report['rule']})")
    overall = Table("metric", "value (95 % CI), n", "target", "change vs previous", title="Overall")
    for name in METRICS:
        item = report[name]
        overall.add_row(name.upper(), metric_cell(name, item), target_cell(item), change_cell(item))
    console.print(overall)
    for section, key_name, entries in (
        ("groups", report.get("by"), report.get("groups", [])),
        ("trend", report.get("trend_by"), report.get("trend", [])),
    ):
        if not entries:
            continue
        table = Table(str(key_name), "CSAT", "NPS", "CES", title=f"By {key_name}")
        for entry in entries:
            key = group_key(entry["key"]) if section == "groups" else entry["start"]
            table.add_row(key, *(metric_cell(m, entry[m]) for m in METRICS))
        console.print(table)
    questions = report.get("questions", [])
    if questions:
        table = Table("question", "metric", "value (95 % CI), n", "mean (95 % CI)", title="Each question")
        for q in questions:
            table.add_row(
                q["question"], q["metric"].upper(), metric_cell(q["metric"], q[q["metric"]]), _mean(q)
            )
        console.print(table)
    if (line := _rate_line(report["response_rate"])) is not None:
        console.print(line)
    csi = report.get("csi")
    if csi is not None:
        console.print(f"CSI: {csi_cell(csi)}")
    sci = report["sci"]
    if sci["value"] is not None:
        console.print(f"SCI: {sci['value']:.2f} ({sci['band']}), n={sci['n']}")
    if report["comments"]:
        console.print("Latest comments (detractors first):")
        for c in report["comments"]:
            console.print(_comment_line(c))
    console.print(FOOTNOTE)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    return str(output)


def _mean(question: dict[str, Any]) -> str:
    mean = question["mean"]
    if mean["value"] is None:
        return ""
    if mean["ci95_low"] is None or mean["ci95_high"] is None:
        return f"{mean['value']:.2f}"
    return f"{mean['value']:.2f} [{mean['ci95_low']:.2f}, {mean['ci95_high']:.2f}]"


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


def _csv(report: dict[str, Any]) -> str:
    """One table with a row per number: metrics (period, groups, trend, questions), then the
    response rate, SCI, CSI and the latest comments, so that nothing the table shows is missing."""
    out = io.StringIO()
    plain = csv.DictWriter(out, CSV_COLUMNS, lineterminator=CSV_LINE_END)
    plain.writeheader()

    def write(row: Mapping[str, Any]) -> None:
        plain.writerow({key: spreadsheet_safe(value) for key, value in row.items()})

    for scope, key, name, item in _rows(report):
        target, change = item.get("target") or {}, item.get("change") or {}
        write(
            {
                "scope": scope,
                "key": key,
                "metric": name,
                "value": item["value"],
                "n": item["n"],
                "ci95_low": item["ci95_low"],
                "ci95_high": item["ci95_high"],
                "too_few": item["too_few"],
                "target": target.get("target"),
                "target_met": target.get("met"),
                "target_certain": target.get("certain"),
                "change": change.get("delta"),
                "change_p_value": change.get("p_value"),
                "change_significant": change.get("significant"),
            }
        )
    rate = report["response_rate"]
    for name in ("completion_rate", "answer_rate"):
        write({"scope": "period", "key": "all", "metric": name, "value": rate[name], "n": rate["delivered"]})
    sci = report["sci"]
    write(
        {
            "scope": "period",
            "key": "all",
            "metric": "sci",
            "value": sci["value"],
            "n": sci["n"],
            "ci95_low": sci["ci95_low"],
            "ci95_high": sci["ci95_high"],
            "too_few": sci["too_few"],
        }
    )
    csi = report.get("csi")
    if csi is not None:  # an index without n or interval; empty while a question has no answers
        write({"scope": "period", "key": "all", "metric": "csi", "value": csi["value"]})
    for c in report["comments"]:
        write(
            {
                "scope": "detractor comment" if c["detractor"] else "comment",
                "key": c["answered_at"],
                "metric": c["question"],
                "ticket": c["ticket"],
                "agent": c["agent"],
                "text": c["text"],
            }
        )
    return out.getvalue()


def _markdown(report: dict[str, Any]) -> str:
    """The table format's sections as Markdown tables and lists."""
    lines = [
        f"**Period {period_label(report)}** (CSAT rule {report['rule']})",
        "",
        "| metric | value (95 % CI), n | target | change vs previous |",
        "| --- | --- | --- | --- |",
    ]
    lines.extend(
        f"| {name.upper()} | {metric_cell(name, report[name])} | {target_cell(report[name])} | "
        f"{change_cell(report[name])} |"
        for name in METRICS
    )
    for section, key_name, entries in (
        ("groups", report.get("by"), report.get("groups", [])),
        ("trend", report.get("trend_by"), report.get("trend", [])),
    ):
        if not entries:
            continue
        lines += ["", f"| {key_name} | CSAT | NPS | CES |", "| --- | --- | --- | --- |"]
        for entry in entries:
            key = group_key(entry["key"]) if section == "groups" else entry["start"]
            lines.append(f"| {_md(key)} | " + " | ".join(metric_cell(m, entry[m]) for m in METRICS) + " |")
    if report.get("questions"):
        lines += [
            "",
            "| question | metric | value (95 % CI), n | mean (95 % CI) |",
            "| --- | --- | --- | --- |",
        ]
        lines.extend(
            f"| {_md(q['question'])} | {q['metric'].upper()} | {metric_cell(q['metric'], q[q['metric']])} | "
            f"{_mean(q)} |"
            for q in report["questions"]
        )
    lines.append("")
    if (line := _rate_line(report["response_rate"])) is not None:
        lines.append(f"- {line}")
    csi = report.get("csi")
    if csi is not None:
        lines.append(f"- CSI: {csi_cell(csi)}")
    sci = report["sci"]
    if sci["value"] is not None:
        lines.append(f"- SCI: {sci['value']:.2f} ({sci['band']}), n={sci['n']}")
    if report["comments"]:
        lines += ["", "Latest comments (detractors first):", ""]
        lines.extend(
            f"- {'**detractor** ' if c['detractor'] else ''}{c['answered_at'][:10]} {_md(c['ticket'] or '-')} "
            f"{_md(c['agent'] or '-')}: {_md(c['text'])}"
            for c in report["comments"]
        )
    lines += ["", f"_{FOOTNOTE}_"]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    """Text that cannot break a Markdown table or list: pipes escaped, line breaks as spaces."""
    return " ".join(text.replace("|", "\\|").split())
