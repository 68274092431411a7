"""The conversation engine: a pure state machine from (flow, state, reply, now) to a step.

It does no I/O and reads no clock: the caller passes ``now`` and stores the returned
state. Every channel goes through ``start`` and ``step``; the prompts it returns are
channel-neutral, and each channel renders them its own way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from flows.parser import is_skip, is_stop, parse_score
from flows.schema import Flow, Metric, Question, Scale

Status = Literal["active", "completed", "stopped", "expired"]
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
    """Where a conversation stands; saved as JSON between messages.

    ``question`` is the id of the question awaiting an answer (None once none is): an id,
    not a position, so the state means the same in every version of its flow that has it.
    """

    language: str
    question: str | None = None
    attempts: int = 0
    scores: Mapping[str, int | None] = field(default_factory=dict)
    status: Status = "active"
    expires_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of this state."""
        return {
            "language": self.language,
            "question": self.question,
            "attempts": self.attempts,
            "scores": dict(self.scores),
            "status": self.status,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], flow: Flow | None = None) -> State:
        """The state saved by ``to_json``.

        A state saved before questions were named by id holds a ``position`` (an index into
        the flow's questions): it is resolved with ``flow``, which must then be the flow
        version the survey started on. Without the flow such a state is refused (ValueError).
        """
        expires = data.get("expires_at")
        if "question" in data:
            question = data["question"]
            question = None if question is None else str(question)
        elif flow is not None:
            position = int(data.get("position", 0))
            question = flow.questions[position].id if 0 <= position < len(flow.questions) else None
        else:
            raise ValueError("a state saved with a position needs its flow to name the question")
        return cls(
            language=str(data["language"]),
            question=question,
            attempts=int(data.get("attempts", 0)),
            scores=dict(data.get("scores", {})),
            status=data.get("status", "active"),
            expires_at=datetime.fromisoformat(expires) if expires else None,
        )


@dataclass(frozen=True)
class Step:
    """The result of one engine call: the new state, answers to store, prompts to send."""

    state: State
    answers: tuple[Answer, ...]
    prompts: tuple[Prompt, ...]
    outcome: Outcome

    @property
    def current_question(self) -> str | None:
        """The id of the question now awaiting an answer, if any."""
        for prompt in reversed(self.prompts):
            if prompt.kind == "question":
                return prompt.question_id
        return None


def start(flow: Flow, language: str | None, expires_at: datetime | None = None) -> Step:
    """Open a conversation: the intro and the first question to ask."""
    state = State(language=flow.language_for(language), expires_at=expires_at)
    state = _advance(flow, state, from_index=0)
    prompts = (intro(flow, state.language), *_ask_or_finish(flow, state))
    return Step(_finished(flow, state), (), prompts, "started")


def intro(flow: Flow, language: str) -> Prompt:
    """The intro in ``language``, with the flow's stop hint for the channels where one types."""
    texts = flow.texts[language]
    return Prompt("intro", texts.intro, stop_hint=texts.stop_hint)


def resume(flow: Flow, state: State) -> tuple[Prompt, ...]:
    """The prompt to show again when a paused conversation is picked up."""
    if state.status != "active":
        return ()
    return _ask_or_finish(flow, state)


def step(flow: Flow, state: State, reply: Reply, now: datetime) -> Step:
    """Take the customer's reply to the current question and move the conversation on."""
    texts = flow.texts[state.language]
    if state.status == "expired" or (
        state.status == "active" and state.expires_at is not None and now >= state.expires_at
    ):
        return Step(replace(state, status="expired"), (), (Prompt("expired", texts.expired),), "expired")
    index = _index(flow, state)
    if state.status != "active" or index is None:
        return Step(state, (), (), "closed")

    if reply.command == "stop" or (reply.text is not None and is_stop(reply.text)):
        stopped = replace(state, status="stopped")
        return Step(stopped, (), (Prompt("stopped", texts.stopped),), "stopped")

    question = flow.questions[index]
    skipping = reply.command == "skip" or (reply.text is not None and is_skip(reply.text))
    if skipping and question.optional:
        return _move_on(flow, state, (), "skipped")

    answer = _read(question, reply, state.language, now)
    if answer is not None:
        scores = {**state.scores, question.id: answer.score}
        return _move_on(flow, replace(state, scores=scores), (answer,), "answered")

    if state.attempts >= flow.max_reprompts:
        return _move_on(flow, state, (), "gave_up")
    again = replace(state, attempts=state.attempts + 1)
    scale = question.answer_scale
    text = (
        texts.reprompt.format(min=scale.min, max=scale.max)
        if scale
        else question.text_for(again.language, again.scores)
    )
    prompts = (Prompt("reprompt", text), _question_prompt(question, again))
    return Step(again, (), prompts, "reprompted")


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
    parsed = parse_score(reply.text or "", scale.min, scale.max, labels, scale.best)
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


def current_question(flow: Flow, state: State) -> str | None:
    """The id of the question awaiting an answer: None when the conversation is over."""
    return flow.questions[index].id if (index := _index(flow, state)) is not None else None


def _index(flow: Flow, state: State) -> int | None:
    """The position of the state's question in ``flow``; None when there is none (or the flow lacks it)."""
    if state.question is None or state.status != "active":
        return None
    for i, question in enumerate(flow.questions):
        if question.id == state.question:
            return i
    return None


def _move_on(flow: Flow, state: State, answers: tuple[Answer, ...], outcome: Outcome) -> Step:
    index = _index(flow, state)
    nxt = _advance(
        flow, replace(state, attempts=0), from_index=len(flow.questions) if index is None else index + 1
    )
    prompts = _ask_or_finish(flow, nxt)
    done = _finished(flow, nxt)
    return Step(done, answers, prompts, "completed" if done.status == "completed" else outcome)


def _advance(flow: Flow, state: State, from_index: int) -> State:
    """The state at the first question from ``from_index`` on whose ``ask_if`` holds (None: past the end)."""
    for question in flow.questions[from_index:]:
        if question.ask_if is None or question.ask_if.holds(state.scores):
            return replace(state, question=question.id)
    return replace(state, question=None)


def _finished(flow: Flow, state: State) -> State:
    if state.question is None and state.status == "active":
        return replace(state, status="completed")
    return state


def _ask_or_finish(flow: Flow, state: State) -> tuple[Prompt, ...]:
    if state.question is None:
        return (Prompt("thanks", flow.texts[state.language].thanks),)
    index = _index(flow, state)
    return () if index is None else (_question_prompt(flow.questions[index], state),)


def _question_prompt(question: Question, state: State) -> Prompt:
    return Prompt(
        kind="question",
        text=question.text_for(state.language, state.scores),
        question_id=question.id,
        scale=question.answer_scale,
        labels=question.labels.get(state.language, {}),
        optional=question.optional,
    )
