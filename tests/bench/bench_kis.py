"""Benchmark: one live decision run over 500 symbols against the loopback fake KIS server at the
live rate limit (20 requests/s), with a warm `ohlcv` cache, against its floor: the requests it
needs divided by 20 per second.

Target: time <= 1.2 x floor. Prints requests per symbol, the floor, the time and the ratio, for
the run in-process (`hourly.run_steps`) and through `stockstock trade` (papermill, notebook, HTML).

    .venv/bin/python tests/bench/bench_kis.py [--symbols 500]

Everything lives in a temporary folder; the repository is not touched. No network but loopback.
"""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from stockstock.testing.kis import FakeKis

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")

DAY = "2013-02-05"
NOW = f"{DAY}T20:35:00Z"                            # 15:35 EST: the session's decision run
BIN = Path(sys.executable).parent


def tickers(n: int) -> list[str]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return ["".join(t) for t in itertools.islice(itertools.product(letters, repeat=4), n)]


def synthetic_bars(rng: np.random.Generator, days: pd.DatetimeIndex) -> pd.DataFrame:
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.015, len(days))))
    spread = close * rng.uniform(0.002, 0.02, len(days))
    return pd.DataFrame({"open": close - spread / 2, "high": close + spread,
                         "low": close - spread, "close": close,
                         "volume": rng.integers(100_000, 5_000_000, len(days)).astype(float)},
                        index=days).round(4)


def build(root: Path, symbols: list[str], fake: FakeKis) -> None:
    "Warm cache (bars to the day before), cached listings, a model trained to the day before."
    from stockstock.calendar import sessions_between
    from stockstock.db import init_db
    from stockstock.model import (DEFAULT_PARAMS, LGBMTradingModel, build_dataset, fit_booster,
                                  save_model)
    os.environ["STOCKSTOCK_HOME"] = str(root)
    rng = np.random.default_rng(7)
    days = pd.DatetimeIndex([pd.Timestamp(d) for d in sessions_between(date(2010, 6, 1),
                                                                         date(2013, 2, 5))])
    db = init_db(f"sqlite:///{root}/data/stockstock.db")
    bars = {}
    for sym in symbols:
        b = bars[sym] = synthetic_bars(rng, days)
        fake.add_symbol(sym, "NAS", last=float(b["close"].iloc[-1]), bars=b, adjusted=b)
        db.upsert_ohlcv(sym, b.iloc[:-1], source="kis")
        db.set_listing(sym, "NAS")
    ds = build_dataset({s: bars[s] for s in symbols[:20]}, cutoff=date(2013, 1, 31))
    save_model(LGBMTradingModel(fit_booster(ds.X, ds.y, DEFAULT_PARAMS, 50),
                                {"cutoff": "2013-01-31"}), root / "models/lgbm.txt")
    db.close()
    (root / "live.yaml").write_text(
        f"mode: live\nconfirm_live: true\nsymbols: [{', '.join(symbols)}]\n"
        "confidence_threshold: 0.6\nrequest_timeout_s: 10\n")


def env_of(fake: FakeKis) -> dict[str, str]:
    real = fake.creds["real"]
    return dict(KIS_APP_KEY=real.appkey, KIS_APP_SECRET=real.secretkey, KIS_ACCOUNT=real.account,
                KIS_HTS_ID=real.id, KIS_REAL_URL=fake.real_url, KIS_VIRTUAL_URL=fake.virtual_url)


def report(label: str, seconds: float, fake: FakeKis, n: int) -> None:
    reqs = len(fake.log)
    floor = reqs / 20
    print(f"{label:<28} requests {reqs:>5} ({reqs / n:.3f} per symbol)  floor {floor:6.2f} s  "
          f"time {seconds:6.2f} s  ratio {seconds / floor:.3f}  "
          f"max/s seen by the server {fake.requests_per_second_max('real'):.0f}, "
          f"rate-limit answers {fake.count(msg_cd='EGW00201')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--symbols", type=int, default=500)
    args = ap.parse_args()
    symbols = tickers(args.symbols)
    with FakeKis(NOW, rate_limits={"real": 20, "virtual": 2}, token_min_interval=0) as fake:
        for run in ("in-process run_steps", "stockstock trade (CLI)"):
            root = Path(tempfile.mkdtemp(prefix="bench_kis_"))
            fake._symbols.clear()
            build(root, symbols, fake)
            os.environ.update(env_of(fake))
            # the token is issued once per day in production (cached in data/kis_tokens):
            # issue it before the clock starts, as a warm install would have it
            from stockstock.config import load_secrets
            from stockstock.kis import KisConnection
            _ = KisConnection(load_secrets(), "live").kis.token
            time.sleep(1.1)
            fake.clear_log()
            started = time.perf_counter()
            if run.startswith("in-process"):
                from stockstock import hourly
                from stockstock.config import load_params
                params = load_params(root / "live.yaml").model_dump(mode="json")
                summary = hourly.run_steps({**params, "as_of": NOW}).outcome.summary
                assert summary["status"] == "ok", summary
            else:
                r = subprocess.run([str(BIN / "stockstock"), "trade", "--params", "live.yaml",
                                    "-p", f"as_of={NOW}"], cwd=root, capture_output=True,
                                   text=True, env={**os.environ, "STOCKSTOCK_HOME": str(root)})
                assert r.returncode == 0, r.stdout + r.stderr
            report(run, time.perf_counter() - started, fake, len(symbols))


if __name__ == "__main__":
    main()
