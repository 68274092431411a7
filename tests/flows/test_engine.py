"""The conversation engine: pure steps from (flow, state, reply, now) to prompts and answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flows import engine
from flows.engine import Reply, State
from flows.loader import load_flow_text, load_flows
from flows.schema import Flow

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
FLOWS = load_flows()

SMALL = """
id: small
version: 1
languages: [de, en]
default_language: en
max_reprompts: 1
texts:
  de: {intro: Hallo, thanks: Danke, reprompt: "Bitte {min} bis {max}.", expired: Abgelaufen, stopped: Beendet}
  en: {intro: Hello, thanks: Thanks, reprompt: "Please {min} to {max}.", expired: Expired, stopped: Stopped}
questions:
  - id: grade
    kind: rating
    metric: csat
    scale: {min: 1, max: 5, best: low}
    prompt: {de: "Note?", en: "Grade?"}
  - id: why
    kind: text
    optional: true
    ask_if: {question: grade, gte: 4}
    prompt: {de: "Warum?", en: "Why?"}
  - id: more
    kind: text
    prompt: {de: "Noch etwas?", en: "Anything else?"}
"""


def _walk(flow_id: str, replies: list[str], language: str = "de") -> list[engine.Step]:
    """The steps of a conversation, the survey's status carried along as its column would be."""
    flow = FLOWS[flow_id]
    steps = [engine.start(flow, language)]
    for text in replies:
        last = steps[-1]
        steps.append(_reply(flow, last.state, Reply(text=text), language=language, status=last.status))
    return steps


def _reply(
    flow: Flow,
    state: State,
    reply: Reply,
    *,
    language: str = "en",
    status: str = "active",
    expires_at: datetime | None = NOW + timedelta(hours=48),
) -> engine.Step:
    """``engine.step`` at NOW for a survey with these columns."""
    return engine.step(flow, state, reply, NOW, language=language, status=status, expires_at=expires_at)


def test_start_sends_intro_and_first_question() -> None:
    """Starting a flow yields the intro and the first question with its scale and labels."""
    first = _walk("support-csat", [])[0]
    assert ["intro", "question"] == [p.kind for p in first.prompts]
    question = first.prompts[1]
    assert ("satisfaction", 1, 5, "low") == (
        question.question_id,
        question.scale.min,
        question.scale.max,
        question.scale.best,
    )  # type: ignore[union-attr]
    assert "Sehr zufrieden" == question.labels[1]


def test_support_csat_walkthrough_stores_scores_and_comment() -> None:
    """Answers 2, 1, 2 and a comment complete support-csat with four answers."""
    steps = _walk("support-csat", ["2", "1", "2", "sehr freundlich"])
    answers = [a for s in steps for a in s.answers]
    assert [
        ("satisfaction", 2, None),
        ("resolution", 1, None),
        ("speed", 2, None),
        ("comment", None, "sehr freundlich"),
    ] == [(a.question_id, a.score, a.text) for a in answers]
    assert ("completed", "completed", "thanks") == (
        steps[-1].status,
        steps[-1].outcome,
        steps[-1].prompts[-1].kind,
    )


def test_score_with_words_keeps_the_words_as_comment() -> None:
    """'4 - schnell, aber unfreundlich' stores 4 with the words as that answer's comment."""
    step = _walk("support-csat", ["4 - schnell, aber unfreundlich"])[-1]
    assert [("satisfaction", 4, "schnell, aber unfreundlich")] == [
        (a.question_id, a.score, a.text) for a in step.answers
    ]


def test_invalid_answer_reprompts_with_range_then_moves_on() -> None:
    """An invalid answer gets the reprompt with the valid range; after max_reprompts the question is left unanswered."""
    flow = load_flow_text(SMALL, "small.yaml")
    state = engine.start(flow, "en").state
    first = _reply(flow, state, Reply(text="9"))
    assert ("reprompted", ["reprompt", "question"], "Please 1 to 5.") == (
        first.outcome,
        [p.kind for p in first.prompts],
        first.prompts[0].text,
    )
    second = _reply(flow, first.state, Reply(text="4 oder 5"))
    assert ("gave_up", (), "more") == (second.outcome, second.answers, second.current_question)
    assert "grade" not in second.state.scores


def test_ask_if_asks_follow_up_only_when_condition_holds() -> None:
    """The 'why' question is asked after a grade of 4 or worse, and skipped after a 2."""
    flow = load_flow_text(SMALL, "small.yaml")
    state = engine.start(flow, "en").state
    assert "why" == _reply(flow, state, Reply(text="4")).current_question
    assert "more" == _reply(flow, state, Reply(text="2")).current_question


@pytest.mark.parametrize(
    ("score", "expected"),
    [
        ("10", "promoter"),
        ("9", "promoter"),
        ("8", "passive"),
        ("7", "passive"),
        ("6", "detractor"),
        ("0", "detractor"),
    ],
)
def test_nps_reason_is_worded_by_group(score: str, expected: str) -> None:
    """The NPS follow-up uses the promoter, passive or detractor wording that matches the score."""
    flow = FLOWS["nps"]
    variants = flow.question("reason").variants
    wording = {
        "promoter": variants[0].prompt["en"],
        "passive": variants[1].prompt["en"],
        "detractor": variants[2].prompt["en"],
    }
    step = _walk("nps", [score], language="en")[-1]
    assert wording[expected] == step.prompts[-1].text


def test_optional_question_can_be_skipped() -> None:
    """'skip' on an optional question moves on without storing an answer."""
    flow = load_flow_text(SMALL, "small.yaml")
    state = _reply(flow, engine.start(flow, "en").state, Reply(text="5")).state
    skipped = _reply(flow, state, Reply(command="skip"))
    assert ("skipped", (), "more") == (skipped.outcome, skipped.answers, skipped.current_question)


def test_required_question_cannot_be_skipped() -> None:
    """'skip' on a required rating question is an invalid answer, not a skip."""
    flow = load_flow_text(SMALL, "small.yaml")
    step = _reply(flow, engine.start(flow, "en").state, Reply(text="skip"))
    assert "reprompted" == step.outcome


@pytest.mark.parametrize("word", ["stop", "abbrechen", "cancel", "Abbrechen!"])
def test_stop_words_end_the_survey(word: str) -> None:
    """Stop words end the survey with the stopped text and store nothing."""
    step = _walk("support-csat", [word])[-1]
    expected = ("stopped", "stopped", (), FLOWS["support-csat"].texts["de"].stopped)
    assert expected == (step.status, step.outcome, step.answers, step.prompts[0].text)


def test_expired_survey_answers_with_expired_text() -> None:
    """A reply at or after expires_at gets the expired text and no answer is stored."""
    flow = FLOWS["ces"]
    state = engine.start(flow, "en").state
    step = _reply(flow, state, Reply(text="7"), expires_at=NOW)
    assert ("expired", state, (), flow.texts["en"].expired) == (
        step.status,
        step.state,
        step.answers,
        step.prompts[0].text,
    )


def test_survey_expired_by_its_status_answers_with_expired_text() -> None:
    """A survey whose status is already `expired` gets the expired text, whatever its expiry time."""
    flow = FLOWS["ces"]
    step = _reply(flow, engine.start(flow, "de").state, Reply(text="7"), language="de", status="expired")
    assert ("expired", "expired", (), flow.texts["de"].expired) == (
        step.outcome,
        step.status,
        step.answers,
        step.prompts[0].text,
    )


@pytest.mark.parametrize("status", ["incomplete", "stopped", "pending", "unavailable"])
def test_survey_not_active_is_closed_and_unchanged(status: str) -> None:
    """A survey whose status is not `active` (closed from outside, or not sent) is `closed`: no answer, no prompt."""
    flow = FLOWS["ces"]
    state = engine.start(flow, "en").state
    step = _reply(flow, state, Reply(text="6"), status=status)
    assert ("closed", status, state, (), ()) == (
        step.outcome,
        step.status,
        step.state,
        step.answers,
        step.prompts,
    )
    assert () == engine.resume(flow, state, language="en", status=status)
    assert None is engine.current_question(flow, state, status=status)


def test_finished_survey_ignores_further_replies() -> None:
    """A reply to a completed survey is 'closed' and changes nothing."""
    final = _walk("ces", ["6", "alles gut"])[-1]
    again = _reply(FLOWS["ces"], final.state, Reply(text="1"), language="de", status=final.status)
    assert ("closed", "completed", final.state, ()) == (
        again.outcome,
        again.status,
        again.state,
        again.answers,
    )


def test_choice_outside_scale_is_rejected() -> None:
    """A button or keypad choice outside the scale is treated as invalid."""
    flow = FLOWS["ces"]
    step = _reply(flow, engine.start(flow, "de").state, Reply(choice=8))
    assert ("reprompted", ()) == (step.outcome, step.answers)


def test_language_falls_back_to_flow_default() -> None:
    """An unsupported language gives the flow's default; 'en-GB' gives English."""
    flow = FLOWS["nps"]
    assert ("de", "en") == (flow.language_for("fr"), flow.language_for("en-GB"))
    assert (flow.texts["de"].intro, flow.texts["en"].intro) == (
        engine.start(flow, "fr").prompts[0].text,
        engine.start(flow, "en-GB").prompts[0].text,
    )


def test_state_round_trips_through_json() -> None:
    """A state saved as JSON and read back is the same state."""
    state = _walk("nps", ["3"])[-1].state
    assert state == State.from_json(state.to_json())


@given(
    flow_id=st.sampled_from(sorted(FLOWS)),
    replies=st.lists(
        st.one_of(
            st.text(max_size=200),
            st.binary(max_size=60).map(lambda b: b.decode("utf-8", "surrogateescape")),
            st.integers(-3, 14).map(str),
        ),
        max_size=8,
    ),
)
def test_engine_never_raises_and_keeps_answers_in_range(flow_id: str, replies: list[str]) -> None:
    """No sequence of replies makes the engine raise, and every stored score lies on its question's scale."""
    flow = FLOWS[flow_id]
    start = engine.start(flow, "de")
    state, status = start.state, start.status
    for text in replies:
        step = _reply(flow, state, Reply(text=text), language="de", status=status)
        for answer in step.answers:
            scale = flow.question(answer.question_id).answer_scale
            assert answer.score is None or (scale is not None and scale.contains(answer.score))
        assert State.from_json(step.state.to_json()) == step.state
        assert step.status in ("active", "completed", "stopped")
        state, status = step.state, step.status


@pytest.mark.parametrize("flow_id", sorted(FLOWS))
@pytest.mark.parametrize("language", ["de", "en"])
def test_builtin_intro_keeps_the_stop_hint_apart(flow_id: str, language: str) -> None:
    """A built-in intro says nothing of "stop"; its stop hint follows only in the typed text."""
    flow = FLOWS[flow_id]
    intro = engine.start(flow, language).prompts[0]
    hint = flow.texts[language].stop_hint
    assert hint is not None
    assert ("intro", False, f"{flow.texts[language].intro} {hint}", True) == (
        intro.kind,
        "stop" in intro.text.lower(),
        intro.typed_text,
        '"stop"' in hint,
    )


def test_stop_hint_is_only_on_the_intro() -> None:
    """Questions, reprompts and thanks carry no stop hint: their typed text is their text."""
    steps = _walk("support-csat", ["x", "2", "1", "2", "gut"], "en")
    later = [p for s in steps for p in s.prompts if p.kind != "intro"]
    assert [] == [p for p in later if p.stop_hint is not None or p.typed_text != p.text]


def test_flow_whose_intro_says_stop_itself_still_works() -> None:
    """An older flow without stop_hint, whose intro names "stop" itself, loads and shows the intro as written."""
    old = SMALL.replace("intro: Hello,", "intro: 'Hello! Reply \"stop\" to end the survey at any time.',")
    flow = load_flow_text(old, "old.yaml")
    intro = engine.start(flow, "en").prompts[0]
    assert ('Hello! Reply "stop" to end the survey at any time.',) * 2 == (intro.text, intro.typed_text)


def test_state_names_its_question_by_id() -> None:
    """The saved state holds the current question's id, not its position in the flow."""
    flow = FLOWS["support-csat"]
    saved = engine.start(flow, "en").state.to_json()
    assert ("satisfaction", False) == (saved["question"], "position" in saved)


def test_state_holds_only_the_conversation() -> None:
    """The saved state has no lifecycle (language, status, expiry: the survey's columns)."""
    saved = _walk("support-csat", ["2"])[-1].state.to_json()
    assert ["attempts", "question", "scores"] == sorted(saved)


def test_a_state_saved_with_its_lifecycle_still_loads() -> None:
    """An older state that also holds language, status and expires_at loads; those keys are ignored."""
    flow = FLOWS["support-csat"]
    old = {
        "language": "de",
        "question": "speed",
        "attempts": 1,
        "scores": {"satisfaction": 2},
        "status": "active",
        "expires_at": "2026-11-25T10:00:00+00:00",
    }
    assert State("speed", 1, {"satisfaction": 2}) == State.from_json(old, flow)


def test_a_state_saved_with_a_position_is_resolved_with_its_flow() -> None:
    """An older state's `position` names the question at that place in the flow given; None past the end."""
    flow = FLOWS["support-csat"]
    old = {"language": "de", "position": 2, "attempts": 1, "scores": {"satisfaction": 2, "resolution": 1}}
    assert "speed" == State.from_json(old, flow).question
    assert None is State.from_json({**old, "position": 4}, flow).question
    with pytest.raises(ValueError, match="needs its flow"):
        State.from_json(old)
