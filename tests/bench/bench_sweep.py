"""Benchmark: a 24-cell sweep on a LocalCluster of 2 workers vs the same cells serially (by hand).

The issue's target (issue 20, 5b): on the 500-symbol universe, a `LocalCluster` of 2 workers at
least 1.7x faster than the same cells one after the other in one process, on 2 cores; and how it
scales (cells per minute per worker), to size a cluster.

    nice -n 10 .venv/bin/python tests/bench/bench_sweep.py                 # 500 synthetic symbols
    .venv/bin/python tests/bench/bench_sweep.py --symbols 100 --days 400 --rounds 1   # quicker

The universe is **synthetic** until the S&P 500 year (`stockstock seed --dataset sp500-2010`,
branch `edge`) is on main: `--symbols` random walks of `--days` sessions (daily volatility
1-3%, OHLC around the close, volumes), written once into a fresh SQLite file (copied for the
other run). The grid: horizon {5, 10} x threshold {0.45, recommended} x regularisation
{defaults, lambda_l2 10} x universe {all, part:1/2, part:2/2} = 24 cells, each a purged
walk-forward over the last `--oos` sessions, retrained every 63, 3 folds, at most 50 rounds, 100
placebo shuffles.

The serial and the parallel run alternate (`--rounds` pairs, serial first unless
`--parallel-first`), each computing the same 24 cells into its own fresh copy of the database
(nothing is read back); every run's stored figures must be identical (exit status 1 otherwise).
A pair's ratio compares runs made minutes apart, so a change in the machine's other load shows as
a spread between pairs; the load average is printed at each run's start and end. The parallel
time includes starting the LocalCluster (printed apart). It also times what a worker does to get
the data (the bars of 500 symbols from SQLite, once per worker) against a cell's compute time, the
measure behind reading from the database rather than a Parquet snapshot.
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
    parser.add_argument("--rounds", type=int, default=2,
                        help="serial/parallel pairs, measured alternately (default 2)")
    parser.add_argument("--parallel-first", action="store_true",
                        help="each pair starts with the parallel run (default: serial first)")
    args = parser.parse_args(argv)
    from stockstock.log import configure_logging
    from stockstock.sweep import load_bars
    configure_logging("WARNING")
    print(f"load average before: {_load()}; {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory(prefix="bench_sweep_") as d:
        folder = Path(d)
        bars = synthetic_bars(args.symbols, args.days)
        start = next(iter(bars.values())).index[-args.oos].date()
        (folder / "grid.yaml").write_text(GRID.format(start=start))
        print(f"universe: {args.symbols} synthetic symbols x {args.days} sessions, out of sample "
              f"from {start} ({args.oos} sessions); 24 cells; {args.rounds} pairs, alternating",
              flush=True)
        t0 = time.perf_counter()
        base = fresh_db(folder, "base", bars)
        print(f"  database written in {time.perf_counter() - t0:.0f} s", flush=True)
        t0 = time.perf_counter()
        load_bars(base, tuple(sorted(bars)), None)
        load_s = time.perf_counter() - t0
        load_bars.cache_clear()
        order = ["parallel", "serial"] if args.parallel_first else ["serial", "parallel"]
        runs: list[dict] = []
        for k in range(args.rounds):
            for which in order:
                name = f"{which}{k}"                  # a fresh copy: nothing stored, same bars
                shutil.copy(folder / "base.db", folder / f"{name}.db")
                print(f"round {k + 1} {which}: " + (
                    f"LocalCluster of {args.workers} workers" if which == "parallel"
                    else "one cell after the other, in this process") + f" (load {_load()})",
                      flush=True)
                before = os.getloadavg()[0]
                seconds, start_s, cpu, rows = run(f"sqlite:///{folder / name}.db",
                                                  folder / "grid.yaml",
                                                  args.workers if which == "parallel" else None)
                runs.append(dict(which=which, round=k, seconds=seconds, start_s=start_s, cpu=cpu,
                                 rows=rows, load=(before, os.getloadavg()[0])))
                print(f"  {seconds:.1f} s" + (f" ({start_s:.1f} s starting the cluster)"
                                               if which == "parallel" else ""), flush=True)
    return report(runs, args, load_s)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def report(runs: list[dict], args: argparse.Namespace, load_s: float) -> int:
    "Print each pair's ratio, the median, the scaling line and the CPU shares; 1 if any differ."
    figures = [[r.figures for r in run["rows"]] for run in runs]
    same = all(f == figures[0] for f in figures) and len(figures[0]) == 24
    print(f"stored figures identical (24 cells, every run): {'yes' if same else 'NO'}")
    cell_s = [r.seconds for run in runs if run["which"] == "serial" for r in run["rows"]]
    print(f"a cell's compute (serial runs): median {statistics.median(cell_s):.1f} s, min "
          f"{min(cell_s):.1f}, max {max(cell_s):.1f}; loading the bars of all {args.symbols} "
          f"symbols from SQLite: {load_s:.2f} s (each worker does it once)")
    on_workers = [r.seconds for run in runs if run["which"] == "parallel" for r in run["rows"]]
    worker_s, serial_s = statistics.median(on_workers), statistics.median(cell_s)
    print(f"a cell's compute on a worker (parallel runs): median {worker_s:.1f} s, "
          f"{worker_s / serial_s:.2f}x the serial median (two cells at once share the machine's "
          "caches and memory bandwidth)")
    ratios = []
    for k in range(args.rounds):
        ser, par = (next(r for r in runs if r["round"] == k and r["which"] == w)
                    for w in ("serial", "parallel"))
        ratio = ser["seconds"] / par["seconds"]
        ratios.append(ratio)
        print(f"pair {k + 1}: serial {ser['seconds']:6.1f} s (load {ser['load'][0]:.1f}->"
              f"{ser['load'][1]:.1f}, {ser['cpu'] / ser['seconds']:.2f} of a core)   parallel "
              f"{par['seconds']:6.1f} s (load {par['load'][0]:.1f}->{par['load'][1]:.1f}, "
              f"{par['cpu'] / par['seconds'] / args.workers:.2f} of {args.workers} cores; "
              f"{par['start_s']:.1f} s cluster start)   ratio {ratio:.2f}x")
    ratio = statistics.median(ratios)
    print(f"ratio serial / LocalCluster({args.workers}): median {ratio:.2f}x of {len(ratios)} "
          f"pairs ({', '.join(f'{r:.2f}' for r in ratios)}; target >= {TARGET}x)"
          + ("" if ratio >= TARGET else "  BELOW TARGET"))
    par_s = statistics.median(r["seconds"] for r in runs if r["which"] == "parallel")
    ser_s = statistics.median(r["seconds"] for r in runs if r["which"] == "serial")
    print(f"scaling: {24 / (par_s / 60) / args.workers:.2f} cells per minute per worker "
          f"({24 / (par_s / 60):.2f} cells/min on {args.workers} workers; serial "
          f"{24 / (ser_s / 60):.2f} cells/min on one process; medians)")
    ser_cpu = statistics.median(r["cpu"] for r in runs if r["which"] == "serial")
    par_cpu = statistics.median(r["cpu"] for r in runs if r["which"] == "parallel")
    print(f"CPU seconds used (medians): serial {ser_cpu:.0f}, parallel {par_cpu:.0f} (workers, "
          "and this process with the scheduler)")
    print(f"load average after: {_load()}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
