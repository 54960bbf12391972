"""The Telegram bot (`stockstock.telegram`) against the loopback fake Bot API server: every command
from an authorized chat answers from the database's real contents, any other chat gets nothing
and is logged, `/stop` halts the next run's entries and `/start` asks before it resumes them — only
its button, pressed in a whitelisted chat, does (those two on SQLite and on PostgreSQL) — every
line of every answer fits a phone's 40 columns, errors never reach the user, and the bot token
never reaches a log line."""
from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import query, stockstock

from stockstock.config import Secrets, load_params
from stockstock.db import SignalRow, init_db
from stockstock.log import MASK, configure_logging
from stockstock.messages import PHONE_WIDTH, plain_text, width
from stockstock.queries import (format_pnl, format_portfolio, format_runs, format_signals,
                                format_status, format_trades, latest_signals, pnl, portfolio,
                                recent_runs, recent_trades, status)
from stockstock.telegram import COMMANDS, RESUME, build_application
from stockstock.testing.telegram import (DEFAULT_TOKEN, MAX_MESSAGE_LENGTH, FakeTelegram,
                                         run_application_in_thread)

CHAT, STRANGER = 4242, 999
AS_OF = "2011-03-18T19:30:00Z"     # the test model buys MSFT 480 and GOOG 35 in this slot


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram(DEFAULT_TOKEN) as fake:
        yield fake


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    "Everything our logging writes (stdlib libraries routed through it), secrets masked."
    buf = io.StringIO()
    configure_logging("INFO", stream=buf, secrets=[DEFAULT_TOKEN])
    yield buf
    configure_logging("INFO")


@pytest.fixture
def traded_home(trading_home: Path) -> Path:
    "A home after three sim runs in process: orders on 2011-03-18 and 03-21, signals, snapshots."
    from stockstock.hourly import run_steps
    params = load_params(trading_home / "scheduled/test.yaml")
    overrides = {"symbols": params.symbols, "confidence_threshold": params.confidence_threshold}
    for day in ("2011-03-17", "2011-03-18", "2011-03-21"):
        run_steps({**overrides, "as_of": f"{day}T19:30:00Z"})
    return trading_home


def _app(tg: FakeTelegram, home: Path):
    secrets = Secrets(_env_file=None, telegram_bot_token=tg.token, telegram_chat_ids=[CHAT],
                      telegram_api_url=tg.url)
    params = load_params(home / "scheduled/test.yaml")
    db = init_db(params.db_url)
    return build_application(secrets, db, params), db, params


def _ask(tg: FakeTelegram, *commands: str, chat: int = CHAT, timeout: float = 10) -> list[str]:
    "Send `commands` from `chat`, return the answers (texts as sent, HTML), in order."
    before = len(tg.sent_to(chat))
    for c in commands: tg.push_message(chat, c)
    tg.wait_for(lambda: len(tg.sent_to(chat)) >= before + len(commands), timeout)
    return [m.text for m in tg.sent_to(chat)[before:]]


def test_every_command_answers_from_the_database(backend, traded_home, tg):
    app, db, params = _app(tg, traded_home)
    tz = params.display_timezone
    with run_application_in_thread(app):
        answers = dict(zip(["ping", "status", "portfolio", "pnl", "trades", "signals", "runs",
                            "runs2", "help"],
                           _ask(tg, "/ping", "/status", "/portfolio", "/pnl", "/trades",
                                "/signals", "/runs", "/runs 2", "/help"), strict=True))
    assert answers["ping"] == "pong"
    # the same functions over the same database: the answers are the database's contents
    expected_status = format_status(status(db, params), tz).splitlines()
    assert answers["status"].splitlines()[:3] == expected_status[:3]   # (market: now-dependent)
    assert answers["status"].splitlines()[3:] == expected_status[3:]
    assert answers["portfolio"] == format_portfolio(portfolio(db), tz)
    assert answers["pnl"] == format_pnl(pnl(db), tz)
    assert answers["trades"] == format_trades(recent_trades(db, 10), tz)
    assert answers["signals"] == format_signals(latest_signals(db), tz)
    assert answers["runs"] == format_runs(recent_runs(db, 10), tz)
    assert answers["runs2"] == format_runs(recent_runs(db, 2), tz)
    # ... and those contents are what the runs did
    trades = query(traded_home, "SELECT side, qty, symbol, status FROM trades ORDER BY id")
    runs = [r for r, in query(traded_home, "SELECT run_id FROM runs")]
    assert trades[:2] == [("BUY", 480, "MSFT", "filled"), ("BUY", 35, "GOOG", "filled")]
    for side, qty, symbol, state in trades:
        assert f"{side} {qty} {symbol}" in answers["trades"] and state in answers["trades"]
    assert all(run_id in answers["runs"] for run_id in runs) and len(runs) == 3
    assert "MSFT" in answers["portfolio"] and "GOOG" in answers["portfolio"]
    assert "sim mode" in answers["status"] and "Last run: <code>" in answers["status"]
    assert all(f"/{name} —" in answers["help"] for name in COMMANDS)
    for m in tg.sent_to(CHAT): assert m.parse_mode == "HTML" and len(m.text) <= MAX_MESSAGE_LENGTH
    db.close()


def test_an_unauthorized_chat_gets_nothing_and_is_logged(home, tg, log_lines):
    app, db, _ = _app(tg, _empty_home(home))
    with run_application_in_thread(app):
        tg.push_message(STRANGER, "/status")
        tg.push_message(STRANGER, "my secret plan: buy everything")
        tg.push_message(-100123, "/stop", user_id=77)           # a group the bot was added to
        assert _ask(tg, "/ping") == ["pong"]                     # processed after the others
    assert tg.sent_to(STRANGER) == [] and tg.sent_to(-100123) == []
    assert db.get_state("halted") is None                        # the stranger's /stop did nothing
    lines = [x for x in log_lines.getvalue().splitlines() if "unauthorized_telegram_access" in x]
    assert len(lines) == 3 and "chat_id=999" in lines[0] and "chat_id=-100123" in lines[2]
    assert "secret plan" not in log_lines.getvalue() and "/status" not in lines[0]
    db.close()


def _empty_home(home: Path) -> Path:
    (home / "scheduled").mkdir(exist_ok=True)
    (home / "scheduled/test.yaml").write_text("mode: sim\n")
    return home


def test_stop_halts_the_next_runs_entries_and_start_resumes(backend, trading_home, tg):
    home = trading_home
    app, db, _ = _app(tg, home)
    with run_application_in_thread(app):
        stop, = _ask(tg, "/stop")
        assert stop.startswith("⏸ <b>Halted</b>: no new entries until /start"), stop
        assert "as last recorded by our runs" in stop and stop.endswith("nothing")
        halted = stockstock("trade", "--params", "scheduled/test.yaml", "-p", f"as_of={AS_OF}",
                            home=home)
        assert halted.returncode == 0, halted.stdout + halted.stderr
        (state, note), = query(home, "SELECT status, reason FROM runs")
        assert (state, note.split("; ")[0]) == ("ok", "halted (telegram /stop): entries blocked")
        assert query(home, "SELECT count(*) FROM trades WHERE side = 'BUY'") == [(0,)]
        status_answer, start = _ask(tg, "/status", "/start")
        assert "HALTED</b> — telegram /stop, until /start (by telegram:4242" in status_answer
        assert "Trading is <b>halted</b>: telegram /stop" in start, start
        assert db.get_state("halted") is not None                 # /start only asked
        resumed_text = _press(tg, RESUME)
        assert resumed_text.startswith("▶️ <b>Resumed</b> (was halted: telegram /stop)")
        resumed = stockstock("trade", "--params", "scheduled/test.yaml", "-p", f"as_of={AS_OF}",
                             home=home)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert db.get_state("halted") is None
    assert query(home, "SELECT symbol, qty FROM trades WHERE side = 'BUY' ORDER BY id") == [
        ("MSFT", 480), ("GOOG", 35)]
    db.close()



def test_errors_reach_the_log_not_the_user_and_long_lists_are_cut(home, tg, log_lines,
                                                                    monkeypatch):
    import stockstock.telegram as bot
    app, db, _ = _app(tg, _empty_home(home))
    db.add_all([SignalRow(run_id="r", as_of=_utc(), symbol=f"S{i:04d}", action="BUY",
                       confidence=0.5, outcome="an outcome of some length <with> & markup")
                for i in range(400)])

    def broken(db):
        raise RuntimeError("database exploded at /srv/secret/path")

    with run_application_in_thread(app):
        signals, = _ask(tg, "/signals")
        monkeypatch.setattr(bot, "portfolio", broken)
        portfolio_answer, bad_count = _ask(tg, "/portfolio", "/trades lots")
    assert len(signals) <= MAX_MESSAGE_LENGTH and "more not shown" in signals
    assert "&lt;with&gt; &amp;" in signals               # escaped: the fake parsed it as HTML
    assert portfolio_answer.startswith("Sorry, /portfolio failed.")
    assert "exploded" not in portfolio_answer and "secret" not in portfolio_answer
    assert "telegram_command_failed" in log_lines.getvalue()
    assert "database exploded" in log_lines.getvalue()
    assert bad_count == "Give a number from 1 to 50, e.g. 5 (default 10)."
    db.close()


def _utc():
    from datetime import UTC, datetime
    return datetime(2011, 3, 16, 19, 30, tzinfo=UTC)


def test_the_bot_token_never_reaches_a_log_line(home, tg, log_lines):
    """httpx logs each request URL (with the token) at INFO, `telegram.Bot` the API URL at DEBUG.
    The bot keeps those loggers at WARNING; turned up anyway, the masker still hides the token."""
    import logging
    app, db, _ = _app(tg, _empty_home(home))
    configure_logging("DEBUG", stream=log_lines, secrets=[DEFAULT_TOKEN])
    for name in ("httpx", "httpcore", "telegram"): logging.getLogger(name).setLevel(logging.DEBUG)
    try:
        with run_application_in_thread(app):
            _ask(tg, "/ping", "/status")
            tg.fail("sendMessage", 500)                          # errors log too
            tg.push_message(CHAT, "/help")
            tg.wait_for(lambda: any(r.status == 500 for r in tg.calls("sendMessage")))
    finally:
        for name in ("httpx", "httpcore", "telegram"):
            logging.getLogger(name).setLevel(logging.WARNING)
    text = log_lines.getvalue()
    assert "HTTP Request: POST" in text and f"bot{MASK}/sendMessage" in text  # really logged
    assert DEFAULT_TOKEN not in text and DEFAULT_TOKEN.split(":")[1] not in text
    db.close()


def _press(tg: FakeTelegram, label: str, chat: int = CHAT, timeout: float = 10) -> str:
    "Press the button `label` the bot sent to `chat`; the message it became (HTML)."
    before = len(tg.edits)
    tg.press_button(chat, label)
    tg.wait_for(lambda: len(tg.edits) > before, timeout)
    return tg.edits[-1].text


def _blocks(html_text: str) -> list[str]:
    "The lines of `html_text`'s monospace blocks (<pre>, <code>), as the phone shows them."
    found = re.findall(r"<pre>(.*?)</pre>|<code>(.*?)</code>", html_text, re.S)
    return [line for pre, code in found for line in plain_text(pre or code).splitlines()]


def test_every_answer_fits_a_phone(traded_home, tg):
    """Every command's answer, on a database after real runs (with a halt, so /start asks): every
    line in a monospace block is at most 40 columns; lists have headers; times carry the year."""
    app, db, _ = _app(tg, traded_home)
    commands = ["/status", "/portfolio", "/pnl", "/trades", "/trades 50", "/signals", "/runs",
                "/runs 50", "/ping", "/help", "/stop", "/start", "/nonsense"]
    with run_application_in_thread(app):
        answers = dict(zip(commands, _ask(tg, *commands), strict=True))
        answers["(Resume pressed)"] = _press(tg, RESUME)
    widths = {c: max((width(x) for x in _blocks(a)), default=0) for c, a in answers.items()}
    print("\n".join(f"{c:<18} monospace {widths[c]:>3}  lines "
                    f"{max(width(x) for x in plain_text(a).splitlines()):>3}"
                    for c, a in answers.items()))
    assert all(w <= PHONE_WIDTH for w in widths.values()), widths
    assert widths["/portfolio"] > 30 and widths["/trades"] > 30     # (the blocks were measured)
    assert "symbol     qty    avg cost       price" in answers["/portfolio"]
    assert "<pre>symbol action conf  decided" in answers["/signals"]
    assert "period        total  realised unrealised" in answers["/pnl"]
    for c in ("/trades", "/signals", "/runs"):      # the replay is of 2011: every time says so
        assert re.search(r"2011-03-[12]\d \d\d:\d\d", answers[c]), answers[c]
        assert not re.search(r"(?<![\d-])03-1\d \d\d:\d\d", answers[c]), answers[c]
    assert "limit 20.80 -&gt; filled 480 at 20.71" in answers["/trades"], answers["/trades"]
    db.close()


def test_start_asks_and_only_the_button_from_a_whitelisted_chat_resumes(home, tg,
                                                                        log_lines):
    """Telegram's own START button sends /start: on a halted system it must only ask. The Resume
    button pressed from another chat does nothing (not even an acknowledgement); pressed from the
    whitelisted chat it resumes, once; a button shown for an earlier halt resumes nothing."""
    app, db, _ = _app(tg, _empty_home(home))
    with run_application_in_thread(app):
        _ask(tg, "/stop")
        first, second = _ask(tg, "/start", "/start")                 # stray taps of START
        assert "Trading is <b>halted</b>" in first and db.get_state("halted") is not None
        buttons = [m.params["reply_markup"]["inline_keyboard"][0][0] for m in tg.sent_to(CHAT)[-2:]]
        assert [b["text"] for b in buttons] == [RESUME, RESUME]
        data = buttons[0]["callback_data"]
        tg.push_callback(STRANGER, data)                               # another chat, same data
        tg.push_callback(-100123, data, user_id=CHAT)                  # a group, the owner's user
        assert _ask(tg, "/ping") == ["pong"]                           # processed after them
        assert db.get_state("halted") is not None and tg.edits == []
        assert tg.sent_to(STRANGER) == [] and tg.callback_answers == []
        assert _press(tg, RESUME).startswith("▶️ <b>Resumed</b> (was halted: telegram /stop)")
        assert db.get_state("halted") is None
        assert len(tg.callback_answers) == 1
        edited = tg.current(CHAT, tg.edits[-1].message_id)
        assert "reply_markup" not in edited.params                     # the button is gone
        # the other /start's button, pressed after a new halt: it was for the earlier one
        _ask(tg, "/stop")
        tg.push_callback(CHAT, data, message_id=tg.sent_to(CHAT)[-3].message_id)
        tg.wait_for(lambda: len(tg.edits) >= 2, 10)
        assert "earlier halt" in tg.edits[-1].text and db.get_state("halted") is not None
    lines = [x for x in log_lines.getvalue().splitlines() if "unauthorized_telegram_access" in x]
    assert len(lines) == 2 and all("button=True" in x for x in lines), lines
    db.close()
