"""Issue 22: the hourly run never cries wolf — a skipped start is never recorded as failed, bad
paths are refused before anything is recorded, a closed pipe is not an error."""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from filelock import FileLock

from conftest import BIN, query, use_postgres

N_STARTS = 64


def _model(home: Path) -> None:
    "The folders and the model file a run's paths are checked for (the run never reads it)."
    for folder in ("data", "models"): (home / folder).mkdir()
    (home / "models/lgbm.txt").write_text("tree")


def _hold_and_clean(url, locked, stop, closed) -> None:
    "The lock holder: takes the run lock and closes interrupted runs over and over, as a run does."
    from stockstock.db import init_db
    from stockstock.runs import close_interrupted_runs, run_lock
    db, ids = init_db(url), []
    with run_lock(url) as mine:
        locked.set()
        while mine and not stop.is_set(): ids.extend(close_interrupted_runs(db))
    db.close()
    closed.put(ids if mine else ["the lock holder did not get the lock"])


def _start(url, where, go, statuses) -> None:
    "One start of the run (from project home `where`) while another process holds the lock."
    from stockstock.config import TradingParams
    from stockstock.runs import execute_run
    os.environ["STOCKSTOCK_HOME"] = str(where)
    os.chdir(where)
    go.wait(timeout=60)
    try:
        statuses.put(execute_run(TradingParams(mode="sim", symbols=["AAPL"], db_url=url)).status)
    except BaseException as e:              # noqa: BLE001  # the parent reports it
        statuses.put(repr(e))


def test_concurrent_skips_are_never_recorded_as_failed(backend, home: Path, tmp_path_factory,
                                                       request, monkeypatch):
    """64 starts against a held run lock while its holder keeps closing interrupted runs; on
    PostgreSQL half of them from a second project home (another machine) sharing the database."""
    import stockstock.runs  # noqa: F401  # imported once, before forking: cheap children
    import stockstock.trade  # noqa: F401
    _model(home)
    homes, url = [home], "sqlite:///data/stockstock.db"
    if backend == "postgresql":
        url = use_postgres(home, request.getfixturevalue("pg"), monkeypatch)
        homes.append(tmp_path_factory.mktemp("machine-b"))
        _model(homes[1])
    ctx = mp.get_context("fork")
    locked, stop, go = ctx.Event(), ctx.Event(), ctx.Event()
    closed, statuses = ctx.Queue(), ctx.Queue()
    holder = ctx.Process(target=_hold_and_clean, args=(url, locked, stop, closed))
    holder.start()
    assert locked.wait(timeout=60)
    starts = [ctx.Process(target=_start, args=(url, homes[i % len(homes)], go, statuses))
              for i in range(N_STARTS)]
    try:
        for p in starts: p.start()
        go.set()
        got = sorted(statuses.get(timeout=180) for _ in starts)
    finally:
        stop.set()
        for p in [*starts, holder]: p.join(timeout=60)
    assert got == ["skipped"] * N_STARTS
    assert closed.get(timeout=10) == []                # nothing was taken for interrupted
    assert query(home, "SELECT status, count(*) FROM runs GROUP BY status") \
        == [("skipped", N_STARTS)]
    assert query(home, "SELECT count(*) FROM notices")[0][0] == 0    # no failure notice


def test_a_run_alive_on_another_machine_is_left_alone(pg, home: Path, tmp_path_factory,
                                                     monkeypatch):
    """PostgreSQL: a run's lease is an advisory lock in the database, so the clean-up on one
    machine sees a run another machine's process still holds, and closes it once that dies."""
    import sys
    import time
    from datetime import UTC, datetime

    from stockstock.config import TradingParams, as_papermill
    from stockstock.db import init_db
    from stockstock.runs import close_interrupted_runs
    url = use_postgres(home, pg, monkeypatch)
    other = tmp_path_factory.mktemp("machine-b")
    code = ("import time; from stockstock.trade import take_lease; "
            f"take_lease('r-b', {url!r}); print('held', flush=True); time.sleep(120)")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=other, text=True,
                            env={**os.environ, "STOCKSTOCK_HOME": str(other)},
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == "held"
        db, t0 = init_db(url), datetime(2012, 6, 1, 19, 30, tzinfo=UTC)
        db.start_run("r-b", t0, "sim", as_papermill(TradingParams(as_of=t0)))
        assert close_interrupted_runs(db) == []               # held on machine B: left alone
        assert db.get_run("r-b").status == "running"
        proc.kill(); proc.wait()
        deadline = time.monotonic() + 20                     # the server notices the dead link
        while (closed := close_interrupted_runs(db)) == [] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert closed == ["r-b"] and db.get_run("r-b").status == "failed"
        db.close()
    finally:
        proc.kill()


# ---------------------------------------------------------------------------------------------
# a closed pipe (`stockstock trade ... | head -1`) is not an error


@pytest.mark.parametrize("args", [["trade", "-p", "symbols=AAPL"], ["runs"], ["--help"]])
def test_a_closed_pipe_ends_the_command_quietly(home: Path, args: list[str]):
    "The reader of stdout has gone before the first line: same status, no traceback."
    _model(home)
    lock = FileLock(str(home / "data/run.lock"))     # `trade` then skips: quick, no kernel
    lock.acquire()
    try:
        p = subprocess.Popen([str(BIN / "stockstock"), *args], cwd=home, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "STOCKSTOCK_HOME": str(home)})
        p.stdout.close()                              # as `| head -1` does once it has a line
        err = p.stderr.read()
        p.wait(timeout=120)
        p.stderr.close()
    finally:
        lock.release()
    assert p.returncode == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    if args[0] == "trade":                            # the work was done: the skip is recorded
        assert query(home, "SELECT status FROM runs") == [("skipped",)]


# ---------------------------------------------------------------------------------------------
# path parameters are checked before anything is recorded; a locked database is an answer


def _bad_paths(home: Path, outside: Path) -> list[tuple[str, str]]:
    "(override, the words its one line must hold) for each unusable path parameter."
    return [("outputs_dir=/proc/x", "outputs_dir"),
            ("outputs_dir=scheduled/test.yaml", "outputs_dir"),           # a file, not a folder
            (f"db_url=sqlite:///{outside}/a/b/stockstock.db", "db_url"),  # a folder nowhere
            (f"outputs_dir={outside}/a/b", "outputs_dir"),
            ("model_path=models/nothing.txt", "model_path")]


def test_unusable_paths_exit_2_with_one_line_before_anything_is_recorded(trading_home: Path,
                                                                       tmp_path_factory):
    from conftest import stockstock
    home, outside = trading_home, tmp_path_factory.mktemp("outside") / "nowhere"
    before = query(home, "SELECT count(*) FROM runs")
    for override, field in _bad_paths(home, outside):
        r = stockstock("trade", "--params", "scheduled/test.yaml", "-p", override, home=home,
                       timeout=120)
        assert r.returncode == 2, (override, r.stdout, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and field in lines[0] and "Traceback" not in r.stderr, \
            (override, r.stderr)
        assert query(home, "SELECT count(*) FROM runs") == before, override
    assert not outside.exists() and not outside.parent.joinpath("nowhere").exists()
    assert not Path("/proc/x").exists()


def test_a_run_the_database_lock_defeated_is_recorded_failed_once_it_can_write(home: Path,
                                                                               monkeypatch):
    "The lock is held 3 s past the busy timeout: the launcher waits and writes `failed`."
    import sqlite3
    import threading
    import time
    from datetime import UTC, datetime

    from stockstock.config import TradingParams, as_papermill
    from stockstock.db import init_db
    from stockstock.runs import _busy_outcome
    from stockstock.trade import RunPlan
    monkeypatch.setenv("STOCKSTOCK_DB_BUSY_TIMEOUT_S", "1")
    (home / "data").mkdir()
    db = init_db("sqlite:///data/stockstock.db")
    params = TradingParams(as_of=datetime(2012, 6, 1, 19, 30, tzinfo=UTC))
    plan = RunPlan(run_id="r-busy", params=params, session=params.as_of.date(), decides=True,
                   model_path="models/lgbm.txt", model_meta={})
    db.start_run("r-busy", params.as_of, "sim", as_papermill(params))
    holder = sqlite3.connect(home / "data/stockstock.db", isolation_level=None,
                             check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")                 # another process's long write
    threading.Timer(3.0, holder.commit).start()
    started = time.monotonic()
    outcome = _busy_outcome(db, plan, "database is locked", started)
    assert outcome.status == "failed"
    assert db.get_run("r-busy").status == "failed"     # not left `running` for the next run
    assert time.monotonic() - started >= 2.5
    holder.close()
    db.close()


# ---------------------------------------------------------------------------------------------
# a bad number in a Telegram command gets the same answer, whatever its kind


@pytest.mark.parametrize("arg", ["²", "٣", "9" * 5000, "0", "51", "-1", "1e3", "x", "５"])
def test_every_bad_count_gets_the_one_to_fifty_message(arg: str):
    from stockstock.telegram import Refusal, count_arg
    with pytest.raises(Refusal, match="from 1 to 50"):
        count_arg([arg])
    assert [count_arg([]), count_arg(["1"]), count_arg(["50"]), count_arg(["007"])] \
        == [10, 1, 50, 7]


# ---------------------------------------------------------------------------------------------
# duplicate and mis-dated bars from the broker are quarantined, like other bad bars


def _broker_bars(days: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"open": 10.0, "high": 11.0, "low": 9.0, "close": 10.5, "volume": 1e6},
                        index=pd.DatetimeIndex(pd.to_datetime(days), name="date"))


class _Market:
    "A broker whose daily bars are what the test says."
    def __init__(self, bars: pd.DataFrame) -> None: self.bars = bars
    def daily_bars(self, symbol: str, end, count: int) -> pd.DataFrame: return self.bars


@pytest.mark.parametrize("days, words", [
    (["2013-02-01", "2013-02-04", "2013-02-04", "2013-02-05"], "duplicate date"),
    (["2013-02-01", "2013-02-02", "2013-02-04", "2013-02-05"], "not a trading session"),
    (["2013-02-01", "2013-02-04", "2013-02-05", "2013-02-06"], "after"),
])
def test_duplicate_and_misdated_broker_bars_are_quarantined(home: Path, days, words):
    from datetime import date

    from stockstock.cache import top_up
    from stockstock.db import init_db
    db = init_db("sqlite:///data/stockstock.db")
    db.upsert_ohlcv("AAPL", _broker_bars(["2013-01-31"]), source="kis")
    problems = top_up(db, _Market(_broker_bars(days)), ["AAPL"], date(2013, 2, 5), 5)
    assert words in problems.get("AAPL", ""), problems
    db.close()


def test_the_kis_frame_keeps_duplicate_and_late_rows_for_validation():
    "python-kis's bars become our frame without silently dropping what validation must see."
    from datetime import date, datetime
    from types import SimpleNamespace

    from stockstock.kis import _bars_frame
    bar = lambda day: SimpleNamespace(time=datetime.fromisoformat(day), open=1, high=2, low=1,  # noqa: E731
                                      close=1.5, volume=10)
    frame = _bars_frame([bar("2013-02-04"), bar("2013-02-04"), bar("2013-02-05"),
                         bar("2013-02-06")], date(2013, 2, 1), date(2013, 2, 5))
    assert [str(d.date()) for d in frame.index] == ["2013-02-04", "2013-02-04", "2013-02-05",
                                                    "2013-02-06"]
