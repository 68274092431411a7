"""Staff commands in Telegram: `/report` and `/survey`, for agents and managers.

A manager's `/report` covers every answer; an agent's only their own: the answers whose agent
is their staff name (`staff add --name`), else their Telegram name, the name `/survey` stores.

Whoever is not staff gets the same polite refusal for every staff command, and so learns
nothing about surveys or scores, not even whether a ticket exists.

Replies are in the staff member's language: the one chosen with `staff add --lang`, else
their Telegram app's (``language_code``, de or en), else STAFF_LANGUAGE.
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
    METRICS,
    change_cell,
    footnote,
    group_key,
    key_name,
    metric_cell,
    period_label,
    target_cell,
)
from bot.reports import build_report, report_query, trend_points
from bot.service import Service
from bot.settings import StaffRole
from bot.staff import StaffMember, agent_name, find_staff
from bot.staff_language import StaffLanguage, staff_language
from bot.surveys import NewSurvey, create_survey
from bot.texts import LAST_RESORT, decimal, moment, staff_text
from scoring.chart import trend_chart
from scoring.report import Report

REFUSAL = staff_text("staff.telegram.refusal", LAST_RESORT)
REPORT_USAGE = staff_text("staff.telegram.report_usage", LAST_RESORT)
SURVEY_USAGE = staff_text("staff.telegram.survey_usage", LAST_RESORT)
REPORT_GROUPS = ("agent", "team", "channel")
_PERIOD = re.compile(r"^\d{1,4}d$")
_LANGUAGE = re.compile(r"^[a-z]{2}$")
_Command = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]


def parse_report_args(args: Sequence[str], language: str = LAST_RESORT) -> tuple[str, str | None]:
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
            choices = ", ".join(f"by {group}" for group in REPORT_GROUPS)
            raise ReportError("by", staff_text("staff.telegram.bad_by", language, choices=choices))
        else:
            raise ReportError("period", staff_text("staff.telegram.bad_period", language, word=repr(args[i])))
        i += 1
    return period, by


def report_message(report: Report, period: str, language: str = LAST_RESORT) -> str:
    """The report as a Telegram HTML message: each metric with interval, n, target and change."""
    days = period[:-1]
    title = staff_text("staff.telegram.report_title", language, days=days)
    lines = [f"<b>{html.escape(title)}</b> ({period_label(report, language)})"]
    versus = staff_text("staff.telegram.versus", language, days=days)
    for name, item in zip(METRICS, report.metrics(), strict=True):
        parts = (target_cell(item, language), change_cell(item, language))
        extra = " · ".join(part for part in parts if part)
        lines.append(f"<b>{name.upper()}</b> {html.escape(metric_cell(name, item, language))}")
        if extra:
            lines.append(f"    {html.escape(extra)} {html.escape(versus)}")
    if report.groups:
        heading = staff_text("staff.report.by", language, key=key_name(str(report.by), language))
        lines.append(f"\n<b>{html.escape(heading)}</b>")
        for group in report.groups:
            key = group_key(group.key, language)
            cells = "; ".join(
                f"{m.upper()} {metric_cell(m, item, language)}"
                for m, item in zip(METRICS, group.metrics(), strict=True)
                if item.n
            )
            cells = cells or staff_text("staff.report.no_answers", language)
            lines.append(f"• {html.escape(key)}: {html.escape(cells)}")
    if report.questions:
        heading = staff_text("staff.report.each_question", language)
        note = staff_text("staff.telegram.all_answers", language)
        lines.append(f"\n<b>{html.escape(heading)}</b> {html.escape(note)}")
        for q in report.questions:
            cell = metric_cell(q.metric, q.score, language)
            lines.append(f"• {html.escape(q.question)}: {q.metric.upper()} {html.escape(cell)}")
    rate = report.response_rate
    if rate.delivered:
        answered = staff_text(
            "staff.telegram.answered",
            language,
            answered=rate.answered,
            delivered=rate.delivered,
            rate="-" if rate.answer_rate is None else decimal(rate.answer_rate, "", language),
        )
        lines.append(f"\n{html.escape(answered)}")
    lines.append(f"<i>{html.escape(footnote(language))}</i>")
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

    def _language(self, update: Update, member: StaffMember | None = None) -> StaffLanguage:
        """The member's own language, else their Telegram app's, else STAFF_LANGUAGE."""
        user = update.effective_user
        return staff_language(
            member.language if member is not None else None,
            user.language_code if user is not None else None,
            default=self.service.settings.staff_language,
        )

    async def _member(self, update: Update, roles: Sequence[StaffRole]) -> StaffMember | None:
        """The sender if staff with one of ``roles``; anyone else is refused, politely and alike."""
        user, message = update.effective_user, update.effective_message
        if user is None or message is None:
            return None
        member = await find_staff(self.service.db, self.service.settings, user.id)
        if member is None or member.role not in roles:
            await message.reply_text(staff_text("staff.telegram.refusal", self._language(update)))
            return None
        return member

    async def report(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """`/report [7d|30d|90d] [by agent|team|channel]`: the scores as text, the trend as a chart.

        An agent's report holds only their own answers (``staff.agent_name``).
        """
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        member = await self._member(update, ("agent", "manager"))
        if member is None:
            return
        agent = agent_name(member.role, member.name, user.full_name)
        language = self._language(update, member)
        try:
            period, by = parse_report_args(context.args or [], language)
            days = int(period[:-1])
            query = report_query(
                now=self.service.clock(),
                since=period,
                by=by,
                trend="day" if days <= 31 else "week",
                agent=agent,
            )
        except ReportError as exc:
            await message.reply_text(f"{exc}\n{staff_text('staff.telegram.report_usage', language)}")
            return
        targets = self.service.settings.targets
        report = await build_report(self.service.db, query, targets)
        await message.reply_text(report_message(report, period, language), parse_mode=ParseMode.HTML)
        points = trend_points(report)
        if any(p.csat or p.nps for p in points):
            # Up to a second of CPU: in a thread, so that other updates are served meanwhile.
            png = await asyncio.to_thread(
                trend_chart,
                points,
                targets={k: v for k, v in targets.items() if k in ("csat", "nps")},
                title=staff_text("staff.report.chart_title", language, days=days),
                language=language,
            )
            bucket = key_name(str(query.trend), language)
            await message.reply_photo(
                png, caption=staff_text("staff.telegram.chart_caption", language, bucket=bucket)
            )

    async def survey(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """`/survey <ticket> [flow] [language]`: a survey link to paste into the ticket reply."""
        message, user = update.effective_message, update.effective_user
        if message is None or user is None:
            return
        member = await self._member(update, ("agent", "manager"))
        if member is None:
            return
        lang = self._language(update, member)
        args = list(context.args or [])
        if not args or len(args) > 3:
            await message.reply_text(staff_text("staff.telegram.survey_usage", lang))
            return
        ticket, rest = args[0], args[1:]
        flow_id = self.service.settings.default_flow
        if rest and not (len(rest) == 1 and _LANGUAGE.match(rest[0]) and rest[0] not in self.service.flows):
            flow_id = rest.pop(0)
        flow = self.service.flows.get(flow_id)
        if flow is None:
            flows = ", ".join(sorted(self.service.flows))
            await message.reply_text(
                staff_text("staff.telegram.unknown_flow", lang, flow=repr(flow_id), flows=flows)
            )
            return
        language = rest[0].lower() if rest else None
        if language is not None and language not in flow.languages:
            languages = ", ".join(flow.languages)
            await message.reply_text(
                staff_text(
                    "staff.telegram.no_language",
                    lang,
                    flow=flow.id,
                    language=repr(language),
                    languages=languages,
                )
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
            await message.reply_text(staff_text("staff.telegram.refusal", lang))
            return
        link = self.link(created.token)
        if created.created:
            expires = moment(now + self.service.survey_ttl, lang)
            text = staff_text(
                "staff.telegram.survey_link", lang, ticket=ticket, flow=flow.id, link=link, moment=expires
            )
        else:
            text = staff_text(
                "staff.telegram.survey_exists",
                lang,
                ticket=ticket,
                flow=flow.id,
                status=created.status,
                link=link,
            )
        await message.reply_text(text, link_preview_options=LinkPreviewOptions(is_disabled=True))
