"""SMS and WhatsApp through Twilio: one short message per question, replies answered in TwiML.

A survey starts with messages sent through the Messages API; every reply arrives at
`POST /twilio/sms` and is answered in the same HTTP response, one webhook round trip per
answer. WhatsApp is the same webhook with ``whatsapp:`` addresses. Opt-out keywords are
honoured before anything else and get no reply from us (the carrier or Twilio answers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Annotated, ClassVar
from xml.sax.saxutils import escape

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from starlette.datastructures import FormData
from twilio.base.exceptions import TwilioRestException

from bot import contacts
from bot.channels.base import Channel, Delivered, Outgoing, Resources
from bot.channels.twilio import (
    OPTED_OUT,
    PROVIDER,
    TwilioAccount,
    delivery_failed,
    form_text,
    phone_address,
    signed_form,
)
from bot.errors import ContactOptedOut, InvalidPhone
from bot.inbound import MAX_ID, Inbound, handle
from bot.phones import mask, normalize
from bot.service import Service
from bot.settings import Settings
from bot.surveys import undelivered
from bot.texts import default_language, survey_fallback, text
from flows.engine import Prompt

log = logging.getLogger(__name__)

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
EMPTY_TWIML = f"{XML_DECLARATION}<Response />"

FAILED = frozenset({"failed", "undelivered"})
# Twilio's delivery errors in a status callback that may pass if tried later (see on_status).
RETRY_LATER = frozenset({"30003"})
UNDELIVERED = {
    "30003": "unreachable handset",
    "30005": "unknown number",
    "30006": "landline or unreachable carrier",
    "30007": "filtered by the carrier",
    "30008": "unknown error",
    str(OPTED_OUT): "unsubscribed",
}
_DONE = {"again": "sent again in an hour", "ignored": "already handled", "failed": "survey failed"}

# GSM 03.38: the basic set costs one of 160 characters, the extension set two; any other
# character turns the whole message into UCS-2 (70 characters).
_GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = set("^{}\\[~]|€\f")


def segments(text: str) -> tuple[int, str]:
    """How many SMS segments ``text`` takes, and its encoding (GSM-7 or UCS-2)."""
    if all(ch in _GSM7 or ch in _GSM7_EXTENSION for ch in text):
        length = len(text) + sum(ch in _GSM7_EXTENSION for ch in text)
        return (1 if length <= 160 else math.ceil(length / 153)), "GSM-7"
    units = len(text.encode("utf-16-le")) // 2
    return (1 if units <= 70 else math.ceil(units / 67)), "UCS-2"


def sms_text(prompt: Prompt, language: str, *, fallback: str = "en") -> str:
    """A prompt as one short message; a rating question ends in its scale: "1 = … ... 5 = …".

    ``fallback`` is the flow's default language, for the skip hint in a language without one.
    """
    lines = [prompt.typed_text]
    if prompt.kind == "question" and prompt.scale is not None:
        low, high = prompt.scale.min, prompt.scale.max
        ends = [f"{v} = {prompt.labels[v]}" if v in prompt.labels else str(v) for v in (low, high)]
        lines.append(" ... ".join(ends))
    if prompt.kind == "question" and prompt.optional:
        lines.append(text("sms.skip", language, fallback=fallback))
    return "\n".join(lines)


# The longest body the Messages API takes (characters); Twilio splits it into segments that
# the handset joins again, so the customer sees one message.
MAX_BODY = 1600


def sms_bodies(prompts: Sequence[Prompt], language: str, *, fallback: str = "en") -> list[str]:
    """The prompts as few messages as fit: joined by a blank line while within MAX_BODY.

    The intro and the first question go as one message, a few segments rather than two
    messages each starting a segment of its own, and a send is one request: all or nothing.
    """
    bodies: list[str] = []
    for prompt in prompts:
        part = sms_text(prompt, language, fallback=fallback)
        if bodies and len(bodies[-1]) + 2 + len(part) <= MAX_BODY:
            bodies[-1] = f"{bodies[-1]}\n\n{part}"
        else:
            bodies.append(part)
    return bodies


def address_of(raw: str, region: str) -> tuple[str, str]:
    """(channel, E.164 address) of a Twilio ``From``: ``whatsapp:+49…`` is WhatsApp."""
    channel = "whatsapp" if raw.startswith("whatsapp:") else "sms"
    return channel, normalize(raw, region)


class SmsChannel(Channel):
    """Sends prompts as SMS through Twilio's Messages API (WhatsAppChannel: as WhatsApp messages)."""

    name: ClassVar[str] = "sms"
    provider: ClassVar[str | None] = "twilio-messages"  # SMS and WhatsApp go out from one sender
    needs: ClassVar[str] = "set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and a sender"
    phone_numbers: ClassVar[bool] = True
    whatsapp: ClassVar[bool] = False

    def __init__(self, service: Service, account: TwilioAccount) -> None:
        self.service = service
        self.account = account

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        return settings.twilio_enabled and bool(
            settings.twilio_from_number or settings.twilio_messaging_service_sid
        )

    @classmethod
    def router(cls) -> APIRouter:
        return router

    @classmethod
    def send_rate(cls, settings: Settings) -> float:
        return settings.send_rate_sms

    @classmethod
    def address(cls, to: str | None, settings: Settings) -> str:
        return phone_address(cls.name, to, settings)

    @classmethod
    def open(cls, service: Service, resources: Resources) -> SmsChannel | None:
        return None if resources.twilio is None else cls(service, resources.twilio)

    def _sender(self) -> dict[str, str]:
        settings = self.service.settings
        if self.whatsapp:
            return {"from_": f"whatsapp:{settings.twilio_whatsapp_from}"}
        if settings.twilio_messaging_service_sid:
            return {"messaging_service_sid": settings.twilio_messaging_service_sid}
        return {"from_": str(settings.twilio_from_number)}

    def messages(self, outgoing: Outgoing) -> int:
        """SMS segments (Twilio's pace counts segments); a WhatsApp message counts one."""
        bodies = sms_bodies(outgoing.prompts, outgoing.language, fallback=outgoing.fallback)
        if self.whatsapp:
            return max(1, len(bodies))
        return max(1, sum(segments(body)[0] for body in bodies))

    async def deliver(self, outgoing: Outgoing) -> Delivered:
        """Send the prompts as one message where they fit (`sms_bodies`), with a status callback; the SIDs.

        One message is all or nothing: a refused send delivered nothing, so it may be retried.
        Prompts too long for one message go as several; should a later one be refused after an
        earlier one went out, the refusal is permanent, so a retry never repeats what was delivered.
        """
        to = f"whatsapp:{outgoing.address}" if self.whatsapp else outgoing.address
        callback = self.account.url("/twilio/status", survey=outgoing.survey_id)
        bodies = sms_bodies(outgoing.prompts, outgoing.language, fallback=outgoing.fallback)
        sids: list[str] = []
        for body in bodies:
            try:
                message = await self.account.client.messages.create_async(
                    to=to, body=body, status_callback=callback, **self._sender()
                )
            except TwilioRestException as exc:
                if exc.code == OPTED_OUT:  # never reached the customer: skipped, not stopped
                    raise ContactOptedOut(self.name, mask(outgoing.address)) from exc
                failed = delivery_failed(self.name, exc)
                if sids:  # part went out: a retry would send that again (sends are at most once)
                    failed.permanent = True
                raise failed from exc
            sids.append(str(message.sid))
        log.info("sent %d %s message(s) to %s", len(bodies), self.name, mask(outgoing.address))
        return Delivered(",".join(sids) or None)


class WhatsAppChannel(SmsChannel):
    """The same Messages API and webhook, to ``whatsapp:`` addresses from TWILIO_WHATSAPP_FROM."""

    name: ClassVar[str] = "whatsapp"
    needs: ClassVar[str] = "set TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN and TWILIO_WHATSAPP_FROM"
    whatsapp: ClassVar[bool] = True

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        return settings.twilio_enabled and bool(settings.twilio_whatsapp_from)


def _twiml(*bodies: str) -> Response:
    """TwiML with one ``<Message>`` per body, as twilio's MessagingResponse writes it.

    Written as a string: building it through MessagingResponse (an ElementTree per reply) was
    5 % of an answer's CPU (issue 20). tests/bot/test_twilio_parts.py checks that both agree.
    """
    if not bodies:
        return Response(EMPTY_TWIML, media_type="application/xml")
    messages = "".join(f"<Message>{escape(body)}</Message>" if body else "<Message />" for body in bodies)
    return Response(f"{XML_DECLARATION}<Response>{messages}</Response>", media_type="application/xml")


router = APIRouter(tags=["twilio"], include_in_schema=False)


@router.post("/twilio/sms")
async def on_message(request: Request, form: FormData = Depends(signed_form)) -> Response:  # noqa: B008
    """An SMS or WhatsApp reply, consent keywords included, through the one inbound path; TwiML back."""
    service: Service = request.app.state.service
    try:
        channel, address = address_of(form_text(form, "From"), service.settings.phone_region)
    except InvalidPhone:
        return _twiml()  # a short code or an unreadable sender: nothing to survey
    sid = form_text(form, "MessageSid")
    # Consent keywords (STOP, START, HELP and their German forms) are decided by handle(), in the
    # transaction that records the MessageSid: a replayed START after a STOP changes nothing.
    handled = await handle(
        service.db,
        service.flows,
        Inbound(
            channel=channel,
            address=address,
            received_at=service.clock(),
            text=form_text(form, "Body"),
            provider=PROVIDER,
            event_id=sid or None,
            keywords=True,
        ),
    )
    if handled.outcome == "help":
        # HELP names no survey: the contact's last language, backed by the default flow's.
        fallback = default_language(service)
        return _twiml(text("sms.help", handled.language or fallback, fallback=fallback))
    if handled.outcome in ("opted_out", "opted_in", "no_survey", "closed"):
        return _twiml()
    # A repeated MessageSid ("duplicate": Twilio retried because our reply was lost) gets
    # what the survey asks now, so the customer is not left without the next question.
    language = handled.language or default_language(service)
    fallback = await survey_fallback(service, handled.survey_id, language)
    return _twiml(*sms_bodies(handled.prompts, language, fallback=fallback))


@router.post("/twilio/status")
async def on_status(
    request: Request,
    survey: Annotated[int, Query(ge=1, le=MAX_ID)],
    form: FormData = Depends(signed_form),  # noqa: B008
) -> Response:
    """Delivery status of a message we sent: failed or undelivered fails the survey, or sends it again.

    Twilio's error codes say which: 30003 (the handset is off or out of reach) may work later,
    so the question is sent once more an hour later (surveys.undelivered); any other failure
    (30006 a landline, 30005 an unknown number, 30007 carrier filtering) will not.
    """
    service: Service = request.app.state.service
    status = form_text(form, "MessageStatus")
    code = form_text(form, "ErrorCode")
    if form_text(form, "ErrorCode") == str(OPTED_OUT):
        try:
            channel, address = address_of(form_text(form, "To"), service.settings.phone_region)
        except InvalidPhone:
            pass  # not a number we could survey: nothing to opt out
        else:
            await contacts.opt_out(service.db, channel, address, now=service.clock())
    if status in FAILED:
        known = UNDELIVERED.get(code)
        reason = f"{PROVIDER}: message {status} (error {code or '-'}{f': {known}' if known else ''})"
        done = await service.db.transact(
            undelivered,
            survey,
            form_text(form, "MessageSid"),
            reason,
            transient=code in RETRY_LATER,
            now=service.clock(),
        )
        log.info("survey %s: %s; %s", survey, reason, _DONE[done])
    return Response(status_code=204)
