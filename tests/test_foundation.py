"""End-to-end checks of the foundation through the real `stockstock` console script."""
from __future__ import annotations

import json
import sqlite3

import pandas as pd
from conftest import stockstock

from stockstock.db import init_db


def test_seed_twice_is_idempotent_and_adjusted(home):
    first = stockstock("seed", "--quiet", home=home)
    assert first.returncode == 0, first.stderr
    for sym, rows in [("AAPL", "3270"), ("MSFT", "3270"), ("GOOG", "2148"), ("IBM", "3270"),
                      ("FB", "196")]:
        assert any(line.split()[:2] == [sym, rows] for line in first.stdout.splitlines())
    con = sqlite3.connect(home / "data/stockstock.db")
    counts = con.execute("SELECT symbol, count(*) FROM ohlcv GROUP BY symbol").fetchall()
    con.close()
    second = stockstock("seed", "--quiet", home=home)
    assert second.returncode == 0 and second.stdout == first.stdout
    con = sqlite3.connect(home / "data/stockstock.db")
    assert con.execute("SELECT symbol, count(*) FROM ohlcv GROUP BY symbol").fetchall() == counts
    con.close()
    aapl = init_db("sqlite:///data/stockstock.db").load_ohlcv("AAPL")
    window = aapl.loc["2005-02-01":"2005-03-31", "close"].pct_change().dropna()
    assert window.min() > -0.30, window.min()
    assert abs(aapl["close"].pct_change().loc[pd.Timestamp("2005-02-28")]) < 0.30


def test_bad_parameters_give_one_line_and_nonzero_exit(home):
    for override, field in [("symbols=[AAPL,aapl]", "symbols:"), ("symbols=[TOOLONG]", "symbols:"),
                            ("order_type=market", "order_type:"),
                            ("daily_summary_hour=24", "daily_summary_hour:"),
                            ("mode=live", "mode:"), ("max_position_pct=0", "max_position_pct:")]:
        r = stockstock("seed", "-p", override, home=home)
        assert r.returncode == 2, (override, r.returncode)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and field in lines[0], (override, r.stderr)
    assert not (home / "data/stockstock.db").exists()     # nothing was touched


def test_bad_params_file_names_field(home):
    (home / "p.yaml").write_text("symbols: [AAPL]\norder_type: STOP\n")
    r = stockstock("config", "--params", "p.yaml", home=home)
    assert r.returncode == 2
    assert "order_type: Input should be 'MARKET' or 'LIMIT' (got 'STOP')" in r.stderr


def test_secrets_never_reach_log_or_output(home):
    secret = "S" * 180
    env = {"KIS_APP_SECRET": secret, "KIS_APP_KEY": "PK" + "a" * 34,
           "TELEGRAM_BOT_TOKEN": "123456:telegram-token-value"}
    (home / ".env").write_text("KIS_VIRTUAL_APP_SECRET=virtual-secret-from-dotenv\n")
    r = stockstock("config", home=home, env=env)
    assert r.returncode == 0, r.stderr
    assert "kis_virtual_app_secret: set" in r.stdout and "kis_app_secret: set" in r.stdout
    r2 = stockstock("seed", "--quiet", "--symbols", "FB", home=home, env=env)
    assert r2.returncode == 0
    blobs = [r.stdout, r.stderr, r2.stdout, r2.stderr,
             (home / "data/logs/stockstock.jsonl").read_text()]
    for value in [secret, "PK" + "a" * 34, "telegram-token-value", "virtual-secret-from-dotenv"]:
        assert all(value not in b for b in blobs)
    events = [json.loads(x)["event"] for x in blobs[-1].splitlines()]
    assert "symbol_seeded" in events


def test_help_lists_commands_and_module_entry(home):
    r = stockstock("--help", home=home)
    assert r.returncode == 0
    for name in ("seed", "run", "config"):
        assert name in r.stdout
