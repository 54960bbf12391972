"""Issue 18: an audit trail nothing can quietly rewrite — one source of defaults, write-once runs
(an archived run notebook re-executed changes nothing; the template run by hand is a new run
marked `manual`), and the hash chain `runs --verify` recomputes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import query, stockstock


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
