"""The demo database: months of made-up surveys and answers, stored the way real ones are.

`afterword demo` fills a SQLite file of its own so that a newcomer sees the dashboard in use.
Nothing is written around the product: `surveys.create_survey` makes each survey,
`inbound.handle` stores every answer, undelivered messages and unanswered calls are
closed as the Twilio status callbacks close them (`surveys.closing`), an SMS STOP
opts out as `sms.on_message` does, and the real `Scheduler` expires what is left.

A survey is made as the scheduler leaves one it has just sent, at the moment it was sent:
`active`, with `sent_at`, `expires_at` and an expire job (create_survey without ``send_at``
sets exactly these). Running the scheduler's send for each survey would add only its done
send job and a reminder job, and would cost most of the demo's time. A clock the demo
moves stands in for time, so every timestamp is one the service writes at that moment.

The timeline ends at midnight UTC today, and its last surveys are sent early enough
to be settled by then: the file holds no job that a `serve` on it would still do.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from bot import contacts
from bot.inbound import Inbound, handle
from bot.scheduler import BATCH, Scheduler
from bot.service import Service
from bot.settings import Settings, load_settings
from bot.store.db import Database
from bot.surveys import Created, NewSurvey, closing, create_survey
from flows.loader import load_flows
from flows.schema import Flow

BERLIN = ZoneInfo("Europe/Berlin")
# The sending rules the demo runs under: the defaults of .env.example, whatever .env says.
RULES = {
    "quiet_hours": "21:00-08:00",
    "default_time_zone": "Europe/Berlin",
    "throttle_days": 30,
    "reminder_after_hours": 24,
    "survey_ttl_hours": 48,
    "phone_region": "DE",
}


@dataclass(frozen=True)
class Agent:
    """An agent, how content their customers usually are (0–1), and how often a contact goes badly."""

    name: str
    team: str
    mood: float
    rough: float


AGENTS = (
    Agent("Anna", "Support", 0.90, 0.02),  # clearly the best
    Agent("Jonas", "Support", 0.76, 0.07),
    Agent("Emma", "Technik", 0.80, 0.06),
    Agent("Lukas", "Technik", 0.72, 0.10),
    Agent("Sophie", "Billing", 0.78, 0.06),
    Agent("Oliver", "Billing", 0.66, 0.24),  # the one with detractors
)
# How fast each team resolves, added to the speed question's mood.
TEAM_SPEED = {"Support": 0.05, "Technik": -0.08, "Billing": 0.03}
CHANNELS = {"telegram": 0.26, "sms": 0.20, "whatsapp": 0.20, "web": 0.22, "voice": 0.12}
FLOWS = {"support-csat": 0.6, "nps": 0.25, "ces": 0.15}
# Of the surveys that reach someone, the share never answered.
SILENT = {"telegram": 0.30, "sms": 0.42, "whatsapp": 0.32, "web": 0.55, "voice": 0.08}

Mood = Literal["good", "mixed", "bad"]
# A comment that starts with a team's name and a colon is made only by that team's customers.
COMMENTS: dict[str, dict[Mood, tuple[str, ...]]] = {
    "de": {
        "good": (
            "{agent} hat sich sofort gekümmert, vielen Dank!",
            "Sehr freundlich und kompetent, so wünscht man sich Support.",
            "Problem in fünf Minuten gelöst, top.",
            "Danke an {agent}, alles verständlich erklärt.",
            "Schnelle Antwort, auch am Samstag. Super!",
            "Endlich mal jemand, der zuhört.",
            "Technik: Der Router läuft wieder, danke für die Geduld am Telefon.",
            "Billing: Gutschrift kam sofort, sehr unkompliziert.",
        ),
        "mixed": (
            "Hat geklappt, aber ich musste zweimal anrufen.",
            "Freundlich, aber die Lösung hat etwas gedauert.",
            "Die Warteschleife war lang, danach ging es schnell.",
            "Ok, aber die Anleitung auf der Website ist veraltet.",
            "Technik: Läuft jetzt, aber der Techniker-Termin war erst nach einer Woche.",
            "Billing: Die Erklärung der Rechnung war gut, die Rechnung selbst bleibt unverständlich.",
        ),
        "bad": (
            "Drei Tage auf eine Antwort gewartet, das geht gar nicht.",
            "Mein Problem ist immer noch nicht gelöst.",
            "Ich wurde dreimal weiterverbunden und musste alles neu erklären.",
            "Unfreundlich und keine Lösung angeboten.",
            "Rückruf versprochen, nie passiert.",
            "Technik: Die Störung besteht seit zwei Wochen, niemand fühlt sich zuständig.",
            "Billing: Die Rechnung ist immer noch falsch, trotz Zusage.",
            "Billing: Doppelt abgebucht und seit Wochen keine Erstattung.",
        ),
    },
    "en": {
        "good": (
            "{agent} sorted it out right away, thanks!",
            "Friendly, quick and clear. Great service.",
            "Fixed on the first call, much appreciated.",
            "Thanks {agent}, you explained everything patiently.",
            "Faster than I expected, well done.",
            "Technik: The app works again after the reset, thank you.",
            "Billing: Refund arrived the next day. Impressive.",
        ),
        "mixed": (
            "Solved in the end, but it took two tries.",
            "Nice people, slow process.",
            "Had to wait on hold for a while, then it was fine.",
            "OK, but I would have liked an email confirmation.",
            "Technik: Works now, but I had to explain the error three times.",
        ),
        "bad": (
            "Waited a week for a reply. Not acceptable.",
            "Still not fixed, and nobody called back.",
            "I was passed around between three departments.",
            "Nobody seemed to know what to do.",
            "Technik: The same outage for the third time this month.",
            "Billing: The refund I was promised never arrived.",
        ),
    },
}
SKIP_WORDS = {"de": ("weiter", "nein danke", "nichts"), "en": ("no thanks", "skip", "next")}
COMMENT_QUESTIONS = frozenset({"comment", "reason"})


@dataclass
class DemoClock:
    """The demo's time, moved forward event by event."""

    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Reply:
    """What a customer sends, ``after`` the survey went out: a point, a comment, skip, or stop."""

    after: timedelta
    question_id: str
    choice: int | None = None
    text: str | None = None
    command: Literal["skip", "stop"] | None = None


@dataclass(frozen=True)
class Plan:
    """One ticket's survey as it will go: who, where, and what happens after it is sent."""

    at: datetime
    ticket: str
    agent: Agent
    channel: str
    flow_id: str
    language: str
    address: str | None
    fate: Literal["undelivered", "no_answer", "silent", "stop", "partial", "complete"]
    replies: tuple[Reply, ...] = ()
    hang_up_after: timedelta | None = None  # a voice call that ended before the survey did


@dataclass
class DemoResult:
    """What the demo stored: counts for the summary line and the tests."""

    surveys: int = 0
    answers: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    first_day: date | None = None
    last_day: date | None = None


def demo_settings(path: Path) -> Settings:
    """Settings for the demo file: its own database, the built-in flows only, the default rules."""
    return load_settings(database_url=f"sqlite+aiosqlite:///{path}", flows_dir=[], **RULES)


def timeline_end(now: datetime) -> datetime:
    """Midnight UTC of ``now``'s day: the same seed on the same day gives the same database."""
    return datetime.combine(now.astimezone(UTC).date(), time(), UTC)


def plan_surveys(flows: dict[str, Flow], *, end: datetime, months: int, seed: int) -> list[Plan]:
    """Every survey of the demo, in time order: 6 a working day at first, 14 at the end, few on Saturdays."""
    rng = random.Random(seed)  # noqa: S311 - made-up data, reproducible by seed
    last = end.date() - timedelta(days=3)  # sent by then, a survey is settled at ``end`` (48 h)
    first = last - timedelta(days=round(months * 30.5) - 1)
    days = (last - first).days + 1
    addresses: set[str] = set()
    plans: list[Plan] = []
    ticket = itertools.count(41_000 + rng.randrange(1_000))
    for offset in range(days):
        day = first + timedelta(days=offset)
        progress = offset / max(days - 1, 1)
        weekday = day.weekday()
        base = 0 if weekday == 6 else 3 if weekday == 5 else 6 + 8 * progress
        count = max(0, round(rng.gauss(base, 1.5))) if base else 0
        minutes = sorted(rng.randrange(8 * 60 + 5, 19 * 60 + 30) for _ in range(count))
        for minute in minutes:
            local = datetime.combine(day, time(minute // 60, minute % 60, rng.randrange(60)), BERLIN)
            plans.append(_plan(rng, flows, local.astimezone(UTC), f"T-{next(ticket)}", progress, addresses))
    return plans


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _address(rng: random.Random, channel: str, taken: set[str]) -> str | None:
    """A unique made-up address: a chat id, a German mobile or (for calls) landline number."""
    if channel == "web":
        return None
    while True:
        if channel == "telegram":
            found = str(rng.randrange(100_000_000, 7_000_000_000))
        elif channel == "voice":
            found = f"+49{rng.choice(('30', '40', '89', '221', '69'))}{rng.randrange(10**6, 10**7)}"
        else:
            found = (
                f"+49{rng.choice(('151', '152', '160', '162', '170', '176'))}{rng.randrange(10**7, 10**8)}"
            )
        if found not in taken:
            taken.add(found)
            return found


def _plan(
    rng: random.Random, flows: dict[str, Flow], at: datetime, ticket: str, progress: float, taken: set[str]
) -> Plan:
    agent = rng.choice(AGENTS)
    channel = _pick(rng, CHANNELS)
    flow = flows[_pick(rng, FLOWS)]
    language = "de" if rng.random() < 0.7 else "en"
    address = _address(rng, channel, taken)
    plan = Plan(at, ticket, agent, channel, flow.id, language, address, fate="silent")
    lost = {"sms": 0.04, "whatsapp": 0.03, "voice": 0.2}.get(channel, 0.0)
    if rng.random() < lost:
        return replace(plan, fate="no_answer" if channel == "voice" else "undelivered")
    if rng.random() < SILENT[channel]:
        return replace(plan, fate="silent")
    if channel in ("telegram", "sms", "whatsapp") and rng.random() < 0.02:
        stop = Reply(timedelta(minutes=rng.uniform(1, 30)), flow.questions[0].id, command="stop")
        return replace(plan, fate="stop", replies=(stop,))
    # Content drifts up over the months: a team that reads its comments gets better.
    mood = agent.mood + 0.06 * (progress - 0.5) + rng.gauss(0, 0.12)
    if rng.random() < agent.rough:
        mood = rng.uniform(0.0, 0.35)
    mood = min(max(mood, 0.0), 1.0)
    reminded = channel in ("telegram", "sms", "whatsapp") and rng.random() < 0.2
    first = _first_reply(rng, channel) + (timedelta(hours=24) if reminded else timedelta())
    replies = _replies(rng, flow, agent, language, channel, mood, first)
    if rng.random() < 0.08:  # answered the first question only; on a call, hung up after it
        hang_up = replies[0].after + timedelta(seconds=5) if channel == "voice" else None
        return replace(plan, fate="partial", replies=replies[:1], hang_up_after=hang_up)
    return replace(plan, fate="complete", replies=replies)


def _first_reply(rng: random.Random, channel: str) -> timedelta:
    """How long until the first answer: seconds on a call, minutes in a chat, longer by SMS or link."""
    if channel == "voice":
        return timedelta(seconds=rng.uniform(15, 30))
    median_minutes = {"telegram": 4, "whatsapp": 6, "sms": 15, "web": 40}[channel]
    return timedelta(minutes=min(rng.lognormvariate(0, 1.1) * median_minutes, 20 * 60))


def _replies(
    rng: random.Random,
    flow: Flow,
    agent: Agent,
    language: str,
    channel: str,
    mood: float,
    first: timedelta,
) -> tuple[Reply, ...]:
    """The customer's reply to each question, ``mood`` (0 awful – 1 delighted) setting the points."""
    replies: list[Reply] = []
    after = first
    for question in flow.questions:
        if question.id in COMMENT_QUESTIONS:
            after += timedelta(seconds=rng.uniform(8, 25) if channel == "voice" else rng.uniform(40, 200))
            comment = _comment(rng, agent, language, mood)
            if comment is not None:
                replies.append(Reply(after, question.id, text=comment))
            elif channel in ("sms", "whatsapp"):
                if rng.random() < 0.35:  # some just stop replying; the survey then expires answered
                    break
                replies.append(Reply(after, question.id, text=rng.choice(SKIP_WORDS[language])))
            elif channel == "telegram" and rng.random() < 0.3:
                break
            else:  # /skip, the web page's skip button, or silence on a call
                replies.append(Reply(after, question.id, command="skip"))
            continue
        if replies:
            after += timedelta(seconds=rng.uniform(6, 40))
        point = _point(rng, question.id, flow.id, agent, mood)
        if channel in ("sms", "whatsapp"):
            replies.append(Reply(after, question.id, text=str(point)))
        else:
            replies.append(Reply(after, question.id, choice=point))
    return tuple(replies)


def _point(rng: random.Random, question_id: str, flow_id: str, agent: Agent, mood: float) -> int:
    """A point on the question's scale for a customer this content."""
    if question_id == "speed":
        mood += TEAM_SPEED[agent.team]
    if question_id != "satisfaction":
        mood += rng.gauss(0, 0.08)
    mood = min(max(mood, 0.0), 1.0)
    if flow_id == "nps":
        return min(max(round(10 * mood + 0.9 + rng.gauss(0, 0.9)), 0), 10)
    if flow_id == "ces":
        return min(max(round(1 + 6 * mood + rng.gauss(0.2, 0.6)), 1), 7)
    return min(max(round(1 + 4 * (1 - mood) + rng.gauss(-0.3, 0.5)), 1), 5)  # school grades, 1 best


def _comment(rng: random.Random, agent: Agent, language: str, mood: float) -> str | None:
    """A comment more often from the delighted and the annoyed than from the merely content."""
    kind: Mood = "bad" if mood < 0.4 else "good" if mood > 0.82 else "mixed"
    if rng.random() >= {"bad": 0.55, "good": 0.3, "mixed": 0.18}[kind]:
        return None
    fitting = []
    for text in COMMENTS[language][kind]:
        team, colon, rest = text.partition(": ")
        if not colon or team not in TEAM_SPEED:
            fitting.append(text)
        elif team == agent.team:
            fitting.append(rest)
    return rng.choice(fitting).format(agent=agent.name)


class _Simulation:
    """Runs the plans in time order: surveys sent, replies, status callbacks; expiry at the end."""

    def __init__(self, service: Service, clock: DemoClock, progress: Callable[[int], None]) -> None:
        self.service = service
        self.clock = clock
        self.progress = progress
        self.events: list[tuple[datetime, int, Callable[[], Awaitable[object]]]] = []
        self.order = itertools.count()
        self.update_ids = itertools.count(700_000_000)
        self.created = 0

    def at(self, when: datetime, action: Callable[[], Awaitable[object]]) -> None:
        heapq.heappush(self.events, (when, next(self.order), action))

    async def run(self, plans: Sequence[Plan], end: datetime) -> None:
        """Every event in time order, then the scheduler's passes at ``end``, which expire the rest."""
        for plan in plans:
            self.at(plan.at, functools.partial(self._send, plan))
        while self.events:
            when, _, action = heapq.heappop(self.events)
            self.clock.now = when
            await action()
        self.clock.now = end
        scheduler = Scheduler(self.service, {}, worker="afterword-demo")
        while await scheduler.run_once() >= BATCH:  # only expire jobs are left, and all are due
            pass

    async def _send(self, plan: Plan) -> None:
        """The survey as the scheduler leaves one it has just sent: active, sent_at and an expiry."""
        new = NewSurvey(
            plan.flow_id,
            plan.channel,
            plan.address,
            ticket=plan.ticket,
            agent=plan.agent.name,
            team=plan.agent.team,
            language=plan.language,
        )
        made = await create_survey(
            self.service.db, self.service.flows, new, now=plan.at, ttl=self.service.survey_ttl
        )
        self.created += 1
        self.progress(self.created)
        sent, survey_id = plan.at, made.survey_id
        if plan.fate in ("undelivered", "no_answer"):  # the status callback of the message or call
            status = "failed" if plan.fate == "undelivered" else "no_answer"
            delay = timedelta(seconds=40 if plan.channel == "voice" else 90)
            self.at(sent + delay, functools.partial(self.service.db.run, closing(survey_id, status)))
            return
        if plan.fate == "stop" and plan.channel in ("sms", "whatsapp") and plan.address:
            # STOP by SMS is the opt-out keyword: sms.on_message records it before handle().
            self.at(
                sent + plan.replies[0].after, functools.partial(self._opt_out, plan.channel, plan.address)
            )
            return
        for reply in plan.replies:
            self.at(sent + reply.after, functools.partial(self._answer, plan, reply, made))
        if plan.hang_up_after is not None:  # the call's status callback: "completed" before the survey
            self.at(
                sent + plan.hang_up_after,
                functools.partial(self.service.db.run, closing(survey_id, "incomplete")),
            )

    async def _opt_out(self, channel: str, address: str) -> None:
        await contacts.opt_out(self.service.db, channel, address, now=self.clock.now)

    async def _answer(self, plan: Plan, reply: Reply, made: Created) -> None:
        await handle(self.service.db, self.service.flows, self._inbound(plan, reply, made))

    def _inbound(self, plan: Plan, reply: Reply, made: Created) -> Inbound:
        """The Inbound the plan's channel would build from this reply (see each channel module)."""
        said = Inbound(
            plan.channel,
            plan.address or "",
            self.clock.now,
            choice=reply.choice,
            text=reply.text,
            command=reply.command,
        )
        if plan.channel == "web":
            return replace(said, question_id=reply.question_id, survey_token=made.token)
        if plan.channel == "voice":
            return replace(
                said,
                provider="twilio-voice",
                event_id=f"CA{made.survey_id:032x}:{reply.question_id}:0",
                question_id=reply.question_id,
                survey_id=made.survey_id,
            )
        if plan.channel == "telegram":
            said = replace(said, provider="telegram", event_id=str(next(self.update_ids)))
            if reply.choice is not None:  # a button names its survey and question
                said = replace(said, question_id=reply.question_id, survey_id=made.survey_id)
            return said
        # SMS and WhatsApp: the message body as text, as sms.on_message passes it.
        message = f"SM{next(self.update_ids):032x}"
        return replace(said, choice=None, command=None, provider="twilio", event_id=message)


async def build_demo(
    path: Path,
    *,
    now: datetime,
    months: int = 4,
    seed: int = 1,
    login: tuple[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DemoResult:
    """Create the SQLite file ``path`` (which must not exist) with ``months`` of demo surveys.

    ``login`` (name, password) becomes a manager's dashboard login.
    """
    from bot.web.auth import set_web_login

    settings = demo_settings(path)
    flows = load_flows([])
    end = timeline_end(now)
    plans = plan_surveys(flows, end=end, months=months, seed=seed)
    clock = DemoClock(plans[0].at if plans else end)
    db = await Database.open(settings.database, create=True)
    try:
        service = Service(settings=settings, db=db, flows=flows, clock=clock)
        report = (lambda done: progress(done, len(plans))) if progress else (lambda done: None)
        await _Simulation(service, clock, report).run(plans, end)
        if login is not None:
            await set_web_login(db, login=login[0], password=login[1], role="manager", name=None, now=end)
        return await _summary(db)
    finally:
        await db.dispose()


async def _summary(db: Database) -> DemoResult:
    import sqlalchemy as sa

    from bot.store.tables import answers, surveys

    async with db.read() as conn:
        statuses = (
            await conn.execute(sa.select(surveys.c.status, sa.func.count()).group_by(surveys.c.status))
        ).all()
        count = (await conn.execute(sa.select(sa.func.count()).select_from(answers))).scalar_one()
        first, last = (
            await conn.execute(
                sa.select(sa.func.min(surveys.c.created_at), sa.func.max(surveys.c.created_at))
            )
        ).one()
    found = Counter({str(status): int(n) for status, n in statuses})
    return DemoResult(
        surveys=sum(found.values()),
        answers=int(count),
        statuses=found,
        first_day=first.date() if first else None,
        last_day=last.date() if last else None,
    )
