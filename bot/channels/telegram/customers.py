"""The Telegram channel: rating buttons, typed answers and deep-link starts for customers.

python-telegram-bot's ``Application`` does the Bot API work (requests, the rate limiter
that waits out a 429); its handlers only translate updates into an ``Inbound`` for the one
inbound path. Survey state stays in the database, never in the Application, so any worker
can take any update and a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from aiolimiter import AsyncLimiter
from telegram import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update, User
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from bot import jobs
from bot.channels.base import AddressRefused, Channel, Delivered, Outgoing, Resources
from bot.errors import ConfigError, DeliveryFailed, SurveyError
from bot.inbound import TOKEN, Event, Handled, Inbound, done_before, handle, record_done
from bot.service import Service
from bot.settings import Settings
from bot.surveys import open_link, remember_ref
from bot.texts import default_language, survey_fallback, text
from flows.engine import Prompt

if TYPE_CHECKING:
    from fastapi import APIRouter

log = logging.getLogger(__name__)

PROVIDER = "telegram"
ALLOWED_UPDATES = ("message", "callback_query")
ONE_ROW_MAX = 7  # scales with more points (0-10) are split over two rows, to stay tappable
MAX_RETRIES = 5  # a 429 is waited out (retry_after) and tried again this many times
MESSAGES_PER_SECOND = 30  # Telegram's overall limit: https://core.telegram.org/bots/faq
_NEW_MESSAGES = frozenset({"sendMessage", "sendPhoto"})


def callback_data(survey_id: int, question_id: str, value: int) -> str:
    """A button's data: its survey, question and value (at most 64 bytes, Telegram's limit)."""
    return f"a:{survey_id}:{question_id}:{value}"


def parse_callback(data: str | None) -> tuple[int, str, int] | None:
    """The (survey id, question id, value) of a button; None for data we did not make."""
    parts = (data or "").split(":")
    if len(parts) != 4 or parts[0] != "a":
        return None
    try:
        return int(parts[1]), parts[2], int(parts[3])
    except ValueError:
        return None


# What the handlers read of an update, and its type. python-telegram-bot builds its objects
# without checking types, so a forged update (with the right secret) whose text is a number
# would fail in a handler; the webhook refuses it instead (400). Ids are at most 64 bits.
_USER = {"id": int, "is_bot": bool, "first_name": str, "username": str, "language_code": str}
_CHAT = {"id": int, "type": str, "title": str, "username": str, "first_name": str}
_MESSAGE = {
    "message_id": int,
    "date": int,
    "chat": _CHAT,
    "from": _USER,
    "sender_chat": _CHAT,
    "text": str,
    "entities": [{"type": str, "offset": int, "length": int}],
}
_MESSAGES = ("message", "edited_message", "channel_post", "edited_channel_post", "business_message")
UPDATE_SHAPE: dict[str, Any] = {
    "update_id": int,
    **dict.fromkeys(_MESSAGES, _MESSAGE),
    "callback_query": {"id": str, "from": _USER, "chat_instance": str, "data": str, "message": _MESSAGE},
}


def misshapen(data: Any, shape: Any = UPDATE_SHAPE, path: str = "") -> str | None:
    """The path of the first field of an update that has another type than Telegram's; None if none has."""
    if isinstance(shape, dict):
        if not isinstance(data, dict):
            return path or "body"
        for key, inner in shape.items():
            if key in data and (found := misshapen(data[key], inner, f"{path}.{key}" if path else key)):
                return found
        return None
    if isinstance(shape, list):
        if not isinstance(data, list):
            return path
        return next(filter(None, (misshapen(v, shape[0], f"{path}[{i}]") for i, v in enumerate(data))), None)
    if shape is int:
        fits = isinstance(data, int) and not isinstance(data, bool) and -(2**63) <= data < 2**63
    else:
        fits = isinstance(data, shape)
    return None if fits else path


def keyboard(prompt: Prompt, survey_id: int) -> InlineKeyboardMarkup | None:
    """The rating buttons of a question: one row up to 7 points, else two rows."""
    if prompt.kind != "question" or prompt.scale is None or prompt.question_id is None:
        return None
    buttons = [
        InlineKeyboardButton(str(value), callback_data=callback_data(survey_id, prompt.question_id, value))
        for value in range(prompt.scale.min, prompt.scale.max + 1)
    ]
    if len(buttons) <= ONE_ROW_MAX:
        return InlineKeyboardMarkup([buttons])
    half = (len(buttons) + 1) // 2
    return InlineKeyboardMarkup([buttons[:half], buttons[half:]])


def message_text(prompts: Sequence[Prompt], language: str, *, fallback: str = "en") -> str:
    """The prompts as one message: intro or reprompt, then the question with its labels.

    ``fallback`` is the flow's default language, for the skip hint in a language without one.
    """
    parts = []
    for prompt in prompts:
        lines = [prompt.typed_text]
        if prompt.kind == "question" and prompt.scale is not None and prompt.labels:
            lines.append("")
            lines.extend(f"{value} = {label}" for value, label in sorted(prompt.labels.items()))
        if prompt.kind == "question" and prompt.optional:
            lines.append(text("telegram.skip", language, fallback=fallback))
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


class SendWindow:
    """At most ``limit`` calls in any ``period`` seconds, wherever they are counted.

    A call holds one of ``limit`` slots, which is free again ``period`` after the call ended.
    Telegram sees a call arrive before it ends, so two calls through one slot arrive at least
    ``period`` apart and no window of ``period`` holds more than ``limit`` arrivals there,
    whatever the round trip. The price is a rate of limit / (period + round trip).
    """

    def __init__(self, limit: int = MESSAGES_PER_SECOND, period: float = 1.0) -> None:
        self.period = period
        # When each free slot may be used again. Slots go back in the order their calls end, so
        # the head is the first one free; one given back unused waits in line, never goes early.
        self._free: asyncio.Queue[float] = asyncio.Queue()
        for _ in range(limit):
            self._free.put_nowait(0.0)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for a free slot, hold it for the call, free it ``period`` after the call ends."""
        loop = asyncio.get_running_loop()
        ready = await self._free.get()
        try:
            await asyncio.sleep(ready - loop.time())
        except BaseException:  # cancelled before the call was made: the slot is as it was
            self._free.put_nowait(ready)
            raise
        try:
            yield
        finally:
            self._free.put_nowait(loop.time() + self.period)


class ChatRateLimiter(AIORateLimiter):
    """Telegram's limits: 30 messages/s overall and, on top, one new message per second per chat.

    AIORateLimiter retries after a 429 (``retry_after``) and paces groups. Its overall limit
    is a leaky bucket that lets a burst of 30 through and then 30/s, so up to 60 calls can
    reach Telegram in one second; a strict SendWindow replaces it, around every attempt. It
    limits private chats only through the overall rate, so the per-chat second is added here.
    """

    def __init__(self, max_retries: int = MAX_RETRIES, *, per_chat: float = 1.0) -> None:
        super().__init__(overall_max_rate=0, max_retries=max_retries)
        self._window = SendWindow()
        self._chats: OrderedDict[str, AsyncLimiter] = OrderedDict()
        self._chat_period = 1 / per_chat  # SEND_RATE_TELEGRAM_CHAT: one new message per this many seconds

    def _chat(self, chat_id: object) -> AsyncLimiter:
        key = str(chat_id)
        limiter = self._chats.pop(key, None) or AsyncLimiter(1, self._chat_period)
        self._chats[key] = limiter
        while len(self._chats) > 10_000:  # forget the quietest chats
            self._chats.popitem(last=False)
        return limiter

    async def process_request(
        self,
        callback: Any,
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> bool | dict[str, Any] | list[dict[str, Any]]:
        """Wait for the chat's slot for a new message, then let AIORateLimiter do the rest."""
        chat_id = data.get("chat_id")
        if chat_id is None:  # like AIORateLimiter's overall limit: only calls about a chat count
            return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)

        async def paced(*call_args: Any, **call_kwargs: Any) -> Any:
            # AIORateLimiter calls this once per attempt, so a retry after a 429 waits its turn too.
            async with self._window.slot():
                return await callback(*call_args, **call_kwargs)

        if endpoint in _NEW_MESSAGES:
            async with self._chat(chat_id):
                return await super().process_request(paced, args, kwargs, endpoint, data, rate_limit_args)
        return await super().process_request(paced, args, kwargs, endpoint, data, rate_limit_args)


def build_application(
    service: Service, *, polling: bool = False
) -> Application[Any, Any, Any, Any, Any, Any]:
    """A python-telegram-bot Application for TELEGRAM_BOT_TOKEN; an updater only for polling."""
    settings = service.settings
    if settings.telegram_bot_token is None:
        raise ConfigError("TELEGRAM_BOT_TOKEN", "not set; the Telegram channel is off")
    builder = ApplicationBuilder().token(settings.telegram_bot_token.get_secret_value())
    if settings.telegram_api_base_url:
        builder = builder.base_url(settings.telegram_api_base_url)
    limited = builder.rate_limiter(ChatRateLimiter(per_chat=settings.send_rate_telegram_chat))
    if not polling:
        limited = limited.updater(None)
    return limited.build()


# A chat id as `POST /api/surveys` takes it in ``to``: Telegram's ids are 64-bit integers.
CHAT_ID = re.compile(r"-?\d{1,20}")


class TelegramChannel(Channel):
    """Sends prompts as Telegram messages, a question with its rating buttons."""

    name: ClassVar[str] = "telegram"
    provider: ClassVar[str | None] = "telegram"
    needs: ClassVar[str] = "set TELEGRAM_BOT_TOKEN"

    def __init__(self, service: Service, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        self.service = service
        self.application = application

    @classmethod
    def configured(cls, settings: Settings) -> bool:
        return settings.telegram_enabled

    @classmethod
    def router(cls) -> APIRouter:
        from bot.channels.telegram.webhook import router

        return router

    @classmethod
    def send_rate(cls, settings: Settings) -> float:
        return settings.send_rate_telegram

    @classmethod
    def address(cls, to: str | None, settings: Settings) -> str | None:
        """A chat id, or None: the survey is a deep link the customer opens."""
        if to is None:
            return None
        if not CHAT_ID.fullmatch(to.strip()):
            raise AddressRefused(f"{to!r} is not a Telegram chat id (a number); leave it out for a link")
        return to.strip()

    @classmethod
    def open(cls, service: Service, resources: Resources) -> TelegramChannel | None:
        bot = resources.telegram
        return None if bot is None else cast(TelegramChannel, bot.channel)

    async def deliver(self, outgoing: Outgoing) -> Delivered:
        """Send the prompts as one message; a question's message is kept (its buttons go later). Its id."""
        prompts, survey_id = outgoing.prompts, outgoing.survey_id
        if not prompts:
            return Delivered()
        markup = keyboard(prompts[-1], survey_id) if survey_id is not None else None
        try:
            sent = await self.application.bot.send_message(
                chat_id=int(outgoing.address),
                text=message_text(prompts, outgoing.language, fallback=outgoing.fallback),
                reply_markup=markup,
            )
        except Forbidden as exc:  # the customer blocked the bot (or left the chat): never deliverable
            raise DeliveryFailed(self.name, 403, exc.message, permanent=True) from exc
        except BadRequest as exc:  # "chat not found" and the like: this request will never work
            raise DeliveryFailed(self.name, 400, exc.message, permanent=True) from exc
        except RetryAfter as exc:  # flood control outlasted the rate limiter's own retries
            wait = exc.retry_after
            seconds = wait.total_seconds() if isinstance(wait, timedelta) else float(wait)
            raise DeliveryFailed(self.name, 429, exc.message, permanent=False, retry_after=seconds) from exc
        asked = survey_id is not None and any(p.kind == "question" for p in prompts)
        ref = str(sent.message_id) if markup else None
        return Delivered(str(sent.message_id), ref=ref, keeps_ref=asked)


def customer_language(service: Service, user: User | None, survey_language: str | None = None) -> str:
    """The survey's language, else the user's Telegram language, else the default flow's.

    The user's language is its two-letter code ("fr-CA" → "fr") whatever it is: a link that
    names no language opens in it when the survey's flow has it (``Flow.language_for``, else
    the flow's default), and UI strings fall back from it (``bot.texts``).
    """
    if survey_language:
        return survey_language
    code = ((user.language_code if user else None) or "")[:2].lower()
    if len(code) == 2 and code.isascii() and code.isalpha():
        return code
    return default_language(service)


def update_event(service: Service, update: Update) -> Event:
    """The update as a provider event: Telegram sends an update it got no 2xx for again, same update_id."""
    return Event(PROVIDER, str(update.update_id), service.clock())


async def _answer(query: CallbackQuery, update: Update, text: str | None = None) -> None:
    """Answer a tap (it stops the client's spinner). Telegram refuses a query answered before or
    too old ("query is too old ... or query ID is invalid"): that must not fail the update, whose
    answer is stored and whose next question is still to be sent."""
    try:
        await query.answer(text)
    except TelegramError as exc:
        log.info("callback query of update %s not answered: %s", update.update_id, exc)


class CustomerHandlers:
    """The customer side: /start with a survey link, buttons, typed answers, /skip and /stop."""

    def __init__(self, service: Service, channel: TelegramChannel) -> None:
        self.service = service
        self.channel = channel

    def register(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        """Add the handlers; staff commands are registered before these by the caller."""
        application.add_handler(CommandHandler("start", self.start))
        application.add_handler(CommandHandler(["skip", "stop"], self.command))
        application.add_handler(CallbackQueryHandler(self.button))
        application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, self.text))

    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """`/start <token>` from a survey link opens that survey in this chat.

        The update is recorded in the transaction that opens the link, so a start that failed
        is done when Telegram sends it again, and one that was done is not done twice.
        """
        chat, user, message = update.effective_chat, update.effective_user, update.effective_message
        if chat is None or message is None:
            return
        event = update_event(self.service, update)
        language = customer_language(self.service, user)
        token = context.args[0] if context.args else None
        if token is None or not TOKEN.fullmatch(token):  # not a token we make: unknown, without asking
            await self._reply_once(
                message, event, await self._text("hello" if token is None else "unknown", language)
            )
            return
        try:
            opened = await open_link(
                self.service.db,
                self.service.flows,
                token,
                channel=self.channel.name,
                address=str(chat.id),
                language=language,
                now=self.service.clock(),
                event=event,
            )
        except SurveyError:  # an opted-out contact gets no survey (its transaction rolled back, event too)
            await self._reply_once(message, event, await self._text("closed", language))
            return
        if opened.outcome == "duplicate":
            return
        language = opened.language or language
        if opened.prompts:
            await self.show(chat.id, opened.prompts, language, opened.survey_id)
        else:
            await message.reply_text(await self._text(opened.outcome, language, opened.survey_id))

    async def show(
        self, chat_id: int, prompts: Sequence[Prompt], language: str, survey_id: int | None
    ) -> Delivered:
        """Send prompts to a chat through the channel, and store what it asks to keep (the survey's
        ``channel_ref``: the message whose buttons go when the next one follows)."""
        fallback = await survey_fallback(self.service, survey_id, language)
        outgoing = Outgoing(str(chat_id), tuple(prompts), language, fallback, survey_id)
        delivered = await self.channel.deliver(outgoing)
        if delivered.keeps_ref and survey_id is not None:
            await remember_ref(self.service.db, survey_id, delivered.ref)
        return delivered

    async def _text(self, name: str, language: str, survey_id: int | None = None) -> str:
        """The catalogue's ``telegram.<name>`` in ``language``, else the survey's flow's default language."""
        fallback = await survey_fallback(self.service, survey_id, language)
        return text(f"telegram.{name}", language, fallback=fallback)

    async def _reply_once(self, message: Message, event: Event, text: str) -> None:
        """A reply that changes nothing: given unless ``event`` was done, then recorded (``done_before``)."""
        if await done_before(self.service.db, event):
            return
        await message.reply_text(text)
        await record_done(self.service.db, event)

    async def command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/skip and /stop act on the chat's open survey."""
        message = update.effective_message
        if message is None or message.text is None:
            return
        stop = message.text.lstrip("/").lower().startswith("stop")
        await self._answer(update, command="stop" if stop else "skip")

    async def text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A typed answer goes through the shared parser, like an SMS."""
        message = update.effective_message
        if message is not None and message.text is not None:
            await self._answer(update, text=message.text)

    async def _answer(
        self, update: Update, *, text: str | None = None, command: Literal["skip", "stop"] | None = None
    ) -> None:
        chat, message = update.effective_chat, update.effective_message
        if chat is None or message is None:
            return
        handled = await self._handle(update, chat.id, text=text, command=command)
        language = customer_language(self.service, update.effective_user, handled.language)
        if handled.outcome == "duplicate" and not handled.prompts:
            return
        # A "duplicate" with prompts is Telegram sending an update again after our reply to it
        # failed (the webhook answered 5xx): the answer is stored, the next question is sent now.
        if handled.outcome in ("no_survey", "closed"):
            key = "hello" if handled.outcome == "no_survey" else "closed"
            await message.reply_text(await self._text(key, language, handled.survey_id))
            return
        if handled.channel_ref:  # a new message follows; the old buttons would only confuse
            await self._drop_buttons(chat.id, int(handled.channel_ref))
        await self._reply(update, chat.id, handled, language)

    async def _reply(self, update: Update, chat_id: int, handled: Handled, language: str) -> None:
        """Send what the answer asks next, and end its outbox job; a send that fails is left to the job.

        The `reply` job was queued in the answer's transaction (Inbound.outbox): if the Bot API
        fails now, the scheduler sends the survey's open question once OUTBOX_GRACE has passed,
        retried with back-off, so the customer gets it when the API is back, even if Telegram
        never sends the update again. A reply without a job (a redelivered update) raises, so
        the webhook answers 5xx and Telegram sends the update again.
        """
        if handled.reply_job is None:
            await self.show(chat_id, handled.prompts, language, handled.survey_id)
            return
        try:
            sent = await self.show(chat_id, handled.prompts, language, handled.survey_id)
        except Exception as exc:
            log.warning(
                "update %s: the reply to survey %s failed (%s); job %s sends it later",
                update.update_id,
                handled.survey_id,
                type(exc).__name__,
                handled.reply_job,
            )
            return
        result = {"worker": "webhook", "outcome": "sent", "provider_id": sent.provider_id}
        ended = await self.service.db.run(
            jobs.delivered(handled.reply_job, now=self.service.clock(), result=result)
        )
        if not ended:
            log.warning("job %s was taken by the scheduler before its reply was sent", handled.reply_job)

    async def button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A tap on a rating button; every tap is answered, a stale one stores nothing."""
        query = update.callback_query
        chat = update.effective_chat
        if query is None:
            return
        parsed = parse_callback(query.data)
        if parsed is None or chat is None:
            await _answer(query, update)
            return
        survey_id, question_id, value = parsed
        handled = await self._handle(
            update, chat.id, choice=value, question_id=question_id, survey_id=survey_id
        )
        language = customer_language(self.service, update.effective_user, handled.language)
        message_id = query.message.message_id if query.message else None
        if handled.outcome == "duplicate":  # sent again by Telegram: the tap is stored already
            await _answer(query, update)  # Telegram refuses it if the first try answered it
            if handled.prompts:  # our reply to it failed (the webhook answered 5xx): send it now
                await self._drop_buttons(chat.id, message_id)
                await self.show(chat.id, handled.prompts, language, handled.survey_id)
            return
        if handled.outcome in ("already_answered", "closed", "no_survey"):
            key = "already" if handled.outcome == "already_answered" else "closed"
            await _answer(query, update, await self._text(key, language, handled.survey_id))
            await self._drop_buttons(chat.id, message_id)
            return
        await _answer(query, update)
        if handled.answers and isinstance(query.message, Message):
            await self._show_choice(query.message, value)
        else:
            await self._drop_buttons(chat.id, message_id)
        await self._reply(update, chat.id, handled, language)

    async def _show_choice(self, message: Message, value: int) -> None:
        """Edit the question to show the answer given, without its buttons."""
        try:
            await message.edit_text(f"{message.text or ''}\n\n✅ {value}", reply_markup=None)
        except TelegramError as exc:  # an edited or deleted message must not lose the next question
            log.info("could not edit question message %s: %s", message.message_id, exc)

    async def _handle(self, update: Update, chat_id: int, **reply: Any) -> Handled:
        """The one inbound path, with the update id as the event id that makes it idempotent."""
        inbound = Inbound(
            channel=self.channel.name,
            address=str(chat_id),
            received_at=self.service.clock(),
            provider=PROVIDER,
            event_id=str(update.update_id),
            outbox=True,
            **reply,
        )
        return await handle(self.service.db, self.service.flows, inbound)

    async def _drop_buttons(self, chat_id: int, message_id: int | None) -> None:
        if message_id is None:
            return
        try:
            await self.channel.application.bot.edit_message_reply_markup(
                chat_id=chat_id, message_id=message_id, reply_markup=None
            )
        except TelegramError as exc:  # already without buttons, or too old to edit
            log.info("could not remove buttons of message %s: %s", message_id, exc)
