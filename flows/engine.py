"""The conversation engine: a pure state machine from (flow, state, reply, now) to a step.

It does no I/O and reads no clock: the caller passes ``now`` and the survey's lifecycle
(language, status, expiry: its columns) and stores the returned state and status. Every channel goes through ``start`` and ``step``; the prompts it returns are
channel-neutral, and each channel renders them its own way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from flows.parser import is_skip, is_stop, parse_score
from flows.schema import Flow, Metric, Question, Scale

# The survey statuses the engine reads and sets (the values of bot.lifecycle.SurveyStatus);
# the survey's status column holds them, never the state.
Status = Literal["active", "completed", "stopped", "expired"]
ACTIVE: Status = "active"
COMPLETED: Status = "completed"
STOPPED: Status = "stopped"
EXPIRED: Status = "expired"
PromptKind = Literal["intro", "question", "reprompt", "thanks", "stopped", "expired"]
Outcome = Literal[
    "started", "answered", "skipped", "gave_up", "reprompted", "completed", "stopped", "expired", "closed"
]

MAX_TEXT = 4000  # longest comment we keep; SMS and Telegram never come close, pastes might


@dataclass(frozen=True)
class Reply:
    """What the customer sent: free text, a choice (button, keypad) or a command."""

    text: str | None = None
    choice: int | None = None
    command: Literal["skip", "stop"] | None = None


@dataclass(frozen=True)
class Prompt:
    """Something to show the customer; for ``question`` prompts, the question's shape too."""

    kind: PromptKind
    text: str
    question_id: str | None = None
    scale: Scale | None = None
    labels: Mapping[int, str] = field(default_factory=dict)
    optional: bool = False
    stop_hint: str | None = None  # only on the intro; see ``typed_text``

    @property
    def typed_text(self) -> str:
        """The text for a channel where the customer types a reply: the stop hint after the intro.

        SMS, WhatsApp, Telegram and the terminal show this; the web page and a call show
        ``text`` alone, because there nobody replies "stop".
        """
        return f"{self.text} {self.stop_hint}" if self.stop_hint else self.text


@dataclass(frozen=True)
class Answer:
    """One answer to store: a score, a comment, or both."""

    question_id: str
    metric: Metric | None
    score: int | None
    text: str | None
    answered_at: datetime
    scale: Scale | None = None


@dataclass(frozen=True)
class State:
    """Where a conversation stands; saved as JSON between messages (the survey's ``state``).

    Only the conversation: the question awaiting an answer, the attempts at it and the
    scores so far. The lifecycle (status, language, expiry) lives in the survey's columns,
    and the caller passes it to ``step`` and ``resume``.

    ``question`` is the id of the question awaiting an answer (None once none is): an id,
    not a position, so the state means the same in every version of its flow that has it.
    """

    question: str | None = None
    attempts: int = 0
    scores: Mapping[str, int | None] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of this state."""
        return {"question": self.question, "attempts": self.attempts, "scores": dict(self.scores)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], flow: Flow | None = None) -> State:
        """The state saved by ``to_json``.

        A state saved before holds ``language``, ``status`` and ``expires_at`` too: they are
        ignored (they always equalled the survey's columns, which are the truth). A state
        saved before questions were named by id holds a ``position`` (an index into the
        flow's questions): it is resolved with ``flow``, which must then be the flow version
        the survey started on. Without the flow such a state is refused (ValueError).
        """
        if "question" in data:
            question = data["question"]
            question = None if question is None else str(question)
        elif flow is not None:
            position = int(data.get("position", 0))
            question = flow.questions[position].id if 0 <= position < len(flow.questions) else None
        else:
            raise ValueError("a state saved with a position needs its flow to name the question")
        return cls(
            question=question, attempts=int(data.get("attempts", 0)), scores=dict(data.get("scores", {}))
        )


@dataclass(frozen=True)
class Step:
    """The result of one engine call: the new state, answers to store, prompts to send, the new status.

    ``status`` is the survey's status after the step: the one passed in, or ``completed``,
    ``stopped`` or ``expired`` when the step ended the conversation.
    """

    state: State
    answers: tuple[Answer, ...]
    prompts: tuple[Prompt, ...]
    outcome: Outcome
    status: str

    @property
    def current_question(self) -> str | None:
        """The id of the question now awaiting an answer, if any."""
        for prompt in reversed(self.prompts):
            if prompt.kind == "question":
                return prompt.question_id
        return None


def start(flow: Flow, language: str | None) -> Step:
    """Open a conversation: the intro and the first question to ask.

    The prompts are in ``flow.language_for(language)``, the language the caller stores.
    """
    language = flow.language_for(language)
    state = _advance(flow, State(), from_index=0)
    status = _status_after(state)
    prompts = (intro(flow, language), *_ask_or_finish(flow, state, language))
    return Step(state, (), prompts, "started", status)


def intro(flow: Flow, language: str) -> Prompt:
    """The intro in ``language``, with the flow's stop hint for the channels where one types."""
    texts = flow.texts[language]
    return Prompt("intro", texts.intro, stop_hint=texts.stop_hint)


def resume(flow: Flow, state: State, *, language: str, status: str) -> tuple[Prompt, ...]:
    """The prompt to show again when a paused conversation is picked up (none unless ``active``)."""
    if status != ACTIVE:
        return ()
    return _ask_or_finish(flow, state, language)


def step(
    flow: Flow,
    state: State,
    reply: Reply,
    now: datetime,
    *,
    language: str,
    status: str,
    expires_at: datetime | None,
) -> Step:
    """Take the customer's reply to the current question and move the conversation on.

    ``language``, ``status`` and ``expires_at`` are the survey's (its columns). A survey
    ``expired``, or ``active`` with ``now`` at or past ``expires_at``, gets the expired
    text; any other status but ``active`` is ``closed`` and changes nothing.
    """
    texts = flow.texts[language]
    if status == EXPIRED or (status == ACTIVE and expires_at is not None and now >= expires_at):
        return Step(state, (), (Prompt("expired", texts.expired),), "expired", EXPIRED)
    index = _index(flow, state)
    if status != ACTIVE or index is None:
        return Step(state, (), (), "closed", status)

    if reply.command == "stop" or (reply.text is not None and is_stop(reply.text)):
        return Step(state, (), (Prompt("stopped", texts.stopped),), "stopped", STOPPED)

    question = flow.questions[index]
    skipping = reply.command == "skip" or (reply.text is not None and is_skip(reply.text))
    if skipping and question.optional:
        return _move_on(flow, state, language, (), "skipped")

    answer = _read(question, reply, language, now)
    if answer is not None:
        scores = {**state.scores, question.id: answer.score}
        return _move_on(flow, replace(state, scores=scores), language, (answer,), "answered")

    if state.attempts >= flow.max_reprompts:
        return _move_on(flow, state, language, (), "gave_up")
    again = replace(state, attempts=state.attempts + 1)
    scale = question.answer_scale
    text = (
        texts.reprompt.format(min=scale.min, max=scale.max)
        if scale
        else question.text_for(language, again.scores)
    )
    prompts = (Prompt("reprompt", text), _question_prompt(question, again, language))
    return Step(again, (), prompts, "reprompted", ACTIVE)


def _read(question: Question, reply: Reply, language: str, now: datetime) -> Answer | None:
    """The answer in ``reply``, or None when it does not answer ``question``."""
    scale = question.answer_scale
    if scale is None:
        text = (reply.text or "").strip()
        if not text:
            return None
        return Answer(question.id, question.metric, None, text[:MAX_TEXT], now, None)
    if reply.choice is not None:
        if not scale.contains(reply.choice):
            return None
        return Answer(question.id, question.metric, reply.choice, None, now, scale)
    labels = question.labels.get(language, {})
    parsed = parse_score(reply.text or "", scale.min, scale.max, labels, scale.best, language=language)
    if parsed.score is None:
        return None
    comment = parsed.comment[:MAX_TEXT] if parsed.comment else None
    return Answer(question.id, question.metric, parsed.score, comment, now, scale)


def started(flow: Flow, state: State) -> bool:
    """Whether the conversation got past its first question (answered, skipped or finished).

    Every conversation starts with the flow's first question: it cannot have an ``ask_if``,
    as a condition may only name an earlier question.
    """
    return bool(state.scores) or state.question != flow.questions[0].id


def current_question(flow: Flow, state: State, *, status: str) -> str | None:
    """The id of the question awaiting an answer: None when the conversation is over (or not ``active``)."""
    if status != ACTIVE:
        return None
    return flow.questions[index].id if (index := _index(flow, state)) is not None else None


def _index(flow: Flow, state: State) -> int | None:
    """The position of the state's question in ``flow``; None when there is none (or the flow lacks it)."""
    if state.question is None:
        return None
    for i, question in enumerate(flow.questions):
        if question.id == state.question:
            return i
    return None


def _move_on(flow: Flow, state: State, language: str, answers: tuple[Answer, ...], outcome: Outcome) -> Step:
    index = _index(flow, state)
    nxt = _advance(
        flow, replace(state, attempts=0), from_index=len(flow.questions) if index is None else index + 1
    )
    prompts = _ask_or_finish(flow, nxt, language)
    status = _status_after(nxt)
    return Step(nxt, answers, prompts, "completed" if status == COMPLETED else outcome, status)


def _advance(flow: Flow, state: State, from_index: int) -> State:
    """The state at the first question from ``from_index`` on whose ``ask_if`` holds (None: past the end)."""
    for question in flow.questions[from_index:]:
        if question.ask_if is None or question.ask_if.holds(state.scores):
            return replace(state, question=question.id)
    return replace(state, question=None)


def _status_after(state: State) -> Status:
    """``completed`` once no question is left to ask, else ``active``."""
    return COMPLETED if state.question is None else ACTIVE


def _ask_or_finish(flow: Flow, state: State, language: str) -> tuple[Prompt, ...]:
    if state.question is None:
        return (Prompt("thanks", flow.texts[language].thanks),)
    index = _index(flow, state)
    return () if index is None else (_question_prompt(flow.questions[index], state, language),)


def _question_prompt(question: Question, state: State, language: str) -> Prompt:
    return Prompt(
        kind="question",
        text=question.text_for(language, state.scores),
        question_id=question.id,
        scale=question.answer_scale,
        labels=question.labels.get(language, {}),
        optional=question.optional,
    )
