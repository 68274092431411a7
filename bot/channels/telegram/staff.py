"""Staff commands in Telegram: `/report` for managers, `/survey` for agents and managers.

Whoever is not staff gets the same polite refusal for every staff command, and so learns
nothing about surveys or scores, not even whether a ticket exists.
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from telegram import LinkPreviewOptions, Update
from telegram.constants import ParseMode
from telegram.ext import Application, CommandHandler, ContextTypes

from bot.channels.telegram.customers import update_event
from bot.errors import ContactOptedOut, ReportError
from bot.inbound import done_before, record_done
from bot.report_format import (
    FOOTNOTE,
    METRICS,
    change_cell,
    group_key,
    metric_cell,
    period_label,
    target_cell,
)
from bot.reports import build_report, report_query, trend_points
from bot.service import Service
from bot.settings import StaffRole
from bot.staff import StaffMember, find_staff
from bot.surveys import NewSurvey, create_survey
from scoring.chart import trend_chart
from scoring.report import Report

REFUSAL = "Sorry, this command is only for the support team."
REPORT_USAGE = "Usage: /report [7d|30d|90d] [by agent|team|channel]\nExample: /report 30d by agent"
SURVEY_USAGE = "Usage: /survey <ticket> [flow] [language]\nExample: /survey T-1042 support-csat de"
REPORT_GROUPS = ("agent", "team", "channel")
_PERIOD = re.compile(r"^\d{1,4}d$")
_LANGUAGE = re.compile(r"^[a-z]{2}$")
_Command = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]


def parse_report_args(args: Sequence[str]) -> tuple[str, str | None]:
    """(period, grouping) from `/report` arguments; ReportError names the one not understood."""
    period, by = "30d", None
    words = [arg.lower() for arg in args]
    i = 0
    while i < len(words):
        word = words[i]
        if _PERIOD.match(word):
            period = word
        elif word == "by" and i + 1 < len(words) and words[i + 1] in REPORT_GROUPS:
            by = words[i + 1]
            i += 1
        elif word == "by":
            raise ReportError("by", f"say by {', by '.join(REPORT_GROUPS)}")
        else:
            raise ReportError("period", f"{args[i]!r} is not a period such as 7d, 30d or 90d")
        i += 1
    return period, by


def report_message(report: Report, period: str) -> str:
    """The report as a Telegram HTML message: each metric with interval, n, target and change."""
    lines = [f"<b>Afterword report, last {period[:-1]} days</b> ({period_label(report)})"]
    for name, item in zip(METRICS, report.metrics(), strict=True):
        extra = " · ".join(part for part in (target_cell(item), change_cell(item)) if part)
        lines.append(f"<b>{name.upper()}</b> {html.escape(metric_cell(name, item))}")
        if extra:
            lines.append(f"    {html.escape(extra)} (vs previous {period[:-1]} days)")
    if report.groups:
        lines.append(f"\n<b>By {report.by}</b>")
        for group in report.groups:
            key = group_key(group.key)
            cells = "; ".join(
                f"{m.upper()} {metric_cell(m, item)}"
                for m, item in zip(METRICS, group.metrics(), strict=True)
                if item.n
            )
            lines.append(f"• {html.escape(key)}: {html.escape(cells or 'no answers')}")
    if report.questions:
        lines.append("\n<b>Each question</b> (all its answers)")
        for q in report.questions:
            cell = metric_cell(q.metric, q.score)
            lines.append(f"• {html.escape(q.question)}: {q.metric.upper()} {html.escape(cell)}")
    rate = report.response_rate
    if rate.delivered:
        lines.append(
            f"\nAnswered: {rate.answered} of {rate.delivered} surveys delivered ({rate.answer_rate} %)"
        )
    lines.append(f"<i>{html.escape(FOOTNOTE)}</i>")
    return "\n".join(lines)


class StaffHandlers:
    """`/report` and `/survey`, for the staff listed in TELEGRAM_STAFF or added with `staff add`."""

    def __init__(self, service: Service, link: Callable[[str], str]) -> None:
        self.service = service
        self.link = link

    def register(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Add the staff command handlers."""
        application.add_handler(CommandHandler("report", self._once(self.report)))
        application.add_handler(CommandHandler("survey", self._once(self.survey)))

    def _once(self, command: _Command) -> _Command:
        """``command`` done once per update, recorded only after it succeeded.

        Recorded after, not before: a command that failed (the database down, Telegram not
        answering) leaves no record, so Telegram's next try of the update does it. /report and
        a refusal only read and reply, so nothing could hold the record in one transaction
        with the work; /survey's one write is found again by ticket, so doing it again on
        a retry gives the same link. See bot.inbound.done_before.
        """

        async def once(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            event = update_event(self.service, update)
            if await done_before(self.service.db, event):
                return  # a redelivered command is not done twice
            await command(update, context)
            await record_done(self.service.db, event)

        return once

    async def _member(self, update: Update, roles: Sequence[StaffRole]) -> StaffMember | None:
        """The sender if staff with one of ``roles``; anyone else is refused, politely and alike."""
        user, message = update.effective_user, update.effective_message
        if user is None or message is None:
            return None
        member = await find_staff(self.service.db, self.service.settings, user.id)
        if member is None or member.role not in roles:
            await message.reply_text(REFUSAL)
            return None
        return member

    async def report(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """`/report [7d|30d|90d] [by agent|team|channel]`: the scores as text, the trend as a chart."""
        message = update.effective_message
        if message is None or await self._member(update, ("manager",)) is None:
            return
        try:
            period, by = parse_report_args(context.args or [])
            days = int(period[:-1])
            query = report_query(
                now=self.service.clock(), since=period, by=by, trend="day" if days <= 31 else "week"
            )
        except ReportError as exc:
            await message.reply_text(f"{exc}\n{REPORT_USAGE}")
            return
        targets = self.service.settings.targets
        report = await build_report(self.service.db, query, targets)
        await message.reply_text(report_message(report, period), parse_mode=ParseMode.HTML)
        points = trend_points(report)
        if any(p.csat or p.nps for p in points):
            # Up to a second of CPU: in a thread, so that other updates are served meanwhile.
            png = await asyncio.to_thread(
                trend_chart,
                points,
                targets={k: v for k, v in targets.items() if k in ("csat", "nps")},
                title=f"CSAT and NPS, last {days} days",
            )
            await message.reply_photo(png, caption=f"Trend by {query.trend}, shaded: 95 % interval")

    async def survey(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """`/survey <ticket> [flow] [language]`: a survey link to paste into the ticket reply."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        member = await self._member(update, ("agent", "manager"))
        if member is None:
            return
        args = list(context.args or [])
        if not args or len(args) > 3:
            await message.reply_text(SURVEY_USAGE)
            return
        ticket, rest = args[0], args[1:]
        flow_id = self.service.settings.default_flow
        if rest and not (len(rest) == 1 and _LANGUAGE.match(rest[0]) and rest[0] not in self.service.flows):
            flow_id = rest.pop(0)
        flow = self.service.flows.get(flow_id)
        if flow is None:
            await message.reply_text(
                f"Unknown flow {flow_id!r}. Flows: {', '.join(sorted(self.service.flows))}"
            )
            return
        language = rest[0].lower() if rest else None
        if language is not None and language not in flow.languages:
            await message.reply_text(
                f"Flow {flow.id} has no language {language!r}. Languages: {', '.join(flow.languages)}"
            )
            return
        now = self.service.clock()
        try:
            created = await create_survey(
                self.service.db,
                self.service.flows,
                NewSurvey(
                    flow.id, "telegram", ticket=ticket, agent=member.name or user.full_name, language=language
                ),
                now=now,
                ttl=self.service.survey_ttl,
            )
        except ContactOptedOut:  # cannot happen without an address, but never crash a command
            await message.reply_text(REFUSAL)
            return
        link = self.link(created.token)
        if created.created:
            expires = (now + self.service.survey_ttl).strftime("%Y-%m-%d %H:%M UTC")
            text = (
                f"Survey for ticket {ticket} ({flow.id}):\n{link}\n\n"
                f"Paste the link into your reply. The first chat that opens it answers; it expires {expires}."
            )
        else:
            text = f"Ticket {ticket} already has a {flow.id} survey (status {created.status}):\n{link}"
        await message.reply_text(text, link_preview_options=LinkPreviewOptions(is_disabled=True))
