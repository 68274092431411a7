"""The JSON API's survey resources as pydantic models, so that `/openapi.json` describes them.

`bot.web.api` declares them as the routes' response models and still writes the JSON itself (the
routes return a `JSONResponse`, which FastAPI does not validate again); tests/bot/test_api_docs.py
checks real responses against the schemas in `/openapi.json`, so neither can drift from the other.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_TIME = "ISO 8601 with offset, or null."


class _Resource(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SurveyCreated(_Resource):
    """`POST /api/surveys`: the survey made (201) or found again for the same ticket and flow (200)."""

    id: int | None = Field(
        description="Null when no survey was made (status skipped: the contact opted out)."
    )
    status: str = Field(description="pending, active, skipped, …")
    ticket_id: str
    channel: str
    flow: str
    language: str | None
    send_at: str | None = Field(description=_TIME)
    link: str | None = Field(
        description="The survey link, for channels that deliver nothing (web, Telegram)."
    )
    created: bool = Field(description="False when the survey existed already.")
    metadata: dict[str, Any] | None = Field(
        description="As stored: the request's, or the found survey's own."
    )


class Delivery(_Resource):
    """How the survey's send ended, and the provider's message id."""

    outcome: str | None = Field(description='"sent", "throttled", "sent, unconfirmed: …", "failed", …')
    provider_id: str | None
    reason: str | None = Field(
        description="Why a failed send failed: the provider's refusal, e.g. "
        '"telegram: Forbidden: bot was blocked by the user (code 403)".'
    )


class SurveyAnswer(_Resource):
    """One stored answer: a score, a text, or both."""

    question: str
    score: int | None
    text: str | None
    answered_at: str = Field(description="ISO 8601 with offset.")


class Survey(_Resource):
    """`GET /api/surveys/{survey_id}`: a survey's status, times, metadata, delivery and answers."""

    id: int
    status: str
    ticket_id: str | None
    channel: str
    flow: str
    language: str
    agent: str | None
    team: str | None
    created_at: str = Field(description="ISO 8601 with offset.")
    send_at: str | None = Field(description=_TIME)
    sent_at: str | None = Field(description=_TIME)
    completed_at: str | None = Field(description=_TIME)
    expires_at: str | None = Field(description=_TIME)
    metadata: dict[str, Any] | None
    closed_reason: str | None = Field(
        description="Why the survey closed when something other than the customer closed it "
        "(a provider's refusal of its send, a flow version that cannot be served); else null."
    )
    delivery: Delivery | None = Field(description="Null until the send job has ended.")
    answers: list[SurveyAnswer]
