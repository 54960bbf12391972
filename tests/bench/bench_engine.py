"""Benchmark: the compiled engine (`stockstock.engine`) against vectorbt's `from_signals` (by hand).

The issue's target (issue 20): on 500 symbols x 2520 days, the engine at least as fast as
vectorbt's `Portfolio.from_signals` once both are warm, and still faster than vectorbt's first
call; the same trades. vectorbt lives in a separate venv, never in the project's (see
`bench_backtest.py`'s docstring for the setup; any venv with vectorbt and the project's
requirements, `stockstock` importable through a .pth file, will do):

    python3.11 -m venv /tmp/venv-bench
    /tmp/venv-bench/bin/pip install vectorbt $(sed -n 's/^requirements *= *//p' settings.ini)
    echo "$PWD" > "$(/tmp/venv-bench/bin/python -c \\
        'import sysconfig; print(sysconfig.get_paths()["purelib"])')/stockstock-src.pth"
    nice -n 10 /tmp/venv-bench/bin/python tests/bench/bench_engine.py --synthetic 500
    /tmp/venv-bench/bin/python tests/bench/bench_engine.py --symbols AAPL,MSFT,IBM --days 2000

Inputs, settings and the comparison are `bench_backtest.py`'s (imported from it): seeded random
BUY/SELL signals on random walks (or embedded closes), no cap below 100%, stop-loss 5%, no daily
loss halt (vectorbt has none), one account per symbol (vectorbt's `cash_sharing=False`; the
engine's `per_symbol=True`). Every engine runs in fresh processes, so each "first call" is the
first in its process (imports timed apart, not included):

- the engine twice: with an empty numba cache directory (`NUMBA_CACHE_DIR`: the whole engine is
  compiled in that call), then with the cache that run left (what every later process pays);
- vectorbt twice, the same way;
- `backtest.simulate` (the day loop in Python, one call per symbol) once, unless `--no-loop`.

A call is the simulation plus its trade table (`EngineSimulation.trades()` /
`pf.orders.records_readable` / `Simulation.trades()`). Warm: best of `--repeat` more calls in the
same process. The trade lists (date, symbol, side, qty) must be identical across all engines,
prices and fees within 1e-9 relative, equity curves within 1e-9; exit status 1 otherwise.
The machine's load average is printed before and after: other work on the machine slows all
engines, but not equally (the first calls are longest), so read the ratios with it.
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

sys.path.insert(0, str(Path(__file__).parent))
import bench_backtest as bb  # noqa: E402 - the inputs and the comparison are shared

WARM_TARGET = 1.0


def run_engine(inp: dict):
    "One call of the compiled engine: every symbol its own account; trades and equity."
    from stockstock.engine import simulate
    sim = simulate(inp["actions"], inp["closes"], bb.risk_limits(inp["stop"], inp["commission"]),
                   slippage_pct=inp["slippage"], initial_cash=inp["cash"], per_symbol=True)
    return sim.trades(), sim.equity


CALLS = {"engine": run_engine, "vectorbt": bb.run_vectorbt, "loop": bb.run_ours}
MODULES = {"engine": "stockstock.engine", "vectorbt": "vectorbt", "loop": "stockstock.backtest"}


def worker(engine: str, inputs: Path, out: Path, repeat: int) -> None:
    "Time the import, the first call and `repeat` warm calls in this (fresh) process."
    inp = pickle.loads(inputs.read_bytes())
    import_s, first_s, warm, result = bb.timed_calls(MODULES[engine], CALLS[engine], inp, repeat)
    if engine == "vectorbt":
        trades, equity = bb.normalise_vectorbt(result[0], inp["closes"]), result[0].value()
    else:
        trades, equity = bb.normalise_ours(result[0]), result[1]
    versions = {m: importlib.import_module(m).__version__ for m in ("numpy", "pandas", "numba")}
    if engine == "vectorbt": versions["vectorbt"] = sys.modules["vectorbt"].__version__
    out.write_text(json.dumps(dict(import_s=import_s, first_s=first_s,
                                   warm_s=min(warm) if warm else math.nan, trades=trades,
                                   equity=np.asarray(equity, float).tolist(), versions=versions)))


def spawn(engine: str, inputs: Path, tmp: Path, repeat: int, env: dict | None = None) -> dict:
    "Run `worker` in a fresh interpreter and read its report."
    out = tmp / f"{engine}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, __file__, "--worker", engine, "--inputs", str(inputs), "--out",
           str(out), "--repeat", str(repeat)]
    subprocess.run(cmd, check=True, env={**os.environ, **(env or {})})
    return json.loads(out.read_text())


def equity_diff(a: list, b: list) -> float:
    "Largest relative difference of two equity tables (inf when their shapes differ)."
    x, y = np.asarray(a, float), np.asarray(b, float)
    return float(np.max(np.abs(x - y) / np.abs(y))) if x.shape == y.shape else math.inf


def check(name: str, ours: dict, theirs: dict) -> bool:
    "Print whether `theirs` made the same trades and equity as the engine; True if so."
    same, price_diff, fee_diff, diffs = bb.compare(ours["trades"], theirs["trades"])
    eq = equity_diff(ours["equity"], theirs["equity"])
    print(f"trade lists engine = {name} (date, symbol, side, qty): {'yes' if same else 'NO'}"
          + (f"; max relative difference: price {price_diff:.1e}, fees {fee_diff:.1e}, "
             f"equity {eq:.1e}" if same else ""))
    for line in diffs: print("  " + line)
    return same and price_diff <= bb.RTOL and fee_diff <= bb.RTOL and eq <= bb.RTOL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", default="AAPL,MSFT,IBM", help="embedded symbols")
    parser.add_argument("--synthetic", type=int, default=0, help="N random walks instead")
    parser.add_argument("--days", type=int, default=2520)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5, help="warm calls (best is reported)")
    parser.add_argument("--no-loop", action="store_true", help="skip backtest.simulate")
    parser.add_argument("--cash", type=float, default=bb.CASH)
    parser.add_argument("--stop", type=float, default=bb.STOP)
    parser.add_argument("--commission", type=float, default=bb.COMMISSION)
    parser.add_argument("--slippage", type=float, default=bb.SLIPPAGE)
    parser.add_argument("--worker", choices=list(CALLS), help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker, args.inputs, args.out, args.repeat)
        return 0

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench_engine_") as d:
        tmp = Path(d)
        inp = bb.make_inputs(args)
        (tmp / "inputs.pkl").write_bytes(pickle.dumps(inp))
        closes, actions = inp["closes"], inp["actions"]
        print(f"symbols={len(closes.columns)} days={len(closes)} "
              f"({closes.index[0].date()}..{closes.index[-1].date()}) seed={args.seed} "
              f"BUY signals={(actions == 'BUY').sum().sum()} "
              f"SELL signals={(actions == 'SELL').sum().sum()}")
        print(f"cash={args.cash:,.0f}/symbol commission={args.commission} "
              f"slippage={args.slippage} stop={args.stop}; load average before "
              + " ".join(f"{x:.2f}" for x in load_before))
        runs = {}
        for engine in ("engine", "vectorbt"):
            cache = {"NUMBA_CACHE_DIR": str(tmp / f"numba_cache_{engine}")}
            runs[engine, "cold"] = spawn(engine, tmp / "inputs.pkl", tmp, args.repeat, cache)
            runs[engine, "cached"] = spawn(engine, tmp / "inputs.pkl", tmp, args.repeat, cache)
        if not args.no_loop:
            runs["loop", "cold"] = spawn("loop", tmp / "inputs.pkl", tmp, 0)
    load_after = os.getloadavg()

    ours, vbt = runs["engine", "cached"], runs["vectorbt", "cold"]
    versions = runs["engine", "cold"]["versions"] | vbt["versions"]
    print("versions:", ", ".join(f"{k} {v}" for k, v in versions.items()))
    n_stop = sum(t["reason"] == "stop_loss" for t in ours["trades"])
    n_buy = sum(t["side"] == "BUY" for t in ours["trades"])
    print(f"trades: engine {len(ours['trades'])} ({n_buy} buys, {len(ours['trades']) - n_buy} "
          f"sells of which {n_stop} stop-loss), vectorbt {len(vbt['trades'])}")
    ok = check("vectorbt", ours, vbt) and check("engine (cold cache)", ours, runs["engine", "cold"])
    if ("loop", "cold") in runs: ok = check("backtest.simulate", ours, runs["loop", "cold"]) and ok
    print("first call, fresh process (import not included):")
    for (engine, cache), r in runs.items():
        label = {"cold": "empty numba cache (compiles)", "cached": "numba disk cache"}[cache]
        label = "one simulate per symbol" if engine == "loop" else label
        print(f"  {engine:8} {label:30} {r['first_s']:8.3f} s   (import {r['import_s']:.2f} s)")
    print(f"warm call (best of {args.repeat}, same process):")
    for engine in ("engine", "vectorbt"):
        print(f"  {engine:8} {'':30} {runs[engine, 'cached']['warm_s']:8.4f} s")
    warm = runs["vectorbt", "cached"]["warm_s"] / ours["warm_s"]
    cold = runs["vectorbt", "cold"]["first_s"] / runs["engine", "cold"]["first_s"]
    cached = runs["vectorbt", "cached"]["first_s"] / ours["first_s"]
    flag = "" if warm >= WARM_TARGET else "  BELOW TARGET"
    print(f"ratio warm call, vectorbt / engine:                     {warm:6.2f}x "
          f"(target >= {WARM_TARGET:.1f}x){flag}")
    print(f"ratio first call, vectorbt / engine, both compiling:    {cold:6.2f}x "
          "(> 1: ours faster)")
    print(f"ratio first call, vectorbt / engine, both disk-cached:  {cached:6.2f}x")
    if ("loop", "cold") in runs:
        print(f"ratio backtest.simulate (loop, first call) / engine warm: "
              f"{runs['loop', 'cold']['first_s'] / ours['warm_s']:8.1f}x")
    print("load average after " + " ".join(f"{x:.2f}" for x in load_after))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
