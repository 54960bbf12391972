"""python-telegram-bot 22.8 runs its real HTTP code against the loopback FakeTelegram.

Run: NO_PROXY=127.0.0.1 pytest -q tests/test_fake_telegram.py  (no pytest-asyncio: each async
test body is driven by asyncio.run, or by the fake's thread helper).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import contextlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator

import httpx
import pytest
from telegram import Bot, BotCommand, Update
from telegram.error import (BadRequest, EndPointNotFound, InvalidToken, NetworkError, RetryAfter,
                            TelegramError, TimedOut)
from telegram.ext import Application, CommandHandler, ContextTypes
from telegram.request import HTTPXRequest

from stockstock.testing.telegram import (DEFAULT_TOKEN, FakeTelegram, check_html,
                                         command_entities, run_application_in_thread)

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
TOKEN = DEFAULT_TOKEN
CHAT = 4242


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram(TOKEN) as fake:
        yield fake


def make_bot(tg: FakeTelegram, token: str = TOKEN, read_timeout: float = 5.0) -> Bot:
    return Bot(token, base_url=tg.base_url, base_file_url=tg.base_file_url,
               request=HTTPXRequest(read_timeout=read_timeout))


def build_app(tg: FakeTelegram) -> Application:
    async def ping(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_chat is not None
        await context.bot.send_message(update.effective_chat.id, "pong")

    app = (Application.builder().token(TOKEN)
           .base_url(tg.base_url).base_file_url(tg.base_file_url).build())
    app.add_handler(CommandHandler("ping", ping))
    return app


# ---------------------------------------------------------------------------- log capture
class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def leaks(self, secret: str) -> set[tuple[str, str]]:
        "(logger, level) of every record whose rendered text (traceback included) has `secret`."
        fmt = logging.Formatter()
        return {(r.name, r.levelname) for r in self.records if secret in fmt.format(r)}


class RedactToken(logging.Filter):
    """Replace the bot token in a record's message (args merged) and traceback text.
    Attach it to *handlers*: a filter on a logger only sees records logged on that very logger,
    not those propagated from children such as `telegram.Bot` or `telegram.ext.Updater`."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.token in message:
            record.msg, record.args = message.replace(self.token, "<TOKEN>"), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and self.token in record.exc_text:
            record.exc_text = record.exc_text.replace(self.token, "<TOKEN>")
        return True


LOGGERS = ("httpx", "httpcore", "telegram")


@contextlib.contextmanager
def capture_logs(*filters: logging.Filter) -> Iterator[Capture]:
    "Capture httpx/httpcore/telegram (and their children) at DEBUG."
    handler = Capture()
    for f in filters:
        handler.addFilter(f)
    saved = {}
    for name in LOGGERS:
        logger = logging.getLogger(name)
        saved[name] = logger.level
        logger.setLevel(logging.DEBUG)
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for name in LOGGERS:
            logging.getLogger(name).removeHandler(handler)
            logging.getLogger(name).setLevel(saved[name])


# ---------------------------------------------------------------------------- (1) Bot calls
def test_bot_get_me_and_send_message(tg: FakeTelegram) -> None:
    async def main() -> None:
        async with make_bot(tg) as bot:     # initialize() calls getMe
            me = await bot.get_me()
            assert me.username == tg.bot_username and me.is_bot
            msg = await bot.send_message(CHAT, "<b>AAPL</b> 1 &lt; 2", parse_mode="HTML")
            assert msg.message_id > 0 and msg.chat.id == CHAT and msg.text == "AAPL 1 < 2"
            await bot.set_my_commands([BotCommand("ping", "alive?"), BotCommand("stop", "halt")])
            assert [c.command for c in await bot.get_my_commands()] == ["ping", "stop"]
            # Telegram's limits: 4096 characters, valid HTML
            await bot.send_message(CHAT, "x" * 4096)
            with pytest.raises(BadRequest, match="Message is too long"):
                await bot.send_message(CHAT, "x" * 4097)
            with pytest.raises(BadRequest, match="Can't parse entities"):
                await bot.send_message(CHAT, "P&L < -500 USD", parse_mode="HTML")
            with pytest.raises(BadRequest, match="reserved"):
                await bot.send_message(CHAT, "loss 1.5%", parse_mode="MarkdownV2")

    asyncio.run(main())
    assert [(m.chat_id, m.parse_mode) for m in tg.sent] == [(CHAT, "HTML"), (CHAT, None)]
    assert tg.sent[0].text == "<b>AAPL</b> 1 &lt; 2" and tg.sent[0].plain_text == "AAPL 1 < 2"
    statuses = [(r.method, r.status) for r in tg.requests]
    assert statuses[:2] == [("getMe", 200), ("getMe", 200)]
    assert ("sendMessage", 400) in statuses
    assert tg.commands == [{"command": "ping", "description": "alive?"},
                           {"command": "stop", "description": "halt"}]


def test_wrong_token_and_unknown_method(tg: FakeTelegram) -> None:
    async def main() -> None:
        with pytest.raises(InvalidToken):
            async with make_bot(tg, token="999:wrong"):
                pass
        async with make_bot(tg) as bot:
            with pytest.raises(EndPointNotFound):
                await bot.do_api_request("noSuchMethod")

    asyncio.run(main())
    assert tg.requests[0].status == 401 and tg.calls("noSuchMethod")[0].status == 404
    # raw HTTP: JSON bodies work too, and error bodies are Telegram's
    with httpx.Client(trust_env=False) as client:
        r = client.post(f"{tg.url}/bot999:wrong/getMe")
        assert (r.status_code, r.json()) == (
            401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
        r = client.post(f"{tg.url}/bot{TOKEN}/sendMessage", json={"chat_id": 7, "text": "j"})
        assert r.json()["result"]["text"] == "j" and tg.sent[-1].chat_id == 7


# ---------------------------------------------------------------------------- (2) Application
def test_application_ping_pong_manual_lifecycle(tg: FakeTelegram) -> None:
    async def main() -> None:
        app = build_app(tg)
        await app.initialize()                       # getMe
        await app.start()                            # dispatcher task
        await app.updater.start_polling(poll_interval=0.0, timeout=1)  # deleteWebhook + polling
        try:
            tg.push_message(CHAT, "/ping")
            sent = await tg.wait_for_sent_async(1, timeout=5)   # never block the loop here
            assert (sent[0].chat_id, sent[0].text) == (CHAT, "pong")
        finally:
            await app.updater.stop()                 # cancels the long poll, confirms offset
            await app.stop()
            await app.shutdown()

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 5
    methods = [r.method for r in tg.requests]
    assert methods[:3] == ["getMe", "deleteWebhook", "getUpdates"]
    assert not tg.pending_updates            # the final getUpdates confirmed the /ping update


def test_application_in_thread_for_sync_tests(tg: FakeTelegram) -> None:
    with run_application_in_thread(build_app(tg)):
        tg.push_message(CHAT, "/ping@" + tg.bot_username)
        tg.push_message(CHAT + 1, "/ping")
        tg.wait_for(lambda: len(tg.sent) >= 2, timeout=5)
    assert sorted((m.chat_id, m.text) for m in tg.sent) == [(CHAT, "pong"), (CHAT + 1, "pong")]


def test_push_message_entities() -> None:
    assert command_entities("/ping") == [{"type": "bot_command", "offset": 0, "length": 5}]
    assert command_entities("📈 /status now")[0]["offset"] == 3      # UTF-16 units
    assert command_entities("a/b and http://x/y") == []
    assert check_html('<a href="https://x?a=1&b=2">x</a> <tg-spoiler>y</tg-spoiler>') == "x y"


# ---------------------------------------------------------------------------- getUpdates
def test_long_poll_returns_promptly_and_does_not_block_close() -> None:
    tg = FakeTelegram(TOKEN).start()
    url = f"{tg.url}/bot{TOKEN}/getUpdates"
    with httpx.Client(trust_env=False, timeout=40) as client:
        timer = threading.Timer(0.2, tg.push_message, (CHAT, "hello"))
        timer.start()
        t0 = time.monotonic()
        updates = client.post(url, data={"timeout": "20"}).json()["result"]
        assert time.monotonic() - t0 < 2 and updates[0]["message"]["text"] == "hello"
        # same updates until confirmed by offset
        again = client.post(url, data={"timeout": "0"}).json()["result"]
        assert again == updates
        nxt = updates[-1]["update_id"] + 1
        assert client.post(url, data={"offset": str(nxt), "timeout": "0"}).json()["result"] == []
        assert not tg.pending_updates

        errors: list[BaseException] = []

        def long_poll() -> None:
            try:
                client.post(url, data={"offset": str(nxt), "timeout": "30"})
            except httpx.HTTPError as exc:
                errors.append(exc)

        poller = threading.Thread(target=long_poll, daemon=True)
        poller.start()
        time.sleep(0.2)
        t0 = time.monotonic()
        tg.close()                       # must not wait for the 30 s long poll
        poller.join(5)
        assert time.monotonic() - t0 < 3 and not poller.is_alive()


def test_second_poller_conflicts(tg: FakeTelegram) -> None:
    url = f"{tg.url}/bot{TOKEN}/getUpdates"
    results: list[int] = []

    def poll() -> None:
        with httpx.Client(trust_env=False, timeout=10) as client:
            results.append(client.post(url, data={"timeout": "5"}).status_code)

    first = threading.Thread(target=poll)
    first.start()
    time.sleep(0.2)
    with httpx.Client(trust_env=False) as client:   # a second bot instance polls
        client.post(url, data={"timeout": "0"})
    first.join(5)
    assert results == [409]


# ---------------------------------------------------------------------------- (3) faults
def test_faults_map_to_ptb_exceptions(tg: FakeTelegram) -> None:
    async def main() -> None:
        async with make_bot(tg, read_timeout=0.3) as bot:
            tg.rate_limit("sendMessage", retry_after=7)
            with pytest.raises(RetryAfter) as info:
                await bot.send_message(CHAT, "flood")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                retry_after = info.value.retry_after
            if isinstance(retry_after, dt.timedelta):         # PTB_TIMEDELTA=true opted in
                assert retry_after == dt.timedelta(seconds=7) and not caught
            else:                                             # int + PTBDeprecationWarning
                assert retry_after == 7
                assert any("PTB_TIMEDELTA" in str(w.message) for w in caught)

            tg.fail("sendMessage", 500, times=2)
            for _ in range(2):
                with pytest.raises(NetworkError, match="Internal Server Error") as err:
                    await bot.send_message(CHAT, "boom")
                assert not isinstance(err.value, BadRequest)
            await bot.send_message(CHAT, "third time lucky")

            tg.fail("sendMessage", 403, "Forbidden: bot was blocked by the user")
            with pytest.raises(TelegramError, match="blocked"):
                await bot.send_message(CHAT, "blocked")

            tg.delay("sendMessage", 1.0)
            t0 = time.monotonic()
            with pytest.raises(TimedOut):
                await bot.send_message(CHAT, "slow")
            assert time.monotonic() - t0 < 0.9
            await tg.wait_for_async(lambda: any(m.text == "slow" for m in tg.sent), timeout=3)

            tg.drop("sendMessage")
            with pytest.raises(NetworkError, match="RemoteProtocolError"):
                await bot.send_message(CHAT, "dropped")
            tg.drop("sendMessage", deliver=True)
            with pytest.raises(NetworkError):
                await bot.send_message(CHAT, "lost reply")
            await bot.send_message(CHAT, "after")

    asyncio.run(main())
    # a timed-out or lost-reply request may still have been delivered: retries can duplicate
    assert [m.text for m in tg.sent] == ["third time lucky", "slow", "lost reply", "after"]
    assert [(r.status, r.fault) for r in tg.calls("sendMessage")] == [
        (429, "status"), (500, "status"), (500, "status"), (200, None), (403, "status"),
        (200, "delay"), (0, "drop"), (0, "drop"), (200, None)]


# ---------------------------------------------------------------------------- (4) token in logs
async def _exercise(tg: FakeTelegram) -> None:
    async with make_bot(tg, read_timeout=0.3) as bot:
        await bot.send_message(CHAT, "hello")
        tg.rate_limit("sendMessage", 1)
        tg.fail("sendMessage", 500)
        tg.delay("sendMessage", 0.6)
        for _ in range(3):
            with contextlib.suppress(TelegramError):
                await bot.send_message(CHAT, "x")
    app = build_app(tg)
    await app.initialize()
    await app.start()
    await app.updater.start_polling(poll_interval=0.0, timeout=1)
    tg.push_message(CHAT, "/ping")
    await tg.wait_for_async(lambda: any(m.text == "pong" for m in tg.sent), timeout=5)
    await app.updater.stop()
    await app.stop()
    await app.shutdown()


def test_token_leaks_only_via_httpx_info_and_bot_debug(tg: FakeTelegram) -> None:
    with warnings.catch_warnings(), capture_logs() as logs:
        warnings.simplefilter("ignore")
        asyncio.run(_exercise(tg))
    leaks = logs.leaks(TOKEN)
    # httpx INFO: 'HTTP Request: POST http://…/bot<TOKEN>/sendMessage "HTTP/1.1 200 OK"'
    # telegram.Bot / telegram.ext.ExtBot DEBUG: 'Set Bot API URL: http://…/bot<TOKEN>' and
    # 'Set Bot API File URL: …' (once per Bot constructed). Exceptions carry no URL.
    assert leaks == {("httpx", "INFO"), ("telegram.Bot", "DEBUG"),
                     ("telegram.ext.ExtBot", "DEBUG")}, leaks
    assert not any(TOKEN in r.getMessage() for r in logs.records if r.levelno >= logging.WARNING)

    with warnings.catch_warnings(), capture_logs(RedactToken(TOKEN)) as logs:
        warnings.simplefilter("ignore")
        asyncio.run(_exercise(tg))
    assert logs.leaks(TOKEN) == set()
    assert any("bot<TOKEN>/sendMessage" in r.getMessage() for r in logs.records
               if r.name == "httpx")
