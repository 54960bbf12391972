"""Property tests for `stockstock.risk`: the rules hold for any portfolio, prices and signals."""
from __future__ import annotations

import copy
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from stockstock.risk import (DailyLossTracker, OrderRequest, Portfolio, Position, Approval,
                             RiskLimits, buy_cost, evaluate, limit_price, max_buy_qty)

SYMBOLS = ["AAPL", "MSFT", "GOOG", "IBM", "FB", "TSLA", "AMZN"]
TOL = 1e-9  # relative float tolerance for the money checks

prices_st = st.floats(0.01, 2_000.0, allow_nan=False, allow_infinity=False)
limits_st = st.builds(
    RiskLimits,
    max_position_pct=st.floats(0.01, 1.0),
    stop_loss_pct=st.floats(0.01, 0.5),
    max_daily_loss_usd=st.floats(1.0, 10_000.0),
    order_type=st.sampled_from(["MARKET", "LIMIT"]),
    limit_buffer_pct=st.floats(0.0, 0.05),
    commission_rate=st.floats(0.0, 0.05),
)


@st.composite
def portfolios(draw) -> Portfolio:
    "Random cash, last prices for some symbols, positions (some under water) in some of those."
    priced = draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=len(SYMBOLS)))
    prices = {s: draw(prices_st) for s in priced}
    positions = {}
    for s in priced:
        if draw(st.booleans()):
            qty = draw(st.integers(0, 5_000))
            avg = prices[s] * draw(st.floats(0.5, 2.0))   # from 50% up to 100% down
            positions[s] = Position(s, qty, avg)
    cash = draw(st.floats(0.0, 1e6))
    return Portfolio(cash, positions, prices)


@st.composite
def cases(draw) -> tuple[dict[str, str], Portfolio, RiskLimits, bool, float]:
    "(signals, portfolio, limits, halted, daily_loss): mostly priced symbols, mostly not halted."
    pf, limits = draw(portfolios()), draw(limits_st)
    pool = list(pf.prices) or SYMBOLS
    keys = draw(st.lists(st.sampled_from(pool), unique=True))
    keys += draw(st.lists(st.sampled_from(SYMBOLS), unique=True, max_size=1))  # maybe unpriced
    signals = {k: draw(st.sampled_from(["BUY", "BUY", "SELL", "HOLD"])) for k in keys}
    halted = draw(st.booleans()) and draw(st.booleans())
    limit = limits.max_daily_loss_usd
    daily_loss = draw(st.one_of(st.floats(0.0, limit), st.just(limit), st.floats(0.0, 2 * limit)))
    return signals, pf, limits, halted, daily_loss


case_st = cases()

def apply(pf: Portfolio, d: Approval, limits: RiskLimits) -> tuple[float, dict[str, int]]:
    """Fill every order at its limit price: (cash, held qty) afterwards.

    Sells credit no cash here, so the cash check does not lean on proceeds of sells that may not
    fill (evaluate does not count them either)."""
    cash, held = pf.cash, {s: p.qty for s, p in pf.positions.items()}
    for o in d.orders:
        if o.side == "BUY":
            cash -= o.qty * o.limit_price * (1 + limits.commission_rate)
            held[o.symbol] = held.get(o.symbol, 0) + o.qty
        else:
            held[o.symbol] = held.get(o.symbol, 0) - o.qty
    return cash, held


def stopped(pf: Portfolio, limits: RiskLimits) -> set[str]:
    return {s for s, p in pf.positions.items()
            if p.qty > 0 and pf.prices[s] <= p.avg_price * (1 - limits.stop_loss_pct)}


@settings(max_examples=400, deadline=None)
@given(case_st)
def test_evaluate_properties(case):
    signals, pf, limits, halted, daily_loss = case
    equity = pf.equity
    d = evaluate(signals, pf, limits, halted=halted, daily_loss=daily_loss)

    for o in d.orders:                      # well-formed orders
        assert isinstance(o.qty, int) and o.qty > 0
        assert o.limit_price > 0 and round(o.limit_price, 4) == o.limit_price
        assert o.side in ("BUY", "SELL") and o.reason in ("signal", "stop_loss")
    symbols = [o.symbol for o in d.orders]
    assert len(symbols) == len(set(symbols)), "at most one order per symbol"

    cash, held = apply(pf, d, limits)
    assert cash >= -TOL * max(pf.cash, 1.0), "cash (with commission) never goes negative"
    assert all(q >= 0 for q in held.values()), "never sell more than held"

    buys = [o for o in d.orders if o.side == "BUY"]
    for o in buys:
        assert signals[o.symbol] == "BUY"
        assert o.limit_price >= pf.prices[o.symbol] - 1e-8   # float noise below 1e-6 tick dropped
        cap = limits.max_position_pct * equity
        assert held[o.symbol] * o.limit_price <= cap * (1 + TOL) + TOL, "position cap"
    if halted or daily_loss >= limits.max_daily_loss_usd:
        assert d.halted and not buys
    else:
        assert not d.halted

    stops = stopped(pf, limits)
    for s in stops:
        sells = [o for o in d.orders if o.symbol == s]
        assert sells == [OrderRequest(s, "SELL", pf.positions[s].qty, sells[0].limit_price,
                                      "stop_loss")]
    for o in d.orders:
        if o.reason == "stop_loss":          # only positions at (or within 1e-9 of) their stop
            p = pf.positions[o.symbol]
            assert pf.prices[o.symbol] <= p.avg_price * (1 - limits.stop_loss_pct) + 1e-9
        if o.side == "SELL":
            assert o.qty == pf.held(o.symbol) and o.limit_price <= pf.prices[o.symbol] + 1e-8
            assert o.reason == "stop_loss" or signals.get(o.symbol) == "SELL"

    # every BUY signal ends as exactly one BUY order or one rejection
    rejected = [e.symbol for e in d.events if e.kind == "order_rejected"]
    for s, sig in signals.items():
        if sig == "BUY":
            assert (s in [o.symbol for o in buys]) + rejected.count(s) == 1
    assert sum(e.kind == "daily_loss_halt" for e in d.events) == (
        not halted and daily_loss >= limits.max_daily_loss_usd)


@settings(max_examples=200, deadline=None)
@given(case_st)
def test_buys_are_as_large_as_allowed(case):
    "Buys are sized down only as far as needed: one more share breaks the cap or the cash."
    signals, pf, limits, _, _ = case
    d = evaluate(signals, pf, limits)
    equity, cash = pf.equity, pf.cash
    for o in d.orders:
        if o.side != "BUY": continue
        more = o.qty + 1
        over_cap = (pf.held(o.symbol) + more) * o.limit_price > limits.max_position_pct * equity
        assert over_cap or buy_cost(more, o.limit_price, limits.commission_rate) > cash
        cash -= buy_cost(o.qty, o.limit_price, limits.commission_rate)


@settings(max_examples=200, deadline=None)
@given(case_st)
def test_evaluate_is_deterministic_and_pure(case):
    signals, pf, limits, halted, daily_loss = case
    before = copy.deepcopy(pf), dict(signals)
    d1 = evaluate(signals, pf, limits, halted=halted, daily_loss=daily_loss)
    d2 = evaluate(copy.deepcopy(signals), copy.deepcopy(pf), limits, halted=halted,
                  daily_loss=daily_loss)
    assert d1 == d2
    assert (pf, signals) == before, "inputs are not mutated"


@settings(max_examples=300, deadline=None)
@given(price=st.floats(0.0001, 5_000.0), cash=st.floats(-1e3, 1e7), equity=st.floats(-1e3, 1e7),
       held=st.integers(0, 10_000), pct=st.floats(0.001, 1.0), rate=st.floats(0.0, 0.05))
def test_max_buy_qty_bounds(price, cash, equity, held, pct, rate):
    q = max_buy_qty(price, cash, equity, held, pct, rate)
    assert isinstance(q, int) and q >= 0
    if q:
        assert (held + q) * price <= pct * equity
        assert buy_cost(q, price, rate) <= cash
    over_cap = (held + q + 1) * price > pct * equity
    assert over_cap or buy_cost(q + 1, price, rate) > cash


@settings(max_examples=300, deadline=None)
@given(last=prices_st, limits=limits_st)
def test_limit_prices_are_marketable_and_on_tick(last, limits):
    buy, sell = limit_price(last, "BUY", limits), limit_price(last, "SELL", limits)
    buffer = limits.limit_buffer_pct if limits.order_type == "MARKET" else 0.0
    tick = 0.01 if last * (1 + buffer) >= 1 else 0.0001
    assert last * (1 + buffer) - 1e-9 <= buy < last * (1 + buffer) + tick + 1e-9
    assert sell <= last * (1 - buffer) + 1e-9 and sell > 0
    for p in (buy, sell):
        assert round(p, 4) == p


@settings(max_examples=30, deadline=None)
@given(runs=st.lists(st.lists(st.floats(0.0, 20_000.0), min_size=1, max_size=200),
                     min_size=8, max_size=8),
       start=st.floats(1.0, 20_000.0))
def test_daily_loss_tracker_threads(runs, start):
    "8 threads updating one tracker: the worst loss is exact, every snapshot self-consistent."
    tracker = DailyLossTracker()
    tracker.start_session("2024-01-02", start)
    barrier, errors = threading.Barrier(9), []

    def update(equities):
        barrier.wait()
        for e in equities:
            tracker.update(e)

    def read():
        barrier.wait()
        for _ in range(500):
            s = tracker.snapshot()
            if s.loss != max(s.start_equity - s.equity, 0.0) or s.worst_loss < s.loss:
                errors.append(s)

    threads = [threading.Thread(target=update, args=(r,)) for r in runs]
    threads.append(threading.Thread(target=read))
    for t in threads: t.start()
    for t in threads: t.join()
    assert not errors
    final = tracker.snapshot()
    worst = max(max(start - e, 0.0) for r in runs for e in r)
    assert final.worst_loss == worst
    assert final.equity in {r[-1] for r in runs}, "the last update wins, whole"
    assert tracker.breached(worst) and not tracker.breached(worst + 1.0)
    assert tracker.start_session("2024-01-02", start + 1) == start   # same session: idempotent
