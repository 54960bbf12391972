"""Shared fixtures: every test gets its own project home, so no test touches data/ or outputs/."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    "A fresh, empty project home (STOCKSTOCK_HOME) for one test."
    monkeypatch.setenv("STOCKSTOCK_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("KIS_", "TELEGRAM_")):
            monkeypatch.delenv(name)
    return tmp_path


def stockstock(*args: str, home: Path, env: dict | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    "Run the installed `stockstock` console script in `home` (a real subprocess)."
    full_env = {**os.environ, "STOCKSTOCK_HOME": str(home), **(env or {})}
    return subprocess.run([str(BIN / "stockstock"), *args], cwd=home, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def query(home: Path, sql: str, *args) -> list[tuple]:
    "Rows of `sql` on the home's database (`data/stockstock.db`), read with plain sqlite3."
    con = sqlite3.connect(home / "data/stockstock.db")
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


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


@pytest.fixture
def trading_home(trading_template: Path, home: Path) -> Path:
    "A fresh copy of the trading template as this test's project home."
    import shutil
    shutil.copytree(trading_template, home, dirs_exist_ok=True)
    return home
