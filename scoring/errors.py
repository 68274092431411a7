"""Errors raised by `scoring`, so that callers can tell bad input from bad arithmetic."""

from __future__ import annotations


class ScoreOutOfScale(ValueError):
    """A histogram holds a score that is not a point of its question's scale.

    A ValueError, so code that already catches ValueError for bad input keeps working.
    """

    def __init__(self, score: object, low: int, high: int) -> None:
        super().__init__(
            f"score {score!r} is not on the scale {low}..{high}; allowed are the whole numbers {low} to {high}"
        )
        self.score = score
        self.low = low
        self.high = high
