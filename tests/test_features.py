"""Features: the fast path equals the `ta` reference, uses no future bars, and feeds clean rows."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stockstock.data import embedded_bars
from stockstock.features import (
    FEATURE_SETS,
    FEATURES,
    LIVE_HISTORY,
    UNIVERSE_FEATURES,
    TOLERANCE,
    WARMUP,
    build_feature_panel,
    build_features,
    build_panel,
    feature_rows,
    reference_features,
    relative_differences,
    scaled_features,
)


def random_walk_bars(days: int = 1500, seed: int = 0, volatility: float = 0.02,
                     cents: bool = False) -> pd.DataFrame:
    "Synthetic daily bars: a geometric random walk with consistent open/high/low, lognormal volume."
    rng = np.random.default_rng(seed)
    close = 40 * np.exp(np.cumsum(rng.normal(0.0002, volatility, days)))
    open_ = close * np.exp(rng.normal(0, volatility / 4, days))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, volatility / 2, days)))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, volatility / 2, days)))
    volume = np.round(rng.lognormal(13, 0.6, days))
    bars = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close,
                         "volume": volume},
                        index=pd.bdate_range("2004-01-02", periods=days, name="date"))
    if cents:   # real quotes: ties in close and typical price become common
        bars = bars.round({"open": 2, "high": 2, "low": 2, "close": 2})
    return bars


def assert_equal_to_reference(bars: pd.DataFrame) -> pd.Series:
    diff = relative_differences(build_features(bars), reference_features(bars))
    assert (diff <= TOLERANCE).all(), diff[diff > TOLERANCE].to_dict()
    return diff


def test_feature_list():
    assert len(FEATURES) == 24 and len(set(FEATURES)) == 24
    assert list(build_features(random_walk_bars(300)).columns) == FEATURES
    assert list(reference_features(random_walk_bars(300)).columns) == FEATURES


@pytest.mark.parametrize("seed", range(8))
def test_fast_equals_reference_on_random_walks(seed: int):
    bars = random_walk_bars(2000, seed, volatility=(0.01, 0.02, 0.04)[seed % 3],
                            cents=seed % 2 == 1)
    assert_equal_to_reference(bars)


def test_cent_prices_have_ties():
    "The cent-rounded walks really exercise the up/down/unchanged rules of OBV and MFI."
    bars = random_walk_bars(2000, 1, cents=True)
    assert (bars["close"].diff() == 0).sum() > 10


@pytest.mark.parametrize("symbol", ["AAPL", "MSFT", "GOOG", "IBM"])
def test_fast_equals_reference_on_embedded_data(symbol: str):
    assert_equal_to_reference(embedded_bars(symbol))


@pytest.fixture(scope="module")
def sp500_year() -> dict[str, pd.DataFrame]:
    from stockstock.data import SP500, dataset_bars
    return dataset_bars(SP500)[0]


@pytest.mark.parametrize("symbol", ["DHR", "ETFC", "WY", "C", "AAPL", "BRK.B"])
def test_fast_equals_reference_on_the_sp500_year(sp500_year, symbol: str):
    "The universe WARMUP matters for: repaired raw bars (splits, a merged ticker, a cut gap)."
    assert_equal_to_reference(sp500_year[symbol])


def test_flat_stretch_gives_nan_on_both_sides():
    bars = random_walk_bars(800, 3)
    bars.iloc[400:440, :4] = 25.0          # a halted stock: 40 identical bars
    assert_equal_to_reference(bars)
    features = build_features(bars)
    assert features.loc[bars.index[430], ["stoch_k", "cci_20", "bb_pct_b", "mfi_14"]].isna().all()
    rows = feature_rows(bars)
    assert bars.index[430] not in rows.index and bars.index[399] in rows.index


def test_warmup_rows():
    features = build_features(random_walk_bars(600, 4))
    assert features.iloc[0].isna().all()
    assert features.iloc[49:].notna().all().all()     # the 50-day SMA is the last to start
    assert np.isfinite(features.iloc[WARMUP:].to_numpy()).all()
    assert features.iloc[WARMUP - 1].isna().any()     # WARMUP is the first complete row


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_no_lookahead(seed: int):
    "The row for day t computed from bars up to t equals the row from the full history."
    bars = random_walk_bars(1200, seed, cents=seed == 6)
    full = build_features(bars)
    rng = np.random.default_rng(seed)
    for t in [WARMUP, len(bars) - 1, *rng.integers(WARMUP, len(bars), 30)]:
        truncated = build_features(bars.iloc[: t + 1])
        np.testing.assert_array_equal(truncated.iloc[-1].to_numpy(), full.iloc[t].to_numpy(),
                                      err_msg=f"row {t}")


def test_reference_has_no_lookahead():
    bars = random_walk_bars(700, 8)
    full = reference_features(bars)
    for t in (WARMUP, 480, len(bars) - 1):
        truncated = reference_features(bars.iloc[: t + 1])
        diff = relative_differences(truncated.iloc[[-1]], full.iloc[[t]], skip=0)
        assert (diff == 0).all(), diff[diff > 0].to_dict()


def test_lookahead_check_catches_a_centred_window():
    "The truncation check is not vacuous: a centred moving average fails it."
    bars = random_walk_bars(400, 9)
    def centred(b: pd.DataFrame) -> pd.Series:
        return b["close"].rolling(5, center=True).mean()
    t = 300
    assert centred(bars.iloc[: t + 1]).iloc[-1] != centred(bars).iloc[t]


def test_feature_rows():
    bars = random_walk_bars(900, 10)
    rows = feature_rows(bars)
    assert rows.index[0] == bars.index[WARMUP] and len(rows) == len(bars) - WARMUP
    assert list(rows.columns) == FEATURES and not rows.isna().any().any()
    assert feature_rows(bars.iloc[:WARMUP]).empty
    assert feature_rows(bars.iloc[:10]).empty     # too short for any indicator: no error


SETTLED = 300   # bars after which a series' start shows less than TOLERANCE (06_features)


def test_live_history_matches_full_history():
    """No train/serve skew: today's row from LIVE_HISTORY bars equals the full-history row.
    A window of only WARMUP + 1 bars does not (the start's trace): the run must not use one."""
    bars = random_walk_bars(2500, 11)
    full = build_features(bars)
    for end in range(LIVE_HISTORY + 100, len(bars) + 1, 211):
        live = build_features(bars.iloc[end - LIVE_HISTORY: end]).iloc[[-1]]
        assert relative_differences(live, full.iloc[[end - 1]], skip=0).max() < 1e-9
        settled = build_features(bars.iloc[end - SETTLED: end]).iloc[[-1]]
        assert relative_differences(settled, full.iloc[[end - 1]], skip=0).max() <= TOLERANCE
        short = build_features(bars.iloc[end - WARMUP - 1: end]).iloc[[-1]]
        assert relative_differences(short, full.iloc[[end - 1]], skip=0).max() > 1e-3


def test_build_panel():
    bars = {"ZZZ": random_walk_bars(700, 12), "AAA": random_walk_bars(600, 13),
            "NEW": random_walk_bars(WARMUP - 20, 14)}
    panel = build_panel(bars)
    assert panel.index.names == ["symbol", "date"] and list(panel.columns) == FEATURES
    assert panel.index.get_level_values("symbol").unique().tolist() == ["AAA", "ZZZ"]
    assert len(panel) == (700 - WARMUP) + (600 - WARMUP)
    np.testing.assert_array_equal(panel.loc["ZZZ"].to_numpy(),
                                  feature_rows(bars["ZZZ"]).to_numpy())
    assert isinstance(panel.index.get_level_values("date"), pd.DatetimeIndex)
    empty = build_panel({})
    assert empty.shape == (0, 24) and empty.index.names == ["symbol", "date"]


def _bad_inputs() -> dict[str, pd.DataFrame]:
    good = random_walk_bars(60, 15)
    nan_close = good.copy()
    nan_close.iloc[30, 3] = np.nan
    return {"missing column": good.drop(columns="volume"),
            "unsorted": good.iloc[::-1],
            "duplicate date": pd.concat([good.iloc[:30], good.iloc[29:]]),
            "tz-aware": good.tz_localize("UTC"),
            "no DatetimeIndex": good.reset_index(),
            "NaN": nan_close}


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_input_is_refused(case: str):
    bars = _bad_inputs()[case]
    with pytest.raises(ValueError):
        build_features(bars)
    with pytest.raises(ValueError):
        reference_features(bars)


# --- the research feature sets (scaled, universe): same guarantees as the owner's 24 -----------

def test_feature_panel_of_owner_set_is_build_panel():
    bars = {"ZZZ": random_walk_bars(700, 20), "AAA": random_walk_bars(600, 21)}
    pd.testing.assert_frame_equal(build_feature_panel(bars, "owner"), build_panel(bars))


@pytest.mark.parametrize("seed", [22, 23])
def test_scaled_features_have_no_lookahead(seed: int):
    bars = random_walk_bars(1000, seed, cents=seed % 2 == 1)
    full = scaled_features(bars)
    for t in (WARMUP, 555, len(bars) - 1):
        np.testing.assert_array_equal(scaled_features(bars.iloc[: t + 1]).iloc[-1].to_numpy(),
                                      full.iloc[t].to_numpy(), err_msg=f"row {t}")


def test_scaled_live_history_matches_full_history():
    "No train/serve skew for the scaled set: a LIVE_HISTORY window gives the full-history row."
    bars = random_walk_bars(2000, 24)
    full = build_feature_panel({"X": bars}, "scaled").loc["X"]
    for end in range(LIVE_HISTORY + 50, len(bars) + 1, 307):
        live = build_feature_panel({"X": bars.iloc[end - LIVE_HISTORY: end]}, "scaled").loc["X"]
        diff = relative_differences(live.iloc[[-1]], full.loc[[bars.index[end - 1]]], skip=0)
        assert diff.max() < 1e-9, diff[diff >= 1e-9].to_dict()
        exact = ["return_1d_z", "return_5d_z", "return_20d_z", "return_60d_z", "volatility_ratio"]
        assert (diff[exact] == 0).all()       # returns over volatility: each window afresh


def test_universe_panel_at_serve_time_equals_training_panel():
    "The run builds the universe panel from bars up to today (LIVE_HISTORY of them): same rows."
    bars = {s: random_walk_bars(1400, seed, volatility=v)
            for s, seed, v in (("AAA", 25, 0.01), ("BBB", 26, 0.02), ("CCC", 27, 0.03))}
    bars["CCC"] = bars["CCC"].iloc[300:]                 # a later listing: fewer symbols at first
    full = build_feature_panel(bars, "universe")
    days = bars["AAA"].index
    for end in (LIVE_HISTORY + 10, 800, 1111, len(days)):
        day = days[end - 1]
        live = build_feature_panel({s: b.loc[:day].iloc[-LIVE_HISTORY:] for s, b in bars.items()},
                                   "universe")
        got, want = live.xs(day, level="date"), full.xs(day, level="date")
        assert list(got.index) == list(want.index)
        diff = relative_differences(got, want, skip=0)
        assert diff.max() < 1e-9, diff[diff >= 1e-9].to_dict()


def test_universe_columns_are_relative_to_that_day():
    bars = {s: random_walk_bars(700, seed) for s, seed in (("AAA", 28), ("BBB", 29))}
    panel = build_feature_panel(bars, "universe")
    assert list(panel.columns) == FEATURE_SETS["universe"]
    day = panel.xs("AAA", level="symbol").index[100]
    pair = panel.xs(day, level="date")
    for name in UNIVERSE_FEATURES:
        base = name.removesuffix("_xs")
        assert pair[name].tolist() == pytest.approx((pair[base] - pair[base].mean()).tolist())
        assert pair[name].sum() == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("feature_set", ["scaled", "universe"])
def test_feature_sets_give_clean_rows(feature_set: str):
    bars = {"AAA": random_walk_bars(900, 30), "NEW": random_walk_bars(WARMUP - 1, 31)}
    panel = build_feature_panel(bars, feature_set)
    assert panel.index.get_level_values("symbol").unique().tolist() == ["AAA"]
    first = 120                # the scaled set's 120-return volatility ratio starts last
    assert np.isfinite(panel.to_numpy()).all() and len(panel) == 900 - first
    assert build_feature_panel({"S": random_walk_bars(10, 32)}, feature_set).empty
