"""The database layer on both databases, through the real commands: Alembic migrations of the
previous release's schema, a newer schema refused, an unreachable server and a wrong password in one
line, the password nowhere, `stockstock db copy` from SQLite to PostgreSQL, and the coordination
that must hold across machines — two project homes ("machines") trading against one PostgreSQL
database, N runs at once, the simulated broker's book under concurrent writers, one daemon per
database, one KIS request budget.

The crash/kill, notice, bot and KIS reconciliation tests run on both databases in their own
modules (the `backend` fixture of conftest)."""
from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import (BIN, PgServer, db_url, home_processes, query, reap, stockstock,
                      template_with, use_postgres)

from stockstock.db import Base, init_db, schema_differences, schema_revisions

SCHEMAS = Path(__file__).parent / "schemas"
AS_OF = "2011-03-16T19:30:00Z"     # the test model buys MSFT 480 and GOOG 35 in this slot
TRADE = ("trade", "--params", "scheduled/test.yaml", "-p", f"as_of={AS_OF}")
ORDERS = Counter({("MSFT", "BUY", 480): 1, ("GOOG", "BUY", 35): 1})
RUN_TIMEOUT = 240


def _one_line(r: subprocess.CompletedProcess) -> str:
    "The single line a refused command printed on stderr (asserting that it is one line)."
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def _run_ids(stdout: str) -> list[tuple[str, str]]:
    "`(run_id, status)` of each `run <id>: <status> ...` line."
    return [(x.split()[1].rstrip(":"), x.split()[2]) for x in stdout.splitlines()
            if x.startswith("run ")]


# ---------------------------------------------------------------------------------------------
# migrations


def _load_schema(url: str, backend: str, pg: PgServer | None) -> None:
    "Build the 0.1.0 schema (captured from main before Alembic) in the empty database `url`."
    sql = (SCHEMAS / f"main-0.1.0.{backend}.sql").read_text()
    sql = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    if backend == "sqlite":
        import sqlite3
        con = sqlite3.connect(url.removeprefix("sqlite:///"))
        con.executescript(sql)
        con.close()
    else:
        import psycopg
        from sqlalchemy.engine import make_url
        u = make_url(url)
        with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database,
                             password=pg.password) as con:
            con.execute(sql)


# one row in every table of 0.1.0, written as that release's SQL would hold it
T0, D0 = "2011-03-16 19:30:00.000000", "2011-03-16"
ROWS_0_1_0 = {
    "ohlcv": ("symbol, date, open, high, low, close, volume, source",
              f"'AAPL', '{D0}', 1.5, 2.5, 1.0, 2.0, 1000.0, 'embedded'"),
    "listings": ("symbol, exchange, name, resolved_at", f"'IBM', 'NYS', 'IBM CORP', '{T0}'"),
    "runs": ("run_id, as_of, mode, status, reason, params, git_commit, model_sha256, data_hash, "
             "notebook_path, notebook_sha256, html_sha256, replay_of, n_signals, n_orders, "
             "equity, pnl, started_at, finished_at, duration_s",
             f"'r1', '{T0}', 'sim', 'ok', NULL, '{{\"symbols\": [\"AAPL\"]}}', 'abc', NULL, NULL, "
             f"'outputs/x.ipynb', '{'a' * 64}', '{'b' * 64}', NULL, 1, 1, 100000.5, -1.25, "
             f"'{T0}', '{T0}', 5.5"),
    "signals": ("id, run_id, as_of, bar_date, symbol, action, confidence, probabilities, "
                "features, model_sha256, price, note, outcome, contributions",
                f"7, 'r1', '{T0}', '{D0}', 'AAPL', 'BUY', 0.7, '{{\"UP\": 0.7}}', "
                f"'{{\"rsi_14\": 55.0}}', NULL, 2.0, NULL, 'sent', NULL"),
    "trades": ("id, client_key, run_id, slot, symbol, side, qty, limit_price, order_type, "
               "reason, status, broker_order_id, filled_qty, avg_fill_price, commission, error, "
               "intent_at, submitted_at, last_fill_at, fills, replaces, created_at, updated_at",
               f"3, 'k1', 'r1', '{T0}', 'AAPL', 'BUY', 5, 2.1, 'MARKET', 'signal', 'filled', "
               f"'SIM00000001', 5, 2.0, 0.025, NULL, '{T0}', '{T0}', '{T0}', "
               f"'[{{\"qty\": 5, \"price\": 2.0}}]', NULL, '{T0}', '{T0}'"),
    "notices": ("id, key, kind, run_id, text, status, attempts, error, created_at, sent_at",
                f"2, 'order:k1:filled', 'order_filled', 'r1', '<b>AAPL</b>', 'sent', 1, NULL, "
                f"'{T0}', '{T0}'"),
    "portfolio_snapshots": ("id, run_id, as_of, cash, equity, positions, daily_pnl",
                            f"4, 'r1', '{T0}', 99989.5, 100000.5, '{{\"AAPL\": {{\"qty\": 5}}}}', "
                            "-1.25"),
    "risk_events": ("id, run_id, as_of, kind, symbol, detail",
                    f"5, 'r1', '{T0}', 'stop_loss', 'AAPL', '{{\"loss\": 0.06}}'"),
    "system_state": ("key, value, updated_at", f"'sim_clock', '\"{D0}\"', '{T0}'"),
    "sim_account": ("id, cash, initial_cash", "1, 99989.5, 100000.0"),
    "sim_positions": ("symbol, qty, avg_price", "'AAPL', 5, 2.0"),
    "sim_orders": ("order_id, client_key, trade_date, symbol, side, qty, limit_price, status, "
                   "filled_qty, fill_price, commission, reject_reason, created_at",
                   f"'SIM00000001', 'k1', '{D0}', 'AAPL', 'BUY', 5, 2.1, 'filled', 5, 2.0, "
                   f"0.025, NULL, '{T0}'"),
}


def _fresh_database(backend: str, home: Path, pg: PgServer | None, monkeypatch) -> str:
    "An empty database for `home`: its SQLite file, or a new PostgreSQL database."
    if backend == "sqlite": return db_url(home)
    return use_postgres(home, pg, monkeypatch)


@pytest.fixture
def pg_or_none(backend: str, request: pytest.FixtureRequest) -> PgServer | None:
    return request.getfixturevalue("pg") if backend == "postgresql" else None


def test_the_previous_release_is_upgraded_and_keeps_every_row(backend, home, pg_or_none,
                                                                monkeypatch):
    "0.1.0's schema (before Alembic) with a row in every table: `stockstock db upgrade` adopts it."
    url = _fresh_database(backend, home, pg_or_none, monkeypatch)
    (home / "data").mkdir(exist_ok=True)
    _load_schema(url, backend, pg_or_none)
    for table, (columns, values) in ROWS_0_1_0.items():
        if backend == "postgresql" and columns.startswith("id, ") and table != "sim_account":
            columns, values = columns[4:], values.split(", ", 1)[1]   # its sequence's ids
        query(home, f"INSERT INTO {table} ({columns}) VALUES ({values})")
    assert {t.name for t in Base.metadata.sorted_tables} == set(ROWS_0_1_0) | {"sweep_cells"}
    before = {t: query(home, f"SELECT * FROM {t}") for t in ROWS_0_1_0}
    (last_id,), = query(home, "SELECT max(id) FROM trades")

    r = stockstock("db", "upgrade", "-p", f"db_url={url}", home=home, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    head, applied = schema_revisions()[-1], ", ".join(schema_revisions())
    assert r.stdout.strip() == \
        f"database {url}: upgraded to schema revision {head} (applied {applied})"
    width = {t: len(rows[0]) for t, rows in before.items()}        # later revisions add columns
    assert {t: [r[:width[t]] for r in query(home, f"SELECT * FROM {t}")]
            for t in ROWS_0_1_0} == before                                         # every row
    assert query(home, "SELECT origin, chain_seq, seal FROM runs") == [(None, None, None)]
    db = init_db(url)
    assert db.migrated == [] and schema_differences(db.engine) == []
    run = db.get_run("r1")                     # and the models read them as they were written
    assert (run.params, run.equity, run.as_of) == ({"symbols": ["AAPL"]}, 100000.5,
                                                   datetime(2011, 3, 16, 19, 30, tzinfo=UTC))
    assert db.get_state("sim_clock") == D0
    row, created = db.add_trade_intent("k2", run_id="r2", slot=run.as_of, symbol="IBM",
                                       side="SELL", qty=1, limit_price=1.0)
    assert created and row.id == last_id + 1   # ids go on after the adopted rows
    db.close()


def test_an_older_schema_gains_its_columns(backend, home, pg_or_none, monkeypatch):
    "Older than 0.1.0 (runs without replay_of/html_sha256): the columns come, the rows stay."
    url = _fresh_database(backend, home, pg_or_none, monkeypatch)
    (home / "data").mkdir(exist_ok=True)
    _load_schema(url, backend, pg_or_none)
    columns, values = ROWS_0_1_0["runs"]
    query(home, f"INSERT INTO runs ({columns}) VALUES ({values})")
    for column in ("replay_of", "html_sha256"):
        query(home, f"ALTER TABLE runs DROP COLUMN {column}")
    db = init_db(url)
    assert db.migrated == list(schema_revisions())
    run = db.get_run("r1")
    assert (run.run_id, run.notebook_sha256, run.html_sha256, run.replay_of) == \
        ("r1", "a" * 64, None, None)
    db.close()


def test_the_migrations_build_exactly_the_models(backend, home, pg_or_none, monkeypatch):
    "Alembic's autogenerate finds nothing to change in a database the migrations built."
    db = init_db(_fresh_database(backend, home, pg_or_none, monkeypatch))
    assert db.migrated == list(schema_revisions())
    assert schema_differences(db.engine) == []
    db.close()


def test_processes_opening_a_new_database_at_once_migrate_it_once(backend, home, pg_or_none,
                                                                  monkeypatch):
    url = _fresh_database(backend, home, pg_or_none, monkeypatch)
    (home / "data").mkdir(exist_ok=True)
    code = ("import sys; from stockstock.db import init_db; db = init_db(sys.argv[1]); "
            "print(','.join(db.migrated) or '-')")
    procs = [subprocess.Popen([sys.executable, "-c", code, url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    assert sorted(o.strip() for o, _ in outs) == ["-", "-", "-", ",".join(schema_revisions())]


def test_a_newer_schema_is_refused_in_one_line(backend, trading_home):
    home = trading_home
    query(home, "UPDATE alembic_version SET version_num = '9999'")
    r = stockstock(*TRADE, home=home, timeout=RUN_TIMEOUT)
    assert r.returncode == 2, r.stdout + r.stderr
    line = _one_line(r)
    assert "schema revision 9999, newer than this stockstock knows" in line, line
    assert query(home, "SELECT count(*) FROM runs") == [(0,)]
    assert not list(home.glob("outputs/**/*.ipynb"))


# ---------------------------------------------------------------------------------------------
# bad input: an unreachable server, a wrong password


def _silent_listener() -> tuple[socket.socket, int]:
    "A loopback port that accepts connections and never says a word (a server that hangs)."
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    return s, s.getsockname()[1]


@pytest.mark.parametrize("server", ["refused", "silent"])
def test_an_unreachable_server_is_one_line_in_bounded_time(server, trading_home):
    home = trading_home
    listener, port = _silent_listener()
    if server == "refused": listener.close()         # nothing listens there any more
    env = {"STOCKSTOCK_DB_PASSWORD": "pw-of-a-server-that-is-not-there",
           "STOCKSTOCK_DB_CONNECT_TIMEOUT_S": "2"}
    url = f"postgresql+psycopg://stockstock@127.0.0.1:{port}/stockstock"
    try:
        for command in (TRADE, ("runs",), ("status",), ("seed", "--quiet"), ("db", "upgrade")):
            started = time.monotonic()
            r = stockstock(*command, "-p", f"db_url={url}", home=home, env=env, timeout=60)
            seconds = time.monotonic() - started
            assert r.returncode == 2, (command, r.stdout + r.stderr)
            line = _one_line(r)
            assert f"db_url: cannot open the database '{url}'" in line, line
            assert "pw-of-a-server" not in r.stdout + r.stderr
            assert seconds < 20, (command, seconds)           # the connect timeout, not a hang
    finally:
        listener.close()
    assert not list(home.glob("outputs/**/*.ipynb"))          # nothing half-written
    assert query(home, "SELECT count(*) FROM runs") == [(0,)]  # (nor in the home's own file)


def test_a_wrong_password_is_one_line_and_never_printed(pg_trading_home, monkeypatch):
    home, wrong = pg_trading_home, "Wr0ng-" + "x" * 20
    monkeypatch.setenv("STOCKSTOCK_DB_PASSWORD", wrong)
    r = stockstock(*TRADE, home=home, timeout=RUN_TIMEOUT)
    assert r.returncode == 2, r.stdout + r.stderr
    line = _one_line(r)
    assert "password authentication failed" in line, line
    logs = b"".join(p.read_bytes() for p in (home / "data/logs").glob("*"))
    assert wrong.encode() not in (r.stdout + r.stderr).encode() + logs
    assert not list(home.glob("outputs/**/*.ipynb"))


@pytest.mark.slow
def test_the_database_password_appears_nowhere(pg_trading_home, pg):
    "A PostgreSQL run: the password is in no output, log line, notebook, parameter or row."
    home, password = pg_trading_home, pg.password
    assert len(password) >= 8
    r = stockstock(*TRADE, home=home, timeout=RUN_TIMEOUT)
    assert r.returncode == 0 and ": ok in" in r.stdout, r.stdout + r.stderr
    shown = stockstock("config", "--params", "scheduled/test.yaml", home=home, timeout=60)
    runs = stockstock("runs", "--wide", home=home, timeout=60)
    files = [p for p in [*(home / "outputs").rglob("*"), *(home / "data").rglob("*")]
             if p.is_file()]
    assert any(p.suffix == ".ipynb" for p in files) and any(p.suffix == ".jsonl" for p in files)
    places = {str(p.relative_to(home)): p.read_bytes() for p in files}
    for name, out in (("trade", r), ("config", shown), ("runs", runs)):
        places |= {f"{name} stdout": out.stdout.encode(), f"{name} stderr": out.stderr.encode()}
    for table in Base.metadata.sorted_tables:          # every row of every table, as text
        places[f"table {table.name}"] = repr(query(home, f"SELECT * FROM {table.name}")).encode()
    leaks = [where for where, content in places.items() if password.encode() in content]
    assert leaks == [], leaks
    # not vacuous: the run's parameters (notebook, runs row) do name the database, without it
    (params,), = query(home, "SELECT params FROM runs")
    params = params if isinstance(params, dict) else json.loads(params)
    assert params["db_url"] == db_url(home) and "@127.0.0.1:" in params["db_url"]
    import nbformat
    notebook = nbformat.read(next(p for p in files if p.suffix == ".ipynb"), as_version=4)
    injected, = [c for c in notebook.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert f'db_url = "{db_url(home)}"' in injected.source        # the papermill parameter


# ---------------------------------------------------------------------------------------------
# db copy: a SQLite project moves to PostgreSQL


@pytest.mark.slow
def test_db_copy_moves_a_sqlite_project_to_postgresql(trading_home, pg, monkeypatch):
    home = trading_home
    first = stockstock(*TRADE, home=home, timeout=RUN_TIMEOUT)
    assert first.returncode == 0 and ": ok in" in first.stdout, first.stdout + first.stderr
    target = pg.create()
    with_password = pg.db_url(target.rsplit("/", 1)[1], password=True)   # in the URL, this once
    r = stockstock("db", "copy", "--to", with_password, home=home, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert pg.password not in r.stdout + r.stderr
    assert f"to {target} in" in r.stdout and "every table's rows verified" in r.stdout
    assert "every sealed run file is intact" in r.stdout
    source, copy = init_db(db_url(home)), None
    monkeypatch.setenv("STOCKSTOCK_DB_PASSWORD", pg.password)
    try:
        copy = init_db(target)
        from stockstock.dbcopy import table_digest
        with source.engine.connect() as a, copy.engine.connect() as b:
            for table in Base.metadata.sorted_tables:
                assert table_digest(a, table) == table_digest(b, table), table.name
    finally:
        source.close()
        if copy is not None: copy.close()
    again = stockstock("db", "copy", "--to", target, home=home, timeout=120)
    assert again.returncode == 2 and "is not empty (" in _one_line(again), again.stderr
    # the project goes on on PostgreSQL: the next session trades, ids continue, files verify
    monkeypatch.setenv("STOCKSTOCK_DB_URL", target)
    nxt = stockstock("trade", "--params", "scheduled/test.yaml", "-p",
                     "as_of=2011-03-17T19:30:00Z", home=home, timeout=RUN_TIMEOUT)
    assert nxt.returncode == 0 and ": ok in" in nxt.stdout, nxt.stdout + nxt.stderr
    verify = stockstock("runs", "--verify", home=home, timeout=60)
    assert verify.returncode == 0 and "every sealed run file is intact" in verify.stdout
    from conftest import _DB_URLS
    _DB_URLS[home] = target
    ids = [i for i, in query(home, "SELECT id FROM signals ORDER BY id")]    # 4 copied, 4 new
    assert ids == list(range(1, 9)), ids
    pg.drop(_DB_URLS.pop(home))


@pytest.mark.slow
def test_a_run_on_postgresql_replays_identically(pg_trading_home):
    "`trade --replay` copies the PostgreSQL database into a scratch SQLite file and re-runs there."
    home = pg_trading_home
    r = stockstock(*TRADE, home=home, timeout=RUN_TIMEOUT)
    assert r.returncode == 0 and ": ok in" in r.stdout, r.stdout + r.stderr
    (run_id, _), = _run_ids(r.stdout)
    rep = stockstock("trade", "--replay", run_id, home=home, timeout=RUN_TIMEOUT)
    assert rep.returncode == 0 and "decisions IDENTICAL" in rep.stdout, rep.stdout + rep.stderr
    assert (home / f"data/replay/{run_id}.db").exists()
    assert query(home, "SELECT run_id, status FROM runs") == [(run_id, "ok")]   # untouched


# ---------------------------------------------------------------------------------------------
# one run at a time, across machines


def _second_machine(trading_template: Path, tmp_path: Path, url: str) -> Path:
    "Another project home (another machine) whose database is `url`."
    import shutil
    other = tmp_path / "machine-b"
    shutil.copytree(trading_template, other)
    (other / "data/stockstock.db").unlink()
    return other


def _launch(home: Path) -> subprocess.Popen:
    env = {**os.environ, "STOCKSTOCK_HOME": str(home)}
    return subprocess.Popen([str(BIN / "stockstock"), *TRADE], cwd=home, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("n", [2, 4])
def test_runs_started_at_once_one_trades_the_others_skip(n, backend, trading_home,
                                                         trading_template, tmp_path_factory):
    """`n` `stockstock trade` of one slot started at once — on SQLite in one home, on PostgreSQL
    from two homes ("machines") sharing the database: one runs, the others are recorded skipped,
    each order goes out once, nothing fails. (n=2 on PostgreSQL is issue 19's acceptance test:
    the same command on two machines at once, one ok, one skipped.)"""
    home = trading_home
    homes = [home]
    if backend == "postgresql":
        homes.append(_second_machine(trading_template, tmp_path_factory.mktemp("m"),
                                     db_url(home)))
    for h in homes:      # the run holds the lock 4 s longer than usual: the others surely see it
        template_with(h, "open_run", "import time\ntime.sleep(4)")
    procs = [_launch(homes[i % len(homes)]) for i in range(n)]
    outs = [p.communicate(timeout=RUN_TIMEOUT) for p in procs]
    assert [p.returncode for p in procs] == [0] * n, outs
    printed = sorted(status for out, _ in outs for _, status in _run_ids(out))
    assert printed == ["ok"] + ["skipped"] * (n - 1), outs
    assert all("skipped (another run is in progress)" in out for out, _ in outs
               if ": skipped" in out)
    statuses = sorted(s for s, in query(home, "SELECT status FROM runs"))
    assert statuses == ["ok"] + ["skipped"] * (n - 1)
    assert Counter(query(home, "SELECT symbol, side, qty FROM sim_orders")) == ORDERS
    assert query(home, "SELECT count(*), count(DISTINCT client_key) FROM trades") == [(2, 2)]
    notebooks = [p for h in homes for p in h.glob("outputs/**/*.ipynb")]
    assert len(notebooks) == 1                               # only the run that ran has one
    for h in homes: assert reap(h, grace=10) == [] and home_processes(h) == []


# ---------------------------------------------------------------------------------------------
# the simulated broker's book under concurrent writers (4 threads, 2 processes)


@pytest.fixture
def broker_db(pg: PgServer, home: Path, monkeypatch) -> str:
    "A PostgreSQL database with the AAPL and IBM bars."
    from stockstock.data import seed
    url = use_postgres(home, pg, monkeypatch)
    db = init_db(url)
    seed(db, ["AAPL", "IBM"], progress=False)
    db.close()
    return url


def test_concurrent_brokers_place_each_key_once_on_postgresql(broker_db):
    from stockstock.broker import SimBroker
    from stockstock.db import SimOrder, SimPosition
    keys = [f"key-{i}" for i in range(12)]
    errors: list[BaseException] = []
    at = datetime(2012, 6, 1, 19, 30, tzinfo=UTC)

    def worker(n: int) -> None:
        try:
            db = init_db(broker_db)
            broker = SimBroker(db, at)
            for key in random.Random(n).sample(keys, len(keys)):
                broker.submit_order("AAPL", "BUY", 3, 1_000.0, key)
            db.close()
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads: t.start()
    for t in threads: t.join(timeout=120)
    assert not errors, errors
    db = init_db(broker_db)
    orders = db.rows(SimOrder)
    assert sorted(o.client_key for o in orders) == sorted(keys)
    assert [o.order_id for o in orders] == [f"SIM{i:08d}" for i in range(1, 13)]
    assert all(o.status == "filled" for o in orders)
    (pos,) = db.rows(SimPosition)
    assert pos.qty == 36
    db.close()


CHILD = """
import sys
from datetime import datetime, timezone
from stockstock.broker import SimBroker
from stockstock.db import init_db
db = init_db(sys.argv[1])
b = SimBroker(db, datetime(2012, 6, 1, 19, 30, tzinfo=timezone.utc))
for key in sys.argv[2:]:
    st = b.submit_order("IBM", "BUY", 5, 1000.0, key)
print("RESULT", repr(b.balance().cash))
"""


def test_two_processes_share_one_book_on_postgresql(broker_db):
    keys = [f"p-{i}" for i in range(8)]
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, broker_db, *sorted(keys, reverse=r)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (False, True)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    db = init_db(broker_db)
    from stockstock.db import SimOrder, SimPosition
    assert sorted(o.client_key for o in db.rows(SimOrder)) == sorted(keys)
    assert [p.qty for p in db.rows(SimPosition)] == [40]
    db.close()


# ---------------------------------------------------------------------------------------------
# one daemon per database; one KIS request budget


def test_one_daemon_per_database_whichever_machine(pg_trading_home, tmp_path_factory,
                                                   trading_template):
    from stockstock.daemon import DAEMON_LOCK
    from stockstock.locks import project_lock
    url = db_url(pg_trading_home)
    other = _second_machine(trading_template, tmp_path_factory.mktemp("m"), url)
    with project_lock(DAEMON_LOCK, url):                  # "machine A" runs a daemon
        r = stockstock("serve", "--params", "scheduled/test.yaml", home=other, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith(f"stockstock serve: another daemon or bot is running for this "
                           f"project (pid {os.getpid()} on {socket.gethostname()}, lock "
                           f"advisory lock 'daemon' in {url})"), line
    assert not (other / "data/daemon.pid").exists()


RATE_CHILD = """
import sys, time
from stockstock.kis import RateLimiter
from stockstock.locks import shared_value
limiter = RateLimiter(5, window=0.5, margin=0.0, path=shared_value("data/kis_rate_real.json",
                                                                     sys.argv[1]))
for _ in range(10):
    sid = limiter.acquire()
    time.sleep(0.01)
    print(time.time(), flush=True)                    # "the server saw it" before the answer
    limiter.done(sid)
"""


def test_processes_share_one_kis_budget_through_the_database(home, pg, monkeypatch):
    "Three processes, 10 requests each, at most 5 per 0.5 s together: the budget is one."
    url = use_postgres(home, pg, monkeypatch)
    init_db(url).close()
    procs = [subprocess.Popen([sys.executable, "-c", RATE_CHILD, url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    arrived = sorted(float(x) for out, _ in outs for x in out.split())
    assert len(arrived) == 30
    assert all(arrived[i + 5] - arrived[i] >= 0.5 - 1e-3 for i in range(25)), arrived
    assert not (home / "data/kis_rate_real.json").exists()     # the database's, not a file
    assert query(home, "SELECT count(*) FROM system_state WHERE key = 'kis_rate_real'") == [(1,)]


# ---------------------------------------------------------------------------------------------
# the deployment: compose.postgres.yaml and the README


def test_compose_postgres_is_the_official_image_a_named_volume_and_no_password():
    import yaml
    repo = Path(__file__).resolve().parents[1]
    text = (repo / "compose.postgres.yaml").read_text()
    compose = yaml.safe_load(text)
    db = compose["services"]["db"]
    assert db["image"].split(":")[0] == "postgres"                      # the official image
    volume, target = db["volumes"][0].split(":")
    assert volume in compose["volumes"] and target == "/var/lib/postgresql/data"   # named
    assert db["environment"]["POSTGRES_PASSWORD"].startswith("${STOCKSTOCK_DB_PASSWORD:?")
    assert "ports" not in db                                    # not published by default
    from stockstock.config import url_password
    default = compose["services"]["jupyter"]["environment"]["STOCKSTOCK_DB_URL"]
    assert default.startswith("${STOCKSTOCK_DB_URL:-postgresql+psycopg://")
    assert url_password(default.split(":-", 1)[1].rstrip("}")) is None   # no password in a URL
    example = (repo / ".env.example").read_text()
    assert "# STOCKSTOCK_DB_URL=postgresql+psycopg://stockstock@db:5432/stockstock" in example
    readme = (repo / "README.md").read_text()
    section = readme.split("### PostgreSQL instead of the SQLite file", 1)[1].split("\n## ", 1)[0]
    for words in ("image: postgres:", "pgdata:/var/lib/postgresql/data", "STOCKSTOCK_DB_PASSWORD",
                  "compose.postgres.yaml", "stockstock db copy --to", "pg_dump"):
        assert words in section, words
