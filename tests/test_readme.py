"""The README's shell examples work as written: each one is run, or listed here with the reason why not.

Every ```sh, ```bash, ```shell and ```console block is read, fenced blocks indented inside a list
too, and indented code blocks that start with a `$ ` prompt. In a console block, `$ ` lines are
commands (a line ending in `\\` continues on the next) and the lines up to the next prompt are
their output; in the other blocks every line that is not a comment is a command.

A block runs in one bash process, as a reader would type it after `make run`: in a fresh folder
that holds the repository's files and `.venv` (activated, so a bare `afterword` works), with
DATABASE_URL naming a migrated SQLite file there, and with only the settings the example names
(in `RUN`). An example that talks to http://127.0.0.1:8000 gets a real `afterword serve`, on a
free port that replaces 8000 in the command and in its output. Every command must exit 0, and
its shown output must appear, loosely: lines in order, `…` for whatever is left out (a line, or
the end of one), and a JSON line by the keys it shows.

A new example that is neither in `RUN` nor in `NOT_RUN` fails `test_every_example_is_run_or_listed`,
and so does an entry whose example is gone, so the README and this file cannot drift apart.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.bot.test_twilio import twilio_process_env
from tests.cli import free_port, serving
from tests.fakes.twilio import FakeTwilioApi
from tests.support import environment

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
VENV = Path(sys.executable).parent.parent
SHELLS = frozenset({"sh", "bash", "shell", "console", "shell-session"})
SERVED = re.compile(r"\b(127\.0\.0\.1|localhost):8000\b")
# What a reader has that an example may not use here: their own settings and database.
_NOT_LINKED = frozenset(
    {".git", ".venv", ".env", "test-output", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
)


# -- reading the README --------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One command of an example, as written (continuation lines kept), and the output shown after it."""

    text: str
    output: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The command on one line, spaces collapsed and a trailing `# comment` left out."""
        return " ".join(_without_comment(self.text).split())


@dataclass(frozen=True)
class Example:
    """A shell block of the README: where it starts, its language and its commands."""

    line: int
    language: str
    commands: tuple[Command, ...]


def _without_comment(text: str) -> str:
    """``text`` without a `#` comment at the end of its last line (a `#` inside quotes stays)."""
    *head, last = text.split("\n")
    for match in re.finditer(r"\s#", last):
        before = last[: match.start()]
        if before.count("'") % 2 == 0 and before.count('"') % 2 == 0:
            last = before.rstrip()
            break
    return "\n".join([*head, last])


def _commands(lines: list[str], console: bool) -> tuple[Command, ...]:
    """The commands of a block's lines; in a console block only `$ ` lines are, with their output."""
    found: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        prompted = line.startswith("$ ")
        if (console and not prompted) or (
            not console and (not line.strip() or line.lstrip().startswith("#"))
        ):
            i += 1
            continue
        text = [line[2:] if prompted else line]
        while text[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            text.append(lines[i])
        i += 1
        output: list[str] = []
        while console and i < len(lines) and not lines[i].startswith("$ "):
            output.append(lines[i])
            i += 1
        while output and not output[-1].strip():
            output.pop()
        found.append(Command("\n".join(text), tuple(output)))
    return tuple(found)


def examples(markdown: str) -> list[Example]:
    """Every shell example of ``markdown``: shell-fenced blocks (indented or not) and `$ `-indented blocks."""
    lines = markdown.splitlines()
    found: list[Example] = []
    i = 0
    while i < len(lines):
        fence = re.match(r"^(\s*)(`{3,}|~{3,})\s*([\w-]*)", lines[i])
        if fence:
            indent, mark, language = len(fence.group(1)), fence.group(2), fence.group(3).lower()
            start, body = i + 1, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(mark):
                body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i].lstrip())
                i += 1
            i += 1
            if language in SHELLS:
                prompted = language in ("console", "shell-session") or any(b.startswith("$ ") for b in body)
                found.append(Example(start, language, _commands(body, console=prompted)))
            continue
        indented = re.match(r"^( {4,}|\t)\$ ", lines[i])
        if indented and (i == 0 or not lines[i - 1].strip()):
            width = len(indented.group(1))
            start, body = i + 1, []
            while i < len(lines) and (lines[i].startswith(indented.group(1)) or not lines[i].strip()):
                body.append(lines[i][width:])
                i += 1
            found.append(Example(start, "indented", _commands(body, console=True)))
            continue
        i += 1
    return found


# -- what is run, and what is not ----------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    """How an example is run: the settings it names, and what in its output depends on the clock."""

    twilio: bool = False  # the Twilio settings the example names, pointed at the fake Twilio API
    before: str = ""  # shell run first in the same shell, for what an earlier example made
    varying: frozenset[str] = field(default_factory=frozenset)  # JSON keys compared by type only


# Each command that is run, by its key (Command.key), with what it needs.
RUN: dict[str, Setup] = {
    "printf '2\\n1\\n2\\nsehr freundlich\\n' | .venv/bin/afterword chat --flow support-csat --lang de": Setup(),
    "KEY=$(.venv/bin/afterword apikey create demo)": Setup(),
    "curl -s -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' \\ -d "
    '\'{"ticket_id": "T-1042", "channel": "web", "agent": "anna"}\' \\ '
    "http://127.0.0.1:8000/api/surveys": Setup(),
    "curl -s -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' \\ -d "
    '\'{"ticket_id": "T-1043", "channel": "sms", "to": "+4915112345678", "agent": "anna", '
    '"delay": "1h"}\' \\ http://127.0.0.1:8000/api/surveys': Setup(
        twilio=True,
        before="KEY=$(afterword apikey create demo)",  # as the example before made it
        # The id is 2 after the example before; send_at is an hour from now.
        varying=frozenset({"id", "send_at"}),
    ),
}

# Each command that is not run, by its key, with the reason.
NOT_RUN: dict[str, str] = {
    "make run": "serves until stopped; it is `afterword db upgrade` then `afterword serve`, which every "
    "example here gets (a migrated database, and `serve` for those that talk to it)",
    "make test": "runs this test among all the others, and more than a test should start; CI runs it (.ci/run)",
}


def _readme_examples() -> list[Example]:
    return examples(README.read_text(encoding="utf-8"))


def test_every_example_is_run_or_listed() -> None:
    """Each shell command in the README is run here or listed with a reason, and each entry still has its example."""
    written = {command.key for example in _readme_examples() for command in example.commands}
    unlisted = sorted(written - RUN.keys() - NOT_RUN.keys())
    gone = sorted((RUN.keys() | NOT_RUN.keys()) - written)
    assert ([], []) == (unlisted, gone), (
        "add new examples to RUN (or NOT_RUN, with the reason); drop gone ones"
    )


def test_shown_output_is_checked_loosely() -> None:
    """Shown lines must come in order; `…` elides; JSON is compared by the keys shown, patterns and all."""
    actual = 'Hello world\nnoise\n{"id":7,"link":"http://x/s/abc","send_at":"2030-01-01","extra":1}\nBye\n'
    json_line = '{"id": 7, "link": "http://x/s/…", "send_at": "2026-11-23"}'
    assert ([], [], ["Hello …"], [json_line], ['{"id": 8}']) == (
        _shown(("Hello …", "…", json_line, "Bye"), actual, frozenset({"send_at"})),
        _shown(("Hello world", "  …", "Bye"), actual, frozenset()),
        _shown(("Bye", "Hello …"), actual, frozenset()),  # out of order
        _shown((json_line,), actual, frozenset()),  # send_at differs and is not marked varying
        _shown(('{"id": 8}',), actual, frozenset()),
    )


def test_examples_are_found_in_every_form() -> None:
    """sh, bash and console fences, a fence indented in a list, and a `$ `-indented block are all read."""
    markdown = "\n".join(
        [
            "```sh",
            "make run    # serves",
            "# a comment",
            "```",
            "- item",
            "",
            "  ```bash",
            "  afterword db status \\",
            "    --help",
            "  ```",
            "```console",
            "$ afterword flows list",
            "support-csat …",
            "",
            "$ echo '# kept'",
            "```",
            "```python",
            "print('not shell')",
            "```",
            "",
            "    $ afterword --version",
            "    afterword 1.0",
        ]
    )
    assert [
        ("sh", ("make run",), ((),)),
        ("bash", ("afterword db status \\ --help",), ((),)),
        ("console", ("afterword flows list", "echo '# kept'"), (("support-csat …",), ())),
        ("indented", ("afterword --version",), (("afterword 1.0",),)),
    ] == [
        (e.language, tuple(c.key for c in e.commands), tuple(c.output for c in e.commands))
        for e in examples(markdown)
    ]


# -- running the examples ------------------------------------------------------------------


def _params() -> list[Any]:
    """One test per example with a command to run; those with a served URL are slow (they start `serve`)."""
    params = []
    for example in _readme_examples():
        if not any(c.key in RUN for c in example.commands):
            continue
        served = any(SERVED.search(c.text) for c in example.commands)
        marks = [pytest.mark.slow] if served else []
        params.append(pytest.param(example, marks=marks, id=f"README.md:{example.line}"))
    return params


def _folder(tmp_path: Path) -> Path:
    """A folder like a fresh clone after `make run`: the repository's files and `.venv`, none of its settings.

    The files are links: an example may read them (a flow file) and make new files beside
    them, but one that wrote into a folder of the repository would write into the repository.
    """
    folder = tmp_path / "clone"
    folder.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in _NOT_LINKED and not entry.name.startswith("afterword.db"):
            (folder / entry.name).symlink_to(entry)
    (folder / ".venv").symlink_to(VENV)
    return folder


def _env(db_url: str, folder: Path, setup: Setup, stack: ExitStack) -> dict[str, str]:
    """The activated venv, the migrated database, and only the settings ``setup`` names."""
    base = {
        k: v
        for k, v in environment(db_url).items()
        if not k.startswith(("TELEGRAM_", "TWILIO_", "HOOKS_", "PUBLIC_BASE_URL", "HOST", "PORT", "QUIET_"))
    }
    bin_dir = folder / ".venv" / "bin"
    # COLUMNS: a terminal's width, so that rich does not wrap a line at 80 as it does in a pipe.
    base.update(PATH=f"{bin_dir}:{base.get('PATH', '')}", VIRTUAL_ENV=str(folder / ".venv"), COLUMNS="120")
    if setup.twilio:
        fake = FakeTwilioApi()
        fake.start()
        stack.callback(fake.stop, wait=False)
        base = twilio_process_env(base, fake)
    return base


def _script(commands: list[Command], before: str, out: Path) -> str:
    """One bash script: each command's output and exit code into its own files, variables kept between them."""
    parts = [f"{{ {before}\n}} >/dev/null 2>&1"] if before else []
    for i, command in enumerate(commands):
        parts.append(f"{{ {command.text}\n}} >{out / f'{i}.out'} 2>&1 </dev/null; echo $? >{out / f'{i}.rc'}")
    return "\n".join(parts) + "\n"


def _shown(expected: tuple[str, ...], actual: str, varying: frozenset[str]) -> list[str]:
    """What of the shown output is missing from ``actual``: lines in order, `…` elides, JSON by its keys."""
    got = [line.rstrip() for line in actual.splitlines()]
    at, missing = 0, []
    for want in (line.rstrip() for line in expected):
        if want.strip() in ("", "…"):
            continue
        found = next((j for j in range(at, len(got)) if _line_matches(want, got[j], varying)), None)
        if found is None:
            missing.append(want)
        else:
            at = found + 1
    return missing


def _line_matches(want: str, got: str, varying: frozenset[str]) -> bool:
    if want.startswith("{") and got.startswith("{"):
        try:
            return _json_matches(json.loads(want), json.loads(got), varying)
        except json.JSONDecodeError:
            pass
    if want.endswith("…"):
        return got.startswith(want[:-1].rstrip())
    return want == got


def _json_matches(want: Any, got: Any, varying: frozenset[str]) -> bool:
    """Each key shown has the value shown (a string with `…` as a pattern; ``varying`` keys by type)."""
    if not isinstance(want, dict) or not isinstance(got, dict):
        return bool(want == got)
    for key, value in want.items():
        if key not in got:
            return False
        if key in varying:
            if type(value) is not type(got[key]):
                return False
        elif isinstance(value, str) and "…" in value:
            pattern = ".*".join(re.escape(part) for part in value.split("…"))
            if not isinstance(got[key], str) or not re.fullmatch(pattern, got[key]):
                return False
        elif value != got[key]:
            return False
    return True


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("example", _params())
def test_readme_example_works_as_written(example: Example, db_url: str, tmp_path: Path) -> None:
    """The example's commands exit 0 in a fresh clone with the settings it names, and print what it shows."""
    folder = _folder(tmp_path)
    commands = [c for c in example.commands if c.key in RUN]
    setups = [RUN[c.key] for c in commands]
    setup = Setup(
        twilio=any(s.twilio for s in setups),
        before="\n".join(dict.fromkeys(s.before for s in setups if s.before)),
        varying=frozenset().union(*(s.varying for s in setups)),
    )
    port = free_port()

    def here(text: str) -> str:
        return SERVED.sub(f"127.0.0.1:{port}", text)

    commands = [Command(here(c.text), tuple(here(line) for line in c.output)) for c in commands]
    out = tmp_path / "out"
    out.mkdir()
    with ExitStack() as stack:
        env = _env(db_url, folder, setup, stack)
        if any(SERVED.search(c.text) for c in example.commands):
            stack.enter_context(serving(["--port", str(port)], env, folder, port))
        script = _script(commands, here(setup.before), out)
        subprocess.run(["bash", "-c", script], env=env, cwd=folder, timeout=120, check=False)
    results = [
        (
            c.key,
            (out / f"{i}.rc").read_text().strip() if (out / f"{i}.rc").exists() else "not run",
            _shown(
                c.output, (out / f"{i}.out").read_text() if (out / f"{i}.out").exists() else "", setup.varying
            ),
        )
        for i, c in enumerate(commands)
    ]
    log = folder / "serve.log"
    assert [(c.key, "0", []) for c in commands] == results, "\n\n".join(
        [
            *(
                f"$ {c.text}\n{(out / f'{i}.out').read_text() if (out / f'{i}.out').exists() else ''}"
                for i, c in enumerate(commands)
            ),
            f"serve.log:\n{log.read_text()}" if log.exists() else "",
        ]
    )
