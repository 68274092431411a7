"""Tests for flows.loader: built-in flows load cleanly, broken flows are reported by field and line."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from flows.errors import FlowInvalid, FlowIssue, UnknownFlow
from flows.loader import (
    builtin_flow_paths,
    check_paths,
    get_flow,
    load_flow_file,
    load_flow_text,
    load_flows,
    load_yaml,
)

SRC = "demo.yaml"

# A small valid flow; the tests below break one thing in it at a known line.
BASE = """\
id: demo
version: 1
languages: [de, en]
default_language: de
texts:
  de: {intro: Hallo, thanks: Danke, reprompt: "{min} bis {max}", expired: Vorbei, stopped: Beendet}
  en: {intro: Hello, thanks: Thanks, reprompt: "{min} to {max}", expired: Over, stopped: Stopped}
questions:
  - id: score
    kind: rating
    scale: {min: 1, max: 5, best: low}
    prompt: {de: "Wie war es?", en: "How was it?"}
    labels:
      de: {1: sehr gut, 5: schlecht}
  - id: why
    kind: text
    optional: true
    prompt: {de: "Warum?", en: "Why?"}
"""


def edited(old: str, new: str) -> str:
    """BASE with the single occurrence of ``old`` replaced by ``new``."""
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def issues_of(text: str) -> list[FlowIssue]:
    """The issues load_flow_text reports for ``text``, which must be invalid."""
    with pytest.raises(FlowInvalid) as caught:
        load_flow_text(text, SRC)
    assert caught.value.source == SRC
    return caught.value.issues


# --- built-in flows ---------------------------------------------------------------------


def test_builtin_flow_paths_lists_the_shipped_yaml_files() -> None:
    """The three built-in flows are found next to the package, sorted."""
    assert [p.name for p in builtin_flow_paths()] == ["ces.yaml", "nps.yaml", "support-csat.yaml"]


@pytest.mark.parametrize("path", builtin_flow_paths(), ids=lambda p: p.stem)
def test_builtin_flow_loads_without_issues(path: pathlib.Path) -> None:
    """Each built-in flow loads and check_paths finds nothing wrong with it."""
    flow = load_flow_file(path)
    assert flow.languages == ("de", "en")
    assert flow.default_language == "de"
    assert check_paths([path]) == []


def test_builtin_directory_checks_clean_as_a_whole() -> None:
    """check_paths on the built-in directory reports no issues and no duplicate ids."""
    assert check_paths([builtin_flow_paths()[0].parent]) == []


def test_builtin_reprompts_name_the_scale_bounds() -> None:
    """Every reprompt of every built-in flow can say which numbers are allowed."""
    for flow in load_flows().values():
        for texts in flow.texts.values():
            assert "{min}" in texts.reprompt
            assert "{max}" in texts.reprompt


def test_support_csat_asks_the_seed_questions_in_order() -> None:
    """support-csat asks satisfaction, resolution, speed on 1-5 (1 best), then an optional comment."""
    flow = load_flows()["support-csat"]
    assert [q.id for q in flow.questions] == ["satisfaction", "resolution", "speed", "comment"]
    for q in flow.questions[:3]:
        assert (q.kind, q.metric) == ("rating", "csat")
        assert q.scale is not None
        assert (q.scale.min, q.scale.max, q.scale.best) == (1, 5, "low")
    comment = flow.question("comment")
    assert (comment.kind, comment.optional) == ("text", True)


def test_support_csat_uses_the_seed_wording() -> None:
    """The German prompts and end labels are the seed article's, word for word."""
    flow = load_flows()["support-csat"]
    satisfaction, resolution, speed = flow.questions[:3]
    assert satisfaction.prompt["de"] == "Wie zufrieden waren Sie mit unserem Kundenservice?"
    assert resolution.prompt["de"] == "Konnte unser Kundenservice Ihr Problem lösen?"
    assert speed.prompt["de"] == "Wie schnell konnten wir Ihr Anliegen abschließend bearbeiten?"
    assert satisfaction.labels["de"][1] == "Sehr zufrieden"
    assert resolution.labels["de"] == {
        1: "Zu 100%",
        2: "Zu 75%",
        3: "Zu 50%",
        4: "Zu 25%",
        5: "Gar nicht gelöst",
    }
    assert (speed.labels["de"][1], speed.labels["de"][5]) == ("Schneller als erwartet", "Katastrophe")


def test_nps_reason_wording_follows_the_score() -> None:
    """The nps follow-up speaks to promoters, passives and detractors differently."""
    reason = load_flows()["nps"].question("reason")
    wordings = {score: reason.text_for("en", {"recommend": score}) for score in (10, 9, 8, 7, 6, 0)}
    assert wordings[10] == wordings[9]
    assert wordings[8] == wordings[7]
    assert wordings[6] == wordings[0]
    assert len({wordings[10], wordings[8], wordings[6], reason.prompt["en"]}) == 4
    assert reason.ask_if is not None
    assert not reason.ask_if.holds({"recommend": None})


def test_ces_is_seven_points_high_best() -> None:
    """ces rates effort on 1-7 with 7 best and labels every point in both languages."""
    effort = load_flows()["ces"].question("effort")
    assert effort.scale is not None
    assert (effort.metric, effort.scale.min, effort.scale.max, effort.scale.best) == ("ces", 1, 7, "high")
    assert sorted(effort.labels["de"]) == sorted(effort.labels["en"]) == list(range(1, 8))


# --- valid input --------------------------------------------------------------------------


def test_base_flow_loads_with_integer_label_keys() -> None:
    """A valid flow loads and integer YAML keys in labels become int label values."""
    flow = load_flow_text(BASE, SRC)
    assert flow.question("score").labels == {"de": {1: "sehr gut", 5: "schlecht"}}


def test_quoted_label_keys_are_accepted() -> None:
    """Label keys written as strings ('1') are read as the same integers."""
    flow = load_flow_text(edited("{1: sehr gut, 5: schlecht}", '{"1": sehr gut, "5": schlecht}'), SRC)
    assert flow.question("score").labels["de"] == {1: "sehr gut", 5: "schlecht"}


# --- broken flows: cross-field rules ------------------------------------------------------


def test_ask_if_naming_an_unknown_question_is_reported() -> None:
    """An ask_if on a question that does not exist names ask_if.question and its line."""
    text = BASE + "    ask_if: {question: nope, gte: 1}\n"
    why = "'nope' is an unknown question; a condition may only name an earlier question"
    assert issues_of(text) == [FlowIssue(SRC, 19, "questions[1].ask_if.question", why)]


def test_ask_if_naming_a_later_question_is_reported() -> None:
    """An ask_if on a question asked later names ask_if.question and its line."""
    text = edited("    labels:\n", "    ask_if:\n      question: why\n      gte: 1\n    labels:\n")
    why = "'why' is a later question; a condition may only name an earlier question"
    assert issues_of(text) == [FlowIssue(SRC, 14, "questions[0].ask_if.question", why)]


def test_ask_if_naming_its_own_question_is_reported() -> None:
    """An ask_if on the question it belongs to says so, rather than calling it a later question."""
    text = BASE + "    ask_if: {question: why, gte: 1}\n"
    why = "'why' is the question itself; a condition may only name an earlier question"
    assert issues_of(text) == [FlowIssue(SRC, 19, "questions[1].ask_if.question", why)]


def test_reprompt_with_an_unknown_placeholder_is_reported() -> None:
    """A reprompt using a placeholder other than {min} and {max} is caught before it fails at run time."""
    text = edited('reprompt: "{min} to {max}"', 'reprompt: "{min} to {maximum}"')
    [issue] = issues_of(text)
    assert (7, "texts.en.reprompt") == (issue.line, issue.field)
    assert issue.message.startswith("may use only the placeholders {min} and {max}")


@pytest.mark.parametrize(
    ("languages", "message"),
    [
        ("[de, EN]", "'EN' is not a two-letter lower-case language code such as de or en"),
        ("[de, de]", "languages ['de', 'de'] name a language twice"),
    ],
)
def test_bad_language_list_is_reported(languages: str, message: str) -> None:
    """Language codes must be two lower-case letters, each named once."""
    issues = issues_of(edited("languages: [de, en]", f"languages: {languages}"))
    assert (3, "languages", True) == (issues[0].line, issues[0].field, message in issues[0].message)


def test_label_outside_the_scale_is_reported() -> None:
    """A label for a value the scale does not have names that label and its line."""
    text = edited("5: schlecht}", "5: schlecht}\n      en:\n        1: very good\n        6: bad")
    why = "label 6 is outside the scale 1-5"
    assert issues_of(text) == [FlowIssue(SRC, 17, "questions[0].labels.en[6]", why)]


def test_missing_texts_for_a_declared_language_are_reported() -> None:
    """A declared language without texts is reported at the texts key."""
    text = edited(
        '  en: {intro: Hello, thanks: Thanks, reprompt: "{min} to {max}", expired: Over, stopped: Stopped}\n',
        "",
    )
    assert issues_of(text) == [FlowIssue(SRC, 5, "texts", "missing texts for declared language 'en'")]


def test_missing_prompt_for_a_declared_language_is_reported() -> None:
    """A prompt lacking a declared language is reported at that question's prompt."""
    text = edited('prompt: {de: "Warum?", en: "Why?"}', 'prompt: {de: "Warum?"}')
    why = "missing prompt for declared language 'en'"
    assert issues_of(text) == [FlowIssue(SRC, 18, "questions[1].prompt", why)]


def test_duplicate_question_id_is_reported() -> None:
    """Two questions with one id are reported at the second id."""
    text = edited("- id: why", "- id: score")
    why = "duplicate question id 'score' (first at question 1)"
    assert issues_of(text) == [FlowIssue(SRC, 15, "questions[1].id", why)]


def test_rating_without_scale_is_reported() -> None:
    """A rating question without a scale is reported at its kind."""
    text = edited("    scale: {min: 1, max: 5, best: low}\n", "").replace(
        "    labels:\n      de: {1: sehr gut, 5: schlecht}\n", ""
    )
    why = "a rating question needs a scale (min, max, best)"
    assert issues_of(text) == [FlowIssue(SRC, 10, "questions[0].kind", why)]


# --- broken flows: field rules ------------------------------------------------------------


def test_misspelled_kind_lists_the_allowed_kinds() -> None:
    """A misspelled kind names the field, the allowed kinds and what was given."""
    text = edited("kind: text", "kind: txt")
    why = "must be one of rating, nps, text (got 'txt')"
    assert issues_of(text) == [FlowIssue(SRC, 16, "questions[1].kind", why)]


def test_unknown_extra_field_is_named_with_a_suggestion() -> None:
    """An unknown field is named, with the closest allowed field and the full allowed list."""
    text = edited("    optional: true\n", "    optional: true\n    promt: x\n")
    [issue] = issues_of(text)
    assert (issue.line, issue.field) == (18, "questions[1].promt")
    assert issue.message.startswith("unknown field 'promt' (did you mean 'prompt'? allowed: id, kind, ")


def test_unknown_field_in_texts_lists_the_text_names() -> None:
    """An unknown key among a language's texts lists the six text names."""
    text = edited("stopped: Beendet}", "stopped: Beendet, bye: Tschüss}")
    [issue] = issues_of(text)
    assert (issue.line, issue.field) == (6, "texts.de.bye")
    assert (
        issue.message == "unknown field 'bye' (allowed: intro, thanks, reprompt, expired, stopped, stop_hint)"
    )


def test_condition_field_in_is_reported_under_its_yaml_name() -> None:
    """A bad value in a condition's 'in' list is reported as 'in', not the Python name 'in_'."""
    text = BASE + "    ask_if: {question: score, in: [1, x]}\n"
    [issue] = issues_of(text)
    assert (issue.line, issue.field) == (19, "questions[1].ask_if.in[1]")
    assert issue.message.endswith("(got 'x')")


def test_missing_required_field_is_reported_at_its_parent() -> None:
    """A missing required field is named and placed at the line of the item that lacks it."""
    text = edited("    kind: text\n", "")
    assert issues_of(text) == [FlowIssue(SRC, 15, "questions[1].kind", "missing required field 'kind'")]


def test_bad_scale_is_reported_with_the_schema_reason() -> None:
    """A scale with min above max keeps the schema's reason, without pydantic's prefix."""
    text = edited("{min: 1, max: 5, best: low}", "{min: 5, max: 1, best: low}")
    [issue] = issues_of(text)
    assert (issue.line, issue.field, issue.message) == (
        11,
        "questions[0].scale",
        "min (5) must be smaller than max (1)",
    )


def test_invalid_flow_id_explains_the_pattern() -> None:
    """An id that breaks the id pattern is explained in words, not as a regex."""
    [issue] = issues_of(edited("id: demo", "id: Demo"))
    assert (issue.line, issue.field) == (1, "id")
    assert issue.message == "must be a lowercase letter, then up to 63 of a-z, 0-9, '_', '-' (got 'Demo')"


def test_duplicate_yaml_key_is_reported() -> None:
    """A key given twice in one mapping is reported, since YAML would silently keep the last."""
    text = edited("    optional: true\n", "    optional: true\n    optional: false\n")
    assert issues_of(text) == [
        FlowIssue(SRC, 18, "questions[1].optional", "duplicate key 'optional' (first on line 17)")
    ]


def test_every_problem_is_reported_in_line_order() -> None:
    """Several faults in one file are all reported, sorted by line."""
    text = edited("kind: text", "kind: txt").replace("version: 1", "version: 0")
    assert [(i.line, i.field) for i in issues_of(text)] == [(2, "version"), (16, "questions[1].kind")]


def test_schema_and_cross_field_problems_are_reported_in_one_run() -> None:
    """A misspelt kind, a missing translation and a dangling ask_if all come out at once, by line."""
    text = edited("kind: text", "kind: txt").replace(
        'prompt: {de: "Wie war es?", en: "How was it?"}', 'prompt: {de: "Wie?"}'
    )
    text += "  - id: more\n    kind: text\n    prompt: {de: a, en: b}\n    ask_if: {question: nope, gte: 1}\n"
    assert issues_of(text) == [
        FlowIssue(SRC, 12, "questions[0].prompt", "missing prompt for declared language 'en'"),
        FlowIssue(SRC, 16, "questions[1].kind", "must be one of rating, nps, text (got 'txt')"),
        FlowIssue(
            SRC,
            22,
            "questions[2].ask_if.question",
            "'nope' is an unknown question; a condition may only name an earlier question",
        ),
    ]


def test_a_condition_on_a_broken_question_is_judged_by_its_id_and_kind() -> None:
    """A question that fails the schema keeps its id and kind for the conditions that name it."""
    more = "  - id: more\n    kind: text\n    prompt: {de: a, en: b}\n    ask_if: {question: %s, gte: 1}\n"
    rating = edited("kind: rating", "kind: ratin") + more % "score"
    text = edited("    optional: true\n", "    optional: true\n    promt: x\n") + more % "why"
    assert [(10, "questions[0].kind")] == [(i.line, i.field) for i in issues_of(rating)]
    assert [
        (18, "questions[1].promt", "unknown f"),
        (23, "questions[2].ask_if.question", "'why' is "),
    ] == [(i.line, i.field, i.message[:9]) for i in issues_of(text)]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        # A typo in languages is one problem, not one more for every text and prompt.
        ("languages: [de, en]", "languages: [de, EN]", [(3, "languages")]),
        ("languages: [de, en]", "languages: de", [(3, "languages")]),
        # A broken text of one language still counts as that language's texts.
        ("stopped: Beendet}", "stopped: Beendet, bye: x}", [(6, "texts.de.bye")]),
        # With the languages missing, the prompts are judged against the languages of the texts.
        ("languages: [de, en]\n", "", [(1, "languages"), (11, "questions[0].prompt")]),
    ],
)
def test_schema_problems_add_no_cross_field_noise(
    old: str, new: str, expected: list[tuple[int, str]]
) -> None:
    """Problems that only follow from a part the schema refused are not reported on top of it."""
    text = edited(old, new)
    if not new:
        text = text.replace('prompt: {de: "Wie war es?", en: "How was it?"}', 'prompt: {de: "Wie?"}')
    assert expected == [(i.line, i.field) for i in issues_of(text)]


def test_duplicate_flow_id_is_reported_for_an_invalid_copy(tmp_path: pathlib.Path) -> None:
    """A second file with the same id is reported even when it also fails the schema."""
    (tmp_path / "a.yaml").write_text(BASE, encoding="utf-8")
    (tmp_path / "b.yaml").write_text(BASE.replace("version: 1", "version: 0"), encoding="utf-8")
    found = [(i.source, i.line, i.field) for i in check_paths([tmp_path])]
    b = str(tmp_path / "b.yaml")
    assert [(b, 2, "version"), (b, 1, "id")] == found


# --- broken files -------------------------------------------------------------------------


def test_yaml_syntax_error_reports_its_line() -> None:
    """A YAML syntax error is one issue at the line the parser stopped on."""
    [issue] = issues_of(edited("kind: text", "kind: text: oops"))
    assert (issue.line, issue.field) == (16, "")
    assert issue.message.startswith("invalid YAML: mapping values are not allowed here")


def test_empty_file_is_one_clear_issue(tmp_path: pathlib.Path) -> None:
    """An empty file is reported as empty, with its path as the source."""
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing here yet\n", encoding="utf-8")
    with pytest.raises(FlowInvalid) as caught:
        load_flow_file(path)
    why = "the file is empty; a flow needs id, version, languages, texts, questions"
    assert caught.value.issues == [FlowIssue(str(path), 1, "", why)]


def test_top_level_list_is_one_clear_issue() -> None:
    """A file whose top level is not a mapping is reported as such."""
    assert issues_of("- id: demo\n") == [
        FlowIssue(SRC, 1, "", "a flow must be a mapping of fields, not a list")
    ]


def test_non_utf8_file_is_reported_without_a_traceback(tmp_path: pathlib.Path) -> None:
    """A Latin-1 file is reported as not UTF-8, at the line of the first bad byte."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes("id: demo\ntitle: Größe\n".encode("latin-1"))
    assert check_paths([path]) == [FlowIssue(str(path), 2, "", "the file is not UTF-8 text (byte 0xf6)")]


def test_duplicate_flow_id_across_files_is_reported(tmp_path: pathlib.Path) -> None:
    """Two files declaring one flow id: the second is reported at its id line."""
    (tmp_path / "a.yaml").write_text(BASE, encoding="utf-8")
    (tmp_path / "b.yml").write_text("# a copy\n" + BASE, encoding="utf-8")
    why = f"duplicate flow id 'demo' (also in {tmp_path / 'a.yaml'})"
    assert check_paths([tmp_path]) == [FlowIssue(str(tmp_path / "b.yml"), 2, "id", why)]


def test_check_paths_reports_a_missing_path(tmp_path: pathlib.Path) -> None:
    """A path that does not exist is reported instead of raising."""
    missing = tmp_path / "nope.yaml"
    assert check_paths([missing]) == [FlowIssue(str(missing), None, "", "no such file or directory")]


# --- loading several flows ----------------------------------------------------------------


def test_get_flow_unknown_id_lists_the_known_ids() -> None:
    """get_flow on an unknown id raises UnknownFlow carrying the sorted known ids."""
    with pytest.raises(UnknownFlow) as caught:
        get_flow(load_flows(), "nope")
    assert (caught.value.flow_id, caught.value.known) == ("nope", ["ces", "nps", "support-csat"])


def test_user_flow_dir_overrides_a_builtin_by_id(tmp_path: pathlib.Path) -> None:
    """A flow in an extra directory replaces the built-in flow with the same id."""
    (tmp_path / "mine.yaml").write_text(edited("id: demo", "id: nps"), encoding="utf-8")
    flows = load_flows([tmp_path])
    assert get_flow(flows, "nps").questions[0].id == "score"
    assert sorted(flows) == ["ces", "nps", "support-csat"]


def test_load_flows_raises_on_an_invalid_user_file(tmp_path: pathlib.Path) -> None:
    """An invalid file in an extra directory makes load_flows raise FlowInvalid for that file."""
    (tmp_path / "bad.yaml").write_text(edited("kind: text", "kind: txt"), encoding="utf-8")
    with pytest.raises(FlowInvalid) as caught:
        load_flows([tmp_path])
    assert caught.value.source == str(tmp_path / "bad.yaml")


def test_load_flows_rejects_a_missing_directory(tmp_path: pathlib.Path) -> None:
    """A flow directory that does not exist is an error, not silently no flows."""
    with pytest.raises(FlowInvalid, match="not a directory"):
        load_flows([tmp_path / "missing"])


def test_loader_imports_nothing_outside_the_pure_package() -> None:
    """Importing flows.loader pulls in no bot, scoring, web, database or messaging modules."""
    banned = ["bot", "scoring", "telegram", "twilio", "fastapi", "sqlalchemy", "httpx", "requests"]
    code = f"import sys, flows.loader; print([m for m in sys.modules if m.split('.')[0] in {banned!r}])"
    repo = pathlib.Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_language_names_the_flow_and_its_languages() -> None:
    """A language the flow has is fine; another is refused naming the flow's languages."""
    flow = load_flows()["nps"]
    assert (None, "flow nps has no language 'fr'; it has de, en") == (
        flow.missing_language("en"),
        flow.missing_language("fr"),
    )


# "Billion laughs": nine levels of nine aliases, 9^9 = 387,420,489 values from 500 bytes.
ALIAS_BOMB = "\n".join(
    ['a: &a ["lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["id: bomb"]
)


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: pathlib.Path) -> None:
    """A 500-byte file that expands to 387 million values is one problem on line 1, found at once."""
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB, encoding="utf-8")
    issues = check_paths([path])
    assert [
        (
            1,
            "the YAML expands to more than 100,000 values through its anchors and aliases; a flow needs far fewer",
        )
    ] == [(issue.line, issue.message) for issue in issues]


def test_anchors_within_the_bound_are_read() -> None:
    """Anchors and aliases that expand to a few values are fine: a flow may reuse its labels so."""
    assert {"a": [1, 2], "b": [1, 2]} == load_yaml("a: &grades [1, 2]\nb: *grades\n")
