"""Issue 18 item 9: a symbol not listed yet (FB before 2012-05-18, replayed in 2011) is an
information line of the run, not a warning and not a risk event."""
from __future__ import annotations

from pathlib import Path

from conftest import query

from stockstock import hourly
from stockstock.data import seed
from stockstock.db import init_db


def test_fb_in_2011_is_an_information_line(trading_home: Path):
    home = trading_home
    db = init_db(f"sqlite:///{home}/data/stockstock.db")
    seed(db, ["FB"], progress=False)
    db.close()
    record = hourly.run_steps({"symbols": ["AAPL", "IBM", "FB"], "confidence_threshold": 0.99,
                               "as_of": "2011-03-16T19:30:00Z"})
    check = record.bars.checks["FB"]
    assert (check.status, check.reason) == ("not_listed", "FB: not listed until 2012-05-18")
    assert query(home, "SELECT kind, symbol FROM risk_events WHERE symbol = 'FB'") == []
    assert record.outcome.status == "ok"
    (reason,), = query(home, "SELECT reason FROM runs")      # why it did nothing, in its row
    assert reason == "2 HOLD below threshold; FB: not listed until 2012-05-18", reason
