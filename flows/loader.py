"""Read survey flows from YAML files and report every problem with its line.

A flow file is checked in three passes: YAML syntax (and duplicate keys, which PyYAML would
silently drop), the pydantic models of ``flows.schema``, then the cross-field rules of
``problems()``, on the parts that passed when the models failed, so that one run reports
every problem of a file that parses. Each failure becomes a ``FlowIssue`` whose line is found
by walking the composed YAML node tree along the error's path, so authors can jump straight
to the fault.
Reading the files is the only I/O this module does.
"""

from __future__ import annotations

import difflib
import pathlib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from flows.errors import FlowInvalid, FlowIssue, UnknownFlow
from flows.schema import Flow, FlowTexts, Metric, Path, Problem, problems

BUILTIN_DIR = pathlib.Path(__file__).parent / "builtin"
_SUFFIXES = (".yaml", ".yml")
# What checking one file yields: the flow if it validated, every issue, and the node tree for lines.
_Checked = tuple[Flow | None, list[FlowIssue], yaml.Node | None]
# Schema patterns in words; an unlisted pattern falls back to pydantic's own message.
_PATTERNS = {
    r"^[a-z][a-z0-9_-]{0,63}$": "must be a lowercase letter, then up to 63 of a-z, 0-9, '_', '-'",
    r"^[a-z][a-z0-9_-]{0,39}$": "must be a lowercase letter, then up to 39 of a-z, 0-9, '_', '-'",
    r"^[a-z]{2}$": "must be a two-letter lowercase language code such as 'de'",
}
# pydantic speaks of Python types; flow authors write YAML lists and mappings.
_WORDING = (
    (r"^\w+ should", "must"),
    ("be a valid tuple", "be a list"),
    ("be a valid dictionary", "be a mapping"),
    (" after validation", ""),
)


def load_flow_text(text: str, source: str) -> Flow:
    """Parse and validate one flow from YAML text; raise FlowInvalid listing every problem."""
    flow, issues, _ = _check_text(text, source)
    if flow is None or issues:
        raise FlowInvalid(source, issues)
    return flow


def load_flow_file(path: pathlib.Path) -> Flow:
    """Load one flow file; raise FlowInvalid if it is unreadable, not UTF-8 or invalid."""
    flow, issues, _ = _check_file(path)
    if flow is None or issues:
        raise FlowInvalid(str(path), issues)
    return flow


def builtin_flow_paths() -> list[pathlib.Path]:
    """The YAML files in flows/builtin/, sorted."""
    return _flow_files(BUILTIN_DIR)


def load_flows(extra_dirs: Sequence[pathlib.Path] = ()) -> dict[str, Flow]:
    """Built-in flows plus every *.yaml/*.yml in extra_dirs, by id; later files replace earlier ones."""
    paths = builtin_flow_paths()
    for directory in extra_dirs:
        # A mistyped flow directory must not silently leave the built-ins in charge.
        if not directory.is_dir():
            raise FlowInvalid(str(directory), [FlowIssue(str(directory), None, "", "not a directory")])
        paths.extend(_flow_files(directory))
    flows: dict[str, Flow] = {}
    for path in paths:
        flow = load_flow_file(path)
        flows[flow.id] = flow
    return flows


def get_flow(flows: Mapping[str, Flow], flow_id: str) -> Flow:
    """The flow with this id; UnknownFlow (listing the known ids) if there is none."""
    try:
        return flows[flow_id]
    except KeyError:
        raise UnknownFlow(flow_id, sorted(flows)) from None


def check_paths(paths: Sequence[pathlib.Path]) -> list[FlowIssue]:
    """Every issue in every file given (directories are searched); empty when all are valid."""
    found: list[FlowIssue] = []
    files: list[pathlib.Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(_flow_files(path))
        elif path.exists():
            files.append(path)
        else:
            found.append(FlowIssue(str(path), None, "", "no such file or directory"))
    seen_files: set[pathlib.Path] = set()
    first_with_id: dict[str, str] = {}
    for path in files:
        # A file named both directly and through its directory is checked once.
        if path.resolve() in seen_files:
            continue
        seen_files.add(path.resolve())
        flow, issues, root = _check_file(path)
        found.extend(issues)
        # An invalid file's id still counts, so a copied file is reported in the same run.
        flow_id = flow.id if flow is not None else _written_id(root)
        if flow_id is None:
            continue
        if flow_id in first_with_id:
            line = _line_of(root, ("id",)) if root is not None else None
            why = f"duplicate flow id '{flow_id}' (also in {first_with_id[flow_id]})"
            found.append(FlowIssue(str(path), line, "id", why))
        first_with_id.setdefault(flow_id, str(path))
    return found


def valid_flows(paths: Sequence[pathlib.Path]) -> dict[str, Flow]:
    """The flows of the valid files given (directories are searched), by id; invalid ones left out."""
    flows: dict[str, Flow] = {}
    for path in paths:
        for file in _flow_files(path) if path.is_dir() else [path]:
            flow, issues, _ = _check_file(file)
            if flow is not None and not issues:
                flows.setdefault(flow.id, flow)
    return flows


def _written_id(root: yaml.Node | None) -> str | None:
    """The top-level ``id`` as written, if it is a plain string; None otherwise."""
    if not isinstance(root, yaml.MappingNode):
        return None
    for key, value in root.value:
        if key.value == "id" and isinstance(value, yaml.ScalarNode) and value.tag == "tag:yaml.org,2002:str":
            return str(value.value)
    return None


def _flow_files(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in directory.iterdir() if p.suffix in _SUFFIXES and p.is_file())


def _check_file(path: pathlib.Path) -> _Checked:
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return _fail(source, None, f"cannot read the file: {exc.strerror}")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return _fail(source, line, f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x})")
    return _check_text(text, source)


# A flow file has a few hundred values. Anchors and aliases can make a tiny file stand for
# billions of them (515 bytes hung `flows check` and `serve` start-up, issue 16): the tree is
# measured with its aliases expanded, and refused past this, before anything walks it.
MAX_YAML_VALUES = 100_000


class YamlTooLarge(ValueError):
    """A YAML document that expands, through its aliases, to more than MAX_YAML_VALUES values."""

    def __init__(self) -> None:
        super().__init__(
            f"the YAML expands to more than {MAX_YAML_VALUES:,} values through its anchors and aliases"
        )


def check_expanded_size(root: yaml.Node) -> None:
    """Raise YamlTooLarge if ``root`` holds more than MAX_YAML_VALUES values with aliases expanded.

    Each distinct node is measured once (an alias shares its anchor's node), so this costs
    as much as the file, not as much as the expansion.
    """
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        known = sizes.get(id(node))
        if known is not None:
            return known
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(key) + size(value) for key, value in node.value)
        if total > MAX_YAML_VALUES:
            raise YamlTooLarge
        sizes[id(node)] = total
        return total

    try:
        size(root)
    except RecursionError:  # nested deeper than Python recurses: no flow is like that
        raise YamlTooLarge from None


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with the expansion bound of check_expanded_size (YamlTooLarge)."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        check_expanded_size(root)
        return loader.construct_document(root)
    finally:
        loader.dispose()


def _check_text(text: str, source: str) -> _Checked:
    loader = yaml.SafeLoader(text)
    try:
        # Compose first and construct from that same tree: the nodes keep the line numbers.
        root = loader.get_single_node()
        if root is not None:
            check_expanded_size(root)
        data = loader.construct_document(root) if root is not None else None
    except YamlTooLarge as exc:
        return _fail(source, 1, f"{exc}; a flow needs far fewer")
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(part for part in (exc.context, exc.problem) if part)
        where = f" (column {mark.column + 1})" if mark else ""
        return _fail(source, mark.line + 1 if mark else None, f"invalid YAML: {what}{where}")
    finally:
        loader.dispose()
    if root is None:
        return _fail(source, 1, "the file is empty; a flow needs id, version, languages, texts, questions")
    if not isinstance(data, dict):
        kind = type(data).__name__
        return _fail(source, root.start_mark.line + 1, f"a flow must be a mapping of fields, not a {kind}")
    issues = [FlowIssue(source, line, _field(at), why) for at, line, why in _duplicate_keys(root, ())]
    flow: Flow | None = None
    try:
        flow = Flow.model_validate(data)
    except ValidationError as exc:
        issues.extend(_pydantic_issues(exc, root, source))
        found = _salvaged_problems(data, exc)
    else:
        found = problems(flow)
    issues.extend(FlowIssue(source, _line_of(root, p.path), _field(p.path), p.message) for p in found)
    issues.sort(key=lambda issue: issue.line or 0)
    return flow, issues, root


def _salvaged_problems(data: dict[Any, Any], exc: ValidationError) -> list[Problem]:
    """The cross-field problems of a flow that failed validation, checked on the parts that passed.

    Each broken part is replaced by a stand-in that validates (a broken question keeps the id,
    kind and metric it has, so conditions naming it are judged as they will be), and problems
    under a broken part are dropped: the author sees a dangling ask_if or a missing translation
    in the same run as a misspelt field, and nothing that only a stand-in has. Without readable
    questions, or without both languages and texts, nothing sound is left to check against.
    """
    repaired = dict(data)
    broken: set[Path] = set()
    bad_questions: set[int] = set()
    bad_texts: set[Any] = set()
    questions = data.get("questions")
    questions = questions if isinstance(questions, list) else []
    texts = data.get("texts")
    texts = texts if isinstance(texts, dict) else {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        if not loc:
            return []  # a rule of the flow as a whole: no part to set aside
        if loc[0] == "questions" and len(loc) > 1 and isinstance(loc[1], int) and questions:
            bad_questions.add(loc[1])
        elif loc[0] == "texts" and len(loc) > 1 and texts:
            bad_texts.add(loc[1])
        else:
            broken.add(loc[:1])
    languages: tuple[str, ...] | None = None
    if ("languages",) in broken:
        # Judged against the languages the texts are in, so that a typo in languages does not
        # also make every text and prompt wrong; default_language cannot be judged then.
        languages = tuple(k for k in texts if isinstance(k, str))
        broken.add(("default_language",))
    if languages == () or ("questions",) in broken:
        return []
    for (name,) in broken:
        field = Flow.model_fields.get(str(name))
        if name in _STAND_INS:
            repaired[name] = _STAND_INS[str(name)]
        elif field is None or not field.is_required():
            repaired.pop(name, None)  # an unknown field, or one with a default
        else:
            return []  # a required field this function has no stand-in for
    if bad_texts:
        stand_in = {name: "" for name, f in FlowTexts.model_fields.items() if f.is_required()}
        repaired["texts"] = {
            k: stand_in if k in bad_texts else v for k, v in texts.items() if isinstance(k, str)
        }
    if bad_questions:
        repaired["questions"] = [
            _stand_in_question(q) if i in bad_questions else q for i, q in enumerate(questions)
        ]
    try:
        flow = Flow.model_validate(repaired)
    except ValidationError:
        return []
    kept = list(flow.questions)
    for i in bad_questions:
        raw_id = questions[i].get("id") if isinstance(questions[i], dict) else None
        kept[i] = kept[i].model_copy(update={"id": raw_id if isinstance(raw_id, str) else ""})
    flow = flow.model_copy(update={"questions": tuple(kept), "languages": languages or flow.languages})
    broken.update(("questions", i) for i in bad_questions)
    return [p for p in problems(flow) if not any(p.path[: len(b)] == b for b in broken)]


# Valid values for broken required top-level fields; problems under them are dropped.
_STAND_INS: dict[str, Any] = {
    "id": "flow",
    "version": 1,
    "languages": ["xx"],
    "default_language": "xx",
    "texts": {},
}


def _stand_in_question(raw: object) -> dict[str, Any]:
    """A question that validates in place of a broken one, keeping what conditions and headlines
    look at: whether it is a text question (no score) and its metric."""
    given = raw if isinstance(raw, dict) else {}
    metric = given.get("metric") if given.get("metric") in typing.get_args(Metric) else None
    return {
        "id": "x",
        "kind": "text" if given.get("kind") == "text" else "nps",
        "metric": metric,
        "prompt": {},
    }


def _fail(source: str, line: int | None, why: str) -> _Checked:
    return None, [FlowIssue(source, line, "", why)], None


def _pydantic_issues(exc: ValidationError, root: yaml.Node, source: str) -> list[FlowIssue]:
    errors = exc.errors()
    locs = [tuple(err["loc"]) for err in errors]
    issues = []
    for err, loc in zip(errors, locs, strict=True):
        # A list whose every item failed also reports "at least 1 item ... not 0": noise.
        if err["type"] == "too_short" and any(o[: len(loc)] == loc and len(o) > len(loc) for o in locs):
            continue
        at: Path = tuple(part for part in loc if part != "[key]")
        issues.append(FlowIssue(source, _line_of(root, at), _field(at), _message(err, at)))
    return issues


def _message(err: ErrorDetails, at: Path) -> str:
    kind, value = err["type"], err.get("input")
    got = f" (got {value!r:.60})" if isinstance(value, str | int | float | bool) or value is None else ""
    if kind == "missing":
        return f"missing required field '{at[-1]}'"
    if kind == "extra_forbidden":
        allowed = _allowed_fields(at[:-1])
        close = difflib.get_close_matches(str(at[-1]), allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"unknown field '{at[-1]}' ({hint}allowed: {', '.join(allowed)})"
    if kind == "literal_error":
        return f"must be one of {err['ctx']['expected'].replace(' or ', ', ').replace(chr(39), '')}{got}"
    if kind == "string_pattern_mismatch" and err["ctx"]["pattern"] in _PATTERNS:
        return f"{_PATTERNS[err['ctx']['pattern']]}{got}"
    if kind == "value_error":
        return str(err["ctx"]["error"])
    msg = str(err["msg"])
    for before, after in _WORDING:
        msg = re.sub(before, after, msg)
    prefix = "key " if "[key]" in err["loc"] else ""
    return f"{prefix}{msg}{got}"


def _allowed_fields(at: Path) -> list[str]:
    """The field names (aliases where set) of the model found at ``at`` in a Flow."""
    tp: Any = Flow
    for part in at:
        tp = _unwrap_optional(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = tp.model_fields
            tp = next((f.annotation for n, f in fields.items() if part in (n, f.alias)), None)
        elif typing.get_origin(tp) in (dict, tuple):
            # dict[str, X] -> X; tuple[X, ...] -> X
            tp = typing.get_args(tp)[-1 if typing.get_origin(tp) is dict else 0]
        else:
            return []
    tp = _unwrap_optional(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    return []


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else tp
    return tp


def _key(node: yaml.Node) -> str | int:
    # Integer keys (label values) stay ints so paths match those from problems().
    if node.tag == "tag:yaml.org,2002:int" and str(node.value).isdigit():
        return int(node.value)
    return str(node.value)


def _line_of(root: yaml.Node, at: Path) -> int:
    """The 1-based line of the deepest node on ``at``: a key's line, or a list item's."""
    node, line = root, root.start_mark.line + 1
    for part in at:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if str(_key(k)) == str(part)), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _duplicate_keys(node: yaml.Node, at: Path) -> list[tuple[Path, int, str]]:
    """Keys given twice in one mapping; PyYAML would keep the last one without a word."""
    found: list[tuple[Path, int, str]] = []
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value in node.value:
            key, line = _key(key_node), key_node.start_mark.line + 1
            if str(key) in first:
                found.append(((*at, key), line, f"duplicate key '{key}' (first on line {first[str(key)]})"))
            first.setdefault(str(key), line)
            found.extend(_duplicate_keys(value, (*at, key)))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found.extend(_duplicate_keys(item, (*at, i)))
    return found


def _field(at: Path) -> str:
    """``('questions', 2, 'ask_if', 'question')`` as ``questions[2].ask_if.question``."""
    out = ""
    for part in at:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out
