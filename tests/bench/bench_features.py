"""Benchmark: the fast feature path against the per-indicator `ta` reference (run by hand).

    .venv/bin/python tests/bench/bench_features.py                 # 100 symbols x 2520 days
    .venv/bin/python tests/bench/bench_features.py --symbols 5 --days 600

Times `build_features` and `reference_features` over the same synthetic symbols in one run and
prints both times, the speed ratio (target >= 50x) and the largest relative difference after the
warm-up (must be <= TOLERANCE; the exit status is 1 otherwise).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from stockstock.features import TOLERANCE, WARMUP, build_features, reference_features
from stockstock.features import relative_differences

TARGET_RATIO = 50


def random_walk_bars(days: int, seed: int) -> pd.DataFrame:
    "Synthetic daily bars: a geometric random walk, consistent open/high/low, lognormal volume."
    rng = np.random.default_rng(seed)
    volatility = rng.uniform(0.01, 0.04)
    close = rng.uniform(5, 500) * np.exp(np.cumsum(rng.normal(0.0002, volatility, days)))
    open_ = close * np.exp(rng.normal(0, volatility / 4, days))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, volatility / 2, days)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, volatility / 2, days)))
    volume = np.round(rng.lognormal(rng.uniform(11, 17), 0.6, days))
    return pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "volume": volume},
                        index=pd.bdate_range("2004-01-02", periods=days, name="date"))


def time_all(fn: Callable[[pd.DataFrame], pd.DataFrame],
             bars: dict[str, pd.DataFrame]) -> tuple[float, dict[str, pd.DataFrame]]:
    "Seconds to run `fn` over every symbol, and its results."
    start = time.perf_counter()
    out = {sym: fn(b) for sym, b in bars.items()}
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=100)
    parser.add_argument("--days", type=int, default=2520)
    parser.add_argument("--repeat", type=int, default=3, help="passes of the fast path (best)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    bars = {f"SYM{i:03d}": random_walk_bars(args.days, args.seed + i) for i in range(args.symbols)}
    rows = args.symbols * args.days
    print(f"symbols={args.symbols} days={args.days} rows={rows:,}")

    build_features(next(iter(bars.values())))   # warm imports and caches
    fast_runs = [time_all(build_features, bars) for _ in range(args.repeat)]
    fast_s, fast = min(fast_runs, key=lambda run: run[0])
    reference_s, reference = time_all(reference_features, bars)

    worst = pd.concat([relative_differences(fast[s], reference[s], skip=WARMUP) for s in bars],
                      axis=1).max(axis=1)
    ratio = reference_s / fast_s
    print(f"build_features (TA-Lib/pandas/numpy): {fast_s:8.3f} s  "
          f"({rows / fast_s:12,.0f} rows/s, best of {args.repeat})")
    print(f"reference_features (ta):              {reference_s:8.3f} s  "
          f"({rows / reference_s:12,.0f} rows/s)")
    print(f"speed ratio: {ratio:.0f}x (target >= {TARGET_RATIO}x)"
          f"{'' if ratio >= TARGET_RATIO else '  BELOW TARGET'}")
    print(f"max relative difference after {WARMUP} warm-up bars: {worst.max():.2e} "
          f"({worst.idxmax()}; tolerance {TOLERANCE:g})")
    print("worst by feature:", ", ".join(f"{k}={v:.1e}" for k, v in worst.nlargest(4).items()))
    return 0 if worst.max() <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
