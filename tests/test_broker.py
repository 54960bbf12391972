"""SimBroker across many orders, restarts, processes and threads: the book stays consistent."""
from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import threading
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from stockstock.broker import (FINAL_ORDER_STATES, Balance, Broker, BrokerPosition, OrderStatus,
                               SimBroker)
from stockstock.calendar import is_open
from stockstock.data import seed
from stockstock.db import SimAccount, SimOrder, SimPosition, init_db

SYMBOLS = ["AAPL", "IBM"]


def at(day: date | str, hhmm: str = "19:30") -> datetime:
    "An aware UTC instant on `day` (19:30 UTC is 15:30 New York time in summer, 14:30 in winter)."
    return pd.Timestamp(f"{day} {hhmm}", tz="UTC").to_pydatetime()


@pytest.fixture(scope="session")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    "A database file with the AAPL and IBM bars, seeded once per test session."
    path = tmp_path_factory.mktemp("seeded") / "seeded.db"
    db = init_db(f"sqlite:///{path}")
    seed(db, SYMBOLS, progress=False)
    db.close()
    return path


@pytest.fixture
def db_path(seeded: Path, tmp_path: Path) -> Path:
    "A private copy of the seeded database for one test."
    path = tmp_path / "broker.db"
    src, dst = sqlite3.connect(seeded), sqlite3.connect(path)
    src.backup(dst)
    src.close(), dst.close()
    return path


def open_db(path: Path):
    return init_db(f"sqlite:///{path}")


def trading_days(path: Path, start: str, end: str) -> list[date]:
    db = open_db(path)
    days = [ts.date() for ts in db.load_ohlcv("IBM", date.fromisoformat(start),
                                              date.fromisoformat(end)).index]
    db.close()
    return days


def test_sim_broker_is_a_broker(db_path: Path):
    broker = SimBroker(open_db(db_path), at("2012-06-01"))
    assert isinstance(broker, Broker)
    assert not isinstance(object(), Broker)


class Book:
    "What the account must look like, computed independently from the broker's answers."
    def __init__(self, cash: float):
        self.cash, self.positions = cash, {}  # symbol -> [qty, avg_price]

    def apply(self, st: OrderStatus) -> None:
        notional = st.filled_qty * st.avg_fill_price
        if st.side == "BUY":
            self.cash -= notional + st.commission
            qty, avg = self.positions.get(st.symbol, [0, 0.0])
            self.positions[st.symbol] = [qty + st.filled_qty,
                                         (qty * avg + notional) / (qty + st.filled_qty)]
        else:
            self.cash += notional - st.commission
            self.positions[st.symbol][0] -= st.filled_qty
            if self.positions[st.symbol][0] == 0: del self.positions[st.symbol]

    def held(self, symbol: str) -> int:
        return self.positions.get(symbol, [0])[0]


def check_order(st: OrderStatus, broker: SimBroker, book: Book, qty: int, limit: float) -> None:
    "The broker's answer is the one its rules give, judged from the book before the order."
    close = broker.quote(st.symbol).price
    rate, slip = broker.commission_rate, broker.slippage_pct
    fill = close * (1 + slip) if st.side == "BUY" else close * (1 - slip)
    assert st.status in FINAL_ORDER_STATES
    if qty <= 0:
        expected = ("rejected", "invalid_quantity")
    elif not broker.market_open:  # the early close of 25 Nov 2011 at 19:30 UTC
        expected = ("rejected", "market_closed")
    elif st.side == "SELL" and qty > book.held(st.symbol):
        expected = ("rejected", "insufficient_position")
    elif st.side == "BUY" and qty * fill * (1 + rate) > book.cash * (1 + 1e-12):
        expected = ("rejected", "insufficient_cash")
    elif (fill > limit) if st.side == "BUY" else (fill < limit):
        expected = ("expired", "limit_not_reached")
    else:
        expected = ("filled", None)
    assert (st.status, st.reason) == expected, (st, book.cash, book.held(st.symbol))
    if st.status == "filled":
        assert st.filled_qty == qty
        assert st.avg_fill_price == pytest.approx(fill, rel=1e-12)
        assert st.commission == pytest.approx(rate * qty * fill, rel=1e-12)
    else:
        assert (st.filled_qty, st.avg_fill_price, st.commission) == (0, None, 0.0)


def check_balance(bal: Balance, broker: SimBroker, book: Book) -> None:
    assert bal.cash >= 0
    assert bal.cash == pytest.approx(book.cash, abs=1e-6)
    assert sorted(bal.positions) == sorted(book.positions)
    for sym, pos in bal.positions.items():
        assert pos.qty > 0 and pos.qty == book.positions[sym][0]
        assert pos.avg_price == pytest.approx(book.positions[sym][1], rel=1e-12)
    marked = sum(p.qty * broker.quote(s).price for s, p in bal.positions.items())
    assert bal.equity == pytest.approx(bal.cash + marked, abs=1e-6)


@pytest.mark.parametrize("seed_", [1, 2, 3, 4])
def test_random_orders_keep_the_book_consistent(db_path: Path, seed_: int):
    rng = random.Random(seed_)
    initial = rng.choice([5_000.0, 25_000.0, 100_000.0])
    db, book, keys = open_db(db_path), Book(initial), []
    for day in trading_days(db_path, "2011-09-01", "2011-12-15"):
        broker = SimBroker(db, at(day, rng.choice(["15:00", "17:00", "19:30"])),
                           commission_rate=rng.choice([0.0, 0.0025, 0.01]),
                           slippage_pct=rng.choice([0.0, 0.0005, 0.002]), initial_cash=initial)
        for k in range(rng.randint(1, 6)):
            if keys and rng.random() < 0.1:  # a retry with a known key changes nothing
                key, first = rng.choice(keys)
                before = broker.balance()
                assert broker.submit_order("IBM", "BUY", 1, 1e6, key) == first
                assert broker.balance() == before
                continue
            sym, side = rng.choice(SYMBOLS), rng.choice(["BUY", "SELL"])
            held = book.held(sym)
            qty = rng.choices([rng.randint(1, 300), held, held + 1, rng.randint(-2, 0)],
                              weights=[6, 2, 1, 1])[0]
            limit = broker.quote(sym).price * rng.uniform(0.99, 1.01)
            st = broker.submit_order(sym, side, qty, limit, f"{day}-{k}")
            check_order(st, broker, book, qty, limit)
            if st.status == "filled": book.apply(st)
            keys.append((st.client_key, st))
            check_balance(broker.balance(), broker, book)
        assert [o.client_key for o in broker.todays_orders()] == \
            [f"{day}-{k}" for k in range(6) if broker.find_order(f"{day}-{k}")]

    # the whole book, from the broker's own tables: cash = opening cash + what the fills moved
    fills = [o for o in db.rows(SimOrder) if o.status == "filled"]
    flow = sum((o.qty * o.fill_price) * (-1 if o.side == "BUY" else 1) - o.commission
               for o in fills)
    (acct,) = db.rows(SimAccount)
    assert acct.initial_cash == initial
    assert acct.cash == pytest.approx(initial + flow, abs=1e-6)
    for pos in db.rows(SimPosition):
        mine = [o for o in fills if o.symbol == pos.symbol]
        assert pos.qty == sum(o.qty * (1 if o.side == "BUY" else -1) for o in mine) > 0
    ids = [o.order_id for o in db.rows(SimOrder)]
    assert ids == [f"SIM{i:08d}" for i in range(1, len(ids) + 1)]
    assert len(fills) > 10
    db.close()


def test_orders_only_while_the_market_is_open(db_path: Path):
    "Every half hour over a week with a holiday (4 July 2012) and an early close (3 July)."
    db = open_db(db_path)
    t = at("2012-06-30", "00:00")
    while t < at("2012-07-08", "00:00"):
        broker = SimBroker(db, t)
        st = broker.submit_order("AAPL", "BUY", 1, 10_000.0, f"k-{t:%Y%m%d%H%M}")
        assert broker.market_open == is_open(t)
        assert (st.status == "filled") == is_open(t), t
        if st.status != "filled": assert st.reason == "market_closed"
        t += timedelta(minutes=30)
    fills = {o.trade_date for o in db.rows(SimOrder) if o.status == "filled"}
    assert fills == {date(2012, 7, 2), date(2012, 7, 3), date(2012, 7, 5), date(2012, 7, 6)}
    db.close()


def test_a_new_broker_on_the_same_file_sees_the_same_account(db_path: Path):
    db = open_db(db_path)
    first = SimBroker(db, at("2012-06-01"))
    buy = first.submit_order("AAPL", "BUY", 10, 1_000.0, "day1-AAPL")
    assert buy.status == "filled"
    seen = first.balance()
    db.close()

    db = open_db(db_path)  # a restarted process
    later = SimBroker(db, at("2012-06-04"), initial_cash=1.0)  # opening cash: the account exists
    assert later.find_order("day1-AAPL") == buy
    assert later.submit_order("AAPL", "BUY", 10, 1_000.0, "day1-AAPL") == buy
    bal = later.balance()
    assert (bal.cash, bal.positions) == (seen.cash, seen.positions)
    assert bal.positions["AAPL"] == BrokerPosition("AAPL", 10, buy.avg_fill_price)
    assert bal.equity == pytest.approx(bal.cash + 10 * later.quote("AAPL").price)
    assert later.todays_orders() == []
    nxt = later.submit_order("IBM", "BUY", 1, 1_000.0, "day2-IBM")
    assert nxt.order_id == "SIM00000002"
    db.close()


CHILD = """
import sys
from datetime import datetime, timezone
from stockstock.broker import SimBroker
from stockstock.db import init_db
db = init_db(f"sqlite:///{sys.argv[1]}")
b = SimBroker(db, datetime(2012, 6, 1, 19, 30, tzinfo=timezone.utc))
st = b.submit_order("IBM", "BUY", 5, 1000.0, "from-child")
print("RESULT", st.order_id, st.status, repr(b.balance().cash))
"""


def test_an_order_placed_by_another_process_is_found(db_path: Path):
    run = subprocess.run([sys.executable, "-c", CHILD, str(db_path)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    (line,) = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
    order_id, status, cash = line.split()[1:]
    db = open_db(db_path)
    broker = SimBroker(db, at("2012-06-01"))
    st = broker.find_order("from-child")
    assert (st.order_id, st.status) == (order_id, status) == ("SIM00000001", "filled")
    assert broker.balance().cash == float(cash)
    assert broker.submit_order("IBM", "BUY", 5, 1_000.0, "from-child") == st  # no second fill
    assert broker.balance().positions["IBM"].qty == 5
    db.close()


def test_concurrent_brokers_place_each_key_once(db_path: Path):
    keys = [f"key-{i}" for i in range(12)]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            db = open_db(db_path)
            broker = SimBroker(db, at("2012-06-01"))
            for key in random.Random(n).sample(keys, len(keys)):
                broker.submit_order("AAPL", "BUY", 3, 1_000.0, key)
            db.close()
        except BaseException as e:  # reported below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads: t.start()
    for t in threads: t.join(timeout=120)
    assert not errors, errors
    db = open_db(db_path)
    orders = db.rows(SimOrder)
    assert sorted(o.client_key for o in orders) == sorted(keys)
    assert [o.order_id for o in orders] == [f"SIM{i:08d}" for i in range(1, 13)]
    assert all(o.status == "filled" for o in orders)
    (pos,) = db.rows(SimPosition)
    assert pos.qty == 36
    db.close()


def test_a_crash_inside_a_fill_leaves_no_trace(db_path: Path, monkeypatch: pytest.MonkeyPatch):
    db = open_db(db_path)
    broker = SimBroker(db, at("2012-06-01"))
    before = broker.balance()
    apply_fill = SimBroker._apply_fill

    def crash(self, s, acct, order):
        apply_fill(self, s, acct, order)  # cash and position already moved in the session
        raise KeyboardInterrupt("killed mid-fill")

    monkeypatch.setattr(SimBroker, "_apply_fill", crash)
    with pytest.raises(KeyboardInterrupt):
        broker.submit_order("AAPL", "BUY", 10, 1_000.0, "crashed")
    monkeypatch.undo()
    assert broker.find_order("crashed") is None
    assert broker.balance() == before
    assert db.rows(SimPosition) == [] and db.rows(SimOrder) == []
    st = broker.submit_order("AAPL", "BUY", 10, 1_000.0, "crashed")  # the retry places it once
    assert (st.order_id, st.status) == ("SIM00000001", "filled")
    db.close()
