"""Benchmark: wall time of `stockstock trade` (sim, 5 symbols) vs the papermill CLI on a trivial
3-cell notebook, in the same environment, measured alternately in one run (median of N each).

Target: ratio <= 1.5 (the kernel start is the floor both pay).

    .venv/bin/python tests/bench/bench_trade.py [--repeat 7]

It builds a throw-away project home (embedded bars for 5 symbols, a model, sim.yaml) in a
temporary folder; nothing in the repository is touched.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

BIN = Path(sys.executable).parent
SYMBOLS = ["AAPL", "MSFT", "GOOG", "IBM", "FB"]


def build_home(root: Path) -> None:
    "Seeded bars, a trained model (early-stopped, as `stockstock train` makes it), sim params."
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    env = {**os.environ, "STOCKSTOCK_HOME": str(root)}
    subprocess.run([str(BIN / "stockstock"), "train", "--quiet", "-p",
                    f"symbols=[{','.join(SYMBOLS)}]"], cwd=root, env=env, check=True,
                   capture_output=True)
    (root / "sim.yaml").write_text(f"mode: sim\nsymbols: [{', '.join(SYMBOLS)}]\n"
                                   "confidence_threshold: 0.36\n")
    nb = new_notebook(cells=[new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                             new_code_cell("y = x + 1"), new_code_cell("print(y)")])
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python",
                                 "display_name": "Python 3"}
    nbformat.write(nb, root / "trivial.ipynb")


def timed(cmd: list[str], root: Path) -> float:
    env = {**os.environ, "STOCKSTOCK_HOME": str(root)}
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{r.stdout}\n{r.stderr}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_trade_"))
    build_home(root)
    trade = [str(BIN / "stockstock"), "trade", "--params", "sim.yaml"]
    papermill = [str(BIN / "papermill"), "trivial.ipynb", "out.ipynb", "-p", "x", "2",
                 "--no-progress-bar"]
    timed(papermill, root)                                  # warm the OS file cache once
    ours, base = [], []
    for _ in range(args.repeat):                            # alternate: same conditions
        base.append(timed(papermill, root))
        ours.append(timed(trade, root))
    mo, mb = statistics.median(ours), statistics.median(base)
    print(f"stockstock trade (sim, {len(SYMBOLS)} symbols): median {mo:.2f} s "
          f"(min {min(ours):.2f}, max {max(ours):.2f}, n={len(ours)})")
    print(f"papermill CLI, trivial 3-cell notebook: median {mb:.2f} s "
          f"(min {min(base):.2f}, max {max(base):.2f}, n={len(base)})")
    print(f"ratio: {mo / mb:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
