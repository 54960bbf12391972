"""Crashes, kills, the one-run lock, failure records and secrets, via the real `stockstock trade`.

Every test runs the installed console script (papermill, a real kernel, SQLite — and, for the
crashes, kills and locks, PostgreSQL as well: the `backend` fixture); nothing is mocked.
Crashes come from the package's own fault-injection points (`STOCKSTOCK_CRASH_AT`, which make the
kernel `os._exit(86)`) or from SIGKILL of the `stockstock trade` process at a random moment.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import nbformat
import pytest
from conftest import (BIN, db_url, home_processes, query, reap, report_lines, stockstock,
                      template_with)

from stockstock.locks import project_lock
from stockstock.runs import RUN_LOCK

# The slot the test model (conftest: over-fitted, threshold 0.4) trades from a fresh account:
# found by walking the sim clock from 2011-03-14 (03-15: no order; 03-16: BUY MSFT 480 and
# BUY GOOG 35; 03-17: BUY MSFT 1). 19:30 UTC = 15:30 ET, the sim decision time of the session.
# `reference` asserts it really orders (>= 2 orders, so a crash can fall between two of them).
AS_OF = "2011-03-16T19:30:00Z"
TRADE = ("trade", "--params", "scheduled/test.yaml", "-p", f"as_of={AS_OF}")
CRASH_POINTS = ["after_reconcile", "after_intent", "after_submit", "before_finish"]
KILL_SEEDS = [1, 2, 3, 4, 5, 6, 7, 8]
NOT_FINAL = ("intent", "submitted", "partial", "unknown")
RUN_TIMEOUT = 180



def _broker_orders(home: Path) -> Counter:
    "(symbol, side, qty) of every order the sim broker holds, with multiplicity."
    return Counter(query(home, "SELECT symbol, side, qty FROM sim_orders"))


def _run_id(stdout: str) -> str:
    "The run id from `run <id>: <status> ...`."
    line = next(x for x in stdout.splitlines() if x.startswith("run "))
    return line.split()[1].rstrip(":")


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> dict:
    "Counts over every crash/kill scenario of this module, reported at the end."
    counts: dict = dict(scenarios=0, orders=0, duplicates=0, kills=[], notebooks=0)
    yield counts
    report_lines(request, [
        f"crash/kill scenarios: {counts['scenarios']}, broker orders checked: "
        f"{counts['orders']}, duplicate orders: {counts['duplicates']}, "
        f"notebooks left by kills: {counts['notebooks']}, all valid",
        *(f"  SIGKILL {k}" for k in counts["kills"])] if counts["scenarios"] else [])


@pytest.fixture(scope="module")
def reference(trading_template: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    "One uncrashed run of AS_OF in a fresh copy of the template: what the broker should end with."
    assert "STOCKSTOCK_CRASH_AT" not in os.environ
    home = tmp_path_factory.mktemp("reference")
    shutil.copytree(trading_template, home, dirs_exist_ok=True)
    started = time.monotonic()
    r = stockstock(*TRADE, home=home, timeout=RUN_TIMEOUT)
    seconds = time.monotonic() - started
    assert r.returncode == 0 and ": ok in" in r.stdout, r.stdout + r.stderr
    orders = _broker_orders(home)
    # not vacuous: the slot really orders, and more than once (a crash can split the batch)
    assert sum(orders.values()) >= 2, orders
    assert query(home, "SELECT count(*) FROM sim_orders WHERE status = 'filled'")[0][0] >= 1
    return dict(home=home, orders=orders, seconds=seconds)


@pytest.fixture(scope="module")
def pg_reference(reference: dict, trading_template: Path, pg, pg_trading_template: str,
                 tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same uncrashed run on PostgreSQL: it must order exactly what the SQLite run did, and
    its duration places the kills of the PostgreSQL trials."""
    from conftest import _DB_URLS
    from sqlalchemy.engine import make_url
    home = tmp_path_factory.mktemp("pg_reference")
    shutil.copytree(trading_template, home, dirs_exist_ok=True)
    (home / "data/stockstock.db").unlink()
    url = pg.create(make_url(pg_trading_template).database)
    _DB_URLS[home] = url
    started = time.monotonic()
    r = stockstock(*TRADE, home=home, timeout=RUN_TIMEOUT,
                   env={"STOCKSTOCK_DB_URL": url, "STOCKSTOCK_DB_PASSWORD": pg.password})
    seconds = time.monotonic() - started
    assert r.returncode == 0 and ": ok in" in r.stdout, r.stdout + r.stderr
    assert _broker_orders(home) == reference["orders"]
    yield dict(home=home, seconds=seconds)
    pg.drop(_DB_URLS.pop(home))


def _assert_exactly_once(home: Path, reference: dict, tally: dict) -> None:
    "Each client key once at the broker and once in `trades`, consistent, final, as the reference."
    orders = query(home, "SELECT client_key, order_id, trade_date, symbol, side, qty, status "
                          "FROM sim_orders")
    trades = query(home, "SELECT client_key, broker_order_id, symbol, side, qty, status "
                          "FROM trades")
    order_keys = Counter(o[0] for o in orders)
    trade_keys = Counter(t[0] for t in trades)
    # duplicates: the same key twice, or the same symbol/side sent twice on one day (other key)
    dups = sum(n - 1 for n in order_keys.values()) + \
        len(orders) - len({(o[2], o[3], o[4]) for o in orders})
    tally["orders"] += len(orders)
    tally["duplicates"] += dups
    assert dups == 0, orders
    assert all(n == 1 for n in trade_keys.values()), trade_keys
    assert set(order_keys) == set(trade_keys), (order_keys, trade_keys)
    assert _broker_orders(home) == reference["orders"]
    by_key = {o[0]: o for o in orders}
    for key, broker_id, symbol, side, qty, status in trades:
        o = by_key[key]
        assert (broker_id, symbol, side, qty, status) == (o[1], o[3], o[4], o[5], o[6]), (key, o)
    left = query(home, f"SELECT client_key, status FROM trades WHERE status IN {NOT_FINAL}")
    assert left == [], left


def _assert_crashed_run(home: Path, result: subprocess.CompletedProcess) -> str:
    "The killed-kernel run is recorded failed with its (partial) executed notebook."
    assert result.returncode == 1, result.stdout + result.stderr
    run_id = _run_id(result.stdout)
    (status, reason, nb_path), = query(
        home, "SELECT status, reason, notebook_path FROM runs WHERE run_id = ?", run_id)
    assert status == "failed" and "kernel died" in reason, (status, reason)
    assert nb_path and (home / nb_path).exists()
    assert nbformat.read(home / nb_path, as_version=4).metadata["stockstock"]["status"] == "failed"
    return run_id


def _assert_ok_rerun(home: Path) -> str:
    r = stockstock(*TRADE, home=home, timeout=RUN_TIMEOUT)
    assert r.returncode == 0 and ": ok in" in r.stdout, r.stdout + r.stderr
    run_id = _run_id(r.stdout)
    assert query(home, "SELECT status FROM runs WHERE run_id = ?", run_id) == [("ok",)]
    return run_id


# ---------------------------------------------------------------------------------------------
# 1. crash injection: orders exactly once


@pytest.mark.slow
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_then_rerun_places_each_order_exactly_once(point, backend, trading_home, reference,
                                                          tally):
    home, n = trading_home, sum(reference["orders"].values())
    crashed = stockstock(*TRADE, home=home, env={"STOCKSTOCK_CRASH_AT": point},
                         timeout=RUN_TIMEOUT)
    _assert_crashed_run(home, crashed)
    # the crash happened exactly where it was asked to (state the rerun has to repair)
    trades = [s for s, in query(home, "SELECT status FROM trades ORDER BY id")]
    at_broker = query(home, "SELECT count(*) FROM sim_orders")[0][0]
    expected = {"after_reconcile": ([], 0), "after_intent": (["intent"], 0),
                "after_submit": (["intent"], 1)}.get(point)
    if expected is not None:
        assert (trades, at_broker) == expected, (point, trades, at_broker)
    else:  # before_finish: every order out and recorded, only the run's result is missing
        assert len(trades) == n and at_broker == n and not set(trades) & set(NOT_FINAL)

    _assert_ok_rerun(home)
    tally["scenarios"] += 1
    _assert_exactly_once(home, reference, tally)
    assert [s for s, in query(home, "SELECT status FROM runs ORDER BY started_at")] \
        == ["failed", "ok"]


@pytest.mark.slow
@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_sigkill_of_trade_process_then_rerun_places_each_order_once(seed, backend, trading_home,
                                                                     reference, tally, request):
    "SIGKILL `stockstock trade` at a seeded random moment of its run, then run the slot again."
    home = trading_home
    # a seeded moment in this trial's stratum of [0.2, 0.9] x the reference run's duration on
    # this machine (stratified so a few trials spread over the run instead of bunching). On a
    # 5.4 s run: kernel starts at ~0.43, run_started ~0.67, orders ~0.71, run_finished ~0.75,
    # then the HTML; so the strata are: before the kernel, its start, the trading, the end.
    lo, width = 0.2, 0.7 / len(KILL_SEEDS)
    stratum = KILL_SEEDS.index(seed)
    ref = reference if backend == "sqlite" else request.getfixturevalue("pg_reference")
    run_s = ref["seconds"]
    delay = (lo + width * (stratum + random.Random(seed).random())) * run_s
    env = {**os.environ, "STOCKSTOCK_HOME": str(home)}
    proc = subprocess.Popen([str(BIN / "stockstock"), *TRADE], cwd=home, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        finished = True
    except subprocess.TimeoutExpired:
        finished = False
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    leftover = reap(home, grace=3.0)      # a kernel exits within moments of its launcher
    notebooks = list((home / "outputs").rglob("*.ipynb"))
    for nb in notebooks:                   # written atomically: never empty, never truncated
        nbformat.validate(nbformat.read(nb, as_version=4))
    tally["notebooks"] += len(notebooks)
    state = dict(runs=query(home, "SELECT status FROM runs"),
                 trades=[s for s, in query(home, "SELECT status FROM trades")],
                 broker=query(home, "SELECT count(*) FROM sim_orders")[0][0])
    tally["kills"].append(f"{backend} seed {seed} at {delay:.1f} s: "
                          f"{'finished before the kill' if finished else 'killed'} "
                          f"({delay / run_s:.0%} of a run), "
                          f"left {state}, kernels alive 3 s after the kill: {len(leftover)}")

    assert leftover == [], f"kernel(s) {leftover} outlived their killed launcher"
    _assert_ok_rerun(home)
    tally["scenarios"] += 1
    _assert_exactly_once(home, reference, tally)
    assert home_processes(home) == []
    for nb in (home / "outputs").rglob("*.ipynb"):  # the killed run's notebook was finalised
        assert nbformat.read(nb, as_version=4).metadata["stockstock"]["status"] in ("ok", "failed")


class IntentMismatch(Exception):
    "The order at the broker differs from its recorded intent."


@pytest.mark.slow
def test_rerun_sends_the_recorded_intent_when_the_decision_changed(backend, trading_home):
    "Crash between intent and submit, rerun in the same slot with a different decision."
    home = trading_home
    crashed = stockstock(*TRADE, home=home, env={"STOCKSTOCK_CRASH_AT": "after_intent"},
                         timeout=RUN_TIMEOUT)
    _assert_crashed_run(home, crashed)
    (key, status), = query(home, "SELECT client_key, status FROM trades")
    assert status == "intent"
    # same decision slot (the 19:00 UTC hour), half the position limit: fewer shares decided
    r = stockstock("trade", "--params", "scheduled/test.yaml", "-p", "as_of=2011-03-16T19:45:00Z",
                   "-p", "max_position_pct=0.05", home=home, timeout=RUN_TIMEOUT)
    assert r.returncode == 0 and ": ok in" in r.stdout, r.stdout + r.stderr
    assert query(home, "SELECT count(*) FROM sim_orders WHERE client_key = ?", key) == [(1,)]
    (intent_qty, intent_limit, sent_qty, sent_limit, filled), = query(
        home, "SELECT t.qty, t.limit_price, o.qty, o.limit_price, t.filled_qty FROM trades t "
              "JOIN sim_orders o USING (client_key) WHERE client_key = ?", key)
    if (intent_qty, intent_limit) != (sent_qty, sent_limit):
        raise IntentMismatch(f"{key}: trades row says {intent_qty} @ {intent_limit}, broker got "
                             f"{sent_qty} @ {sent_limit} (filled_qty {filled})")


# ---------------------------------------------------------------------------------------------
# 2. one run at a time


def test_run_is_skipped_while_another_holds_the_lock(backend, trading_home):
    home = trading_home
    lock = project_lock(RUN_LOCK, db_url(home))      # the file, or PostgreSQL's advisory lock
    lock.acquire()
    try:
        started = time.monotonic()
        r = stockstock("trade", "--params", "scheduled/test.yaml", home=home, timeout=60)
        seconds = time.monotonic() - started
    finally:
        lock.release()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "skipped (another run is in progress)" in r.stdout
    assert seconds < 20, seconds                      # no waiting for the lock, no kernel
    assert query(home, "SELECT status, reason FROM runs") == [
        ("skipped", "another run is in progress")]
    assert not list(home.glob("outputs/**/*.ipynb"))
    assert query(home, "SELECT count(*) FROM trades")[0][0] == 0


@pytest.mark.slow
def test_lock_of_a_killed_process_does_not_block_the_next_run(backend, trading_home):
    home = trading_home
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from stockstock.locks import project_lock; "
         "lock = project_lock('data/run.lock', sys.argv[1]); lock.acquire(); "
         "print('locked', flush=True); time.sleep(600)", db_url(home)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        blocked = stockstock("trade", "--params", "scheduled/test.yaml", home=home, timeout=60)
        assert "skipped (another run is in progress)" in blocked.stdout  # the child holds it
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=10)
        holder.stdout.close()
    if backend == "sqlite":
        assert (home / "data/run.lock").exists()     # the stale lock file is still there
    r = stockstock("trade", "--params", "scheduled/test.yaml", home=home, timeout=RUN_TIMEOUT)
    assert r.returncode == 0 and ": ok in" in r.stdout, r.stdout + r.stderr
    assert [s for s, in query(home, "SELECT status FROM runs ORDER BY started_at")] \
        == ["skipped", "ok"]


# ---------------------------------------------------------------------------------------------
# 3. failures are recorded, with the executed notebook


@pytest.mark.slow
def test_tampered_model_fails_the_run_with_the_error_in_the_notebook(trading_home):
    home = trading_home
    with open(home / "models/lgbm.txt", "ab") as f:
        f.write(b" ")
    r = stockstock(*TRADE, home=home, timeout=RUN_TIMEOUT)
    assert r.returncode == 1, r.stdout + r.stderr
    (status, reason, nb_path), = query(home, "SELECT status, reason, notebook_path FROM runs")
    assert status == "failed" and "ModelError" in reason and "lgbm.txt" in reason, reason
    assert "modified" in reason
    nb = nbformat.read(home / nb_path, as_version=4)
    assert nb.metadata["papermill"]["exception"] is True
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert [e.ename for e in errors] == ["ModelError"]
    assert (home / nb_path).with_suffix(".html").exists()
    assert query(home, "SELECT count(*) FROM trades")[0][0] == 0
    assert query(home, "SELECT count(*) FROM sim_orders")[0][0] == 0


@pytest.mark.slow
def test_hung_cell_is_stopped_by_the_cell_timeout(trading_home):
    "A home-local `scheduled/hourly_trade.ipynb` (which `runs.template_path` prefers) with a hang."
    home = trading_home
    template_with(home, "open_run", "import time\ntime.sleep(300)  # hung")
    started = time.monotonic()
    r = stockstock(*TRADE, "--cell-timeout", "4", home=home, timeout=RUN_TIMEOUT)
    seconds = time.monotonic() - started
    assert r.returncode == 1, r.stdout + r.stderr
    assert seconds < 60, seconds                      # stopped, not waited out
    (status, reason, nb_path), = query(home, "SELECT status, reason, notebook_path FROM runs")
    assert (status, reason) == ("failed", "a cell ran longer than 4 s and was stopped")
    nb = nbformat.read(home / nb_path, as_version=4)   # it says so, as papermill would
    assert nb.metadata["papermill"]["exception"] is True
    assert "The run stopped at" in nb.cells[0].source
    hung = next(c for c in nb.cells if "time.sleep(300)" in c.source)
    assert hung.metadata["papermill"]["status"] == "failed"
    assert [o.ename for o in hung.outputs if o.output_type == "error"] == ["CellTimeoutError"]
    after = nb.cells[nb.cells.index(hung) + 1:]
    assert {c.metadata["papermill"]["status"] for c in after if c.cell_type == "code"} \
        == {"pending"}
    assert "a cell ran longer than 4 s" in (home / nb_path).with_suffix(".html").read_text()
    assert query(home, "SELECT count(*) FROM trades")[0][0] == 0
    assert reap(home, grace=10) == []                # the hung kernel was shut down


@pytest.mark.slow
def test_no_run_leaves_a_kernel_or_connection_file_behind(trading_home):
    """The launcher starts the run's kernel itself (before papermill) and must stop it on every
    path: a good run, a run skipped at the gate (the kernel was started and is not needed), a
    failed run, and a run whose kernel died. Checked at once after each exit, no grace period."""
    home = trading_home
    env = {"JUPYTER_RUNTIME_DIR": str(home / "runtime")}   # this test's kernel connection files
    good = stockstock(*TRADE, home=home, env=env, timeout=RUN_TIMEOUT)
    assert good.returncode == 0 and ": ok in" in good.stdout, good.stdout + good.stderr
    assert home_processes(home) == [] and not list((home / "runtime").glob("kernel-*.json"))
    saturday = stockstock("trade", "--params", "scheduled/test.yaml", "-p",
                          "as_of=2011-03-19T15:00:00Z", home=home, env=env, timeout=RUN_TIMEOUT)
    assert "skipped (market closed (weekend))" in saturday.stdout, saturday.stdout
    assert home_processes(home) == [] and not list((home / "runtime").glob("kernel-*.json"))
    died = stockstock(*TRADE, home=home, env={**env, "STOCKSTOCK_CRASH_AT": "after_reconcile"},
                      timeout=RUN_TIMEOUT)
    assert died.returncode == 1 and "the kernel died" in died.stdout, died.stdout + died.stderr
    assert home_processes(home) == [] and not list((home / "runtime").glob("kernel-*.json"))
    with open(home / "models/lgbm.txt", "ab") as f:
        f.write(b" ")
    failed = stockstock(*TRADE, home=home, env=env, timeout=RUN_TIMEOUT)
    assert failed.returncode == 1 and "ModelError" in failed.stdout, failed.stdout
    assert home_processes(home) == [] and not list((home / "runtime").glob("kernel-*.json"))
    assert [s for s, in query(home, "SELECT status FROM runs ORDER BY started_at")] \
        == ["ok", "skipped", "failed", "failed"]


def test_bad_parameter_exits_2_with_one_line_and_records_nothing(trading_home):
    home = trading_home
    r = stockstock("trade", "--params", "scheduled/test.yaml", "-p", "order_type=STOP",
                   home=home, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stockstock trade: invalid parameters:"), lines
    assert "order_type" in lines[0] and "STOP" in lines[0]
    assert query(home, "SELECT count(*) FROM runs")[0][0] == 0
    assert not list(home.glob("outputs/**/*.ipynb"))


# ---------------------------------------------------------------------------------------------
# 4. secrets never reach outputs, logs, the database or the console


def _fake_secrets(seed: int = 20110316) -> dict[str, str]:
    rng = random.Random(seed)
    alnum = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

    def word(n: int) -> str: return "".join(rng.choice(alnum) for _ in range(n))

    def digits(n: int) -> str: return "".join(rng.choice("0123456789") for _ in range(n))

    return dict(KIS_APP_KEY="PS" + word(34), KIS_APP_SECRET=word(180),
                KIS_ACCOUNT=f"{digits(8)}-01", KIS_VIRTUAL_APP_KEY="PS" + word(34),
                KIS_VIRTUAL_APP_SECRET=word(180), KIS_VIRTUAL_ACCOUNT=f"5{digits(7)}-01",
                KIS_HTS_ID="hts" + word(9), TELEGRAM_BOT_TOKEN=f"{digits(10)}:AA{word(33)}")


@pytest.mark.slow
def test_secrets_appear_nowhere(trading_home):
    home, secrets = trading_home, _fake_secrets()
    assert len(secrets["KIS_APP_KEY"]) == 36 and len(secrets["KIS_APP_SECRET"]) == 180
    shown = stockstock("config", home=home, env=secrets, timeout=60)   # they are really read
    assert shown.returncode == 0 and "kis_app_secret: set" in shown.stdout, shown.stderr
    assert "telegram_bot_token: set" in shown.stdout
    # paper mode with the secrets, pointed at a loopback port nothing listens on: the run must
    # fail on the unreachable broker without printing, logging or storing any of them
    dead = {"KIS_REAL_URL": "http://127.0.0.1:9", "KIS_VIRTUAL_URL": "http://127.0.0.1:9"}
    paper = stockstock("trade", "-p", "mode=paper", "--params", "scheduled/test.yaml",
                       "-p", f"as_of={AS_OF}", "-p", "request_timeout_s=1", home=home,
                       env={**secrets, **dead}, timeout=RUN_TIMEOUT)
    assert paper.returncode == 1 and "connection lost" in paper.stdout, \
        paper.stdout + paper.stderr
    sim = stockstock(*TRADE, home=home, env=secrets, timeout=RUN_TIMEOUT)
    assert sim.returncode == 0 and ": ok in" in sim.stdout, sim.stdout + sim.stderr
    assert [s for s, in query(home, "SELECT status FROM runs ORDER BY started_at")] \
        == ["failed", "ok"]

    files = [p for p in (home / "outputs").rglob("*") if p.is_file()]
    files += [p for p in (home / "data/logs").glob("*") if p.is_file()]
    assert any(p.suffix == ".ipynb" for p in files) and any(p.suffix == ".html" for p in files)
    log_text = b"".join(p.read_bytes() for p in files if p.suffix == ".jsonl")
    assert b'"order_filled"' in log_text            # the kernel's events reach the masked log
    db = home / "data/stockstock.db"
    files += [p for p in (db, db.with_name(db.name + "-wal")) if p.exists()]
    places = {str(p.relative_to(home)): p.read_bytes() for p in files}
    places |= {"paper stdout": paper.stdout.encode(), "paper stderr": paper.stderr.encode(),
               "sim stdout": sim.stdout.encode(), "sim stderr": sim.stderr.encode(),
               "config stdout": shown.stdout.encode(), "config stderr": shown.stderr.encode()}
    leaks = [(name, where) for name, value in secrets.items() for where, text in places.items()
             if value.encode() in text or (len(value) >= 20 and value[:16].encode() in text)]
    assert leaks == [], leaks
    # the run really wrote something where a leak would show (not vacuous)
    assert query(home, "SELECT count(*) FROM trades")[0][0] >= 1
