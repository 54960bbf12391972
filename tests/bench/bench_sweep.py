"""Benchmark: a 24-cell sweep on a LocalCluster of 2 workers vs the same cells serially (by hand).

The issue's target (issue 20, 5b): on the 500-symbol universe, a `LocalCluster` of 2 workers at
least 1.7x faster than the same cells one after the other in one process, on 2 cores; and how it
scales (cells per minute per worker), to size a cluster.

    nice -n 10 .venv/bin/python tests/bench/bench_sweep.py                 # 500 synthetic symbols
    .venv/bin/python tests/bench/bench_sweep.py --symbols 100 --days 400   # a quicker look

The universe is **synthetic** until the S&P 500 year (`stockstock seed --dataset sp500-2010`,
branch `edge`) is on main: `--symbols` random walks of `--days` sessions (daily volatility
1-3%, OHLC around the close, volumes), written once into a fresh SQLite file (copied for the
other run). The grid: horizon {5, 10} x threshold {0.45, recommended} x regularisation
{defaults, lambda_l2 10} x universe {all, part:1/2, part:2/2} = 24 cells, each a purged
walk-forward over the last `--oos` sessions, retrained every 63, 3 folds, at most 50 rounds, 100
placebo shuffles.

Both runs compute the same 24 cells into their own database (nothing is read back), and their
stored figures must be identical (exit status 1 otherwise). The parallel time includes starting
the LocalCluster (printed apart). It also times what a worker does to get a cell's data (the
bars of 500 symbols from SQLite) against a cell's compute time, the measure behind reading from
the database rather than a Parquet snapshot. Run on an idle machine: the load average is printed
before and after, and other work on the two cores lowers the ratio.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

TARGET = 1.7
GRID = """\
name: bench
start: {start}
retrain_every: 63
folds: 3
max_rounds: 50
placebo: 100
grid:
  horizon: [5, 10]
  threshold: [0.45, recommended]
  regularisation: [{{}}, {{lambda_l2: 10}}]
  universe: [all, "part:1/2", "part:2/2"]
"""


def synthetic_bars(n: int, days: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    "`n` random-walk OHLCV series of `days` business days."
    rng = np.random.default_rng(seed)
    index = pd.bdate_range("2015-01-02", periods=days, name="date")
    out = {}
    for i in range(n):
        vol = rng.uniform(0.01, 0.03)
        close = rng.uniform(10, 300) * np.exp(np.cumsum(rng.normal(0.0003, vol, days)))
        spread = close * rng.uniform(0.002, vol, days)
        open_ = close * np.exp(rng.normal(0, vol / 2, days))
        high = np.maximum(open_, close) + spread
        low = np.maximum(np.minimum(open_, close) - spread, 0.01)
        volume = rng.lognormal(13, 0.5, days).round()
        out[f"S{i:03d}"] = pd.DataFrame(dict(open=open_, high=high, low=low, close=close,
                                             volume=volume), index=index)
    return out


def fresh_db(folder: Path, name: str, bars: dict[str, pd.DataFrame]) -> str:
    from stockstock.db import init_db
    url = f"sqlite:///{folder / name}.db"
    db = init_db(url)
    for sym, b in bars.items(): db.upsert_ohlcv(sym, b, source="synthetic")
    db.close()
    return url


def cpu_seconds(pids: list[int]) -> float:
    "User + system CPU seconds the processes `pids` have used so far."
    import psutil
    return sum(sum(psutil.Process(p).cpu_times()[:2]) for p in pids)


def run(url: str, grid_path: Path, workers: int | None) -> tuple[float, float, float, list]:
    """(seconds in all, seconds starting the cluster, CPU seconds of every process involved,
    stored figures in grid order)."""
    from stockstock.sweep import load_grid, open_client, plan_sweep, run_sweep
    t0, cpu0 = time.perf_counter(), cpu_seconds([os.getpid()])
    plan = plan_sweep(load_grid(grid_path), url)
    if workers is None:
        outcome, start_s, workers_cpu = run_sweep(plan, None, progress=True), 0.0, 0.0
    else:
        t1 = time.perf_counter()
        with open_client(workers=workers) as client:
            start_s = time.perf_counter() - t1
            print(f"  dashboard {client.dashboard_link}", flush=True)
            pids = list(client.run(os.getpid).values())
            w0 = cpu_seconds(pids)
            outcome = run_sweep(plan, client, progress=True)
            workers_cpu = cpu_seconds(pids) - w0
    assert not outcome.failed, outcome.failed
    cpu = cpu_seconds([os.getpid()]) - cpu0 + workers_cpu    # (the scheduler: in this process)
    return time.perf_counter() - t0, start_s, cpu, outcome.rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--days", type=int, default=504, help="sessions of history")
    parser.add_argument("--oos", type=int, default=126, help="out-of-sample sessions at the end")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--serial-first", action="store_true",
                        help="run the serial baseline first (the other order, to see drift)")
    args = parser.parse_args(argv)
    from stockstock.log import configure_logging
    from stockstock.sweep import load_bars
    configure_logging("WARNING")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as d:
        folder = Path(d)
        bars = synthetic_bars(args.symbols, args.days)
        start = next(iter(bars.values())).index[-args.oos].date()
        (folder / "grid.yaml").write_text(GRID.format(start=start))
        print(f"universe: {args.symbols} synthetic symbols x {args.days} sessions, out of sample "
              f"from {start} ({args.oos} sessions); 24 cells")
        t0 = time.perf_counter()
        urls = {"parallel": fresh_db(folder, "parallel", bars)}
        shutil.copy(folder / "parallel.db", folder / "serial.db")   # the same bars, its own file
        urls["serial"] = f"sqlite:///{folder / 'serial.db'}"
        print(f"  databases written in {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        load_bars(urls["serial"], tuple(sorted(bars)), None)
        load_s = time.perf_counter() - t0
        load_bars.cache_clear()
        loads = {}
        for which in (["serial", "parallel"] if args.serial_first else ["parallel", "serial"]):
            print(f"{which}: " + (f"LocalCluster of {args.workers} workers" if which == "parallel"
                                  else "one cell after the other, in this process"), flush=True)
            if which == "parallel":
                par_s, start_s, par_cpu, par_rows = run(urls["parallel"], folder / "grid.yaml",
                                                        args.workers)
            else:
                ser_s, _, ser_cpu, ser_rows = run(urls["serial"], folder / "grid.yaml", None)
            loads[which] = os.getloadavg()[0]
    same = [r.figures for r in par_rows] == [r.figures for r in ser_rows] and len(par_rows) == 24
    cell_s = [r.seconds for r in ser_rows]
    ratio = ser_s / par_s
    per_worker = len(par_rows) / (par_s / 60) / args.workers
    print(f"stored figures identical (24 cells, parallel vs serial): {'yes' if same else 'NO'}")
    print(f"a cell's compute (serial): median {statistics.median(cell_s):.1f} s, "
          f"min {min(cell_s):.1f}, max {max(cell_s):.1f}; loading the bars of all {args.symbols} "
          f"symbols from SQLite: {load_s:.2f} s")
    print(f"serial {ser_s:7.1f} s   parallel {par_s:7.1f} s (of which {start_s:.1f} s starting "
          "the cluster)")
    print(f"ratio serial / LocalCluster({args.workers}): {ratio:.2f}x (target >= {TARGET}x)"
          + ("" if ratio >= TARGET else "  BELOW TARGET"))
    print(f"throughput: {per_worker:.2f} cells per minute per worker "
          f"({len(par_rows) / (par_s / 60):.2f} cells/min on {args.workers} workers; serial "
          f"{len(ser_rows) / (ser_s / 60):.2f} cells/min)")
    print(f"CPU seconds used: serial {ser_cpu:.0f}, parallel {par_cpu:.0f} (workers, and this "
          f"process with the scheduler); share of one core the serial run got "
          f"{ser_cpu / ser_s:.2f}, of {args.workers} cores the parallel run got "
          f"{par_cpu / par_s / args.workers:.2f} (1.00 each on an idle machine)")
    print(f"  => on an idle machine (estimate, not measured: each run at its full share of the "
          f"cores, the cluster start added) the ratio would be about "
          f"{ser_cpu / (par_cpu / args.workers + start_s):.2f}x")
    print(f"1-minute load average at the end of each run: serial {loads['serial']:.2f}, "
          f"parallel {loads['parallel']:.2f} (the bench itself adds 1 or 2)")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
