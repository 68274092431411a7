"""The fake Bot API, driven by the real python-telegram-bot library over HTTP."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading

import httpx
import pytest
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, MessageEntity, Update
from telegram.error import BadRequest, EndPointNotFound, InvalidToken, NetworkError, RetryAfter
from telegram.ext import AIORateLimiter, ApplicationBuilder, CommandHandler, ContextTypes

from tests.fakes.telegram import DEFAULT_TOKEN, FakeBotApi, callback_update, message_update

# The 8-byte PNG signature and an IHDR chunk start: enough to stand for an image upload.
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(32))


@pytest.fixture
def fake(fake_telegram: FakeBotApi) -> FakeBotApi:
    return fake_telegram


@pytest.fixture
def ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    # RetryAfter reads its own retry_after while being built; without this opt-in PTB 22 warns
    # that the int form is deprecated, and pytest turns that warning into an error.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


def keyboard() -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("gut", callback_data="r:5"),
                InlineKeyboardButton("schlecht", callback_data="r:1"),
            ]
        ]
    )


async def test_get_me_and_send_message_are_recorded_and_numbered_per_chat(fake: FakeBotApi) -> None:
    """getMe names the bot; sendMessage keeps its chat id and keyboard and numbers messages per chat."""
    async with Bot(DEFAULT_TOKEN, base_url=fake.base_url) as bot:
        me = await bot.get_me()
        first = await bot.send_message(42, "Wie war es?", reply_markup=keyboard())
        second = await bot.send_message(42, "Danke!")
        other_chat = await bot.send_message(7, "Hallo")

    assert "afterword_test_bot" == me.username
    assert [1, 2, 1] == [first.message_id, second.message_id, other_chat.message_id]
    assert keyboard() == first.reply_markup
    assert second.reply_markup is None
    call = fake.sent("sendMessage")[0]
    assert 42 == call.params["chat_id"]
    assert "Wie war es?" == call.params["text"]
    assert keyboard().to_dict() == call.params["reply_markup"]
    # Entering `async with bot` calls getMe once to check the token, before the explicit call.
    assert ["getMe", "getMe", "sendMessage", "sendMessage", "sendMessage"] == [c.method for c in fake.calls]


async def test_edits_change_the_stored_message_and_unknown_messages_are_bad_requests(
    fake: FakeBotApi,
) -> None:
    """Editing text and markup updates fake.message; editing a message never sent is a BadRequest."""
    async with Bot(DEFAULT_TOKEN, base_url=fake.base_url) as bot:
        sent = await bot.send_message(42, "Wie war es?", reply_markup=keyboard())
        edited = await bot.edit_message_text("Wie war es? – gut", chat_id=42, message_id=sent.message_id)
        after_text = fake.message(42, sent.message_id)
        await bot.edit_message_reply_markup(chat_id=42, message_id=sent.message_id, reply_markup=keyboard())
        with_markup = fake.message(42, sent.message_id)
        await bot.edit_message_reply_markup(chat_id=42, message_id=sent.message_id)
        without_markup = fake.message(42, sent.message_id)
        with pytest.raises(BadRequest, match="Message to edit not found"):
            await bot.edit_message_text("x", chat_id=42, message_id=99)

    assert isinstance(edited, Message)
    assert ("Wie war es? – gut", None) == (edited.text, edited.reply_markup)
    assert "Wie war es? – gut" == after_text["text"]
    assert "reply_markup" not in after_text
    assert keyboard().to_dict() == with_markup["reply_markup"]
    assert ("Wie war es? – gut", False) == (without_markup["text"], "reply_markup" in without_markup)
    assert [False, False, False, False, True] == [c.failed for c in fake.calls[1:]]


@pytest.mark.usefixtures("ptb_timedelta")
async def test_injected_flood_error_raises_retry_after_on_a_bare_bot(fake: FakeBotApi) -> None:
    """A 429 with retry_after reaches a bare Bot as RetryAfter, and the next call goes through."""
    fake.fail_next("sendMessage")
    async with Bot(DEFAULT_TOKEN, base_url=fake.base_url) as bot:
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(42, "Hallo")
        await bot.send_message(42, "Hallo")

    assert dt.timedelta(seconds=1) == caught.value.retry_after
    assert [True, False] == [c.failed for c in fake.calls_to("sendMessage")]
    assert 1 == len(fake.sent())


@pytest.mark.usefixtures("ptb_timedelta")
async def test_rate_limiter_retries_after_an_injected_flood_error(fake: FakeBotApi) -> None:
    """An Application with AIORateLimiter waits out the 429 and succeeds on its second attempt."""
    fake.fail_next("sendMessage")
    app = (
        ApplicationBuilder()
        .token(DEFAULT_TOKEN)
        .base_url(fake.base_url)
        .rate_limiter(AIORateLimiter(max_retries=2))
        .updater(None)
        .build()
    )
    async with app:
        message = await app.bot.send_message(42, "Hallo")

    assert 1 == message.message_id
    assert [True, False] == [c.failed for c in fake.calls_to("sendMessage")]


async def test_send_photo_records_the_uploaded_bytes_and_caption(fake: FakeBotApi) -> None:
    """sendPhoto with bytes goes as multipart; the fake keeps the bytes and the caption."""
    async with Bot(DEFAULT_TOKEN, base_url=fake.base_url) as bot:
        message = await bot.send_photo(42, PNG, caption="Woche 12")

    call = fake.sent("sendPhoto")[0]
    assert (PNG, "Woche 12", 42) == (call.params["photo"], call.params["caption"], call.params["chat_id"])
    assert ("Woche 12", len(PNG)) == (message.caption, message.photo[0].file_size)


async def test_wrong_token_is_rejected_as_invalid(fake: FakeBotApi) -> None:
    """A token the fake does not know gets 401, which PTB raises as InvalidToken from getMe."""
    bot = Bot("654321:WRONG-TOKEN", base_url=fake.base_url)
    try:
        # initialize() verifies the token by calling getMe.
        with pytest.raises(InvalidToken, match="rejected"):
            await bot.initialize()
    finally:
        await bot.shutdown()

    assert [("getMe", True)] == [(c.method, c.failed) for c in fake.calls]


async def test_get_updates_hands_out_queued_updates_once(fake: FakeBotApi) -> None:
    """A queued update comes back from getUpdates; asking with the next offset returns nothing."""
    fake.queue_update(message_update(5, 42, "Hallo"))
    async with Bot(DEFAULT_TOKEN, base_url=fake.base_url) as bot:
        updates = await bot.get_updates(offset=0, timeout=0)
        again = await bot.get_updates(offset=updates[0].update_id + 1, timeout=0)

    assert [(5, "Hallo")] == [(u.update_id, u.message.text if u.message else None) for u in updates]
    assert () == again
    assert 6 == fake.calls_to("getUpdates")[1].params["offset"]


async def test_factories_parse_as_updates_a_command_handler_matches(fake: FakeBotApi) -> None:
    """message_update and callback_update parse into Updates; the command carries a bot_command entity."""
    async with Bot(DEFAULT_TOKEN, base_url=fake.base_url) as bot:
        command = Update.de_json(message_update(1, 42, "/start abc"), bot)
        press = Update.de_json(callback_update(2, 42, 3, "r:5", message_text="Wie war es?"), bot)

    async def noop(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Never called; the handler is only asked whether it matches."""

    assert command.message is not None
    assert "/start abc" == command.message.text
    assert {MessageEntity(MessageEntity.BOT_COMMAND, 0, 6): "/start"} == command.message.parse_entities()
    assert (["abc"], True) == CommandHandler("start", noop).check_update(command)
    assert press.callback_query is not None
    assert ("r:5", 3, 42) == (
        press.callback_query.data,
        press.callback_query.message.message_id if press.callback_query.message else None,
        press.callback_query.from_user.id,
    )


async def test_a_polling_application_answers_a_queued_command(fake: FakeBotApi) -> None:
    """An Application polling the fake receives a queued /start and its reply is recorded."""

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        await context.bot.send_message(update.effective_chat.id, f"Hallo {context.args}")

    app = ApplicationBuilder().token(DEFAULT_TOKEN).base_url(fake.base_url).build()
    app.add_handler(CommandHandler("start", start))
    async with app:
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0.0, timeout=dt.timedelta(seconds=1))
        await app.start()
        fake.queue_update(message_update(10, 42, "/start abc"))
        replies = await fake.wait_for("sendMessage")
        await app.updater.stop()
        await app.stop()

    assert [(42, "Hallo ['abc']")] == [(c.params["chat_id"], c.params["text"]) for c in replies]


async def test_unknown_methods_and_injected_server_errors_are_telegram_errors(fake: FakeBotApi) -> None:
    """An unknown method is EndPointNotFound; an injected 500 is a NetworkError, once."""
    fake.fail_next("answerCallbackQuery", error_code=500)
    async with Bot(DEFAULT_TOKEN, base_url=fake.base_url) as bot:
        with pytest.raises(EndPointNotFound):
            await bot.do_api_request("noSuchMethod")
        with pytest.raises(NetworkError, match="Internal Server Error"):
            await bot.answer_callback_query("cq1")
        answered = await bot.answer_callback_query("cq1")

    assert True is answered
    assert [("noSuchMethod", True), ("answerCallbackQuery", True), ("answerCallbackQuery", False)] == [
        (c.method, c.failed) for c in fake.calls[1:]
    ]


async def test_wait_for_names_the_calls_it_saw_when_it_times_out(fake: FakeBotApi) -> None:
    """wait_for returns once the calls arrived and otherwise fails listing what did arrive."""
    async with Bot(DEFAULT_TOKEN, base_url=fake.base_url) as bot:
        await bot.send_message(42, "Hallo")

    assert 1 == len(await fake.wait_for("sendMessage"))
    with pytest.raises(AssertionError, match=r"\['getMe', 'sendMessage'\]"):
        await fake.wait_for("sendPhoto", timeout=0.1)


async def _post_messages(fake: FakeBotApi, chats: range) -> list[httpx.Response]:
    """sendMessage to each chat, all at once, as raw HTTP, so the fake's answer can be read whole."""
    url = f"{fake.base_url}{fake.token}/sendMessage"
    async with httpx.AsyncClient() as client:
        return await asyncio.gather(
            *(client.post(url, data={"chat_id": chat, "text": "Hallo"}) for chat in chats)
        )


async def _post_message(fake: FakeBotApi, chat: int) -> httpx.Response:
    [response] = await _post_messages(fake, range(chat, chat + 1))
    return response


class HandClock:
    """A monotonic clock the test moves, so the rate window never depends on the machine's speed."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_rate_limit_refuses_the_31st_message_within_a_second() -> None:
    """With limit_rate(30) a 31st message within one second gets Telegram's 429 and is not delivered."""
    clock = HandClock()
    with FakeBotApi(clock=clock) as fake:
        fake.limit_rate(30)
        accepted = await _post_messages(fake, range(1, 31))
        clock.now += 0.999
        refused = await _post_message(fake, 31)

    assert [200] * 30 == [response.status_code for response in accepted]
    assert 429 == refused.status_code
    assert {
        "ok": False,
        "error_code": 429,
        "description": "Too Many Requests: retry after 1",
        "parameters": {"retry_after": 1},
    } == refused.json()
    assert (30, 1, 30) == (len(fake.sent()), fake.too_many_requests, len(fake.message_arrivals))
    assert [(31, True)] == [(c.params["chat_id"], c.failed) for c in fake.calls if c.params["chat_id"] == 31]


async def test_rate_limit_accepts_again_once_the_window_has_passed() -> None:
    """A message after the oldest delivered one left the window goes through again."""
    clock = HandClock()
    with FakeBotApi(clock=clock) as fake:
        fake.limit_rate(2, per=0.5)
        first = [await _post_message(fake, chat) for chat in (1, 2, 3)]
        clock.now += 0.5  # the window is (now - 0.5, now]: the first arrival has just left it
        later = await _post_message(fake, 4)

    assert [200, 200, 429, 200] == [response.status_code for response in [*first, later]]
    assert (3, 1) == (len(fake.message_arrivals), fake.too_many_requests)


@pytest.mark.usefixtures("ptb_timedelta")
async def test_photos_count_toward_the_rate_limit_and_other_calls_do_not(fake: FakeBotApi) -> None:
    """sendPhoto uses up the window like sendMessage; getMe and edits are never refused."""
    fake.limit_rate(1, per=60)
    async with Bot(DEFAULT_TOKEN, base_url=fake.base_url) as bot:
        photo = await bot.send_photo(42, PNG)
        await bot.get_me()
        await bot.edit_message_reply_markup(chat_id=42, message_id=photo.message_id)
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(42, "Hallo")

    assert dt.timedelta(seconds=60) == caught.value.retry_after
    assert [False, False, False, False, True] == [c.failed for c in fake.calls]


async def test_rate_limit_is_off_by_default(fake: FakeBotApi) -> None:
    """Without limit_rate, 60 messages at once are all delivered and their arrivals kept."""
    responses = await _post_messages(fake, range(1, 61))

    assert [200] * 60 == [response.status_code for response in responses]
    assert (60, 0) == (len(fake.message_arrivals), fake.too_many_requests)


def test_stop_ends_the_server_thread() -> None:
    """Leaving the with block stops the server and its thread."""
    # Other tests' servers may still be ending on their own (their fixtures do not wait).
    before = set(threading.enumerate())
    with FakeBotApi():
        started = [t for t in threading.enumerate() if t not in before]

    assert (["fake-telegram-bot-api"], [False]) == (
        [t.name for t in started],
        [t.is_alive() for t in started],
    )
