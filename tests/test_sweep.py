"""`stockstock sweep` on real Dask clusters: a LocalCluster of two worker processes, and a
`dask scheduler` with `dask worker`s started as separate processes on 127.0.0.1; a worker killed
in the middle of a sweep; a sweep interrupted with Ctrl-C and run again; bad input; the research
notebook through papermill. Tiny grids (four stocks, one quarter, few boosting rounds) keep the
module to a few minutes."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import dask.config
import psutil
import pytest
from conftest import (BACKENDS, BIN, REPO, db_url, home_processes, query, reap, stockstock,
                      use_postgres)

SYMBOLS = ["AAPL", "MSFT", "GOOG", "IBM"]
GRID = """\
start: 2012-10-01
end: 2012-12-31
symbols: [AAPL, MSFT, GOOG, IBM]
retrain_every: 63
folds: 3
max_rounds: 20
placebo: {placebo}
grid:
  horizon: [{horizons}]
  threshold: [0.45, recommended]
"""
pytestmark = pytest.mark.slow


def seeded(home: Path, horizons: str = "5, 10", placebo: int = 20) -> Path:
    "Seed `home`'s database (SQLite, or the PostgreSQL one of `use_postgres`) and its grid."
    from stockstock.data import seed
    from stockstock.db import init_db
    db = init_db(db_url(home))
    seed(db, SYMBOLS, progress=False)
    db.close()
    (home / "grid.yaml").write_text(GRID.format(horizons=horizons, placebo=placebo))
    return home


def n_stored(home: Path) -> int:
    "Cells in the database (0 when there is no database yet)."
    if db_url(home).startswith("sqlite") and not (home / "data/stockstock.db").exists(): return 0
    return query(home, "SELECT count(*) FROM sweep_cells")[0][0]


def stored(home: Path) -> dict[str, dict]:
    "The figures of every stored cell, by cell hash (the rows, not the report)."
    rows = query(home, "SELECT cell_hash, figures FROM sweep_cells")
    assert len(rows) == len({h for h, _ in rows}), "a cell stored twice"
    return {h: json.loads(f) if isinstance(f, str) else f for h, f in rows}   # (psycopg: dict)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, dict]:
    "The grid computed serially, in this process: what every cluster must store."
    from stockstock.sweep import load_grid, plan_sweep, run_sweep
    home = seeded(tmp_path_factory.mktemp("reference"))
    plan = plan_sweep(load_grid(home / "grid.yaml"), f"sqlite:///{home}/data/stockstock.db")
    outcome = run_sweep(plan, None, progress=False)
    assert outcome.computed == 4 and not outcome.failed
    return {r.cell_hash: r.figures for r in outcome.rows}


def test_local_cluster_stores_what_a_serial_run_computes(home: Path, reference):
    seeded(home)
    r = stockstock("sweep", "grid.yaml", "--workers", "2", home=home, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 cells, 0 stored already, 4 to compute" in r.stdout
    assert "dashboard http://127.0.0.1:" in r.stdout and "4 of 4 stored" in r.stdout
    bar = r.stderr.replace("\r", "\n").splitlines()            # tqdm: cells done / total, ETA
    assert any(re.match(r"cells:\s+\d+%.* [1-3]/4 \[\d\d:\d\d<\d\d:\d\d", x) for x in bar), r.stderr
    assert stored(home) == reference
    report = next((home / "outputs/sweeps").glob("small*/index.html"), None) or next(
        (home / "outputs/sweeps").glob("*/index.html"))
    assert "Read this first" in report.read_text()
    assert len(list((report.parent / "cells").glob("*.html"))) == 4
    index = (home / "outputs/index.html").read_text()
    assert "Research sweeps" in index and "<td class='n'>4 of 4</td>" in index   # its figures
    assert re.search(r"<td class='n'>[+-]\d\.\d{3} \[[+-]\d\.\d{3}, [+-]\d\.\d{3}\]</td>", index)
    assert reap(home) == [], "the LocalCluster's processes outlived the sweep"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_cluster(home: Path, workers: int = 2) -> tuple[str, list[subprocess.Popen]]:
    "A `dask scheduler` and `workers` `dask worker` processes on 127.0.0.1, ready."
    from dask.distributed import Client
    port = _free_port()               # the settings the README gives for a cluster of your own
    env = {**os.environ, "STOCKSTOCK_HOME": str(home),
           "DASK_CONFIG": str(REPO / "nbs" / "research" / "dask.yaml")}
    address = f"tcp://127.0.0.1:{port}"
    log = open(home / "dask.log", "ab")
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                               str(port), "--dashboard-address", "127.0.0.1:0", "--no-show"],
                              env=env, stdout=log, stderr=log)]
    procs += [subprocess.Popen([str(BIN / "dask"), "worker", address, "--nthreads", "1",
                                "--no-dashboard", "--name", f"w{i}"], env=env, stdout=log,
                               stderr=log) for i in range(workers)]
    try:                              # a cluster that fails its checks is not left running
        with Client(address, timeout="60s") as c:
            c.wait_for_workers(workers, timeout=60)
            seen = c.run(lambda: (os.environ.get("MALLOC_ARENA_MAX"),  # (a lambda: by value)
                                  os.environ.get("MALLOC_TRIM_THRESHOLD_"),
                                  dask.config.get("distributed.worker.profile.enabled")))
            assert set(seen.values()) == {("1", None, False)}, seen
    except BaseException:
        _stop(procs)
        raise
    return address, procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in reversed(procs):
        for child in psutil.Process(p.pid).children(recursive=True) if p.poll() is None else []:
            child.kill()
        p.kill()
        p.wait(timeout=30)


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_a_database_at_revision_0002_gains_the_table_and_stores_on_both_backends(
        backend, home: Path, reference, request, monkeypatch):
    "`stockstock db upgrade` adds `sweep_cells` (revision 0003); LocalCluster workers store there."
    if backend == "postgresql": use_postgres(home, request.getfixturevalue("pg"), monkeypatch)
    seeded(home, horizons="5")
    query(home, "DROP TABLE sweep_cells")     # as main left it: schema 0002 (runs' hash chain)
    query(home, "UPDATE alembic_version SET version_num = '0002'")
    r = stockstock("db", "upgrade", home=home, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("(applied 0003)"), r.stdout + r.stderr
    assert n_stored(home) == 0
    r = stockstock("sweep", "grid.yaml", "--workers", "2", "--quiet", home=home, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 cells, 0 stored already, 2 to compute" in r.stdout
    got = stored(home)
    assert len(got) == 2 and all(reference[h] == f for h, f in got.items())  # = SQLite, serial
    again = stockstock("sweep", "grid.yaml", "--workers", "2", "--quiet", home=home, timeout=600)
    assert "2 cells, 2 stored already, 0 to compute" in again.stdout, again.stdout + again.stderr
    assert stored(home) == got
    assert reap(home) == []


def test_separate_scheduler_and_workers_store_the_same(home: Path, reference):
    seeded(home)
    address, procs = _start_cluster(home)
    try:
        r = stockstock("sweep", "grid.yaml", "--scheduler", address, "--quiet", home=home,
                       timeout=600)
    finally:
        _stop(procs)
    assert r.returncode == 0, r.stdout + r.stderr
    assert stored(home) == reference


def _wait_rows(home: Path, at_least: int, proc: subprocess.Popen, limit: float = 300) -> int:
    "Poll the database until `at_least` cells are stored (the sweep must still be running)."
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if (home / "data/stockstock.db").exists() and (n := n_stored(home)) >= at_least:
            return n
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError(f"fewer than {at_least} cells stored after {limit} s")


def _busy_worker(observer, name: str, limit: float = 300) -> tuple[str, int]:
    "(cell task key, worker pid) once the worker called `name` is computing a cell."
    deadline, pids = time.monotonic() + limit, observer.run(os.getpid)
    while time.monotonic() < deadline:
        workers = observer.scheduler_info()["workers"]
        for address, keys in observer.processing().items():
            cells = [k for k in keys if str(k).startswith("sweep-cell-")]
            if cells and workers.get(address, {}).get("name") == name:
                return str(cells[0]), pids[address]
        time.sleep(0.1)
    raise AssertionError(f"worker {name} never computed a cell")


def test_a_worker_killed_mid_task_has_its_cell_rerun_and_stored_once(home: Path, reference):
    from dask.distributed import Client
    seeded(home)
    address, procs = _start_cluster(home)
    try:
        sweep = subprocess.Popen([str(BIN / "stockstock"), "sweep", "grid.yaml", "--scheduler",
                                  address, "--quiet"], cwd=home, text=True,
                                 env={**os.environ, "STOCKSTOCK_HOME": str(home)},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with Client(address, timeout="30s") as observer:
            task, pid = _busy_worker(observer, "w0")
            victim = psutil.Process(procs[1].pid)         # w0's nanny, and its worker process
            for p in [*victim.children(recursive=True), victim]: p.kill()
        at_kill = set(stored(home))
        out, err = sweep.communicate(timeout=600)
    finally:
        _stop([p for p in procs if p.poll() is None])
    assert sweep.returncode == 0, out + err
    assert "4 of 4 stored" in out, out
    assert stored(home) == reference                      # each cell once, the same numbers
    prefix = task.split("-")[3]                           # sweep-cell-<position>-<hash prefix>
    (cell, worker), = query(home, "SELECT cell_hash, worker FROM sweep_cells WHERE cell_hash "
                                  "LIKE ?", prefix + "%")
    assert cell not in at_kill, "the killed worker's cell was stored before it died"
    assert not worker.endswith(f":{pid}"), "the killed worker's cell must come from another"


def test_an_interrupted_sweep_resumes_with_the_missing_cells(home: Path):
    seeded(home, horizons="5, 10, 15", placebo=500)   # six cells of ~3 s: Ctrl-C comes mid-way
    env = {**os.environ, "STOCKSTOCK_HOME": str(home)}
    sweep = subprocess.Popen([str(BIN / "stockstock"), "sweep", "grid.yaml", "--workers", "2",
                              "--quiet"], cwd=home, env=env, text=True, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_rows(home, 1, sweep)
    os.killpg(sweep.pid, signal.SIGINT)                       # Ctrl-C: the whole process group
    out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, out + err
    line = next(x for x in err.splitlines() if x.startswith("stockstock sweep: interrupted: "))
    assert line.endswith("of 6 cells stored; run the same sweep again to compute only the "
                         "missing ones"), err
    assert reap(home) == [], "processes outlived the interrupted sweep"
    done = len(stored(home))
    assert 0 < done < 6
    again = stockstock("sweep", "grid.yaml", "--workers", "2", "--quiet", home=home, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"6 cells, {done} stored already, {6 - done} to compute" in again.stdout
    assert f"{6 - done} cells computed" in again.stdout and "6 of 6 stored" in again.stdout
    assert len(stored(home)) == 6


def test_a_lost_scheduler_is_one_line_and_the_rerun_computes_the_rest(home: Path):
    seeded(home, horizons="5, 10, 15")                        # six cells
    address, procs = _start_cluster(home, workers=1)
    try:
        sweep = subprocess.Popen([str(BIN / "stockstock"), "sweep", "grid.yaml", "--scheduler",
                                  address, "--quiet"], cwd=home, text=True,
                                 env={**os.environ, "STOCKSTOCK_HOME": str(home)},
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _wait_rows(home, 1, sweep)
        procs[0].kill()                                       # the scheduler
        t0 = time.monotonic()
        out, err = sweep.communicate(timeout=120)
        elapsed = time.monotonic() - t0
    finally:
        _stop([p for p in procs if p.poll() is None])
    assert (sweep.returncode, err.count("\n")) == (2, 1), out + err
    assert err.startswith("stockstock sweep: lost the Dask cluster"), err
    assert err.rstrip().endswith("run the same sweep again to compute only the missing ones")
    assert elapsed < 60, f"{elapsed:.0f} s to notice"
    done = len(stored(home))
    assert 0 < done < 6, done
    again = stockstock("sweep", "grid.yaml", "--serial", "--quiet", home=home, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"6 cells, {done} stored already, {6 - done} to compute" in again.stdout
    assert len(stored(home)) == 6


@pytest.mark.parametrize("grid, says", [
    ("start: 2012-10-01\ngrid: {horizn: [5]}\n", "unknown grid axis 'horizn'"),
    ("start: 2012-10-01\ngrid: {horizon: []}\n", "the grid has no cells"),
    ("start: 2012-10-01\nsymbols: [NONE]\ngrid: {horizon: [5]}\n",
     "universe all: no bars in the database for NONE"),
    ("start: 2012-10-01\ngrid: {universe: [all]}\n", "no bars in the database for any symbol"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_stored(home: Path, grid: str, says: str):
    (home / "grid.yaml").write_text(grid)
    r = stockstock("sweep", "grid.yaml", "--workers", "2", home=home, timeout=120)
    assert (r.returncode, r.stderr.count("\n")) == (2, 1), r.stderr
    assert says in r.stderr and r.stderr.startswith("stockstock sweep: ")
    assert n_stored(home) == 0


def test_an_unreachable_scheduler_is_one_line_in_bounded_time(home: Path):
    seeded(home)
    t0 = time.monotonic()
    r = stockstock("sweep", "grid.yaml", "--scheduler", f"tcp://127.0.0.1:{_free_port()}",
                   "--connect-timeout", "3", home=home, timeout=120)
    elapsed = time.monotonic() - t0
    assert (r.returncode, r.stderr.count("\n")) == (2, 1), r.stderr
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:" in r.stderr
    assert elapsed < 30, f"{elapsed:.0f} s to give up"
    assert n_stored(home) == 0


def test_research_notebook_runs_a_sweep_through_papermill(home: Path):
    import nbformat
    import papermill
    out = home / "04_sweep.ipynb"
    papermill.execute_notebook(REPO / "nbs/research/04_sweep.ipynb", out, kernel_name="python3",
                               parameters=dict(workers=2), cwd=str(REPO / "nbs/research"),
                               progress_bar=False)
    text = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells
                   if c.cell_type == "code" for o in c.get("outputs", []))
    assert "computed 4 cells" in text and "failed: {}" in text, text
    assert "best cell by the interval's lower bound" in text
    assert len(query(home, "SELECT cell_hash FROM sweep_cells")) == 4
    assert not home_processes(home) or reap(home) == []
