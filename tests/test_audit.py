"""The audit trail as a person meets it: the project found from any folder (the hourly notebook
run by hand from `scheduled/`, as JupyterLab runs it), sealed run files that `runs --verify`
checks, the terminal's story, and the sizes of what a person opens."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
from conftest import BIN, REPO, query, stockstock, trade_then_verify

from stockstock.data import seed
from stockstock.db import init_db



@pytest.fixture
def checkout(trading_template: Path, tmp_path: Path, monkeypatch) -> Path:
    "A copy of a project checkout (settings.ini, scheduled/, nbs/) with data and a model."
    home = tmp_path / "checkout"
    shutil.copytree(trading_template, home)
    shutil.copy(REPO / "settings.ini", home / "settings.ini")
    shutil.copy(REPO / "scheduled/hourly_trade.ipynb", home / "scheduled/hourly_trade.ipynb")
    (home / "nbs").mkdir()
    db = init_db(f"sqlite:///{home}/data/stockstock.db")
    seed(db, ["FB"], progress=False)                       # the notebook's default symbols
    db.close()
    for name in [n for n in os.environ if n.startswith(("STOCKSTOCK_", "KIS_", "TELEGRAM_"))]:
        monkeypatch.delenv(name)
    return home


@pytest.mark.slow
def test_the_hourly_notebook_runs_by_hand_from_scheduled(checkout: Path):
    """JupyterLab starts the kernel in scheduled/: the notebook still finds the project's data,
    and launches a run marked manual (it then stops with one sentence naming it)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    nb = nbformat.read(checkout / "scheduled/hourly_trade.ipynb", as_version=4)
    params = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    params.source += "\nadvance_sim_clock = True"
    with pytest.raises(CellExecutionError, match="This notebook launched run .* ended ok"):
        NotebookClient(nb, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(checkout / "scheduled")}}).execute()
    (run_id, status, origin), = query(checkout, "SELECT run_id, status, origin FROM runs")
    assert (status, origin) == ("ok", "manual:kernel")
    for stray in ("scheduled/data", "scheduled/models", "scheduled/outputs"):
        assert not (checkout / stray).exists(), stray
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKSTOCK_")}
    listed = subprocess.run([str(BIN / "stockstock"), "runs"], cwd=checkout / "nbs", env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and run_id in listed.stdout, listed.stdout + listed.stderr
    assert not (checkout / "nbs/data").exists() and not (checkout / "nbs/outputs").exists()


@pytest.mark.slow
def test_runs_verify_names_a_run_whose_notebook_was_edited(trading_home: Path):
    home = trading_home
    ok = trade_then_verify(home, 2)
    assert "every sealed run file is intact" in ok.stdout, ok.stdout
    (run_id, nb_path), = query(home, "SELECT run_id, notebook_path FROM runs ORDER BY as_of "
                                      "LIMIT 1")
    notebook = home / nb_path
    assert not os.access(notebook, os.W_OK) or os.geteuid() == 0      # written read-only
    assert oct(notebook.stat().st_mode & 0o777) == "0o444"
    edited = nbformat.read(notebook, as_version=4)
    edited.cells[0].source += "\n(edited later)"
    notebook.chmod(0o644)
    nbformat.write(edited, notebook)
    bad = stockstock("runs", "--verify", home=home)
    assert bad.returncode == 1, bad.stdout
    assert f"{run_id}: changed: {notebook}" in bad.stdout and "1 run file(s)" in bad.stdout


@pytest.mark.slow
def test_sizes_of_what_a_person_opens(trading_home: Path, capsys):
    "A run's HTML loads the shared plotly.js; so does a backtest report (figures for the note)."
    home = trading_home
    r = stockstock("trade", "--params", "scheduled/test.yaml", "-p",
                   "as_of=2011-03-16T19:30:00Z", home=home)
    assert r.returncode == 0, r.stdout + r.stderr
    (nb_path,), = query(home, "SELECT notebook_path FROM runs")
    run_html = (home / nb_path).with_suffix(".html")
    b = stockstock("backtest", "--quiet", "-p", "symbols=[AAPL,IBM]", "--start", "2011-03-01",
                   "--end", "2011-06-30", "--max-rounds", "20", "-p",
                   "confidence_threshold=recommended", home=home)
    assert b.returncode == 0, b.stdout + b.stderr
    (report,) = (home / "outputs/backtest").glob("*.html")
    sizes = {p.name: p.stat().st_size for p in (run_html, report)}
    assert all(size < 1_000_000 for size in sizes.values()), sizes   # no plotly.js inside
    assert "../plotly.min.js" in report.read_text()
    with capsys.disabled():
        print(f"\nsizes: run HTML {sizes[run_html.name]:,} bytes, backtest HTML "
              f"{sizes[report.name]:,} bytes, shared plotly.js "
              f"{(home / 'outputs/plotly.min.js').stat().st_size:,} bytes")
