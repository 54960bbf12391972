"""Notices of real sim runs (`stockstock trade`) at the loopback fake Bot API server: each arrives
once — also after a crash and a re-run of the slot, on SQLite and on PostgreSQL — and a Telegram
answering 500, 429 or not at all neither breaks a run nor holds it up for more than the sending
budget (4 s)."""
from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import query, stockstock

from stockstock.config import Secrets
from stockstock.db import init_db
from stockstock.notify import send_pending
from stockstock.testing.telegram import DEFAULT_TOKEN, FakeTelegram

pytestmark = pytest.mark.slow

CHAT = 4242
AS_OF = "2011-03-16T19:30:00Z"     # the test model buys MSFT 480 and GOOG 35 in this slot
TRADE = ("trade", "--params", "scheduled/test.yaml", "-p", f"as_of={AS_OF}")
ORDER_KEYS = {"order:20110316T19-MSFT-BUY:filled", "order:20110316T19-GOOG-BUY:filled"}
BUDGET_S = 4.0                     # what `stockstock trade` spends on notices at most


@pytest.fixture
def tg() -> Iterator[FakeTelegram]:
    with FakeTelegram(DEFAULT_TOKEN) as fake:
        yield fake


def _env(tg: FakeTelegram) -> dict[str, str]:
    return {"TELEGRAM_BOT_TOKEN": tg.token, "TELEGRAM_CHAT_IDS": str(CHAT),
            "TELEGRAM_API_URL": tg.url}



def _notices(home: Path) -> dict[str, str]:
    return dict(query(home, "SELECT key, status FROM notices"))


def _trade(home: Path, tg: FakeTelegram, **env: str):
    r = stockstock(*TRADE, home=home, env={**_env(tg), **env}, timeout=180)
    return r


def _log_events(home: Path, event: str) -> list[dict]:
    lines = (home / "data/logs/stockstock.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("event") == event]


def test_notices_of_a_trading_run_arrive_once(backend, trading_home, tg):
    home = trading_home
    r = _trade(home, tg)
    assert r.returncode == 0 and ": ok in" in r.stdout, r.stdout + r.stderr
    assert "notices: 2 sent" in r.stdout, r.stdout
    assert _notices(home) == {k: "sent" for k in ORDER_KEYS}
    texts = sorted(m.plain_text for m in tg.sent)
    assert texts == [
        "✅ Order filled [sim]\nBUY 35 GOOG limit 280.81 -> filled 35 at 279.55",
        "✅ Order filled [sim]\nBUY 480 MSFT limit 20.80 -> filled 480 at 20.70"], texts
    assert {m.chat_id for m in tg.sent} == {CHAT} and {m.parse_mode for m in tg.sent} == {"HTML"}
    # the same slot again: nothing new happens, nothing new is said
    again = _trade(home, tg)
    assert again.returncode == 0 and "notices:" not in again.stdout, again.stdout
    assert len(tg.sent) == 2 and len(_notices(home)) == 2
    assert stockstock("notify", home=home, env=_env(tg)).stdout == ""


@pytest.mark.parametrize("point", ["after_submit", "before_finish"])
def test_notices_arrive_once_after_a_crash_and_rerun(backend, trading_home, tg, point):
    """after_submit: the kernel dies right after the broker took the first order, before its
    status (and notice) was recorded — the re-run's reconciliation finds it filled and tells.
    before_finish: every notice was recorded, the run's record was not — the crashed run's
    process sends them, and the re-run has nothing new to say."""
    home = trading_home
    crashed = _trade(home, tg, STOCKSTOCK_CRASH_AT=point)
    assert crashed.returncode == 1, crashed.stdout + crashed.stderr
    rerun = _trade(home, tg)
    assert rerun.returncode == 0 and ": ok in" in rerun.stdout, rerun.stdout + rerun.stderr
    failed_id, = (r for r, in query(home, "SELECT run_id FROM runs WHERE status = 'failed'"))
    assert _notices(home) == {**{k: "sent" for k in ORDER_KEYS}, f"run_failed:{failed_id}": "sent"}
    texts = Counter(m.text for m in tg.sent)
    assert len(texts) == 3 and set(texts.values()) == {1}, texts        # each arrived once
    failed = next(m.plain_text for m in tg.sent if m.text.startswith("<b>❌"))
    assert failed.startswith(f"❌ Run failed [sim]\nrun {failed_id}: the kernel died"), failed
    assert "\nnotebook outputs/2011-03-16/1530_sim_" in failed and "Traceback" not in failed


@pytest.mark.parametrize("fault", ["500", "429", "timeout"])
def test_telegram_faults_neither_break_nor_stall_the_run(trading_home, tg, fault):
    home = trading_home
    if fault == "500": tg.fail("sendMessage", 500, times=None)
    elif fault == "429": tg.rate_limit("sendMessage", retry_after=30, times=None)
    else: tg.delay("sendMessage", 10.0, times=None)
    started = time.monotonic()
    r = _trade(home, tg)
    wall = time.monotonic() - started
    assert r.returncode == 0 and ": ok in" in r.stdout, r.stdout + r.stderr
    assert query(home, "SELECT status FROM runs") == [("ok",)]
    spent = _log_events(home, "notices_processed")[-1]["seconds"]
    print(f"{fault}: notices took {spent:.2f} s of a {wall:.1f} s `stockstock trade`")
    assert spent <= BUDGET_S + 0.5, spent
    expected = {"500": {"pending"}, "429": {"pending"}, "timeout": {"unconfirmed", "pending"}}
    assert set(_notices(home).values()) == expected[fault], _notices(home)
    assert (fault == "timeout") == ("unconfirmed" in r.stdout), r.stdout

    tg.clear_faults()                      # Telegram is back: the rest goes out, once
    before = len(tg.sent)
    out = stockstock("notify", home=home, env=_env(tg))
    assert out.returncode == 0, out.stderr
    statuses = _notices(home)
    if fault == "timeout":                 # it was delivered after all: never sent twice
        assert Counter(statuses.values()) == {"unconfirmed": 1, "sent": 1}, statuses
        assert Counter(m.text for m in tg.sent).most_common(1)[0][1] == 1
    else:
        assert set(statuses.values()) == {"sent"} and len(tg.sent) - before == 2


def test_429_within_the_budget_is_waited_out_and_a_lost_reply_never_resent(home, tg):
    db = init_db(f"sqlite:///{home}/n.db")
    secrets = Secrets(_env_file=None, telegram_bot_token=tg.token, telegram_chat_ids=[CHAT, 7],
                      telegram_api_url=tg.url)
    db.queue_notice("a", "order_filled", "<b>first</b>")
    db.queue_notice("b", "order_filled", "<b>second</b>")
    tg.rate_limit("sendMessage", retry_after=1)
    started = time.monotonic()
    report = send_pending(db, secrets)
    assert 1.0 <= time.monotonic() - started < 3 and report.sent == 2
    assert [(m.chat_id, m.plain_text) for m in tg.sent] == [
        (CHAT, "first"), (7, "first"), (CHAT, "second"), (7, "second")]
    # a reply lost after Telegram processed the request: unconfirmed, and never resent
    db.queue_notice("c", "order_filled", "<b>third</b>")
    tg.drop("sendMessage", deliver=True)
    report = send_pending(db, secrets)
    assert report.unconfirmed == 1 and [m.plain_text for m in tg.sent].count("third") == 1
    send_pending(db, secrets)
    assert [m.plain_text for m in tg.sent].count("third") == 1
    # one chat down for good (blocked the bot), the other fine: sent, the refusal noted
    db.queue_notice("d", "order_filled", "<b>fourth</b>")
    tg.fail("sendMessage", 403, "Forbidden: bot was blocked by the user")
    assert send_pending(db, secrets).sent == 1
    assert [m.chat_id for m in tg.sent if m.plain_text == "fourth"] == [7]
    db.close()


def test_a_refused_token_keeps_every_notice_until_it_is_fixed(home, tg):
    db = init_db(f"sqlite:///{home}/n.db")
    for key in "abc": db.queue_notice(key, "order_filled", f"<b>{key}</b>")
    wrong = Secrets(_env_file=None, telegram_bot_token="123:revoked", telegram_chat_ids=[CHAT],
                    telegram_api_url=tg.url)
    report = send_pending(db, wrong)                 # the fake answers 401 to another token
    assert (report.sent, report.failed, report.pending) == (0, 0, 3) and not tg.sent
    assert len(tg.calls("sendMessage")) == 1         # the first refusal ends the call
    right = Secrets(_env_file=None, telegram_bot_token=tg.token, telegram_chat_ids=[CHAT],
                    telegram_api_url=tg.url)
    assert send_pending(db, right).sent == 3
    assert sorted(m.plain_text for m in tg.sent) == ["a", "b", "c"]
    db.close()
