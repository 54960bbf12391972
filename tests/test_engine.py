"""The compiled engine (`stockstock.engine`) against `backtest.simulate` and `risk.evaluate`.

Property tests: random prices (some missing), random signals and random risk limits, so that
daily-loss halts, stop-losses, cash running out, resized and rejected buys, sub-dollar ticks and
all-HOLD days come up; the engine must make the same orders, fills and risk events, with equal
equity (1e-9 relative; in practice bit-identical)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_risk import case_st, limits_st

from stockstock import engine
from stockstock.backtest import simulate as reference_simulate
from stockstock.risk import RiskLimits, _to_tick, evaluate

RTOL = 1e-9


@st.composite
def markets(draw) -> tuple[pd.DataFrame, pd.DataFrame, RiskLimits, float, float, dict]:
    "(actions, closes, limits, slippage, cash, what the case is made to exercise)."
    n_days, n_symbols = draw(st.integers(1, 45)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    level = draw(st.sampled_from([0.05, 0.8, 20.0, 300.0]))        # sub-dollar ticks too
    vol = draw(st.sampled_from([0.005, 0.03, 0.12]))                # 12%: stop-losses and halts
    start = level * rng.uniform(0.5, 2.0, n_symbols)
    closes = start * np.exp(np.cumsum(rng.normal(0, vol, (n_days, n_symbols)), axis=0))
    if draw(st.booleans()): closes = np.maximum(np.round(closes, 2), 0.01)  # on the cent
    p_nan = draw(st.sampled_from([0.0, 0.0, 0.05, 0.3]))
    closes[rng.random(closes.shape) < p_nan] = np.nan
    mix = draw(st.sampled_from(["hold", "busy", "buyers", "mixed"]))
    p = {"hold": [1, 0, 0, 0], "busy": [.3, .3, .3, .1], "buyers": [.2, .7, .05, .05],
         "mixed": [.6, .2, .15, .05]}[mix]
    acts = rng.choice(np.array(["HOLD", "BUY", "SELL", None], dtype=object), closes.shape, p=p)
    idx = pd.bdate_range("2015-01-05", periods=n_days)
    symbols = [f"S{i}" for i in range(n_symbols)]
    limits = draw(limits_st)
    if draw(st.booleans()):                                         # halts within reach
        limits = RiskLimits(**{**vars(limits), "max_daily_loss_usd": draw(st.floats(1, 300))})
    cash = draw(st.sampled_from([50.0, 2_000.0, 100_000.0, 3e6]))   # 50: cash runs out
    slippage = draw(st.sampled_from([0.0, 0.0005, 0.01]))           # 0.01 > buffer: expiries
    return (pd.DataFrame(acts, idx, symbols), pd.DataFrame(closes, idx, symbols), limits,
            slippage, cash, dict(mix=mix, p_nan=p_nan))


def assert_same(fast, ref) -> None:
    diff = engine.same_as_reference(fast, ref, RTOL)
    assert diff is None, diff
    t_fast, t_ref = fast.trades(), ref.trades()
    if len(t_ref):
        pd.testing.assert_frame_equal(t_fast, t_ref, rtol=RTOL)
    else:
        assert t_fast.empty and list(t_fast.columns) == list(t_ref.columns)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets())
def test_engine_equals_backtest_simulate(market):
    actions, closes, limits, slippage, cash, _ = market
    ref = reference_simulate(actions, closes, limits, slippage, cash)
    fast = engine.simulate(actions, closes, limits, slippage, cash)
    assert_same(fast, ref)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(markets())
def test_per_symbol_accounts_equal_one_simulation_per_symbol(market):
    actions, closes, limits, slippage, cash, _ = market
    fast = engine.simulate(actions, closes, limits, slippage, cash, per_symbol=True)
    refs = [reference_simulate(actions[[s]], closes[[s]], limits, slippage, cash)
            for s in closes.columns]
    np.testing.assert_allclose(fast.equity.to_numpy(),
                               np.column_stack([r.equity for r in refs]), rtol=RTOL, atol=0)
    got = fast.trades().astype({"pnl": float})
    for s, r in zip(closes.columns, refs, strict=True):
        mine = got[got.symbol == s].reset_index(drop=True)
        if len(r.trades()):       # pnl: NaN here where a buys-only list has None
            pd.testing.assert_frame_equal(mine, r.trades().astype({"pnl": float}), rtol=RTOL)
        else:
            assert mine.empty
    by_symbol = lambda fills: sorted(map(vars, fills), key=lambda f: (f["symbol"], f["date"]))  # noqa: E731
    assert by_symbol(fast.fills) == by_symbol(f for r in refs for f in r.fills)


def test_the_cases_the_property_test_must_reach():
    "Each named situation happens in at least one fixed example (guards the generator)."
    rng = np.random.default_rng(7)
    idx = pd.bdate_range("2015-01-05", periods=120)
    closes = pd.DataFrame(30 * np.exp(np.cumsum(rng.normal(0, 0.06, (120, 4)), axis=0)), idx,
                          ["A", "B", "C", "D"])
    closes.iloc[5:9, 2] = np.nan
    actions = pd.DataFrame(rng.choice(["BUY", "SELL", "HOLD"], (120, 4), p=[.5, .2, .3]), idx,
                           closes.columns)
    limits = RiskLimits(max_position_pct=0.6, max_daily_loss_usd=150)
    fast = engine.simulate(actions, closes, limits, 0.0005, 3_000.0)
    ref = reference_simulate(actions, closes, limits, 0.0005, 3_000.0)
    assert_same(fast, ref)
    kinds = {(e.kind, e.detail.get("reason")) for _, e in fast.events}
    assert {("stop_loss", None), ("daily_loss_halt", None), ("order_rejected", "halted"),
            ("order_resized", "insufficient_cash"), ("order_rejected", "no_price")} <= kinds
    assert {"filled"} <= {f.status for f in fast.fills}
    # a held symbol whose close is missing: its SELL goes out at the average and is rejected;
    # slippage beyond the limit buffer: every order expires
    first_buy = fast.trades().query("side == 'BUY'").iloc[0]
    held, last = first_buy.symbol, first_buy.date
    after = closes.index[closes.index.date > last][:1]
    closes.loc[after, held], actions.loc[after, held] = np.nan, "SELL"
    for slippage, status in ((0.0005, "rejected"), (0.01, "expired")):
        fast = engine.simulate(actions, closes, limits, slippage, 3_000.0)
        assert_same(fast, reference_simulate(actions, closes, limits, slippage, 3_000.0))
        assert status in {f.status for f in fast.fills}
    hold = engine.simulate(pd.DataFrame("HOLD", idx, closes.columns), closes, limits)
    assert hold.trades().empty and hold.fills == [] and (hold.equity == 100_000.0).all()


def test_bad_input_is_refused_like_the_reference():
    idx = pd.bdate_range("2015-01-05", periods=3)
    closes = pd.DataFrame({"A": [10.0, 11.0, 12.0]}, idx)
    bad = pd.DataFrame({"A": ["BUY", "buy", "HOLD"]}, idx)
    for run in (reference_simulate, engine.simulate):
        with pytest.raises(ValueError, match="unknown signal"):
            run(bad, closes, RiskLimits())
        with pytest.raises(ValueError):
            run(bad.replace("buy", "HOLD"), closes.replace(11.0, -1.0), RiskLimits())
    with pytest.raises(ValueError, match="1e7"):     # the engine's exact-tick range
        engine.simulate(bad.replace("buy", "HOLD"), closes * 1e6, RiskLimits())


# ------------------------------------------------------------------ one day: risk.evaluate

def decide_one_day(signals: dict, pf, limits: RiskLimits, daily_loss: float):
    "The engine's `_decide` on `risk.evaluate`'s inputs: (orders, events) in evaluate's form."
    symbols = list(signals) + [s for s in pf.positions if s not in signals]
    n = len(symbols)
    held, avg_price = np.zeros(n, np.int64), np.zeros(n)
    opened, exited, n_open = np.zeros(n, np.int64), np.full(n, -1, np.int64), np.zeros(1, np.int64)
    for s, p in pf.positions.items():
        if p.qty == 0: continue
        c = symbols.index(s)
        held[c], avg_price[c], opened[n_open[0]] = p.qty, p.avg_price, c
        n_open[0] += 1
    closes = np.array([pf.prices.get(s, np.nan) for s in symbols])
    codes = np.array([engine.ACTIONS.index(signals.get(s, "HOLD")) for s in symbols], np.int8)
    log_int, log_float = np.empty((3 * n + 1, 7), np.int64), np.empty((3 * n + 1, 4))
    orders, lims = np.zeros((n, 4), np.int64), np.zeros(n)
    k, n_log = engine._decide(0, codes, closes, held, avg_price, exited, np.zeros(n, np.int64),
                              opened, n_open, np.array([0, n]), np.array([pf.cash]),
                              np.array([pf.equity]), np.array([daily_loss]), np.zeros(1, bool),
                              engine.rules_of(limits, 0.0), orders, lims, log_int, log_float, 0)
    got = [(symbols[c], engine.ACTIONS[side], int(q), float(lim), engine.REASONS[r])
           for (c, side, q, r), lim in zip(orders[:k].tolist(), lims[:k].tolist(), strict=True)]
    assert (log_int[:n_log, 0] == engine._EVENT_ROW).all()
    sim = engine.EngineSimulation(None, np.array([None]), np.array(symbols, object),
                                  np.zeros((0, 6), np.int64), np.zeros((0, 4)),
                                  log_int[:n_log, 1:], log_float[:n_log],
                                  limits.max_daily_loss_usd)
    return got, [e for _, e in sim.events]


@settings(max_examples=400, deadline=None)
@given(case_st)
def test_one_day_equals_risk_evaluate(case):
    "test_risk's random portfolios, signals and limits: `_decide` is `evaluate`, order for order."
    signals, pf, limits, halted, daily_loss = case
    assume(not halted)                     # the backtest never passes an outside halt in
    d = evaluate(signals, pf, limits, daily_loss=daily_loss)
    orders, events = decide_one_day(signals, pf, limits, daily_loss)
    assert orders == [(o.symbol, o.side, o.qty, o.limit_price, o.reason) for o in d.orders]
    assert [(e.kind, e.symbol, e.detail.keys()) for e in events] == [
        (e.kind, e.symbol, e.detail.keys()) for e in d.events]
    for a, b in zip(events, d.events, strict=True):
        for k, v in b.detail.items():
            assert a.detail[k] == v or math.isclose(a.detail[k], v, rel_tol=RTOL), (k, a, b)


@settings(max_examples=2000, deadline=None)
@given(raw=st.one_of(st.floats(1e-12, 2e7), st.integers(1, 10**9).map(lambda c: c / 100),
                     st.integers(1, 10**9).map(lambda c: c / 100 * (1 + 1e-15))),
       up=st.booleans())
def test_tick_rounding_equals_risk(raw, up):
    assert engine._to_tick(raw, up) == _to_tick(raw, up)


@pytest.mark.parametrize("up", [True, False])
def test_tick_count_at_the_rounding_bounds(up):
    "Fractions of a tick right at round(., 6)'s bounds, where only the exact comparison is right."
    python = (lambda s: math.ceil(round(s, 6))) if up else (
        lambda s: max(math.floor(round(s, 6)), 1))
    for bound in (5e-7, 0.9999995):
        for n in (0, 1, 2, 99, 10_001, 2**20):
            x = float(n + bound)
            for _ in range(3): x = np.nextafter(x, 0)
            for _ in range(6):
                assert engine._ticks(x, up) == python(float(x)), (x, up)
                x = np.nextafter(x, math.inf)


@pytest.mark.slow
def test_walk_forward_example_trades_the_same():
    "The walk-forward of `nbs/10_backtest.ipynb` (two symbols, two quarters): same trades."
    from datetime import date

    from stockstock.backtest import walk_forward
    from stockstock.data import embedded_bars
    bars = {s: embedded_bars(s) for s in ["AAPL", "IBM"]}
    wf = walk_forward(bars, start=date(2011, 3, 1), end=date(2011, 8, 31), retrain_every=63,
                      max_rounds=50, threshold=0.36)
    fast = engine.simulate(wf.actions, wf.closes, RiskLimits())
    assert len(fast.trades()) > 0
    assert_same(fast, wf.simulation)
    pd.testing.assert_frame_equal(fast.trades(), wf.simulation.trades())
