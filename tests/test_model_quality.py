"""Model quality: blind to the future, byte-identical, calibrated files that never reverse the
ranking, old files, variants served as trained, the drift check on run inputs, and the edge the CLI
records (never a requirement that the replay trades: the replay must not vote on the rule)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import stockstock

from scipy.stats import spearmanr

from stockstock.data import embedded_bars
from stockstock.evaluate import daily_rank_ic, day_panel, edge_lines, model_edge
from stockstock.model import (
    DEFAULT_PARAMS,
    DRIFT_WINDOW,
    ModelError,
    build_dataset,
    cross_validate,
    default_cutoff,
    direction,
    fit_booster,
    load_model,
    save_model,
    train_model,
)
from stockstock.signals import make_signals, recent_feature_rows

SYMBOLS = ["AAPL", "MSFT", "GOOG", "IBM"]


@pytest.fixture(scope="module")
def bars() -> dict[str, pd.DataFrame]:
    return {s: embedded_bars(s) for s in SYMBOLS}


def _files(path: Path) -> list[bytes]:
    return [path.read_bytes(), path.with_suffix(".calibration.json").read_bytes(),
            path.with_suffix(".meta.json").read_bytes()]


def test_training_is_blind_to_bars_after_the_cutoff(bars, tmp_path):
    "Poison every bar after the default cut-off: the saved model, calibration and meta are equal."
    cutoff = default_cutoff(pd.DatetimeIndex(sorted(set().union(*[b.index for b in
                                                                    bars.values()]))))
    rng = np.random.default_rng(7)
    poisoned = {}
    for s, b in bars.items():
        b = b.copy()
        after = b.index > pd.Timestamp(cutoff)
        b.loc[after] = b.loc[after].mul(rng.uniform(0.2, 5.0, (after.sum(), 1)))
        poisoned[s] = b
    saved = []
    for name, source in (("clean", bars), ("poisoned", poisoned)):
        model, _ = train_model(build_dataset(source, cutoff=cutoff))
        saved.append(_files(save_model(model, tmp_path / name / "lgbm.txt")))
    assert saved[0] == saved[1]
    # the poison is real: without the cut-off the training data differs
    assert not build_dataset(bars).X.equals(build_dataset(poisoned).X)


def test_omp_threads_wait_passively_unless_told_otherwise():
    code = "import os, stockstock.model; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "PASSIVE", out.stderr
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True)
    assert out.stdout.strip() == "ACTIVE", out.stderr


def test_a_model_saved_before_calibration_still_loads(bars, tmp_path):
    "The metadata layout of earlier versions: no feature set, calibration or drift reference."
    ds = build_dataset(bars, cutoff=date(2008, 12, 31))
    booster = fit_booster(ds.X, ds.y, DEFAULT_PARAMS, 30)
    path = tmp_path / "lgbm.txt"
    booster.save_model(str(path))
    import hashlib
    legacy = dict(features=list(ds.X.columns), classes=["DOWN", "HOLD", "UP"], horizon=5,
                  label_thresholds=dict(up=0.02, down=-0.02), num_boost_round=30,
                  cutoff="2008-12-31", model_file=path.name,
                  sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    path.with_suffix(".meta.json").write_text(json.dumps(legacy))
    model = load_model(path)
    assert model.calibrator is None and model.feature_set == "owner"
    np.testing.assert_array_equal(model.predict_proba(ds.X.iloc[:5]),
                                  booster.predict(ds.X.iloc[:5].to_numpy()))
    signals = make_signals(model, bars, date(2010, 6, 1), threshold=0.4)
    assert all(len(s.contributions) == 25 for s in signals)
    assert model.drift(ds.X).empty


def test_calibration_file_is_part_of_the_model(bars, tmp_path):
    ds = build_dataset(bars, cutoff=date(2007, 12, 31))
    model, _ = train_model(ds, n_splits=3, max_rounds=30, edge_options=dict(n_perm=50))
    path = save_model(model, tmp_path / "lgbm.txt")
    loaded = load_model(path)
    raw = loaded.raw_proba(ds.X.iloc[:20])
    calibrated = loaded.predict_proba(ds.X.iloc[:20])
    kept = model.meta["calibration_check"]["kept"]     # the pool ships only if it helped
    assert np.allclose(raw, calibrated) != kept
    np.testing.assert_allclose(calibrated, model.predict_proba(ds.X.iloc[:20]), rtol=0, atol=0)
    calibration = path.with_suffix(".calibration.json")
    spec = json.loads(calibration.read_text())
    spec["base"][2] += 0.1                            # someone "improves" P(UP)
    calibration.write_text(json.dumps(spec))
    with pytest.raises(ModelError, match="was modified"):
        load_model(path)


def regime_flip_bars(seed: int, symbols: int = 30, days: int = 600, flip: int = 230,
                     phi: float = 0.6) -> dict[str, pd.DataFrame]:
    """Random walks whose 5-day momentum continues (phi > 0) until session `flip` and reverses
    after: a model trained on the first regime ranks the second the wrong way out of fold."""
    rng = np.random.default_rng(seed)
    sign = np.where(np.arange(days) < flip, 1.0, -1.0)
    out = {}
    for k in range(symbols):
        r, eps = np.zeros(days), rng.normal(0, 0.015, days)
        for t in range(1, days):
            r[t] = sign[t] * phi * r[max(t - 5, 0):t].mean() + eps[t]
        close = 50 * np.exp(np.cumsum(r))
        out[f"S{k:02d}"] = pd.DataFrame(
            dict(open=close, high=close * np.exp(np.abs(rng.normal(0, 0.005, days))),
                 low=close * np.exp(-np.abs(rng.normal(0, 0.005, days))), close=close,
                 volume=rng.lognormal(12, 0.3, days)),
            index=pd.bdate_range("2010-01-01", periods=days, name="date"))
    return out


@pytest.mark.parametrize("seed", [0, 1])
def test_calibration_keeps_the_ranking_of_an_anti_predictive_model(seed: int):
    """Train where the raw signal is anti-predictive out of fold: ranked by P(UP) and by
    P(UP) − P(DOWN), the calibrated probabilities order every row exactly as the raw ones."""
    ds = build_dataset(regime_flip_bars(seed))
    cv = cross_validate(ds, n_splits=2, max_rounds=200)
    tested = ds.take(np.flatnonzero(cv.tested))
    oof = pd.Series(direction(cv.oof[cv.tested]), tested.X.index)
    assert daily_rank_ic(day_panel(oof), day_panel(tested.forward)).mean() < -0.05  # the premise
    model, _ = train_model(ds, n_splits=2, max_rounds=200, edge_options=dict(n_perm=50))
    assert model.meta["edge"]["daily_ic"] < -0.05 and not model_edge(model.meta).measured
    for rows in (tested.X, ds.X):                      # the out-of-fold rows, and every row
        raw, calibrated = model.raw_proba(rows), model.predict_proba(rows)
        for score in (lambda p: p[:, 2], direction):
            assert spearmanr(score(raw), score(calibrated))[0] == pytest.approx(1.0, abs=1e-12)
            order = np.argsort(score(raw), kind="stable")
            assert (np.diff(score(calibrated)[order]) >= -1e-15).all()   # monotone, row by row
    assert model.meta["calibration_check"]["rank_kept"] == dict(p_up=1.0, direction=1.0)


def test_an_old_reversible_calibration_is_refused(bars, tmp_path):
    ds = build_dataset({"IBM": bars["IBM"]}, cutoff=date(2007, 12, 31))
    path = tmp_path / "lgbm.txt"
    LGBM = fit_booster(ds.X, ds.y, DEFAULT_PARAMS, 20)
    LGBM.save_model(str(path))
    import hashlib
    calibration = path.with_suffix(".calibration.json")
    calibration.write_text(json.dumps(dict(method="matrix_scaling", coef=np.eye(3).tolist(),
                                           intercept=[0, 0, 0])))
    digest = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (path, calibration)}
    path.with_suffix(".meta.json").write_text(json.dumps(dict(
        features=list(ds.X.columns), classes=["DOWN", "HOLD", "UP"], sha256=digest[path],
        calibration=dict(file=calibration.name, sha256=digest[calibration]))))
    with pytest.raises(ModelError, match="may reverse the ranking; retrain"):
        load_model(path)


@pytest.mark.parametrize("feature_set", ["scaled", "universe"])
def test_a_variant_model_is_served_the_features_it_was_trained_on(bars, tmp_path, feature_set):
    "Save, load, decide on a day: the signal's feature row equals the training row of that day."
    ds = build_dataset(bars, cutoff=date(2009, 12, 31), feature_set=feature_set,
                       label="volatility")
    model, _ = train_model(ds, n_splits=3, max_rounds=30, weighting="uniqueness")
    loaded = load_model(save_model(model, tmp_path / "lgbm.txt"))
    assert (loaded.feature_set, loaded.meta["label"], loaded.meta["weighting"]) == (
        feature_set, "volatility", "uniqueness")
    day = date(2009, 6, 1)
    cut = {s: b.loc[:pd.Timestamp(day)] for s, b in bars.items()}     # what the run would have
    for signal in make_signals(loaded, cut, day, threshold=0.4):
        want = ds.X.loc[(signal.symbol, pd.Timestamp(day))]
        got = pd.Series(signal.features)[want.index]
        np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-9, atol=1e-12)
        assert len(signal.contributions) == len(loaded.features) + 1


def test_drift_check_on_the_rows_a_run_sees(bars):
    ds = build_dataset(bars, cutoff=date(2009, 12, 31))
    model, _ = train_model(ds, n_splits=3, max_rounds=20)
    day = date(2012, 6, 1)
    seen = model.drift(recent_feature_rows(model, bars, day))
    assert list(seen.index) == list(model.features)
    assert (seen.rows == DRIFT_WINDOW * len(SYMBOLS)).all()
    # the same check from the dataset's rows of those sessions: the run sees what training saw
    full = build_dataset(bars)
    sessions = np.unique(full.dates[full.dates <= pd.Timestamp(day)].values)[-DRIFT_WINDOW:]
    rows = model.feature_panel(bars)
    want = model.drift(rows[rows.index.get_level_values("date").isin(sessions)])
    pd.testing.assert_frame_equal(seen, want)
    # a sample of the training rows themselves has not drifted
    assert (model.drift(ds.X.sample(1000, random_state=1)).status == "ok").all()


@pytest.mark.slow
def test_stockstock_train_records_its_edge_and_says_so(home):
    """The CLI path: calibrated, drift-referenced, byte-identical run to run, and the edge it
    measured out of fold is in the meta and on the terminal, with the verdict the gate uses."""
    r = stockstock("train", "--quiet", home=home)
    assert r.returncode == 0, r.stderr
    path = home / "models/lgbm.txt"
    first = _files(path)
    assert stockstock("train", "--quiet", home=home).returncode == 0
    assert _files(path) == first                              # byte-identical, run to run
    model = load_model(path)
    meta = model.meta
    assert model.calibrator is not None and meta["drift_reference"]
    assert meta["num_boost_round"] >= 1 and meta["params"]["num_threads"] >= 1
    edge = meta["edge"]
    assert edge["ci_low"] <= edge["daily_ic"] <= edge["ci_high"] and edge["days"] > 1000
    assert edge["data_hash"] == meta["data_hash"] and len(meta["data_hash"]) == 64
    assert meta["recommended_threshold"] is None or meta["threshold_reason"].startswith(
        f"{meta['recommended_threshold']:.2f}")
    out = r.stdout.rstrip()
    assert max(len(x) for x in out.splitlines()) <= 100, out   # wrapped to the first screen
    flat = " ".join(out.split())
    assert all(" ".join(x.split()) in flat for x in edge_lines(meta)), out
    assert r.stdout.rstrip().endswith(model_edge(meta).describe())
