"""Issue 18: an audit trail nothing can quietly rewrite — one source of defaults, write-once runs
(an archived run notebook re-executed changes nothing; the template run by hand is a new run
marked `manual`), and the hash chain `runs --verify` recomputes."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import nbformat
import pytest
from conftest import BIN, REPO, query, stockstock, trade_then_verify

from stockstock.hourly import ASK_SIM_CLOCK


def _sim_yaml(home: Path, threshold: float = 0.45) -> None:
    (home / "scheduled/sim.yaml").write_text(
        f"mode: sim\nsymbols: [AAPL, MSFT, GOOG, IBM]\nconfidence_threshold: {threshold}\n")


@pytest.mark.slow
def test_trade_and_run_read_the_same_default_parameters(trading_home: Path):
    "Without --params both use scheduled/sim.yaml; `config` says where each value came from."
    home = trading_home
    _sim_yaml(home)
    for cmd in ("trade", "run"):
        r = stockstock(cmd, home=home)
        assert r.returncode == 0, r.stdout + r.stderr
    params = [json.loads(p) for (p,) in query(home, "SELECT params FROM runs ORDER BY as_of")]
    assert [p["confidence_threshold"] for p in params] == [0.45, 0.45]
    cfg = stockstock("config", "-p", "symbols=[IBM]", home=home)
    lines = {line.split(":")[0]: line for line in cfg.stdout.splitlines()}
    assert lines["confidence_threshold"].endswith("# scheduled/sim.yaml"), cfg.stdout
    assert lines["symbols"].endswith("# override") and lines["lookback_days"].endswith("# default")


TABLES = {"runs": "SELECT * FROM runs ORDER BY run_id",
          "signals": "SELECT * FROM signals ORDER BY id",
          "trades": "SELECT * FROM trades ORDER BY id",
          "risk_events": "SELECT * FROM risk_events ORDER BY id",
          "state": "SELECT * FROM system_state ORDER BY key"}


def _rows(home: Path) -> dict[str, list]:
    return {name: query(home, sql) for name, sql in TABLES.items()}


def _nbconvert(notebook: Path, home: Path, out: Path) -> subprocess.CompletedProcess:
    "`jupyter nbconvert --execute` as a person would run it (kernel in the notebook's folder)."
    env = {**os.environ, "STOCKSTOCK_HOME": str(home)}
    env.pop("STOCKSTOCK_LAUNCHER_PID", None)
    return subprocess.run([str(BIN / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                           "--allow-errors", "--output-dir", str(out.parent), "--output",
                           out.name, str(notebook)], cwd=notebook.parent, env=env,
                          capture_output=True, text=True, timeout=600)


def _stop(notebook: Path) -> str:
    "The first error of an executed notebook (`--allow-errors` ran the cells after it too)."
    nb = nbformat.read(notebook, as_version=4)
    return next(f"{o['ename']}: {o['evalue']}" for c in nb.cells for o in c.get("outputs", [])
                if o.get("output_type") == "error")


def _set_parameters(src: Path, dst: Path, **values: object) -> None:
    "Copy the template to `dst` with `values` set in its parameters cell (as a person would)."
    nb = nbformat.read(src, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    cell.source += "".join(f"\n{k} = {v!r}" for k, v in values.items())
    nbformat.write(nb, dst)


@pytest.mark.slow
def test_an_archived_run_notebook_executed_again_changes_nothing(trading_home: Path, tmp_path):
    home = trading_home
    for _ in range(3):                                   # until a run sent orders
        r = stockstock("trade", "--params", "scheduled/test.yaml", home=home)
        assert r.returncode == 0, r.stdout + r.stderr
    (run_id, path), = query(home, "SELECT run_id, notebook_path FROM runs WHERE n_orders > 0 "
                                  "ORDER BY as_of LIMIT 1")
    before = _rows(home)
    done = _nbconvert(home / path, home, tmp_path / "again.ipynb")
    assert done.returncode == 0, done.stderr[-2000:]
    assert _rows(home) == before                         # runs, signals, trades, risk events
    assert _stop(tmp_path / "again.ipynb") == (
        f"RunStop: Run {run_id} has finished and its record is written once, so this copy does "
        f"not run again; to run its decision again use `stockstock trade --replay {run_id}`.")
    ok = stockstock("runs", "--verify", home=home)
    assert ok.returncode == 0, ok.stdout + ok.stderr


@pytest.mark.slow
def test_the_template_run_by_hand_is_a_new_manual_run(trading_home: Path, tmp_path):
    "Same parameters as a scheduled run, its own executed copy, the sim clock only when asked."
    home = trading_home
    _sim_yaml(home)
    shutil.copy(REPO / "scheduled/hourly_trade.ipynb", home / "scheduled/hourly_trade.ipynb")
    before = _rows(home)
    refused = _nbconvert(home / "scheduled/hourly_trade.ipynb", home, tmp_path / "a.ipynb")
    assert refused.returncode == 0, refused.stderr[-2000:]
    assert _stop(tmp_path / "a.ipynb") == f"RunStop: {ASK_SIM_CLOCK}"
    assert _rows(home) == before                          # no run, the clock where it was
    _set_parameters(home / "scheduled/hourly_trade.ipynb", home / "scheduled/mine.ipynb",
                    advance_sim_clock=True)
    done = _nbconvert(home / "scheduled/mine.ipynb", home, tmp_path / "b.ipynb")
    assert done.returncode == 0, done.stderr[-2000:]
    (run_id, origin, status, params, path, as_of), = query(
        home, "SELECT run_id, origin, status, params, notebook_path, as_of FROM runs")
    assert (origin, status) == ("manual:nbconvert", "ok")
    assert json.loads(params)["confidence_threshold"] == 0.45        # scheduled/sim.yaml's
    assert path.startswith("outputs/") and (home / path).exists()
    assert (home / path).with_suffix(".html").exists()
    msg = _stop(tmp_path / "b.ipynb")
    assert msg.startswith(f"RunStop: This notebook launched run {run_id} (manual:nbconvert), "
                          f"which ended ok"), msg
    assert query(home, "SELECT value FROM system_state WHERE key='sim_clock'") == \
        [(json.dumps(as_of[:10]),)]                                   # asked: the clock moved
    _set_parameters(home / "scheduled/hourly_trade.ipynb", home / "scheduled/pinned.ipynb",
                    as_of="2011-03-17T19:30:00Z")
    clock = query(home, "SELECT value FROM system_state WHERE key='sim_clock'")
    assert _nbconvert(home / "scheduled/pinned.ipynb", home, tmp_path / "c.ipynb").returncode == 0
    assert query(home, "SELECT origin, status FROM runs WHERE as_of LIKE '2011-03-17%'") == \
        [("manual:nbconvert", "ok")]
    assert query(home, "SELECT value FROM system_state WHERE key='sim_clock'") == clock


@pytest.mark.slow
def test_runs_verify_names_a_deleted_trade_an_edited_row_and_a_deleted_run(trading_home: Path):
    home = trading_home
    ok = trade_then_verify(home, 3)
    assert "hash chain intact: 3 run(s)" in ok.stdout, ok.stdout
    db = home / "data/stockstock.db"
    pristine = db.read_bytes()
    runs = [r for (r,) in query(home, "SELECT run_id FROM runs ORDER BY chain_seq")]
    (traded,), = query(home, "SELECT run_id FROM trades ORDER BY id LIMIT 1")

    def verdict(sql: str, *args) -> tuple[int, str]:
        db.write_bytes(pristine)
        con = sqlite3.connect(db)
        with con: con.execute(sql, args)
        con.close()
        out = stockstock("runs", "--verify", home=home)
        return out.returncode, out.stdout.splitlines()[-1]

    assert verdict("DELETE FROM trades WHERE id = (SELECT min(id) FROM trades)") == \
        (1, f"chain broken at {traded}: changed since sealed (orders)")
    assert verdict("UPDATE runs SET n_orders = 0 WHERE run_id = ?", traded) == \
        (1, f"chain broken at {traded}: changed since sealed (run)")
    assert verdict("UPDATE signals SET action = 'BUY' WHERE run_id = ?", runs[0]) == \
        (1, f"chain broken at {runs[0]}: changed since sealed (signals)")
    assert verdict("DELETE FROM runs WHERE run_id = ?", runs[1]) == \
        (1, f"chain broken at {runs[1]}: missing (deleted?) — the chain goes on at {runs[2]}")
    assert verdict("DELETE FROM runs WHERE run_id = ?", runs[2]) == \
        (1, f"chain broken at {runs[2]}: missing (deleted?) — it was the chain's head")
