"""Reports: SQL histograms (GROUP BY score) for a period, its groups and buckets, scored by scoring/."""

from __future__ import annotations

import functools
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from bot.errors import ReportError
from bot.store.tables import answers, surveys
from scoring.metrics import DEFAULT_TARGETS, CsatRule, CsiAttribute, Histogram, Scale, csi, mean, sci
from scoring.report import (
    Bucket,
    Comment,
    CsatScore,
    Csi,
    Group,
    HistogramRow,
    MeanScore,
    NpsScore,
    Period,
    QuestionScale,
    QuestionScore,
    Report,
    ResponseRate,
    Scores,
    bare_score,
    metric_scores,
    scores,
)
from scoring.report import Sci as SciScore

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

    from bot.store.db import Database
    from scoring.chart import TrendPoint

GROUPS: dict[str, sa.ColumnElement[Any]] = {
    "agent": answers.c.agent,
    "team": answers.c.team,
    "channel": answers.c.channel,
    "flow": answers.c.flow_id,
    "language": answers.c.language,
    "question": answers.c.question_id,
}
Trend = Literal["day", "week", "month"]
TRENDS: tuple[Trend, ...] = ("day", "week", "month")
SINCE = re.compile(r"^(\d{1,4})d$")
DEFAULT_SINCE = "30d"
# The days a report may name: a period and the one before it must stay inside what a datetime
# (year 1 to 9999) and both databases can hold, and no survey is older or newer than these.
FIRST_DAY = date(2000, 1, 1)
LAST_DAY = date(2100, 12, 31)
COMMENTS = 10


@dataclass(frozen=True)
class CsiSpec:
    """One CSI attribute: a question, its weight and its expected level (seed 004)."""

    question: str
    weight: float
    expected: float


def load_csi_config(path: Path) -> tuple[CsiSpec, ...]:
    """CSI attributes from a YAML file ``attributes: [{question, weight, expected}, …]``.

    ReportError's message is one line that starts with the file's name.
    """
    import yaml

    from flows.loader import YamlTooLarge, load_yaml

    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except YamlTooLarge as exc:
        raise ReportError("csi", f"{path}: {exc}") from exc
    except OSError as exc:
        raise ReportError("csi", f"{path}: cannot read it: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ReportError("csi", f"{path}: not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except yaml.YAMLError as exc:
        raise ReportError("csi", f"{path}: not YAML: {_yaml_problem(exc)}") from exc
    items = data.get("attributes") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise ReportError(
            "csi", f"{path}: needs a non-empty list 'attributes' of {{question, weight, expected}}"
        )
    specs = []
    for i, item in enumerate(items, 1):
        try:
            specs.append(CsiSpec(str(item["question"]), float(item["weight"]), float(item["expected"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportError(
                "csi", f"{path}: attribute {i} needs question, weight and expected (numbers): {exc}"
            ) from exc
    return tuple(specs)


def _yaml_problem(exc: Exception) -> str:
    """PyYAML's error in one line: what is wrong and where, not its multi-line excerpt."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem is None:
        return " ".join(str(exc).split())
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


@dataclass(frozen=True)
class ReportQuery:
    """What to report: a half-open period [start, end), an optional grouping and trend.

    ``agent`` limits every part of the report (scores, groups, trend, response rate, comments)
    to one agent's answers and surveys: what an agent's own login may see. None: everyone's.
    """

    start: datetime
    end: datetime
    by: str | None = None
    trend: Trend | None = None
    rule: CsatRule = "top2"
    csi: tuple[CsiSpec, ...] = ()
    agent: str | None = None

    @property
    def previous(self) -> tuple[datetime, datetime]:
        """The period of the same length just before this one."""
        return self.start - (self.end - self.start), self.start


def report_query(
    *,
    now: datetime,
    since: str | None = None,
    from_: str | None = None,
    to: str | None = None,
    by: str | None = None,
    trend: str | None = None,
    rule: str = "top2",
    csi: tuple[CsiSpec, ...] = (),
    agent: str | None = None,
) -> ReportQuery:
    """Check the user's report parameters; ReportError names the first one not allowed."""
    if by is not None and by not in GROUPS:
        raise ReportError("by", f"{by!r} is not one of {', '.join(GROUPS)}")
    if trend is not None and trend not in TRENDS:
        raise ReportError("trend", f"{trend!r} is not one of {', '.join(TRENDS)}")
    if rule not in ("top2", "top1"):
        raise ReportError("rule", f"{rule!r} is not top2 or top1")
    if since is not None and (from_ is not None or to is not None):
        raise ReportError("since", "give a period ending now (since) or days (from, to), not both")
    if from_ is not None or to is not None:
        first = _day("from", from_) if from_ else None
        last = _day("to", to) if to else None
        if first is not None and last is not None and first > last:
            raise ReportError("from", f"{from_} is after to {to}: give the first day, then the last")
        end = last + timedelta(days=1) if last is not None else now
        start = first if first is not None else end - timedelta(days=30)
    else:
        since = DEFAULT_SINCE if since is None else since
        match = SINCE.match(since)
        if not match or int(match.group(1)) == 0:
            raise ReportError("since", f"{since!r} is not a number of days such as 7d, 30d, 90d or 365d")
        end, start = now, now - timedelta(days=int(match.group(1)))
    if start >= end:
        raise ReportError("from", f"{from_} is after today ({now.date()}): a report covers days up to now")
    return ReportQuery(start, end, by, trend, rule, csi, agent)  # type: ignore[arg-type]


def answered_in(query: ReportQuery) -> sa.ColumnElement[bool]:
    """The answers a query covers: answered in its period, and its agent's only when it names one."""
    a = answers.c
    condition = sa.and_(a.answered_at >= query.start, a.answered_at < query.end)
    return condition if query.agent is None else sa.and_(condition, a.agent == query.agent)


def _day(field: str, raw: str) -> datetime:
    try:
        day = date.fromisoformat(raw)
    except ValueError as exc:
        raise ReportError(field, f"{raw!r} is not a date in the form 2026-11-23") from exc
    if not FIRST_DAY <= day <= LAST_DAY:
        raise ReportError(field, f"{raw} is not between {FIRST_DAY} and {LAST_DAY}")
    return datetime.combine(day, time(), tzinfo=UTC)


async def build_report(
    db: Database, query: ReportQuery, targets: Mapping[str, float] = DEFAULT_TARGETS
) -> Report:
    """The whole report; `Report.json_data()` is its JSON."""
    async with db.read() as conn:
        # With a grouping, the overall histogram is the sum of the groups': one scan, not two.
        # Not by question: the groups then hold every question's answers, the overall only
        # the headline ones (one per respondent and metric).
        agent = query.agent
        grouped = await _histograms(conn, query.start, query.end, query.by, agent) if query.by else None
        headline_grouped = grouped if query.by != "question" else None
        if headline_grouped is not None:
            current = headline_grouped
        else:
            current = await _histograms(conn, query.start, query.end, agent=agent)
        previous = await _histograms(conn, *query.previous, agent=agent)
        per_question = grouped if query.by == "question" else None
        if per_question is None:
            per_question = await _histograms(conn, query.start, query.end, "question", agent)
        csat, nps, ces = metric_scores(_score(current, query), _score(previous, query), targets)
        # Every rating question on its own, beside the headline metrics: all its answers.
        questions = _questions(per_question, query.rule)
        # Only the keys this report has are passed: the JSON holds the keys that were set.
        optional: dict[str, Any] = {}
        if query.csi:
            optional["csi"] = _csi(query.csi, questions)
        if grouped is not None:
            optional["by"] = query.by
            optional["groups"] = [
                Group(key=key, **_named(metric_scores(scores(rows, query.rule), None, targets)))
                for key, rows in sorted(_split(grouped).items(), key=lambda kv: (kv[0] is None, str(kv[0])))
            ]
        if query.trend is not None:
            buckets = _split(await _histograms(conn, query.start, query.end, query.trend, agent))
            optional["trend_by"] = query.trend
            # Every bucket of the period, empty ones too, so that a chart shows a gap as a gap.
            optional["trend"] = [
                Bucket(
                    start=key,
                    **_named(metric_scores(scores(buckets.get(key, []), query.rule), None, targets)),
                )
                for key in bucket_starts(query.start, query.end, query.trend)
            ]
        return Report(
            period=Period(
                from_=query.start.isoformat(),
                to=query.end.isoformat(),  # exclusive: the first moment after the period
                first_day=query.start.date().isoformat(),
                last_day=_last_day(query.end).isoformat(),
                previous_from=query.previous[0].isoformat(),
            ),
            rule=query.rule,
            targets=dict(targets),
            csat=csat,
            nps=nps,
            ces=ces,
            sci=SciScore(**vars(sci(*await _secure(conn, query.start, query.end, agent)))),
            response_rate=await _response_rate(conn, query.start, query.end, agent),
            comments=await _comments(conn, query.start, query.end, agent),
            questions=questions,
            **optional,
        )


def _named(metrics: tuple[Any, Any, Any]) -> dict[str, Any]:
    """(csat, nps, ces) as keyword arguments."""
    return dict(zip(("csat", "nps", "ces"), metrics, strict=True))


def _last_day(end: datetime) -> date:
    """The last day in a period that ends (exclusively) at `end`: the day before a midnight."""
    return (end - timedelta(microseconds=1)).date()


def bucket_starts(start: datetime, end: datetime, trend: Trend) -> list[str]:
    """The first day (YYYY-MM-DD) of every day, ISO week or month that [start, end) touches."""
    day, last = start.date(), _last_day(end)
    if trend == "week":
        day -= timedelta(days=day.weekday())
    elif trend == "month":
        day = day.replace(day=1)
    found = []
    while day <= last:
        found.append(day.isoformat())
        if trend == "day":
            day += timedelta(days=1)
        elif trend == "week":
            day += timedelta(days=7)
        else:
            day = (day + timedelta(days=32)).replace(day=1)
    return found


def _questions(rows: Sequence[tuple[Any, HistogramRow]], rule: CsatRule) -> list[QuestionScore]:
    """Every rating question on its own: its CSAT, NPS or CES and its mean, each with its interval.

    All answers of the question count (one per respondent), on the scale most of them used.
    """
    by_question: dict[tuple[str, str, Scale], dict[int, int]] = defaultdict(dict)
    for key, row in rows:
        counts = by_question[(str(key), row.metric, row.scale)]
        counts[row.score] = counts.get(row.score, 0) + row.count
    best: dict[str, tuple[str, Scale, dict[int, int]]] = {}
    for (question, metric, scale), counts in by_question.items():
        if question not in best or sum(counts.values()) > sum(best[question][2].values()):
            best[question] = (metric, scale, counts)
    found = []
    for question, (metric, scale, counts) in sorted(best.items()):
        only = [HistogramRow(metric, scale, score, count) for score, count in counts.items()]
        found.append(
            QuestionScore(
                question=question,
                metric=metric,
                scale=QuestionScale(min=scale.min, max=scale.max, best=scale.best),
                mean=MeanScore(**vars(mean(Histogram(scale, counts)))),
                # Under the metric's own key, without a target.
                **{metric: bare_score(getattr(scores(only, rule), metric))},
            )
        )
    return found


def _csi(specs: Sequence[CsiSpec], questions: Sequence[QuestionScore]) -> Csi:
    """Σ w_j (P_j − E_j) over the configured attributes (seed 004); None while one has no answers."""
    perceived = {q.question: q.mean.value for q in questions if q.mean.value is not None}
    missing = [s.question for s in specs if s.question not in perceived]
    if missing:
        return Csi(value=None, parts=[], missing=missing)
    result = csi([CsiAttribute(s.question, s.weight, perceived[s.question], s.expected) for s in specs])
    return Csi(value=result.value, parts=list(result.parts), missing=[])


def _score(rows: Sequence[tuple[Any, HistogramRow]], query: ReportQuery) -> Scores:
    return scores((row for _key, row in rows), query.rule)


def _split(rows: Sequence[tuple[Any, HistogramRow]]) -> dict[Any, list[HistogramRow]]:
    groups: dict[Any, list[HistogramRow]] = defaultdict(list)
    for key, row in rows:
        groups[key].append(row)
    return groups


async def _histograms(
    conn: AsyncConnection, start: datetime, end: datetime, key: str | None = None, agent: str | None = None
) -> list[tuple[Any, HistogramRow]]:
    """Score histograms over [start, end), by a GROUPS name or a TRENDS bucket; one agent's only if named."""
    stmt = histogram_query(key, conn.dialect.name, agent is not None)
    result = await conn.execute(stmt, {"start": start, "end": end, **_only(agent)})
    return [
        (key, HistogramRow(metric, _scale(low, high, best), score, n))
        for key, metric, low, high, best, score, n in result.all()
    ]


@functools.lru_cache(maxsize=64)
def _scale(low: int, high: int, best: str) -> Scale:
    """Scale(low, high, best), checked once: a database holds few scales and many rows."""
    return Scale(low, high, best)  # type: ignore[arg-type]


# The covering index (key, metric, scale, score, answered_at) of each grouping that has one;
# all but the question's hold the headline answers only.
COVERING_INDEXES: dict[str | None, str] = {
    None: "ix_answers_report",
    "agent": "ix_answers_report_agent",
    "team": "ix_answers_report_team",
    "channel": "ix_answers_report_channel",
    "question": "ix_answers_report_question",
}


def _only(agent: str | None) -> dict[str, str]:
    """The ``agent`` parameter of a statement built for one agent (``own``), none for all."""
    return {} if agent is None else {"agent": agent}


@functools.cache
def histogram_query(key: str | None, dialect: str, own: bool = False) -> sa.Select[Any]:
    """GROUP BY key, metric, scale, score over [start, end); built once per key, so SQLAlchemy
    keeps its cache key (rebuilding the report's statements was a third of it at 10 k answers).

    On SQLite the covering index is named with INDEXED BY. With the statistics ANALYZE leaves,
    SQLite's planner takes the answered_at index instead, looks up every row and sorts them:
    for a year of 100,000 answers by agent 320 ms against 31 ms, for a week 6.1 against 3.6 ms
    (bench/report_bench.py). SQLAlchemy renders no table hints for SQLite, so this variant
    names its columns without the table and reads FROM a text clause.

    ``own``: one agent's answers only (the ``agent`` parameter), read on SQLite through the
    agent's covering index, which leads with the agent; per question or bucket, without a hint.
    """
    index = COVERING_INDEXES.get(key) if dialect == "sqlite" else None
    if own and index is not None:
        index = COVERING_INDEXES["agent"] if key != "question" else None
    c: dict[str, sa.ColumnElement[Any]] = {col.name: col for col in answers.c}
    source: sa.FromClause | sa.TextClause = answers
    if index is not None:
        c = {col.name: sa.literal_column(col.name, col.type) for col in answers.c}
        source = sa.text(f"answers INDEXED BY {index}")
    cols = [c["metric"], c["scale_min"], c["scale_max"], c["scale_best"], c["score"]]
    if key is None:
        column: sa.ColumnElement[Any] = sa.literal(None)
    elif key in TRENDS:
        column = _bucket(dialect, key)
    else:
        column = c[GROUPS[key].name]
    key_col = column.label("key")
    conditions: list[sa.ColumnElement[bool] | sa.TextClause] = [
        c["answered_at"] >= sa.bindparam("start"),
        c["answered_at"] < sa.bindparam("end"),
        c["metric"].is_not(None),
        c["score"].is_not(None),
        c["scale_min"].is_not(None),
    ]
    if own:
        conditions.append(c["agent"] == sa.bindparam("agent"))
    if key != "question":
        # One observation per respondent and metric: the flow's headline question. Written as
        # the partial indexes' condition (bot.store.tables.HEADLINE_ONLY), literally, so both
        # planners match them: "headline = 1" on SQLite, "headline" on PostgreSQL.
        conditions.append(sa.text("headline = 1") if dialect == "sqlite" else c["headline"])
    return (
        sa.select(key_col, *cols, sa.func.count().label("n"))
        .select_from(source)
        .where(*conditions)
        .group_by(*([key_col] if key is not None else []), *cols)
    )


def _bucket(dialect: str, trend: Trend) -> sa.ColumnElement[Any]:
    """The first day of each answer's day, ISO week (Monday) or month, as text YYYY-MM-DD."""
    at = answers.c.answered_at
    if dialect == "sqlite":
        # Stored as 'YYYY-MM-DD HH:MM:SS' in UTC; 'weekday 0' moves to Sunday, -6 days to Monday.
        modifiers = {"day": (), "week": ("weekday 0", "-6 days"), "month": ("start of month",)}[trend]
        return sa.func.date(at, *modifiers)
    return sa.func.to_char(sa.func.date_trunc(trend, sa.func.timezone("UTC", at)), "YYYY-MM-DD")


NOT_DELIVERED = ("failed", "no_answer", "skipped")  # the customer never got the survey
_PERIOD: dict[str, sa.BindParameter[Any]] = {"start": sa.bindparam("start"), "end": sa.bindparam("end")}


def _response_rate_query(own: bool) -> sa.Select[int, int, int, int]:
    s = surveys.c
    answered = sa.exists().where(answers.c.survey_id == s.id)
    stmt = sa.select(
        sa.func.count().label("sent"),
        sa.func.count().filter(s.status.in_(NOT_DELIVERED)).label("not_delivered"),
        sa.func.count().filter(s.status == "completed").label("completed"),
        sa.func.count().filter(answered).label("answered"),
    ).where(s.sent_at >= _PERIOD["start"], s.sent_at < _PERIOD["end"])
    return stmt.where(s.agent == sa.bindparam("agent")) if own else stmt


async def _response_rate(
    conn: AsyncConnection, start: datetime, end: datetime, agent: str | None = None
) -> ResponseRate:
    """Completed and answered surveys as shares of those delivered (sent minus not delivered)."""
    params = {"start": start, "end": end, **_only(agent)}
    row = (await conn.execute(_RESPONSE_RATE[agent is not None], params)).one()
    delivered = int(row.sent) - int(row.not_delivered)
    return ResponseRate(
        sent=int(row.sent),
        not_delivered=int(row.not_delivered),
        delivered=delivered,
        completed=int(row.completed),
        answered=int(row.answered),
        completion_rate=round(100 * row.completed / delivered, 1) if delivered else None,
        answer_rate=round(100 * row.answered / delivered, 1) if delivered else None,
    )


def _detractor(table: sa.FromClause) -> sa.ColumnElement[bool]:
    """NPS 0-6, or CSAT/CES on the worst two points of the answer's own scale."""
    c = table.c
    worst_low_best = sa.and_(c.scale_best == "low", c.score >= c.scale_max - 1)
    worst_high_best = sa.and_(c.scale_best == "high", c.score <= c.scale_min + 1)
    return sa.or_(
        sa.and_(c.metric == "nps", c.score <= 6),
        sa.and_(c.metric.in_(("csat", "ces")), sa.or_(worst_low_best, worst_high_best)),
    )


def _comment_queries(own: bool) -> tuple[tuple[bool, sa.Select[Any]], ...]:
    """Newest comments first, of detractors and of the others: two reads of the comments index."""
    a = answers.c
    scored = answers.alias("scored")
    detractor = sa.or_(
        sa.and_(a.score.is_not(None), _detractor(answers)),
        sa.exists().where(scored.c.survey_id == a.survey_id, a.survey_id.is_not(None), _detractor(scored)),
    )
    base = sa.select(a.text, a.answered_at, a.ticket, a.agent, a.channel, a.question_id).where(
        a.text.is_not(None), a.answered_at >= _PERIOD["start"], a.answered_at < _PERIOD["end"], a.text != ""
    )
    if own:
        base = base.where(a.agent == sa.bindparam("agent"))
    return tuple(
        (is_detractor, base.where(condition).order_by(a.answered_at.desc()).limit(sa.bindparam("limit")))
        for is_detractor, condition in ((True, detractor), (False, sa.not_(detractor)))
    )


async def _comments(
    conn: AsyncConnection, start: datetime, end: datetime, agent: str | None = None
) -> list[Comment]:
    """The latest comments, detractors' first."""
    found: list[Comment] = []
    for is_detractor, stmt in _COMMENTS[agent is not None]:
        params = {"start": start, "end": end, "limit": COMMENTS - len(found), **_only(agent)}
        found.extend(
            Comment(
                text=row.text,
                answered_at=row.answered_at.isoformat(),
                ticket=row.ticket,
                agent=row.agent,
                channel=row.channel,
                question=row.question_id,
                detractor=is_detractor,
            )
            for row in await conn.execute(stmt, params)
        )
        if len(found) >= COMMENTS:
            break
    return found


def _secure_query(own: bool) -> sa.Select[int, int]:
    a = answers.c
    best_point = sa.case((a.scale_best == "low", a.scale_min), else_=a.scale_max)
    is_csat, is_nps = a.metric == "csat", a.metric == "nps"
    per_survey = (
        sa.select(
            sa.func.max(sa.case((is_csat, 1), else_=0)).label("has_csat"),
            sa.func.max(sa.case((is_nps, 1), else_=0)).label("has_nps"),
            sa.func.min(sa.case((is_csat, sa.case((a.score == best_point, 1), else_=0)), else_=1)).label(
                "csat_best"
            ),
            sa.func.min(sa.case((is_nps, sa.case((a.score == 10, 1), else_=0)), else_=1)).label("nps_best"),
        )
        .where(
            a.survey_id.in_(
                sa.select(surveys.c.id).where(
                    surveys.c.sent_at >= _PERIOD["start"],
                    surveys.c.sent_at < _PERIOD["end"],
                    surveys.c.agent == sa.bindparam("agent") if own else sa.true(),
                )
            ),
            a.score.is_not(None),
        )
        .group_by(a.survey_id)
        .subquery()
    )
    both = sa.and_(per_survey.c.has_csat == 1, per_survey.c.has_nps == 1)
    return sa.select(
        sa.func.count().filter(both).label("n"),
        sa.func.count().filter(both, per_survey.c.csat_best == 1, per_survey.c.nps_best == 1).label("secure"),
    )


async def _secure(
    conn: AsyncConnection, start: datetime, end: datetime, agent: str | None = None
) -> tuple[int, int]:
    """(secure, n) over surveys sent in the period that answered satisfaction and recommendation (seed 004)."""
    row = (await conn.execute(_SECURE[agent is not None], {"start": start, "end": end, **_only(agent)})).one()
    return int(row.secure), int(row.n)


# Built once, like the histogram queries, so that SQLAlchemy keeps their cache keys; for
# everyone's answers (False) and for one agent's (True).
_RESPONSE_RATE = {own: _response_rate_query(own) for own in (False, True)}
_COMMENTS = {own: _comment_queries(own) for own in (False, True)}
_SECURE = {own: _secure_query(own) for own in (False, True)}


def trend_points(report: Report) -> list[TrendPoint]:
    """The report's trend buckets as chart points.

    The chart module is imported here, not at the top: a report that draws no chart imports
    no chart code (tests/bot/test_startup.py).
    """
    from scoring.chart import Band, TrendPoint

    def band(item: CsatScore | NpsScore) -> Band | None:
        if item.value is None:
            return None
        return Band(item.value, item.ci95_low, item.ci95_high, item.n)

    return [TrendPoint(date.fromisoformat(b.start), band(b.csat), band(b.nps)) for b in report.trend]
