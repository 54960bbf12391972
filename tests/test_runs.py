"""End-to-end tests of the hourly papermill run through the real `stockstock` command."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from conftest import THRESHOLD, TRADING_SYMBOLS, query, stockstock

from stockstock.backtest import predict_actions, simulate
from stockstock.engine import same_as_reference
from stockstock.engine import simulate as engine_simulate
from stockstock.config import load_params
from stockstock.db import init_db
from stockstock.model import load_model
from stockstock.risk import RiskLimits

pytestmark = pytest.mark.slow



def test_readme_main_command_on_a_fresh_home(home):
    "`stockstock run` seeds, trains, runs once: executed notebook, ok row, run_id in metadata."
    r = stockstock("run", home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^run \S+: ok in [\d.]+ s$", r.stdout, re.M), r.stdout
    assert re.search(r"^portfolio value: [\d,]+\.\d\d USD \(cash [\d,]+\.\d\d\)$", r.stdout, re.M)
    assert re.search(r"^signals: (\w+ (BUY|SELL|HOLD)(, )?){5}$", r.stdout, re.M), r.stdout
    (run_id, status, nb_path, model_sha, git, data_hash), = query(
        home, "SELECT run_id, status, notebook_path, model_sha256, git_commit, data_hash "
              "FROM runs")
    assert status == "ok" and model_sha and data_hash
    nb_file = home / nb_path
    assert nb_file.exists() and nb_file.with_suffix(".html").exists()
    nb = nbformat.read(nb_file, as_version=4)
    assert nb.metadata["stockstock"]["run_id"] == run_id
    assert nb.metadata["papermill"]["parameters"]["run_id"] == run_id
    html = nb_file.with_suffix(".html").read_text()
    assert 'src="../plotly.min.js"' in html and (home / "outputs/plotly.min.js").exists()
    assert len(html) < 1_500_000            # plotly.js is shared, not embedded per run
    assert (home / "outputs/index.html").exists()
    assert (home / "models/lgbm.txt").exists() and (home / "models/lgbm.meta.json").exists()


def test_twenty_runs_index_and_agreement_with_backtest(trading_home):
    home = trading_home
    for _ in range(20):
        r = stockstock("trade", "--params", "scheduled/test.yaml", home=home)
        assert r.returncode == 0, r.stdout + r.stderr
    runs = query(home, "SELECT run_id, status, as_of FROM runs ORDER BY as_of")
    assert len(runs) == 20 and {s for _, s, _ in runs} == {"ok"}
    sessions = [pd.Timestamp(a).tz_localize("UTC").tz_convert("America/New_York").date()
                for _, _, a in runs]
    assert len(set(sessions)) == 20                       # one trading day forward per run

    listing = stockstock("runs", "--limit", "50", home=home)
    assert listing.returncode == 0
    assert sum(run_id in listing.stdout for run_id, _, _ in runs) == 20
    assert listing.stdout.startswith("decision (ET)")
    assert max(len(line) for line in listing.stdout.splitlines()[:-1]) <= 100   # not the path
    index = (home / "outputs/index.html").read_text()
    assert index.count("<tr class='run ok sim'") == 20 and "20 runs: 20 ok" in index
    assert "KST" in index and "EDT" in index
    for nb_path, in query(home, "SELECT notebook_path FROM runs"):
        assert Path(home / nb_path).with_suffix(".html").exists()

    # the same window through the backtest: same model, same costs, same risk rules
    params = load_params(home / "scheduled/test.yaml")
    db = init_db(f"sqlite:///{home}/data/stockstock.db")
    bars = {s: db.load_ohlcv(s) for s in TRADING_SYMBOLS}
    db.close()
    model = load_model(home / "models/lgbm.txt")
    start, end = sessions[0], sessions[-1]
    actions = predict_actions(model, bars, start, end, THRESHOLD)
    closes = pd.DataFrame({s: b["close"] for s, b in bars.items()}).loc[
        pd.Timestamp(start):pd.Timestamp(end)]
    sim = simulate(actions, closes, RiskLimits.from_params(params), params.slippage_pct,
                   params.initial_cash)
    expected = [(str(t.date), t.symbol, t.side, int(t.qty), round(t.price, 8))
                for t in sim.trades().itertuples()]
    got = [(d, s, side, q, round(p, 8)) for d, s, side, q, p in query(
        home, "SELECT trade_date, symbol, side, qty, fill_price FROM sim_orders "
              "WHERE status = 'filled' ORDER BY order_id")]
    assert len(expected) >= 3, "the test window must contain trades to compare"
    assert got == expected
    (equity,), = query(home, "SELECT equity FROM portfolio_snapshots ORDER BY as_of DESC LIMIT 1")
    assert equity == pytest.approx(sim.equity.iloc[-1], rel=1e-12)
    fast = engine_simulate(actions, closes, RiskLimits.from_params(params), params.slippage_pct,
                           params.initial_cash)          # the compiled engine: the same again
    assert same_as_reference(fast, sim) is None

    # a replay of a run that traded gives the same decisions
    traded = query(home, "SELECT run_id FROM runs WHERE n_orders > 0 ORDER BY as_of LIMIT 1")
    assert traded
    rep = stockstock("trade", "--replay", traded[0][0], home=home)
    assert rep.returncode == 0, rep.stdout + rep.stderr
    assert "decisions IDENTICAL" in rep.stdout
    assert list((home / "outputs/replay").rglob("*.ipynb"))
    assert len(query(home, "SELECT run_id FROM runs")) == 20      # main DB untouched


def test_replay_detects_a_changed_model(trading_home):
    home = trading_home
    r = stockstock("trade", "--params", "scheduled/test.yaml", home=home)
    assert r.returncode == 0, r.stderr
    (run_id,), = query(home, "SELECT run_id FROM runs")
    meta_path = home / "models/lgbm.meta.json"
    model_path = home / "models/lgbm.txt"
    # a different (but valid) model: retrain with fewer rounds and re-save
    from stockstock.model import DEFAULT_PARAMS, LGBMTradingModel, build_dataset, fit_booster
    from stockstock.model import save_model
    db = init_db(f"sqlite:///{home}/data/stockstock.db")
    bars = {s: db.load_ohlcv(s) for s in TRADING_SYMBOLS}
    db.close()
    ds = build_dataset(bars, cutoff=pd.Timestamp("2011-02-28").date())
    save_model(LGBMTradingModel(fit_booster(ds.X, ds.y, DEFAULT_PARAMS, 50),
                                json.loads(meta_path.read_text())), model_path)
    rep = stockstock("trade", "--replay", run_id, home=home)
    assert rep.returncode == 1
    assert "decisions DIFFERENT" in rep.stdout and "model " in rep.stdout


def test_the_notebook_parameters_cell_declares_every_parameter_unset():
    """Every parameter is declared (papermill shows the launcher's values under it); None: run by
    hand, the value a scheduled run uses (the mode's parameters file, else the default)."""
    import ast

    from stockstock.config import TradingParams
    nb = nbformat.read(Path(__file__).resolve().parents[1] / "scheduled/hourly_trade.ipynb", 4)
    (cell,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    declared = {t.targets[0].id: ast.literal_eval(t.value)
                for t in ast.parse(cell.source).body if isinstance(t, ast.Assign)}
    assert declared.pop("run_id") is None and declared.pop("advance_sim_clock") is False
    assert declared == dict.fromkeys(TradingParams.model_fields)


DEMO_BANNER = "no measured edge: demo trades"


def test_sim_demo_trades_from_a_fresh_project_and_agrees_with_the_backtest(home):
    """Issue 16 acceptance: a fresh project with the shipped `scheduled/sim.yaml` (the top-k
    rule, k = 1) trades from its first session; 15 runs, every notebook opening with the demo
    banner; the backtest's simulation of the same model and rule makes the same trades; and
    `stockstock backtest --params scheduled/sim.yaml` trades that rule too."""
    import shutil

    from conftest import REPO

    from stockstock.backtest import predict_proba_frame
    from stockstock.signals import SignalRule
    (home / "scheduled").mkdir()
    shutil.copy(REPO / "scheduled/sim.yaml", home / "scheduled/sim.yaml")
    first = stockstock("run", home=home)                  # seeds, trains, runs once
    assert first.returncode == 0, first.stdout + first.stderr
    assert re.search(r"^orders:\s+[1-9]", first.stdout, re.M), first.stdout   # trades at once
    for _ in range(14):
        r = stockstock("trade", "--params", "scheduled/sim.yaml", home=home)
        assert r.returncode == 0, r.stdout + r.stderr
    runs = query(home, "SELECT status, notebook_path, as_of FROM runs ORDER BY as_of")
    assert len(runs) == 15 and {s for s, _, _ in runs} == {"ok"}
    for _, nb_path, _ in runs:
        nb = nbformat.read(home / nb_path, as_version=4)
        assert DEMO_BANNER in nb.cells[0].source, nb.cells[0].source
        assert DEMO_BANNER in (home / nb_path).with_suffix(".html").read_text()
    got = [(d, s, side, q, round(p, 8)) for d, s, side, q, p in query(
        home, "SELECT trade_date, symbol, side, qty, fill_price FROM sim_orders "
              "WHERE status = 'filled' ORDER BY order_id")]
    assert got, "the demo must trade"

    # the same sessions through the backtest: the same model's probabilities, the same rule
    params = load_params(home / "scheduled/sim.yaml")
    assert (params.signal_rule, params.top_k, params.edge_required) == ("topk", 1, False)
    db = init_db(f"sqlite:///{home}/data/stockstock.db")
    bars = {s: db.load_ohlcv(s) for s in params.symbols}
    db.close()
    model = load_model(home / "models/lgbm.txt")
    assert model.meta["recommended_threshold"] is None     # the threshold rule would not trade
    sessions = [pd.Timestamp(a).tz_localize("UTC").tz_convert("America/New_York").date()
                for _, _, a in runs]
    closes = pd.DataFrame({s: b["close"] for s, b in bars.items()}).loc[
        pd.Timestamp(sessions[0]):pd.Timestamp(sessions[-1])]
    sim = simulate(None, closes, RiskLimits.from_params(params), params.slippage_pct,
                   params.initial_cash, predict_proba_frame(model, bars, sessions[0],
                                                            sessions[-1]),
                   SignalRule.from_params(params, None))
    expected = [(str(t.date), t.symbol, t.side, int(t.qty), round(t.price, 8))
                for t in sim.trades().itertuples()]
    assert got == expected
    (equity,), = query(home, "SELECT equity FROM portfolio_snapshots ORDER BY as_of DESC LIMIT 1")
    assert equity == pytest.approx(sim.equity.iloc[-1], rel=1e-12)

    b = stockstock("backtest", "--params", "scheduled/sim.yaml", "--quiet", "--start",
                   str(sessions[0]), "--end", str(sessions[-1]), "--max-rounds", "20", home=home)
    assert b.returncode == 0, b.stdout + b.stderr
    assert int(re.search(r"(\d+) trades\b", b.stdout).group(1)) > 0, b.stdout
    (report,) = (home / "outputs/backtest").glob("*.html")
    assert "'kind': 'topk'" in report.read_text()
