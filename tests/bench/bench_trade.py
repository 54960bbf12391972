"""Benchmark: wall time of `stockstock trade` (sim, 5 symbols) vs the papermill CLI on a trivial
3-cell notebook, in the same environment, measured alternately in one run (median of N each).

Target: ratio <= 1.3 (issue 22; the kernel start is the floor both pay).

    .venv/bin/python tests/bench/bench_trade.py [--repeat 7] [--db-url URL]

It builds a throw-away project home (embedded bars for 5 symbols, a model, sim.yaml) in a
temporary folder; nothing in the repository is touched. With `--db-url` (an *empty* database,
e.g. `postgresql+psycopg://stockstock@127.0.0.1:5432/bench`, its password in the URL or in
STOCKSTOCK_DB_PASSWORD) a second home trades on that database — a copy of the first home's
(`stockstock db copy`) — and the three commands are measured alternately: papermill, `trade` on
SQLite, `trade` on the other database.
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


def other_home(root: Path, url: str) -> tuple[Path, dict[str, str]]:
    "A copy of home `root` whose database is `url` (copied from root's); the env that selects it."
    import shutil

    from stockstock.config import hide_password, url_password
    other = root.parent / f"{root.name}_db"
    shutil.copytree(root, other, ignore=shutil.ignore_patterns("stockstock.db*", "out.ipynb"))
    password = url_password(url) or os.environ.get("STOCKSTOCK_DB_PASSWORD", "")
    env = {"STOCKSTOCK_DB_URL": hide_password(url), "STOCKSTOCK_DB_PASSWORD": password}
    r = subprocess.run([str(BIN / "stockstock"), "db", "copy", "--to", hide_password(url)],
                       cwd=root, env={**os.environ, **env, "STOCKSTOCK_HOME": str(root),
                                      "STOCKSTOCK_DB_URL": ""},
                       capture_output=True, text=True)
    if r.returncode != 0: raise SystemExit(f"db copy failed:\n{r.stdout}\n{r.stderr}")
    return other, env


def timed(cmd: list[str], root: Path, extra: dict[str, str] | None = None) -> float:
    env = {**os.environ, "STOCKSTOCK_HOME": str(root), **(extra or {})}
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{r.stdout}\n{r.stderr}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--db-url", help="also trade on this (empty) database, e.g. PostgreSQL")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench_trade_"))
    build_home(root)
    other, env = other_home(root, args.db_url) if args.db_url else (None, {})
    trade = [str(BIN / "stockstock"), "trade", "--params", "sim.yaml"]
    papermill = [str(BIN / "papermill"), "trivial.ipynb", "out.ipynb", "-p", "x", "2",
                 "--no-progress-bar"]
    timed(papermill, root)                                  # warm the OS file cache once
    ours, base, theirs = [], [], []
    for _ in range(args.repeat):                            # alternate: same conditions
        base.append(timed(papermill, root))
        ours.append(timed(trade, root))
        if other is not None: theirs.append(timed(trade, other, env))
    mo, mb = statistics.median(ours), statistics.median(base)
    print(f"stockstock trade (sim, {len(SYMBOLS)} symbols, SQLite): median {mo:.2f} s "
          f"(min {min(ours):.2f}, max {max(ours):.2f}, n={len(ours)})")
    if theirs:
        mt = statistics.median(theirs)
        print(f"stockstock trade (sim, {len(SYMBOLS)} symbols, {env['STOCKSTOCK_DB_URL']}): "
              f"median {mt:.2f} s (min {min(theirs):.2f}, max {max(theirs):.2f}, n={len(theirs)})")
    print(f"papermill CLI, trivial 3-cell notebook: median {mb:.2f} s "
          f"(min {min(base):.2f}, max {max(base):.2f}, n={len(base)})")
    print(f"ratio: {mo / mb:.2f}x (target <= 1.3x)")
    if theirs:
        print(f"ratio on the other database: {mt / mb:.2f}x; it vs SQLite: {mt / mo:.2f}x")


if __name__ == "__main__":
    main()
