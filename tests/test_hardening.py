"""The hourly run tried as a hostile user would: the whole replay, halts, bad input, bad bars,
a locked database. Each test is one item of the hardening issue and failed before its fix."""
from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import REPO, TRADING_SYMBOLS, query, report_lines, stockstock, template_with

from stockstock.calendar import next_session, sessions_between
from stockstock.data import EMBEDDED_SYMBOLS, seed
from stockstock.db import RiskEventRow, SignalRow, SimOrder, init_db
from stockstock.model import (DEFAULT_PARAMS, LGBMTradingModel, build_dataset, default_cutoff,
                              fit_booster, save_model)
from stockstock.state import sim_clock, sim_failures

RUN_TIMEOUT = 180



def _notebooks(home: Path) -> list[Path]:
    return [p for p in (home / "outputs").rglob("*.ipynb") if "replay" not in p.parts]


# ---------------------------------------------------------------------------------------------
# 1. the sim replay runs to the end of the data


@pytest.fixture(scope="module")
def replay_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    "All five embedded symbols (FB's short history included), a model at the default cut-off."
    home = tmp_path_factory.mktemp("replay")
    db = init_db(f"sqlite:///{home}/data/stockstock.db")
    seed(db, list(EMBEDDED_SYMBOLS), progress=False)
    bars = {s: db.load_ohlcv(s) for s in EMBEDDED_SYMBOLS}
    days = pd.DatetimeIndex(sorted(set().union(*[b.index for b in bars.values()])))
    cutoff = default_cutoff(days)
    ds = build_dataset({s: bars[s] for s in TRADING_SYMBOLS}, cutoff=cutoff)
    save_model(LGBMTradingModel(fit_booster(ds.X, ds.y, DEFAULT_PARAMS, 100),
                                {"cutoff": str(cutoff)}), home / "models/lgbm.txt")
    db.close()
    return home


@pytest.mark.slow
def test_sim_replay_walks_every_session_to_the_end_of_the_data(replay_home, monkeypatch):
    "Every session from the cut-off to the last bar, through the run's steps: none fails."
    from stockstock import hourly
    monkeypatch.setenv("STOCKSTOCK_HOME", str(replay_home))
    monkeypatch.chdir(replay_home)
    db = init_db("sqlite:///data/stockstock.db")
    last_bar = db.ohlcv_summary()["last"].max()
    first = next_session(date.fromisoformat("2011-02-28"))
    expected = sessions_between(first, last_bar)
    failed, statuses, orders, fb_notes = [], {}, 0, set()
    for session in expected:
        try:
            run = hourly.run_steps({"confidence_threshold": 0.4})
        except Exception as e:                           # noqa: BLE001 - the count is the point
            failed.append((session, f"{type(e).__name__}: {e}"))
            break
        summary = run.outcome.summary
        assert run.run.plan.session == session, (run.run.plan.session, session)
        statuses[summary["status"]] = statuses.get(summary["status"], 0) + 1
        orders += summary["n_orders"]
        fb = next(s for s in run.decision.signals if s.symbol == "FB")
        if fb.confidence is None: fb_notes.add(fb.note.split(" (")[0].split(":")[0])
    assert failed == [], failed
    assert statuses == {"ok": len(expected)}, statuses
    assert sim_clock(db) == last_bar
    assert orders > 10                                     # the replay really trades
    # FB: not listed yet before its listing (issue 18), then too little history, never a failure
    assert fb_notes == {"not_listed", "not enough history"}, fb_notes
    print(f"\nsim replay: {len(expected)} sessions {expected[0]}..{expected[-1]}, "
          f"{statuses}, {orders} orders, 0 failed")


def _failing_template(home: Path, session: str) -> None:
    "A home-local scheduled notebook that fails deterministically on `session`."
    fail = f"if str(plan.session) == {session!r}: raise RuntimeError('a deterministic failure')"
    template_with(home, "open_run", fail)


@pytest.mark.slow
def test_a_day_that_always_fails_does_not_wedge_the_replay(trading_home):
    "The same session fails twice: the clock moves past it and the index shows the failed day."
    home = trading_home                                  # its sim clock stands at 2011-03-14
    _failing_template(home, "2011-03-15")
    trade = ("trade", "--params", "scheduled/test.yaml")
    results = [stockstock(*trade, home=home, timeout=RUN_TIMEOUT) for _ in range(3)]
    assert [r.returncode for r in results] == [1, 1, 0], [r.stdout for r in results]
    runs = query(home, "SELECT as_of, status FROM runs ORDER BY started_at")
    days = [str(pd.Timestamp(a).tz_localize("UTC").tz_convert("America/New_York").date())
            for a, _ in runs]
    assert list(zip(days, [s for _, s in runs], strict=True)) == [
        ("2011-03-15", "failed"), ("2011-03-15", "failed"), ("2011-03-16", "ok")]
    db = init_db(f"sqlite:///{home}/data/stockstock.db")
    assert sim_failures(db) == {"2011-03-15": 2} and str(sim_clock(db)) == "2011-03-16"
    index = (home / "outputs/index.html").read_text()
    assert index.count("class='run failed sim'") == 2 and "a deterministic failure" in index


# ---------------------------------------------------------------------------------------------
# 2. a halt stops entries, never protection


@pytest.mark.slow
def test_a_halt_never_blocks_a_recorded_stop_loss(trading_home):
    """The issue's repro: a run records a stop-loss SELL and the daily-loss halt, then dies before
    sending; the re-run (halted) still sends that SELL, exactly once, and ends ok with a note."""
    home = trading_home
    limits = ("-p", "confidence_threshold=0.34", "-p", "stop_loss_pct=0.03",
              "-p", "max_daily_loss_usd=300")
    trade = ("trade", "--params", "scheduled/test.yaml", *limits)
    for as_of in ("2011-03-04T20:30:00Z", "2011-03-09T20:30:00Z"):
        r = stockstock(*trade, "-p", f"as_of={as_of}", home=home, timeout=RUN_TIMEOUT)
        assert r.returncode == 0, r.stdout + r.stderr
    (held,), = query(home, "SELECT qty FROM sim_positions WHERE symbol = 'MSFT'")
    slot = ("-p", "as_of=2011-03-16T19:30:00Z")
    crashed = stockstock(*trade, *slot, home=home, env={"STOCKSTOCK_CRASH_AT": "after_intent"},
                         timeout=RUN_TIMEOUT)
    assert crashed.returncode == 1, crashed.stdout
    assert query(home, "SELECT symbol, side, reason, status FROM trades WHERE side = 'SELL'") \
        == [("MSFT", "SELL", "stop_loss", "intent")]
    assert query(home, "SELECT count(*) FROM sim_orders WHERE side = 'SELL'") == [(0,)]
    rerun = stockstock(*trade, *slot, home=home, timeout=RUN_TIMEOUT)
    assert rerun.returncode == 0 and ": ok" in rerun.stdout, rerun.stdout + rerun.stderr
    assert "halted (daily_loss): entries blocked" in rerun.stdout
    assert query(home, "SELECT symbol, side, qty, status FROM sim_orders WHERE side = 'SELL'") \
        == [("MSFT", "SELL", held, "filled")]
    assert query(home, "SELECT status FROM trades WHERE side = 'SELL'") == [("filled",)]
    assert query(home, "SELECT count(*) FROM sim_positions WHERE symbol = 'MSFT'") == [(0,)]
    (status, reason), = query(home, "SELECT status, reason FROM runs ORDER BY started_at DESC "
                                     "LIMIT 1")
    assert (status, reason.split("; ")[0]) == ("ok", "halted (daily_loss): entries blocked")


# ---------------------------------------------------------------------------------------------
# 3. every bad input: one line naming the field, exit status 2, nothing recorded

def _write(home: Path, name: str, data: bytes) -> str:
    (home / name).write_bytes(data)
    return name


BAD_INPUTS = [
    # (case, extra argv, environment, files to write, expected in the one line)
    ("symbols=5", ["-p", "symbols=5"], {}, {}, "symbols: 5 is not a list of tickers"),
    ("symbols empty", ["-p", "symbols="], {}, {}, "symbols: empty value"),
    ("as_of empty", ["-p", "as_of="], {}, {}, "as_of: empty value"),
    ("YAML symbols: empty", ["--params", "empty.yaml"], {}, {"empty.yaml": b"symbols:\n"},
     "symbols: no symbols given"),
    ("YAML unclosed [", ["--params", "bracket.yaml"], {},
     {"bracket.yaml": b"symbols: [AAPL, MSFT\n"}, "is not valid YAML"),
    ("YAML tab indentation", ["--params", "tabs.yaml"], {},
     {"tabs.yaml": b"symbols:\n\t- AAPL\n"}, "is not valid YAML"),
    ("YAML not UTF-8", ["--params", "latin1.yaml"], {},
     {"latin1.yaml": "symbols: [AAPL] # caf\xe9\n".encode("latin-1")}, "is not UTF-8 text"),
    ("YAML top-level list", ["--params", "list.yaml"], {}, {"list.yaml": b"- AAPL\n- MSFT\n"},
     "must be a mapping of key: value"),
    ("--params a folder", ["--params", "scheduled"], {}, {}, "is a folder"),
    ("--params missing", ["--params", "nope.yaml"], {}, {}, "does not exist"),
    ("as_of outside the calendar", ["-p", "as_of=2030-01-03T20:30:00Z"], {}, {},
     "as_of: 2030-01-03 20:30:00+00:00 is outside the XNYS calendar"),
    ("as_of before the cut-off", ["-p", "as_of=2005-06-01T19:30:00Z"], {}, {},
     "as_of: 2005-06-01 is on or before the model's training cut-off 2011-02-28"),
    ("db_url unwritable", ["-p", "db_url=sqlite:////proc/stockstock/x.db"], {}, {},
     "db_url: cannot create the folder"),
    ("db_url driver missing", ["-p", "db_url=sqlite+pysqlcipher:///data/x.db"], {}, {},
     "db_url: the driver"),
    ("db_url another database", ["-p", "db_url=mysql://u@localhost/x"], {}, {},
     "db_url: SQLite (sqlite:///path) or PostgreSQL"),
    ("db_url server unreachable", ["-p", "db_url=postgresql+psycopg://u@127.0.0.1:9/x"], {}, {},
     "db_url: cannot open the database 'postgresql+psycopg://u@127.0.0.1:9/x'"),
    ("db_url with a password", ["-p", "db_url=postgresql://u:hunter2@127.0.0.1/x"], {}, {},
     "a password in db_url would be recorded with every run"),
    ("TELEGRAM_CHAT_IDS=notanumber", [], {"TELEGRAM_CHAT_IDS": "notanumber"}, {},
     "invalid environment: TELEGRAM_CHAT_IDS: 'notanumber' is not a chat id"),
    ("--cell-timeout 0", ["--cell-timeout", "0"], {}, {}, "--cell-timeout: must be > 0"),
    ("--cell-timeout -5", ["--cell-timeout", "-5"], {}, {}, "--cell-timeout: must be > 0"),
    ("max_daily_loss_usd=.inf", ["-p", "max_daily_loss_usd=.inf"], {}, {},
     "max_daily_loss_usd: Input should be a finite number"),
    ("symbols=ZZZZ (no data)", ["-p", "symbols=ZZZZ"], {}, {},
     "symbols: no bars in the database for ZZZZ"),
]


@pytest.fixture(scope="module")
def bad_input_table(request):
    rows: list[tuple] = []
    yield rows
    report_lines(request, [
        f"bad inputs: {len(rows)}, exit 2: {sum(code == 2 for _, code, _ in rows)}, "
        f"tracebacks: {sum('Traceback' in line for _, _, line in rows)}",
        *(f"  {case:<30} exit {code}  {line[:110]}" for case, code, line in rows)] if rows else [])


@pytest.mark.parametrize("case, argv, env, files, expected", BAD_INPUTS,
                         ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_records_nothing(case, argv, env, files, expected,
                                                         trading_home, bad_input_table):
    home = trading_home
    for name, data in files.items(): _write(home, name, data)
    before = query(home, "SELECT count(*) FROM runs")
    r = stockstock("trade", "--params", "scheduled/test.yaml", *argv, home=home, env=env,
                   timeout=60)
    lines = r.stderr.strip().splitlines()
    bad_input_table.append((case, r.returncode, lines[0] if lines else ""))
    assert r.returncode == 2, (case, r.returncode, r.stdout, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("stockstock trade"), lines
    assert expected in lines[0], lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert query(home, "SELECT count(*) FROM runs") == before       # nothing recorded
    assert not _notebooks(home)


def test_a_pinned_run_never_moves_the_sim_clock_back(trading_home):
    home = trading_home                                   # clock at 2011-03-14
    r = stockstock("trade", "--params", "scheduled/test.yaml", "-p",
                   "as_of=2011-03-19T15:00:00Z", home=home, timeout=RUN_TIMEOUT)
    assert r.returncode == 0 and "skipped" in r.stdout, r.stdout
    db = init_db(f"sqlite:///{home}/data/stockstock.db")
    assert str(sim_clock(db)) == "2011-03-19"
    r = stockstock("trade", "--params", "scheduled/test.yaml", "-p",
                   "as_of=2011-03-12T15:00:00Z", home=home, timeout=RUN_TIMEOUT)
    assert r.returncode == 0 and "skipped" in r.stdout, r.stdout
    assert str(sim_clock(db)) == "2011-03-19"


# ---------------------------------------------------------------------------------------------
# 4. bad bars are never traded on

DAY = "2011-03-16"   # the slot the test model buys MSFT and GOOG on (see test_crash_and_lock)


def _corrupt(db_path: Path, symbol: str, day: str, **columns) -> None:
    con = sqlite3.connect(db_path)
    with con:
        if columns == {"delete": True}:
            con.execute("DELETE FROM ohlcv WHERE symbol = ? AND date = ?", (symbol, day))
        for col, expr in columns.items():
            if col == "delete": continue
            con.execute(f"UPDATE ohlcv SET {col} = {expr} WHERE symbol = ? AND date = ?",
                        (symbol, day))
    con.close()


BAR_CASES = [
    ("close x100, consistent bar", dict(open="open*100", high="high*100", low="low*100",
                                        close="close*100"), "quarantined", "close moved"),
    ("close x100 only", dict(close="close*100"), "quarantined", "high below open/close"),
    ("high < low", dict(high="low*0.5"), "quarantined", "high below"),
    ("NaN open", dict(open="'NaN'"), "quarantined", "missing or non-finite value"),
    ("NaN close", dict(close="'NaN'"), "quarantined", "missing or non-finite value"),
    ("zero close", dict(close="0"), "quarantined", "non-positive price"),
    ("negative close", dict(close="-close"), "quarantined", "non-positive price"),
    ("zero volume", dict(volume="0"), "quarantined", "non-positive volume"),
    ("no bar for the session", dict(delete=True), "missing", "no bar for 2011-03-16"),
]


@pytest.fixture(scope="module")
def bar_table(request):
    rows: list[str] = []
    yield rows
    report_lines(request, ["corrupted bars (MSFT on 2011-03-16, a day the model buys it):",
                           *(f"  {row}" for row in rows)] if rows else [])


def _in_process_run(home: Path, monkeypatch, **params):
    "One sim run in-process: its record (`hourly.RunRecord`) and its summary."
    from stockstock import hourly
    monkeypatch.setenv("STOCKSTOCK_HOME", str(home))
    monkeypatch.chdir(home)
    run = hourly.run_steps({"symbols": TRADING_SYMBOLS, "confidence_threshold": 0.4, **params})
    return run, run.outcome.summary


@pytest.mark.parametrize("case, change, status, reason", BAR_CASES, ids=[c[0] for c in BAR_CASES])
def test_a_bad_bar_quarantines_its_symbol_only(case, change, status, reason, trading_home,
                                               monkeypatch, bar_table):
    home = trading_home
    _corrupt(home / "data/stockstock.db", "MSFT", DAY, **change)
    ctx, summary = _in_process_run(home, monkeypatch, as_of=f"{DAY}T19:30:00Z")
    db = init_db(f"sqlite:///{home}/data/stockstock.db")
    assert summary["status"] == "ok"
    assert ctx.bars.checks["MSFT"].status == status and reason in ctx.bars.checks["MSFT"].reason
    msft = next(s for s in ctx.decision.signals if s.symbol == "MSFT")
    assert msft.action == "HOLD" and msft.note.startswith(status), msft.note
    assert db.count(SimOrder) == len(db.rows(SimOrder, symbol="GOOG")) >= 1   # GOOG still trades
    assert [(e.kind, e.symbol) for e in db.rows(RiskEventRow, run_id=ctx.run.run_id)
            if e.kind.startswith("bar_")] == [(f"bar_{status}", "MSFT")]
    outcome = db.rows(SignalRow, run_id=ctx.run.run_id, symbol="MSFT")[0].outcome
    assert outcome.startswith(status)
    note = db.get_run(ctx.run.run_id).reason or ""      # the index's "reason / note" column
    assert f"MSFT {outcome}" in note, note
    bar_table.append(f"{case:<28} {status:<11} MSFT orders 0, GOOG orders "
                     f"{len(db.rows(SimOrder, symbol='GOOG'))}; {outcome[:70]}")


def test_a_bad_bar_never_triggers_a_stop_loss(trading_home, monkeypatch, bar_table):
    "A held MSFT whose next bar reads -99%: no SELL at a price that is probably wrong."
    home = trading_home
    _in_process_run(home, monkeypatch, as_of=f"{DAY}T19:30:00Z")
    db = init_db(f"sqlite:///{home}/data/stockstock.db")
    assert db.rows(SimOrder, symbol="MSFT")[0].status == "filled"
    _corrupt(home / "data/stockstock.db", "MSFT", "2011-03-17", open="open/100",
             high="high/100", low="low/100", close="close/100")
    ctx, summary = _in_process_run(home, monkeypatch, as_of="2011-03-17T19:30:00Z")
    assert ctx.bars.checks["MSFT"].status == "quarantined"
    assert [o.side for o in db.rows(SimOrder, symbol="MSFT")] == ["BUY"]       # no SELL
    events = [(e.kind, e.symbol) for e in db.rows(RiskEventRow, run_id=ctx.run.run_id)]
    assert ("bar_quarantined", "MSFT") in events
    # equity is valued at MSFT's last valid close, not at the bad one
    (equity,), = query(home, "SELECT equity FROM portfolio_snapshots ORDER BY as_of DESC LIMIT 1")
    assert equity > 90_000, equity
    bar_table.append(f"{'held, next bar /100':<28} quarantined no stop-loss SELL at the bad price")


# ---------------------------------------------------------------------------------------------
# 5. database contention is an answer, not a traceback

HOLD_LOCK = ("import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
             "c.execute('BEGIN IMMEDIATE'); print('locked', flush=True); "
             "time.sleep(float(sys.argv[2])); c.execute('ROLLBACK')")


@pytest.mark.slow
def test_a_database_locked_before_the_run_fails_it_in_one_line(trading_home):
    home = trading_home
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(home / "data/stockstock.db"),
                               "600"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        r = stockstock("trade", "--params", "scheduled/test.yaml", home=home,
                       env={"STOCKSTOCK_DB_BUSY_TIMEOUT_S": "1"}, timeout=RUN_TIMEOUT)
    finally:
        holder.kill(); holder.wait(); holder.stdout.close()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed (database is locked by another process for more than 1 s" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    assert not _notebooks(home)
    ok = stockstock("trade", "--params", "scheduled/test.yaml", home=home, timeout=RUN_TIMEOUT)
    assert ok.returncode == 0 and ": ok in" in ok.stdout, ok.stdout + ok.stderr


@pytest.mark.slow
def test_a_database_locked_during_the_run_ends_it_failed_with_its_notebook(trading_home):
    "Another process takes the write lock while the notebook runs, for longer than the timeout."
    home = trading_home
    template_with(home, "open_run",
                  "import subprocess, sys\n"
                  f"holder = subprocess.Popen([sys.executable, '-c', {HOLD_LOCK!r}, "
                  f"{str(home / 'data/stockstock.db')!r}, '5'], stdout=subprocess.PIPE, text=True, "
                  "stderr=subprocess.DEVNULL)\n"
                  "assert holder.stdout.readline().strip() == 'locked'")
    r = stockstock("trade", "--params", "scheduled/test.yaml", home=home,
                   env={"STOCKSTOCK_DB_BUSY_TIMEOUT_S": "1"}, timeout=RUN_TIMEOUT)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "database is locked by another process" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    (nb_path,) = _notebooks(home)
    done = nbformat.read(nb_path, as_version=4)             # written whole, tagged, rendered
    assert done.metadata["stockstock"]["status"] == "failed"
    assert done.metadata["papermill"]["exception"] is True
    assert nb_path.with_suffix(".html").exists()
    time.sleep(5)                                          # the other process lets go
    shutil.copy(REPO / "scheduled/hourly_trade.ipynb", home / "scheduled/hourly_trade.ipynb")
    ok = stockstock("trade", "--params", "scheduled/test.yaml", home=home, timeout=RUN_TIMEOUT)
    assert ok.returncode == 0 and ": ok in" in ok.stdout, ok.stdout + ok.stderr
    statuses = [s for s, in query(home, "SELECT status FROM runs ORDER BY started_at")]
    assert statuses == ["failed", "ok"], statuses
    assert query(home, "SELECT count(*) FROM runs WHERE status = 'running'") == [(0,)]


# ---------------------------------------------------------------------------------------------
# 6. logs an operator can use


@pytest.mark.slow
def test_logs_keep_client_keys_and_the_terminal_gets_readable_lines(trading_home):
    from filelock import FileLock
    home = trading_home
    r = stockstock("trade", "--params", "scheduled/test.yaml", "-p",
                   "as_of=2011-03-16T19:30:00Z", home=home, timeout=RUN_TIMEOUT)
    assert r.returncode == 0, r.stdout + r.stderr
    log = (home / "data/logs/stockstock.jsonl").read_text()
    keys = [k for k, in query(home, "SELECT client_key FROM trades")]
    assert keys and all(f'"client_key": "{k}"' in log for k in keys), keys
    lock = FileLock(str(home / "data/run.lock"))
    with lock:
        busy = stockstock("trade", "--params", "scheduled/test.yaml", home=home, timeout=60)
    line = busy.stderr.strip()
    assert line.startswith("WARNING run_overlap_skipped: run_id=") and "{" not in line, line
