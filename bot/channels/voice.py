"""Voice surveys through Twilio: an outbound call, keypad or speech answers, TwiML replies.

The call is placed with answering-machine detection; a machine gets no survey. Each
question is a ``<Gather>`` in the survey's language, read by a voice of that language; its
action URL names the survey, the question and the attempt, so a retried webhook or a late
key press answers nothing twice. The engine decides reprompts and when to move on.
``VOICES`` lists the languages a call can be in; a survey in any other is never read by
another language's voice (``cannot_speak`` says why, for a trigger to refuse it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, ClassVar, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.datastructures import FormData
from twilio.base.exceptions import TwilioRestException
from twilio.twiml.voice_response import Gather, VoiceResponse

from bot.channels.base import Channel, Delivered, Outgoing, Resources
from bot.channels.twilio import TwilioAccount, delivery_failed, form_text, phone_address, signed_form
from bot.errors import DeliveryFailed, InvalidPhone
from bot.inbound import MAX_ID, Inbound, handle
from bot.lifecycle import SurveyStatus
from bot.phones import mask, normalize
from bot.service import Service
from bot.settings import Settings
from bot.surveys import closing, current
from bot.texts import default_language, survey_fallback, text
from flows.engine import Prompt

log = logging.getLogger(__name__)

PROVIDER = "twilio-voice"
GATHER_SECONDS = 6  # silence after which a question counts as unanswered
# The survey languages a call can be in: an Amazon Polly voice for <Say> and the locale that
# is both that voice's `language` and the <Gather language> its speech is recognised in.
# Voices: Twilio's table of Polly voices, https://www.twilio.com/docs/voice/twiml/say/text-speech
# (Amazon's list: https://docs.aws.amazon.com/polly/latest/dg/standard-voices.html; Twilio takes
# "Polly.Celine" and "Polly.Ines" for Céline and Inês). Locales for speech: the supported
# `language` values of https://www.twilio.com/docs/voice/twiml/gather, which hold all eight.
# Portuguese is pt-PT (Inês), like the other European voices here, not pt-BR (Camila).
# A language without a line is refused for voice (see `cannot_speak`), never read by another voice.
VOICES: dict[str, tuple[str, str]] = {
    "de": ("Polly.Vicki", "de-DE"),
    "en": ("Polly.Joanna", "en-US"),
    "es": ("Polly.Lucia", "es-ES"),
    "fr": ("Polly.Celine", "fr-FR"),
    "it": ("Polly.Carla", "it-IT"),
    "nl": ("Polly.Lotte", "nl-NL"),
    "pl": ("Polly.Ewa", "pl-PL"),
    "pt": ("Polly.Ines", "pt-PT"),
}
MACHINES = frozenset({"machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax"})
# How a call that ended on its own leaves a survey still open.
CALL_ENDED: dict[str, SurveyStatus] = {
    "completed": SurveyStatus.INCOMPLETE,
    "no-answer": SurveyStatus.NO_ANSWER,
    "busy": SurveyStatus.NO_ANSWER,
    "failed": SurveyStatus.FAILED,
    "canceled": SurveyStatus.FAILED,
}


def speakable(language: str | None) -> bool:
    """Whether a call can be in ``language``: Twilio has a voice for it and recognises its speech."""
    return language in VOICES


def cannot_speak(language: str | None) -> str | None:
    """Why a voice survey cannot be in ``language`` (which languages can), or None when it can."""
    if speakable(language):
        return None
    return (
        f"the voice channel has no voice for language {language!r}; "
        f"it speaks {', '.join(sorted(VOICES))}: choose one of these or another channel"
    )


def spoken_question(prompt: Prompt, language: str, *, fallback: str = "en") -> str:
    """What is said for a question: its text, then how to answer it by key or by voice.

    ``fallback`` is the flow's default language, for the instructions in a language without them.
    """

    def phrase(name: str) -> str:
        return text(f"voice.{name}", language, fallback=fallback)

    if prompt.scale is None:
        return f"{prompt.text} {phrase('speak')}"
    points = range(prompt.scale.min, prompt.scale.max + 1)
    if prompt.scale.max <= 9 and len(prompt.labels) == len(points):
        keys = " ".join(phrase("press").format(value=v, label=prompt.labels[v]) for v in points)
    else:
        keys = phrase("keys").format(min=prompt.scale.min, max=prompt.scale.max)
    return f"{prompt.text} {keys} {phrase('say')}"


def twiml(
    account: TwilioAccount,
    survey_id: int,
    prompts: Sequence[Prompt],
    language: str,
    attempt: int,
    *,
    fallback: str = "en",
) -> str:
    """The prompts as TwiML: statements said, a question gathered, the end said and hung up.

    Every <Say> and the <Gather> are in ``language``'s voice and locale, the instructions
    too (in ``fallback``, the flow's default language, where the catalogue lacks
    ``language``; see spoken_question). A language with no voice is a ValueError: the
    routes hang up on such a survey rather than have another language's voice read it.
    """
    if (why := cannot_speak(language)) is not None:
        raise ValueError(why)
    voice, locale = VOICES[language]
    response = VoiceResponse()
    question = prompts[-1] if prompts and prompts[-1].kind == "question" else None
    for prompt in prompts:
        if prompt is not question:
            response.say(prompt.text, voice=voice, language=locale)
    if question is None:
        response.hangup()
        return str(response)
    single_key = question.scale is not None and question.scale.max <= 9
    gather = Gather(
        input="dtmf speech" if question.scale is not None else "speech",
        action=account.url("/twilio/voice/answer", survey=survey_id, q=question.question_id, n=attempt),
        method="POST",
        language=locale,
        timeout=GATHER_SECONDS,
        speech_timeout="auto",
        action_on_empty_result=True,
        **({"num_digits": 1} if single_key else {"finish_on_key": "#"}),
    )
    gather.say(spoken_question(question, language, fallback=fallback), voice=voice, language=locale)
    response.append(gather)
    return str(response)


def reply_of(form: FormData) -> tuple[int | None, str | None, Literal["skip"] | None]:
    """(keys as a number, speech, or skip when there was neither) from a Gather's post."""
    digits = form_text(form, "Digits").rstrip("#")
    if digits.isdigit():
        return int(digits), None, None
    speech = form_text(form, "SpeechResult").strip()
    if speech:
        return None, speech, None
    return None, None, "skip"  # silence: an optional question is skipped, a required one reprompted


class VoiceChannel(Channel):
    """Places the call; the survey is spoken when the call is answered."""

    name: ClassVar[str] = "voice"
    provider: ClassVar[str | None] = "twilio-calls"
    needs: ClassVar[str] = "set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_FROM_NUMBER"
    phone_numbers: ClassVar[bool] = True

    def __init__(self, service: Service, account: TwilioAccount) -> None:
        self.service = service
        self.account = account

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        return settings.twilio_enabled and settings.twilio_from_number is not None

    @classmethod
    def router(cls) -> APIRouter:
        return router

    @classmethod
    def send_rate(cls, settings: Settings) -> float:
        return settings.send_rate_voice

    @classmethod
    def address(cls, to: str | None, settings: Settings) -> str:
        return phone_address(cls.name, to, settings)

    @classmethod
    def refuses_language(cls, language: str) -> str | None:
        return cannot_speak(language)

    @classmethod
    def open(cls, service: Service, resources: Resources) -> VoiceChannel | None:
        return None if resources.twilio is None else cls(service, resources.twilio)

    async def deliver(self, outgoing: Outgoing) -> Delivered:
        """Call the customer; Twilio asks `/twilio/voice` what to say once someone answers. The call's SID."""
        address, survey_id = outgoing.address, outgoing.survey_id
        if (why := cannot_speak(outgoing.language)) is not None:  # e.g. a contact's stored language
            raise DeliveryFailed(self.name, None, why, permanent=True)
        try:
            call = await self.account.client.calls.create_async(
                to=address,
                from_=str(self.service.settings.twilio_from_number),
                url=self.account.url("/twilio/voice", survey=survey_id),
                machine_detection="Enable",
                status_callback=self.account.url("/twilio/voice/status", survey=survey_id),
                status_callback_event=["completed"],
            )
        except TwilioRestException as exc:
            raise delivery_failed(self.name, exc) from exc
        log.info("calling %s for survey %s", mask(address), survey_id)
        return Delivered(str(call.sid))


def _xml(body: str) -> Response:
    return Response(body, media_type="application/xml")


def _hangup() -> Response:
    response = VoiceResponse()
    response.hangup()
    return _xml(str(response))


async def _spoken(
    service: Service,
    account: TwilioAccount,
    survey: int,
    prompts: Sequence[Prompt],
    language: str,
    attempt: int,
) -> Response:
    """The prompts as TwiML in the survey's language; in a language no voice speaks, a hang-up.

    Triggers refuse a voice survey in such a language (`cannot_speak`); one that still gets
    here (its language came from the contact, or it was made before) fails with that reason
    rather than being read by another language's voice.
    """
    if (why := cannot_speak(language)) is not None:
        log.warning("survey %s: %s; the call is ended and the survey failed", survey, why)
        await service.db.run(closing(survey, SurveyStatus.FAILED, reason=why))
        return _hangup()
    fallback = await survey_fallback(service, survey, language)
    return _xml(twiml(account, survey, prompts, language, attempt, fallback=fallback))


router = APIRouter(tags=["twilio"], include_in_schema=False)

# The query our own URLs carry (twiml): a survey id the column can hold, a question id as flows
# name them, and a small attempt count; each part of the event id CallSid:q:n stays short.
SurveyId = Annotated[int, Query(ge=1, le=MAX_ID)]
QuestionId = Annotated[str, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
Attempt = Annotated[int, Query(ge=0, le=10_000)]


@router.post("/twilio/voice")
async def on_answered(request: Request, survey: SurveyId, form: FormData = Depends(signed_form)) -> Response:  # noqa: B008
    """The call was answered: a machine gets nothing, a person the intro and first question."""
    service: Service = request.app.state.service
    if form_text(form, "AnsweredBy") in MACHINES:
        await service.db.run(closing(survey, SurveyStatus.NO_ANSWER))
        return _hangup()
    now = await current(service.db, service.flows, survey)
    if now is None or not now.prompts:
        return _hangup()
    return await _spoken(service, request.app.state.twilio, survey, now.prompts, now.language, 0)


@router.post("/twilio/voice/answer")
async def on_answer(
    request: Request,
    survey: SurveyId,
    q: QuestionId,
    n: Attempt = 0,
    form: FormData = Depends(signed_form),  # noqa: B008
) -> Response:
    """Keys or speech for question ``q`` (attempt ``n``): stored through the one inbound path."""
    service: Service = request.app.state.service
    account: TwilioAccount = request.app.state.twilio
    try:
        address = normalize(form_text(form, "To"), service.settings.phone_region)
    except InvalidPhone:
        return _hangup()
    choice, text, command = reply_of(form)
    handled = await handle(
        service.db,
        service.flows,
        Inbound(
            channel="voice",
            address=address,
            received_at=service.clock(),
            text=text,
            choice=choice,
            command=command,
            provider=PROVIDER,
            event_id=f"{form_text(form, 'CallSid')}:{q}:{n}",
            question_id=q,
            survey_id=survey,
        ),
    )
    if handled.outcome in ("duplicate", "already_answered"):
        again = await current(service.db, service.flows, survey)  # a retried webhook: ask what is open
        if again is None or not again.prompts:
            return _hangup()
        return await _spoken(service, account, survey, again.prompts, again.language, n + 1)
    if handled.outcome in ("no_survey", "closed"):
        return _hangup()
    attempt = n + 1 if handled.outcome == "reprompted" else 0
    language = handled.language or default_language(service)
    return await _spoken(service, account, survey, handled.prompts, language, attempt)


@router.post("/twilio/voice/status")
async def on_call_status(
    request: Request,
    survey: SurveyId,
    form: FormData = Depends(signed_form),  # noqa: B008
) -> Response:
    """The call ended: a survey still open keeps its answers and is marked by how the call ended."""
    service: Service = request.app.state.service
    status = CALL_ENDED.get(form_text(form, "CallStatus"))
    if status is not None and await service.db.run(closing(survey, status)):
        log.info("survey %s: call ended (%s) before the survey did", survey, form_text(form, "CallStatus"))
    return Response(status_code=204)
