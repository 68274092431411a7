"""Errors of the flows package; each carries its data as fields."""

from __future__ import annotations

from dataclasses import dataclass


class FlowError(Exception):
    """Base of every error raised by flows/."""


@dataclass(frozen=True)
class FlowIssue:
    """One thing wrong with a flow file: where it is and what is wrong."""

    source: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line is not None else self.source
        field = f" {self.field}:" if self.field else ""
        return f"{where}:{field} {self.message}"


class FlowInvalid(FlowError):
    """A flow file that cannot be used; ``issues`` lists every problem found."""

    def __init__(self, source: str, issues: list[FlowIssue]) -> None:
        self.source = source
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class UnknownFlow(FlowError):
    """No flow with this id is known."""

    def __init__(self, flow_id: str, known: list[str]) -> None:
        self.flow_id = flow_id
        self.known = known
        super().__init__(f"unknown flow '{flow_id}'; known flows: {', '.join(known) or 'none'}")
