"""Shared fixtures: every test gets its own project home, so no test touches data/ or outputs/.

The tests that touch the database take the `backend` fixture and run twice: on SQLite (the home's
`data/stockstock.db`) and on PostgreSQL (a fresh database of its own on the server that
`STOCKSTOCK_TEST_PG_URL` names; `.ci/postgres.sh` starts one). Without that variable the
PostgreSQL half is skipped, saying why; with `STOCKSTOCK_TEST_PG_REQUIRED=1` (CI) a skipped or
missing PostgreSQL half fails the run.
"""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_URL = os.environ.get("STOCKSTOCK_TEST_PG_URL")  # postgresql+psycopg://user:pw@127.0.0.1:port/db
PG_REQUIRED = os.environ.get("STOCKSTOCK_TEST_PG_REQUIRED") == "1"
NO_PG = "no PostgreSQL server: set STOCKSTOCK_TEST_PG_URL (bash .ci/postgres.sh starts one)"
BACKENDS = ["sqlite", "postgresql"]
DB_ENV = ("STOCKSTOCK_DB_URL", "STOCKSTOCK_DB_PASSWORD", "STOCKSTOCK_LOCK_DB_URL")
_DB_URLS: dict[Path, str] = {}      # homes whose database is not data/stockstock.db: its URL


# ---------------------------------------------------------------------------------------------
# PostgreSQL: one server, a fresh database per test


class PgServer:
    "The test server of `STOCKSTOCK_TEST_PG_URL`: creates and drops databases."
    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url
        from sqlalchemy.pool import NullPool
        self.url = make_url(url).set(drivername="postgresql+psycopg")
        self.password = self.url.password or ""
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)

    def create(self, template: str | None = None, prefix: str = "t") -> str:
        "A new database (a copy of `template`, else empty); its URL without the password."
        name = f"{prefix}_{uuid.uuid4().hex[:16]}"
        self.sql(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.db_url(name)

    def drop(self, url: str) -> None:
        from sqlalchemy.engine import make_url
        self.sql(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')

    def db_url(self, name: str, password: bool = False) -> str:
        url = self.url.set(database=name)._replace(password=self.password if password else None)
        return url.render_as_string(hide_password=False)

    def sql(self, statement: str) -> list[tuple]:
        from sqlalchemy import text
        with self.admin.connect() as c:
            result = c.execute(text(statement))
            return [tuple(r) for r in result] if result.returns_rows else []


@pytest.fixture(scope="session")
def pg() -> PgServer:
    "The PostgreSQL test server (the test is skipped without one, and fails if it is down)."
    if not PG_URL: pytest.skip(NO_PG)
    server = PgServer(PG_URL)
    server.sql("SELECT 1")                       # unreachable: an error, never a skip
    return server


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    "The database of this run of the test: `sqlite` or `postgresql`."
    if request.param == "postgresql" and not PG_URL: pytest.skip(NO_PG)
    return request.param


def use_postgres(home: Path, pg: PgServer, monkeypatch: pytest.MonkeyPatch,
                 template: str | None = None) -> str:
    """Point `home` at a fresh PostgreSQL database (a copy of `template`): through the environment
    (`STOCKSTOCK_DB_URL`, the password in `STOCKSTOCK_DB_PASSWORD`), as a deployment would, so
    every command and in-process call of the test uses it. Its URL, without the password."""
    url = pg.create(template)
    monkeypatch.setenv("STOCKSTOCK_DB_URL", url)
    monkeypatch.setenv("STOCKSTOCK_DB_PASSWORD", pg.password)
    _DB_URLS[home] = url
    return url


def db_url(home: Path) -> str:
    "The URL of `home`'s database (without a password)."
    return _DB_URLS.get(home, f"sqlite:///{home}/data/stockstock.db")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    "Mark the PostgreSQL half of every test (`-m postgresql` runs just those)."
    for item in items:
        spec = getattr(item, "callspec", None)
        if (spec and spec.params.get("backend") == "postgresql") or "pg" in item.fixturenames:
            item.add_marker("postgresql")


_PG_OUTCOMES: dict[str, list[str]] = {"passed": [], "skipped": [], "failed": []}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "postgresql" in report.keywords and (report.when == "call" or report.skipped):
        _PG_OUTCOMES[report.outcome].append(report.nodeid)


def _pg_verdict() -> str | None:
    "Why the run fails for want of PostgreSQL (STOCKSTOCK_TEST_PG_REQUIRED=1), or None."
    skipped, passed = _PG_OUTCOMES["skipped"], _PG_OUTCOMES["passed"]
    if not PG_REQUIRED or (passed and not skipped): return None
    return (f"PostgreSQL was required (STOCKSTOCK_TEST_PG_REQUIRED=1), but {len(skipped)} of its "
            f"tests were skipped and {len(passed)} passed: failing the run")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    "With STOCKSTOCK_TEST_PG_REQUIRED=1: fail a run whose PostgreSQL tests were skipped or absent."
    if not session.config.option.collectonly and _pg_verdict():
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not config.option.collectonly and (verdict := _pg_verdict()):
        terminalreporter.write_line(verdict, red=True, bold=True)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    "A fresh, empty project home (STOCKSTOCK_HOME) for one test."
    monkeypatch.setenv("STOCKSTOCK_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("KIS_", "TELEGRAM_")) or name in DB_ENV:
            monkeypatch.delenv(name)
    yield tmp_path
    if (url := _DB_URLS.pop(tmp_path, None)) is not None:
        PgServer(PG_URL).drop(url)


def stockstock(*args: str, home: Path, env: dict | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    "Run the installed `stockstock` console script in `home` (a real subprocess)."
    full_env = {**os.environ, "STOCKSTOCK_HOME": str(home), **(env or {})}
    return subprocess.run([str(BIN / "stockstock"), *args], cwd=home, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def trade_then_verify(home: Path, runs: int) -> subprocess.CompletedProcess:
    "`runs` test runs in `home` (each must end ok), then `stockstock runs --verify` (must pass)."
    for _ in range(runs):
        r = stockstock("trade", "--params", "scheduled/test.yaml", home=home)
        assert r.returncode == 0, r.stdout + r.stderr
    ok = stockstock("runs", "--verify", home=home)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    return ok


def query(home: Path, sql: str, *args) -> list[tuple]:
    """Rows of `sql` (`?` placeholders) on the home's database: `data/stockstock.db` read with
    plain sqlite3, or the home's PostgreSQL database read with plain psycopg."""
    if home not in _DB_URLS:
        con = sqlite3.connect(home / "data/stockstock.db")
        try:
            rows = con.execute(sql, args).fetchall()
            con.commit()                              # (a test may change a row on purpose)
            return rows
        finally:
            con.close()
    import psycopg
    from sqlalchemy.engine import make_url
    url = make_url(_DB_URLS[home])
    with psycopg.connect(host=url.host, port=url.port, user=url.username, dbname=url.database,
                         password=make_url(PG_URL).password) as con:
        cursor = con.execute(sql.replace("?", "%s"), args)
        return [tuple(r) for r in cursor.fetchall()] if cursor.description else []


def home_processes(home: Path) -> list[psutil.Process]:
    "Live processes started for `home` (their STOCKSTOCK_HOME is this test's private home)."
    found = []
    for p in psutil.process_iter():
        try:
            if p.pid != os.getpid() and p.environ().get("STOCKSTOCK_HOME") == str(home) \
                    and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            pass
    return found


def reap(home: Path, grace: float = 15.0) -> list[int]:
    "Wait for this home's leftover processes (a kernel exits when its parent dies); kill laggards."
    _, alive = psutil.wait_procs(home_processes(home), timeout=grace)
    for p in alive:
        p.kill()
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in alive]


def template_with(home: Path, after: str, code: str) -> None:
    """Write `home`'s own scheduled notebook (which `runs.template_path` prefers): the shipped one
    with a cell holding `code` after the first cell that mentions `after` (e.g. a hang, a crash)."""
    import nbformat
    nb = nbformat.read(REPO / "scheduled/hourly_trade.ipynb", as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if after in c.source)
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(code))
    nbformat.write(nb, home / "scheduled/hourly_trade.ipynb")


def report_lines(request: pytest.FixtureRequest, lines: list[str]) -> None:
    "Print `lines` in the terminal report (a module fixture's summary, shown even when captured)."
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is None or capture is None or not lines: return
    with capture.global_and_fixture_disabled():       # teardown output is captured otherwise
        for line in ["", *lines]: reporter.write_line(line)


TRADING_SYMBOLS = ["AAPL", "MSFT", "GOOG", "IBM"]
THRESHOLD = 0.4
SIM_START = "2011-03-14"   # sim clock: the next run trades 2011-03-15, days the test model trades


def _build_trading_template(root: Path) -> Path:
    "A project home with seeded bars, a trading model and scheduled/test.yaml."
    from stockstock.data import seed
    from stockstock.db import init_db
    from stockstock.model import (DEFAULT_PARAMS, LGBMTradingModel, build_dataset, fit_booster,
                                  save_model)
    from stockstock.state import SIM_CLOCK
    db = init_db(f"sqlite:///{root}/data/stockstock.db")
    seed(db, TRADING_SYMBOLS, progress=False)
    bars = {s: db.load_ohlcv(s) for s in TRADING_SYMBOLS}
    ds = build_dataset(bars, cutoff=pd_date("2011-02-28"))
    # over-fitted on purpose (300 rounds, no early stopping): confident enough to trade at 0.4
    model = LGBMTradingModel(fit_booster(ds.X, ds.y, DEFAULT_PARAMS, 300),
                             {"cutoff": "2011-02-28"})
    save_model(model, root / "models/lgbm.txt")
    db.set_state(SIM_CLOCK, SIM_START)
    db.close()
    (root / "scheduled").mkdir(exist_ok=True)
    (root / "scheduled/test.yaml").write_text(
        "mode: sim\n"
        f"symbols: [{', '.join(TRADING_SYMBOLS)}]\n"
        f"confidence_threshold: {THRESHOLD}\n")
    return root


def pd_date(text: str):
    from datetime import date
    return date.fromisoformat(text)


@pytest.fixture(scope="session")
def trading_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    "Built once per session; copy it with the `trading_home` fixture."
    return _build_trading_template(tmp_path_factory.mktemp("trading_template"))


@pytest.fixture(scope="session")
def pg_trading_template(trading_template: Path, pg: PgServer) -> Iterator[str]:
    "The trading template's database copied into a PostgreSQL database, once per session."
    from stockstock.db import init_db
    from stockstock.dbcopy import copy_database
    url = pg.create(prefix="template")
    os.environ["STOCKSTOCK_DB_PASSWORD"] = pg.password
    try:
        source = init_db(f"sqlite:///{trading_template}/data/stockstock.db")
        copy_database(source, url)
        source.close()
    finally:
        del os.environ["STOCKSTOCK_DB_PASSWORD"]
    yield url
    pg.drop(url)


@pytest.fixture
def trading_home(trading_template: Path, home: Path, request: pytest.FixtureRequest,
                 monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the trading template as this test's project home; with the `backend`
    fixture at `postgresql`, its database is a fresh copy of the template's on PostgreSQL."""
    import shutil
    shutil.copytree(trading_template, home, dirs_exist_ok=True)
    if "backend" in request.fixturenames and request.getfixturevalue("backend") == "postgresql":
        _to_postgres(home, request, monkeypatch)
    return home


def _to_postgres(home: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                 ) -> str:
    "Point a trading home at a fresh PostgreSQL copy of the template's database."
    from sqlalchemy.engine import make_url
    template = make_url(request.getfixturevalue("pg_trading_template")).database
    (home / "data/stockstock.db").unlink()        # nothing may use it by mistake
    return use_postgres(home, request.getfixturevalue("pg"), monkeypatch, template)


@pytest.fixture
def pg_trading_home(trading_home: Path, request: pytest.FixtureRequest,
                    monkeypatch: pytest.MonkeyPatch) -> Path:
    "The trading home on PostgreSQL only (tests of what SQLite does not have: a password...)."
    _to_postgres(trading_home, request, monkeypatch)
    return trading_home
