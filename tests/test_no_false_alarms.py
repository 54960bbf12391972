"""Issue 22: the hourly run never cries wolf — a skipped start is never recorded as failed, bad
paths are refused before anything is recorded, a closed pipe is not an error."""
from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
from pathlib import Path

import pytest
from filelock import FileLock

from conftest import BIN, query

N_STARTS = 64


def _hold_and_clean(locked, stop, closed) -> None:
    "The lock holder: takes the run lock and closes interrupted runs over and over, as a run does."
    from stockstock.db import init_db
    from stockstock.runs import close_interrupted_runs, run_lock
    db, ids = init_db("sqlite:///data/stockstock.db"), []
    with run_lock() as mine:
        locked.set()
        while mine and not stop.is_set(): ids.extend(close_interrupted_runs(db))
    db.close()
    closed.put(ids if mine else ["the lock holder did not get the lock"])


def _start(go, statuses) -> None:
    "One start of the run while another process holds the lock: its outcome's status."
    from stockstock.config import TradingParams
    from stockstock.runs import execute_run
    go.wait(timeout=60)
    statuses.put(execute_run(TradingParams(mode="sim", symbols=["AAPL"])).status)


def test_concurrent_skips_are_never_recorded_as_failed(home: Path):
    "64 starts against a held run lock while its holder keeps closing interrupted runs."
    import stockstock.runs  # noqa: F401  # imported once, before forking: cheap children
    import stockstock.trade  # noqa: F401
    (home / "data").mkdir()
    ctx = mp.get_context("fork")
    locked, stop, go = ctx.Event(), ctx.Event(), ctx.Event()
    closed, statuses = ctx.Queue(), ctx.Queue()
    holder = ctx.Process(target=_hold_and_clean, args=(locked, stop, closed))
    holder.start()
    assert locked.wait(timeout=60)
    starts = [ctx.Process(target=_start, args=(go, statuses)) for _ in range(N_STARTS)]
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


# ---------------------------------------------------------------------------------------------
# a closed pipe (`stockstock trade ... | head -1`) is not an error


@pytest.mark.parametrize("args", [["trade", "-p", "symbols=AAPL"], ["runs"], ["--help"]])
def test_a_closed_pipe_ends_the_command_quietly(home: Path, args: list[str]):
    "The reader of stdout has gone before the first line: same status, no traceback."
    (home / "data").mkdir()
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
