"""Benchmark: the backtest's trade list against vectorbt's `Portfolio.from_signals` (run by hand).

vectorbt is not a project dependency and must not go into the project venv: install it with the
project's requirements in a separate venv once, and make `stockstock` importable there from the
work tree (a .pth file, so nothing in the repo is written; `pip install -e /work/main vectorbt`
works as well but regenerates stockstock.egg-info in the repo):

    python3.11 -m venv /work/venv-bench
    /work/venv-bench/bin/pip install vectorbt $(sed -n 's/^requirements *= *//p' settings.ini)
    echo "$PWD" > "$(/work/venv-bench/bin/python -c \
        'import sysconfig; print(sysconfig.get_paths()["purelib"])')/stockstock-src.pth"

Run from /work/main (about a minute, most of it vectorbt's numba compilation):

    /work/venv-bench/bin/python tests/bench/bench_backtest.py                  # AAPL,MSFT,IBM
    /work/venv-bench/bin/python tests/bench/bench_backtest.py --symbols AAPL --days 1000 --seed 7
    /work/venv-bench/bin/python tests/bench/bench_backtest.py --synthetic 20   # random walks

Both engines trade the same closes and BUY/SELL signals, one symbol per independent account of
`--cash` (ours: one `simulate` per symbol; vectorbt: one column per symbol, no cash sharing).
Each engine runs in fresh subprocesses, so every "first call" is really the first in its process
(imports are timed apart and not included): ours once, vectorbt twice, first with an empty
numba cache directory (full JIT compilation), then with the on-disk cache that run left (what a
second run on the same machine pays). Warm times are the best of `--repeat` further calls. A
call is the simulation plus its trade table (`Simulation.trades()` / `pf.orders.records_readable`).
The (date, symbol, side, qty) lists must be identical, fill prices and fees equal within 1e-9
(relative), equity curves within 1e-9; the exit status is 1 otherwise. Target: vectorbt's first
call >= 10x ours (cold numba cache).

Settings that make the two engines take the same decisions (see `risk.py`, `broker.py`):
- ours: `RiskLimits(max_position_pct=1.0, stop_loss_pct=0.05, max_daily_loss_usd=inf,
  commission_rate=0.0025)`, `slippage_pct=0.0005` (the default marketable BUY limit is
  close x 1.005 rounded up to the tick). vectorbt has no daily-loss halt, hence inf.
- vectorbt: `direction='longonly'`, `accumulate=False`, `fees=0.0025`, `slippage=0.0005`
  (fills at close x (1 +/- slippage), as `sim_fill_price`), `size_granularity=1` (whole shares),
  `sl_stop=0.05` with `stop_entry_price='fillprice'` (our stop is on the average = fill price),
  `stop_exit_price='close'` (stop exits fill at close x (1 - slippage), not at the stop price),
  only `close` passed (so the stop is tested on the close alone: close <= fill x 0.95).
- sizing: ours buys the most whole shares whose cost at the BUY *limit* price, commission
  included, fits the cash; vectorbt's `size_type='percent'` buys the most whole shares of
  percent x cash at the *fill* price. So vectorbt gets, per bar, `size = fill / limit`
  (a fixed function of the close: close x (1 + slippage) / limit_price(close)), which makes
  floor(size x cash / ((1 + fees) x fill)) = floor(cash / ((1 + fees) x limit)).
- signals: vectorbt ignores an entry while in a position (`accumulate=False`) where ours would
  add shares up to the cap, so the seeded random signals BUY only when flat. Whether the symbol
  is held follows from the signals and the stop rule alone (an entry's fill price does not depend
  on its size), so the generator tracks it with the project's `stop_loss_hit`. SELLs while flat
  and BUY/SELL on a stop-out day are left in: both engines ignore them.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

TARGET_RATIO = 10
COMMISSION, SLIPPAGE, STOP, CASH = 0.0025, 0.0005, 0.05, 100_000.0
RTOL = 1e-9


def risk_limits(stop: float, commission: float):
    "The project's limits for the comparison (no cap below 100%, no daily-loss halt)."
    from stockstock.risk import RiskLimits
    return RiskLimits(max_position_pct=1.0, stop_loss_pct=stop, max_daily_loss_usd=math.inf,
                      commission_rate=commission)


def load_closes(symbols: list[str], days: int, synthetic: int, seed: int) -> pd.DataFrame:
    "The last `days` common closes of embedded `symbols`, or `synthetic` random walks."
    if synthetic:
        rng = np.random.default_rng(seed + 1_000)
        steps = rng.normal(0.0003, rng.uniform(0.01, 0.03, synthetic), (days, synthetic))
        px = rng.uniform(5, 500, synthetic) * np.exp(np.cumsum(steps, axis=0))
        return pd.DataFrame(px, columns=[f"SYN{i:03d}" for i in range(synthetic)],
                            index=pd.bdate_range("2010-01-04", periods=days, name="date"))
    from stockstock.data import embedded_bars
    closes = pd.DataFrame({s: embedded_bars(s)["close"] for s in symbols}).dropna()
    return closes.iloc[-days:]


def random_signals(close: np.ndarray, rng: np.random.Generator, stop: float, slippage: float,
                   p_buy: float = 0.08, p_sell: float = 0.04, p_noise: float = 0.02) -> np.ndarray:
    "Seeded BUY/SELL/HOLD for one symbol that BUY only when flat (tracking stop-loss exits)."
    from stockstock.broker import sim_fill_price
    from stockstock.risk import Position, stop_loss_hit
    out = np.full(len(close), "HOLD", dtype=object)
    pos = None
    for i, c in enumerate(close):
        u = rng.random()
        if pos is not None and stop_loss_hit(pos, c, stop):   # stop day: both ignore signals
            pos = None
            if u < p_noise: out[i] = "SELL" if u < p_noise / 2 else "BUY"
        elif pos is not None:
            if u < p_sell: out[i], pos = "SELL", None
        elif u < p_buy:
            out[i] = "BUY"
            pos = Position("X", 1, sim_fill_price(c, "BUY", slippage))
        elif u < p_buy + p_noise:
            out[i] = "SELL"                                     # nothing held: a no-op
    return out


def make_inputs(args) -> dict:
    "Closes, actions and vectorbt's per-bar buy fraction, built once and shared by the workers."
    from stockstock.risk import limit_price
    limits = risk_limits(args.stop, args.commission)
    closes = load_closes(args.symbols.split(","), args.days, args.synthetic, args.seed)
    rng = np.random.default_rng(args.seed)
    actions = closes.apply(lambda c: pd.Series(
        random_signals(c.to_numpy(), rng, args.stop, args.slippage), index=c.index))
    limit = closes.map(lambda c: limit_price(c, "BUY", limits))
    fraction = closes * (1 + args.slippage) / limit   # fill / limit, <= 1
    return dict(closes=closes, actions=actions, buy_fraction=fraction, cash=args.cash,
                stop=args.stop, commission=args.commission, slippage=args.slippage)


# ---------------------------------------------------------------- workers (fresh processes)

def run_ours(inp: dict):
    "One call of our engine: a `simulate` per symbol, trade tables concatenated; equity."
    from stockstock.backtest import simulate
    limits = risk_limits(inp["stop"], inp["commission"])
    trades, equity = [], {}
    for sym in inp["closes"].columns:
        sim = simulate(inp["actions"][[sym]], inp["closes"][[sym]], limits,
                       slippage_pct=inp["slippage"], initial_cash=inp["cash"])
        trades.append(sim.trades())
        equity[sym] = sim.equity
    return pd.concat(trades, ignore_index=True), pd.DataFrame(equity)


def run_vectorbt(inp: dict):
    "One call of vectorbt: `from_signals` over all symbols (independent columns); its orders."
    import vectorbt as vbt
    act = inp["actions"]
    pf = vbt.Portfolio.from_signals(
        inp["closes"], entries=act == "BUY", exits=act == "SELL", direction="longonly",
        accumulate=False, size=inp["buy_fraction"], size_type="percent", size_granularity=1.0,
        fees=inp["commission"], slippage=inp["slippage"], sl_stop=inp["stop"],
        stop_entry_price="fillprice", stop_exit_price="close", upon_stop_exit="close",
        init_cash=inp["cash"], cash_sharing=False, freq="1D", engine="numba")
    return pf, pf.orders.records_readable


def normalise_ours(trades: pd.DataFrame) -> list[dict]:
    return [dict(date=str(r.date), symbol=r.symbol, side=r.side, qty=int(r.qty),
                 price=float(r.price), fees=float(r.commission), reason=r.reason)
            for r in trades.itertuples()]


def normalise_vectorbt(pf, closes: pd.DataFrame) -> list[dict]:
    rec = pf.order_records
    return [dict(date=str(closes.index[r["idx"]].date()), symbol=closes.columns[r["col"]],
                 side="BUY" if r["side"] == 0 else "SELL", qty=float(r["size"]),
                 price=float(r["price"]), fees=float(r["fees"]))
            for r in rec]


def timed_calls(module: str, call, inp: dict, repeat: int) -> tuple[float, float, list, object]:
    "In this (fresh) process: `module`'s import time, `call(inp)`'s first and warm times, result."
    t0 = time.perf_counter()
    importlib.import_module(module)
    import_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = call(inp)
    first_s = time.perf_counter() - t0
    warm = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        call(inp)
        warm.append(time.perf_counter() - t0)
    return import_s, first_s, warm, result


def worker(engine: str, inputs: Path, out: Path, repeat: int) -> None:
    "Time the engine's import, first call and warm calls in this (fresh) process."
    inp = pickle.loads(inputs.read_bytes())
    import_s, first_s, warm, result = timed_calls(
        "stockstock.backtest" if engine == "ours" else "vectorbt",
        run_ours if engine == "ours" else run_vectorbt, inp, repeat)
    if engine == "ours":
        trades, equity = normalise_ours(result[0]), result[1]
    else:
        trades, equity = normalise_vectorbt(result[0], inp["closes"]), result[0].value()
    out.write_text(json.dumps(dict(
        import_s=import_s, first_s=first_s, warm_s=min(warm), trades=trades,
        equity=equity.to_numpy().tolist(),
        versions={m: importlib.import_module(m).__version__ for m in ("numpy", "pandas")}
        | ({"vectorbt": sys.modules["vectorbt"].__version__,
            "numba": importlib.import_module("numba").__version__} if engine != "ours" else {}),
    )))


def spawn(engine: str, inputs: Path, tmp: Path, repeat: int, env: dict | None = None) -> dict:
    "Run `worker` in a fresh interpreter and read its report."
    out = tmp / f"{engine}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, __file__, "--worker", engine, "--inputs", str(inputs), "--out",
           str(out), "--repeat", str(repeat)]
    subprocess.run(cmd, check=True, env={**os.environ, **(env or {})})
    return json.loads(out.read_text())


# ---------------------------------------------------------------- comparison and report

def compare(ours: list[dict], theirs: list[dict]) -> tuple[bool, float, float, list[str]]:
    "(identical keys?, max relative price diff, max relative fee diff, first differences)."
    key = lambda t: (t["date"], t["symbol"], t["side"], float(t["qty"]))  # noqa: E731
    ka, kb = sorted(map(key, ours)), sorted(map(key, theirs))
    if ka != kb:
        only_a, only_b = sorted(set(ka) - set(kb)), sorted(set(kb) - set(ka))
        return False, math.nan, math.nan, ([f"only ours:     {k}" for k in only_a[:5]]
                                           + [f"only vectorbt: {k}" for k in only_b[:5]])
    a, b = sorted(ours, key=key), sorted(theirs, key=key)
    rel = lambda x, y: abs(x - y) / max(abs(x), abs(y), 1e-12)  # noqa: E731
    return (True, max((rel(x["price"], y["price"]) for x, y in zip(a, b, strict=True)), default=0),
            max((rel(x["fees"], y["fees"]) for x, y in zip(a, b, strict=True)), default=0), [])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", default="AAPL,MSFT,IBM", help="embedded symbols")
    parser.add_argument("--synthetic", type=int, default=0, help="N random walks instead")
    parser.add_argument("--days", type=int, default=2520)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5, help="warm calls (best is reported)")
    parser.add_argument("--cash", type=float, default=CASH)
    parser.add_argument("--stop", type=float, default=STOP)
    parser.add_argument("--commission", type=float, default=COMMISSION)
    parser.add_argument("--slippage", type=float, default=SLIPPAGE)
    parser.add_argument("--worker", choices=["ours", "vectorbt"], help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.inputs, args.out, args.repeat)
        return 0

    with tempfile.TemporaryDirectory(prefix="bench_backtest_") as d:
        tmp = Path(d)
        inp = make_inputs(args)
        (tmp / "inputs.pkl").write_bytes(pickle.dumps(inp))
        closes, actions = inp["closes"], inp["actions"]
        print(f"symbols={','.join(closes.columns)} days={len(closes)} "
              f"({closes.index[0].date()}..{closes.index[-1].date()}) seed={args.seed} "
              f"BUY signals={(actions == 'BUY').sum().sum()} "
              f"SELL signals={(actions == 'SELL').sum().sum()}")
        print(f"cash={args.cash:,.0f}/symbol commission={args.commission} "
              f"slippage={args.slippage} stop={args.stop}")
        ours = spawn("ours", tmp / "inputs.pkl", tmp, args.repeat)
        numba_cache = {"NUMBA_CACHE_DIR": str(tmp / "numba_cache")}
        cold = spawn("vectorbt", tmp / "inputs.pkl", tmp, args.repeat, numba_cache)
        cached = spawn("vectorbt", tmp / "inputs.pkl", tmp, args.repeat, numba_cache)

    same, price_diff, fee_diff, diffs = compare(ours["trades"], cold["trades"])
    same_again = compare(cold["trades"], cached["trades"])[0]
    eq_a, eq_b = np.asarray(ours["equity"]), np.asarray(cold["equity"])
    eq_diff = float(np.max(np.abs(eq_a - eq_b) / np.abs(eq_b))) if eq_a.shape == eq_b.shape \
        else math.inf
    n_stop = sum(t["reason"] == "stop_loss" for t in ours["trades"])
    n_buy = sum(t["side"] == "BUY" for t in ours["trades"])
    print("versions:", ", ".join(f"{k} {v}" for k, v in (ours["versions"]
                                                          | cold["versions"]).items()))
    print(f"trades: ours {len(ours['trades'])} ({n_buy} buys, "
          f"{len(ours['trades']) - n_buy} sells of which {n_stop} stop-loss), "
          f"vectorbt {len(cold['trades'])}")
    print(f"trade lists identical (date, symbol, side, qty): {'yes' if same else 'NO'}"
          + (f"; max relative difference: price {price_diff:.1e}, fees {fee_diff:.1e}, "
             f"equity curve {eq_diff:.1e}" if same else ""))
    for line in diffs: print("  " + line)
    print("first call, fresh process (import not included):")
    print(f"  ours (simulate + trades)                  {ours['first_s']:8.3f} s   "
          f"(import stockstock.backtest {ours['import_s']:.2f} s)")
    print(f"  vectorbt, empty numba cache (full JIT)    {cold['first_s']:8.3f} s   "
          f"(import vectorbt {cold['import_s']:.2f} s)")
    print(f"  vectorbt, numba disk cache from that run  {cached['first_s']:8.3f} s   "
          f"(import vectorbt {cached['import_s']:.2f} s)")
    print(f"warm call (best of {args.repeat}, same process):")
    print(f"  ours                                      {ours['warm_s']:8.4f} s")
    print(f"  vectorbt                                  {cold['warm_s']:8.4f} s")
    r_cold, r_cached = cold["first_s"] / ours["first_s"], cached["first_s"] / ours["first_s"]
    flag = lambda r: "" if r >= TARGET_RATIO else "  BELOW TARGET"  # noqa: E731
    print(f"ratio first call, vectorbt (cold numba) / ours: {r_cold:6.1f}x "
          f"(target >= {TARGET_RATIO}x){flag(r_cold)}")
    print(f"ratio first call, vectorbt (disk cache) / ours: {r_cached:6.1f}x{flag(r_cached)}")
    print(f"ratio warm call, ours / vectorbt:               "
          f"{ours['warm_s'] / cold['warm_s']:6.1f}x (> 1: vectorbt faster once compiled)")
    ok = same and price_diff <= RTOL and fee_diff <= RTOL and eq_diff <= RTOL and same_again
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
