"""Rendering a report (the JSON-ready dict of bot.reports) as a terminal table, CSV or Markdown."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
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
    """'72.0 % [61.3, 80.6], n=50' or 'no answers'; '*' marks fewer than 30 answers."""
    if item["value"] is None:
        return NO_ANSWERS
    unit = " %" if name == "csat" else ""
    few = "*" if item["too_few"] else ""
    interval = ""
    if item["ci95_low"] is not None and item["ci95_high"] is not None:
        interval = f" [{item['ci95_low']:.1f}, {item['ci95_high']:.1f}]"
    return f"{item['value']:.1f}{unit}{interval}, n={item['n']}{few}"


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
    """(scope, key, metric, item) for the whole period, each group and each bucket."""
    for name in METRICS:
        yield "period", "all", name, report[name]
    for group in report.get("groups", []):
        for name in METRICS:
            yield report["by"], str(group["key"]), name, group[name]
    for bucket in report.get("trend", []):
        for name in METRICS:
            yield report["trend_by"], bucket["start"], name, bucket[name]


def _table(report: dict[str, Any], width: int) -> str:
    from rich.console import Console  # only here: the other formats start faster without rich
    from rich.table import Table

    console = Console(file=io.StringIO(), width=width, highlight=False, color_system=None)
    period = report["period"]
    console.print(f"Period {period['from'][:10]} … {period['to'][:10]} (CSAT rule {report['rule']})")
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
            key = entry["key"] if section == "groups" else entry["start"]
            table.add_row(
                str(key) if key is not None else "(none)", *(metric_cell(m, entry[m]) for m in METRICS)
            )
        console.print(table)
    rate = report["response_rate"]
    if rate["delivered"]:
        console.print(
            f"Response rate: {rate['completion_rate']} % completed, {rate['answer_rate']} % answered "
            f"({rate['completed']} and {rate['answered']} of {rate['delivered']} surveys delivered; "
            f"{rate['not_delivered']} of {rate['sent']} not delivered)"
        )
    csi = report.get("csi")
    if csi is not None:
        console.print(f"CSI: {csi_cell(csi)}")
    sci = report["sci"]
    if sci["value"] is not None:
        console.print(f"SCI: {sci['value']:.2f} ({sci['band']}), n={sci['n']}")
    if report["comments"]:
        console.print("Latest comments (detractors first):")
        for c in report["comments"]:
            flag = "! " if c["detractor"] else "  "
            console.print(
                f"{flag}{c['answered_at'][:10]} {c['ticket'] or '-'} {c['agent'] or '-'}: {c['text']}"
            )
    console.print("* fewer than 30 answers: too few to trust")
    output = console.file.getvalue()  # type: ignore[attr-defined]
    return str(output)


def _csv(report: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["scope", "key", "metric", "value", "n", "ci95_low", "ci95_high", "too_few"])
    for scope, key, name, item in _rows(report):
        writer.writerow(
            [scope, key, name, item["value"], item["n"], item["ci95_low"], item["ci95_high"], item["too_few"]]
        )
    csi = report.get("csi")
    if csi is not None:  # an index without n or interval; empty while a question has no answers
        writer.writerow(["period", "all", "csi", csi["value"], "", "", "", ""])
    return out.getvalue()


def _markdown(report: dict[str, Any]) -> str:
    lines = ["| scope | key | metric | value (95 % CI), n |", "| --- | --- | --- | --- |"]
    lines.extend(
        f"| {scope} | {key} | {name.upper()} | {metric_cell(name, item)} |"
        for scope, key, name, item in _rows(report)
    )
    csi = report.get("csi")
    if csi is not None:
        lines.append(f"| period | all | CSI | {csi_cell(csi)} |")
    return "\n".join(lines) + "\n"
