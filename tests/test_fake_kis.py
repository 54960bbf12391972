"""Smoke test: python-kis 2.1.6's real HTTP code against the loopback fake KIS server."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from requests.adapters import HTTPAdapter

from pykis import PyKis
from pykis.api.account.balance import balance
from pykis.api.account.daily_order import foreign_daily_orders
from pykis.api.account.order import KisOrder, foreign_order
from pykis.api.account.order_modify import foreign_cancel_order, foreign_modify_order
from pykis.api.account.orderable_amount import foreign_orderable_amount
from pykis.api.account.pending_order import pending_orders
from pykis.api.stock.daily_chart import daily_chart
from pykis.api.stock.info import resolve_market
from pykis.api.stock.quote import foreign_quote
from pykis.client.account import KisAccountNumber
from pykis.client.exceptions import KisAPIError, KisHTTPError
from pykis.client.page import KisPage
from pykis.responses.exceptions import KisMarketNotOpenedError, KisNotFoundError
from pykis.utils.rate_limit import RateLimiter

from stockstock.testing.kis import ERRORS, FakeKis

OPEN = "2024-03-11T14:00:00-04:00"      # Monday, regular session (EDT)
SATURDAY = "2024-03-16T12:00:00-04:00"
TODAY = date(2024, 3, 11)
ORDER, CCNL = "trading/order", "trading/inquire-ccnl"


def bars(start: str = "2023-01-03", end: str = "2024-03-11") -> pd.DataFrame:
    idx = pd.bdate_range(start, end)
    close = np.linspace(100, 200, len(idx)).round(2)
    return pd.DataFrame({"open": close - 1, "high": close + 2, "low": close - 2, "close": close,
                         "volume": np.arange(len(idx)) + 1000}, index=idx)


@pytest.fixture
def fake() -> Iterator[FakeKis]:
    with FakeKis(OPEN, rate_limits={"real": None, "virtual": None}) as f:
        raw = bars()
        adjusted = raw.copy()
        adjusted[["open", "high", "low", "close"]] = (raw[["open", "high", "low", "close"]] / 4
                                                      ).round(4)   # as if a 4:1 split later
        f.add_symbol("AAPL", "NAS", last=200, name="APPLE INC", bars=raw, adjusted=adjusted)
        f.add_symbol("IBM", "NYS", last=190, name="IBM")
        f.add_symbol("XLE", "AMS", last=90)
        yield f


@pytest.fixture
def connect(fake: FakeKis, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., PyKis]]:
    "PyKis(virtual=...) pointed at the fake, with python-kis's own pacing made fast."
    fake.patch_pykis(monkeypatch)
    made: list[PyKis] = []

    def make(virtual: bool, rps: int = 100) -> PyKis:
        kis = PyKis(**fake.pykis_kwargs(virtual))
        kis._rate_limiters = {"real": RateLimiter(rps, 1), "virtual": RateLimiter(rps, 1)}
        made.append(kis)
        return kis

    yield make
    for kis in made:
        kis.close()


class DeadlineAdapter(HTTPAdapter):
    """How a broker bounds python-kis: a per-request timeout (pykis passes none) and a deadline
    for one whole call, which also ends pykis's endless EGW00201/EGW00123 retry loops, because
    every retry goes through `session.request` again."""

    def __init__(self, timeout: float) -> None:
        super().__init__(max_retries=0)
        self.timeout = timeout
        self.deadline = threading.local()

    def send(self, request: Any, **kw: Any) -> Any:
        end = getattr(self.deadline, "at", None)
        left = self.timeout if end is None else min(self.timeout, end - time.monotonic())
        if left <= 0:
            raise requests.Timeout(f"deadline passed before {request.method} {request.url}")
        kw["timeout"] = left
        return super().send(request, **kw)


def bound(kis: PyKis, timeout: float) -> DeadlineAdapter:
    adapter = DeadlineAdapter(timeout)
    for session in kis._sessions.values():
        session.mount("http://", adapter)
        session.mount("https://", adapter)
    return adapter


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            out["error"] = e

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th, out


# ------------------------------------------------------------------------------------------
def test_tokens_credentials_and_tr_ids(fake: FakeKis, connect: Callable[..., PyKis]) -> None:
    kis = connect(virtual=True)
    foreign_quote(kis, "AAPL", "NASDAQ")                       # real domain, real token
    balance(kis, kis.primary, country="US")                    # virtual domain, virtual token
    assert fake.count("real", "tokenP") == 1 and fake.count("virtual", "tokenP") == 1
    assert kis.token.token != kis.primary_token.token
    assert kis.token.validity_period == 86400 and kis.token.remaining.total_seconds() > 86000

    # one issuance per minute per appkey, on the fake's clock
    real = fake.creds["real"]
    assert real is not None
    body = {"grant_type": "client_credentials", "appkey": real.appkey, "appsecret": real.secretkey}
    r = requests.post(fake.real_url + "/oauth2/tokenP", json=body, timeout=5)
    assert r.status_code == 403 and r.json()["error_code"] == "EGW00133"
    fake.advance(61)
    assert requests.post(fake.real_url + "/oauth2/tokenP", json=body, timeout=5).ok
    # the virtual appkey on the real domain; the real appkey on the virtual domain
    v = fake.creds["virtual"]
    assert v is not None
    vbody = {**body, "appkey": v.appkey, "appsecret": v.secretkey}
    assert requests.post(fake.real_url + "/oauth2/tokenP", json=vbody,
                         timeout=5).json()["error_code"] == "EGW02004"
    other = PyKis(**{**fake.pykis_kwargs(True), "appkey": v.appkey, "secretkey": v.secretkey,
                     "use_websocket": False})
    with pytest.raises(KisHTTPError) as e:
        foreign_quote(other, "AAPL", "NASDAQ")
    assert e.value.status_code == 403 and "EGW02004" in e.value.text

    # a real tr_id on the virtual domain, a virtual tr_id on the real domain
    with pytest.raises(KisHTTPError) as e:
        kis.fetch("/uapi/overseas-stock/v1/trading/inquire-psamount", api="TTTS3007R",
                  params={"OVRS_EXCG_CD": "NASD", "OVRS_ORD_UNPR": "1", "ITEM_CD": "AAPL"},
                  form=[kis.primary], domain="virtual")
    assert e.value.status_code == 500 and "EGW02006" in e.value.text
    with pytest.raises(KisHTTPError, match="EGW02004"):
        kis.fetch("/uapi/overseas-stock/v1/trading/inquire-psamount", api="VTTS3007R",
                  params={"OVRS_EXCG_CD": "NASD", "OVRS_ORD_UNPR": "1", "ITEM_CD": "AAPL"},
                  form=[KisAccountNumber("12345678-01")], domain="real")

    # a day later both tokens are expired on the fake: EGW00123 -> pykis reissues and retries
    fake.advance(days=1)
    assert foreign_quote(kis, "AAPL", "NASDAQ").price == 200
    assert fake.count("real", "price-detail", msg_cd="EGW00123") == 1
    assert fake.count("real", "tokenP", status=200) == 3


def test_quote_lookup_and_daily_chart(fake: FakeKis, connect: Callable[..., PyKis]) -> None:
    kis = connect(virtual=True)
    q = foreign_quote(kis, "AAPL", "NASDAQ")
    assert q.price == Decimal(200) and isinstance(q.price, Decimal)
    assert q.prev_price == Decimal(str(bars()["close"].iloc[-2]))      # yesterday's close
    assert fake.count(path="price-detail") == 1
    fake.set_price("AAPL", 201.5)
    assert foreign_quote(kis, "AAPL", "NASDAQ").price == Decimal("201.5")
    with pytest.raises(KisNotFoundError):
        foreign_quote(kis, "AAPL", "NYSE")                     # wrong exchange: empty output

    # symbol -> exchange: `price` on NAS, NYS, AMS in turn, then search-info. pykis caches the
    # result under the *resolved* market, so a lookup with market="US" is never a cache hit
    fake.clear_log()
    assert resolve_market(kis, "IBM", market="US") == "NYSE"
    assert [r.params["EXCD"] for r in fake.requests(path="quotations/price")] == ["NAS", "NYS"]
    assert fake.count(path="search-info") == 1
    assert resolve_market(kis, "XLE", market="US") == "AMEX"
    assert resolve_market(kis, "IBM", market="US") == "NYSE" and fake.count() == 10
    assert resolve_market(kis, "IBM", market="NYSE") == "NYSE" and fake.count() == 10
    with pytest.raises(KisNotFoundError):
        resolve_market(kis, "NOPE", market="US")

    # daily bars: 100 per page, BYMD cursor, MODP=1 adjusted, dates stamped at KST midnight
    fake.clear_log()
    chart = daily_chart(kis, "AAPL", "NASDAQ", start=date(2023, 6, 1), end=TODAY, adjust=True)
    calls = fake.requests(path="dailyprice")
    # pykis stops only when a page's oldest bar is <= start: here a third, unneeded page
    assert len(calls) == 3 and {c.params["MODP"] for c in calls} == {"1"}
    assert [c.params["BYMD"] for c in calls] == ["20240311", "20231023", "20230605"]
    raw = bars()
    days = [b.time.date() for b in chart.bars]
    assert days == [d.date() for d in raw.loc["2023-06-01":].index]       # ascending
    assert chart.bars[-1].close == Decimal(str(round(raw["close"].iloc[-1] / 4, 4)))
    assert str(chart.bars[-1].time.tzinfo) == "Asia/Seoul" and chart.bars[-1].time.hour == 0
    unadjusted = daily_chart(kis, "AAPL", "NASDAQ", start=date(2024, 3, 1), end=TODAY)
    assert unadjusted.bars[-1].close == Decimal(str(raw["close"].iloc[-1]))
    # bars after the fake's date are never served
    fake.set_time("2024-01-02T12:00:00-05:00")
    later = daily_chart(kis, "AAPL", "NASDAQ", start=date(2023, 12, 1))
    assert later.bars[-1].time.date() == date(2024, 1, 2)


@pytest.mark.parametrize("virtual", [True, False], ids=["paper", "live"])
def test_order_lifecycle(fake: FakeKis, connect: Callable[..., PyKis], virtual: bool) -> None:
    kis = connect(virtual=virtual)
    dom = "virtual" if virtual else "real"
    acct = kis.primary
    b = balance(kis, acct, country="US")
    assert b.deposits["USD"].amount == 100_000 and len(b.stocks) == 0
    assert fake.count(dom, "inquire-present-balance") == 1
    assert fake.count(dom, "inquire-balance") == (3 if virtual else 0)   # NASD, NYSE, AMEX

    amt = foreign_orderable_amount(kis, acct, "NASDAQ", "AAPL", price=200)
    assert amt.amount == 100_000 and amt.qty == 500

    # marketable limit buy: fills at once at the last price
    fake.clear_log()
    buy = foreign_order(kis, acct, "NASDAQ", "AAPL", "buy", price=Decimal("202.00"), qty=10)
    assert fake.count() == 1 and len(buy.number) == 10
    sent = fake.requests(path=ORDER)[0]
    assert sent.tr_id == ("VTTT1002U" if virtual else "TTTT1002U")
    assert sent.body["ORD_DVSN"] == "00" and sent.body["OVRS_ORD_UNPR"] == "202.0000"
    b = balance(kis, acct, country="US")
    (st,) = b.stocks
    assert (st.symbol, st.qty, st.purchase_price, st.price, st.market) == (
        "AAPL", 10, 200, 200, "NASDAQ")
    assert b.deposits["USD"].amount == 98_000

    # limit sell with explicit price; VTTT1001U on the virtual domain
    sell = foreign_order(kis, acct, "NASDAQ", "AAPL", "sell", price=199, qty=4)
    assert fake.requests(path=ORDER)[-1].tr_id == ("VTTT1001U" if virtual else "TTTT1006U")
    assert fake.holding(dom, "AAPL") == (6, 200)

    # resting orders: a partial fill, pending orders, cancel
    fake.fill_mode = "never"
    rest = foreign_order(kis, acct, "NASDAQ", "AAPL", "buy", price=190, qty=5)
    fake.fill(rest.number, 2, 190)
    pend = pending_orders(kis, acct, country="US")
    (p,) = pend.orders
    assert (p.number, p.type, p.qty, p.executed_qty, p.pending_qty, p.unit_price) == (
        rest.number, "buy", 5, 2, 3, 190)
    assert balance(kis, acct, country="US").stock("AAPL").qty == 8
    assert fake.holding(dom, "AAPL") == (8, Decimal(1200 + 380) / 8)
    cancel = foreign_cancel_order(kis, rest)
    assert cancel.number != rest.number and fake.orders[rest.number].status == "cancelled"
    assert pending_orders(kis, acct, country="US").orders == []

    # today's orders and fills (exchange-local dates); paged 2 per page
    fake.page_size = 2
    fake.clear_log()
    day = foreign_daily_orders(kis, acct, start=TODAY, end=TODAY, country="US")
    assert fake.count(path=CCNL) == 2
    assert [r.tr_cont for r in fake.requests(path=CCNL)] == [None, "N"]
    by_no = {o.number: o for o in day.orders}
    assert set(by_no) == {buy.number, sell.number, rest.number, cancel.number}
    assert (by_no[buy.number].executed_qty, by_no[buy.number].price) == (10, 200)
    assert (by_no[sell.number].type, by_no[sell.number].executed_qty) == ("sell", 4)
    assert (by_no[rest.number].executed_qty, by_no[rest.number].pending_qty) == (2, 0)
    raw = by_no[cancel.number].__data__
    assert (raw["rvse_cncl_dvsn"], raw["orgn_odno"], raw["ft_ord_qty"]) == ("02", rest.number, "3")
    assert all(not o.canceled for o in day.orders)   # pykis never sets `canceled` for US orders


def test_order_rejections(fake: FakeKis, connect: Callable[..., PyKis]) -> None:
    kis = connect(virtual=True)
    acct = kis.primary
    with pytest.raises(KisAPIError) as e:                                 # insufficient funds
        foreign_order(kis, acct, "NASDAQ", "AAPL", "buy", price=200, qty=10_000)
    assert e.value.msg_cd == ERRORS["funds"][0] and not isinstance(e.value, KisHTTPError)
    with pytest.raises(KisAPIError, match=ERRORS["qty"][0]):              # nothing to sell
        foreign_order(kis, acct, "NYSE", "IBM", "sell", price=190, qty=1)
    with pytest.raises(KisNotFoundError):                                 # wrong exchange
        foreign_order(kis, acct, "NYSE", "AAPL", "buy", price=200, qty=1)
    with pytest.raises(KisAPIError, match=ERRORS["tick"][0]):             # 3 decimals >= $1
        foreign_order(kis, acct, "NASDAQ", "AAPL", "buy", price=Decimal("200.001"), qty=1)
    with pytest.raises(ValueError, match="주문조건"):                      # pykis itself: no LOO
        foreign_order(kis, acct, "NASDAQ", "AAPL", "buy", price=200, qty=1, condition="LOO")
    body = {"OVRS_EXCG_CD": "NASD", "PDNO": "AAPL", "ORD_QTY": "1", "OVRS_ORD_UNPR": "0",
            "SLL_TYPE": "", "ORD_SVR_DVSN_CD": "0", "ORD_DVSN": "01"}    # a "market" order
    with pytest.raises(KisHTTPError, match="IGW00019"):
        kis.fetch("/uapi/overseas-stock/v1/trading/order", method="POST", api="VTTT1002U",
                  body=body, form=[acct])
    fake.set_time(SATURDAY)
    with pytest.raises(KisMarketNotOpenedError):                          # APBK1664
        foreign_order(kis, acct, "NASDAQ", "AAPL", "buy", price=200, qty=1)
    assert fake.orders == {}


def test_day_orders_expire_at_the_close(fake: FakeKis, connect: Callable[..., PyKis]) -> None:
    kis = connect(virtual=False)
    fake.fill_mode = "never"
    o = foreign_order(kis, kis.primary, "NASDAQ", "AAPL", "buy", price=150, qty=1)
    assert len(pending_orders(kis, kis.primary, country="US").orders) == 1
    fake.set_time("2024-03-11T16:00:00-04:00")
    assert pending_orders(kis, kis.primary, country="US").orders == []
    assert fake.orders[o.number].status == "expired"


def test_server_rate_limit(fake: FakeKis, connect: Callable[..., PyKis]) -> None:
    fake.rate_limits["real"] = 5
    polite = connect(virtual=False, rps=4)
    for _ in range(5):
        foreign_quote(polite, "AAPL", "NASDAQ")
    assert fake.count(msg_cd="EGW00201") == 0 and fake.requests_per_second_max("real") <= 5
    fake.clear_log()
    fake.advance(61)                                       # a new PyKis issues a new token
    greedy = connect(virtual=False, rps=50)
    for _ in range(9):
        foreign_quote(greedy, "AAPL", "NASDAQ")             # pykis retries EGW00201 by itself
    assert fake.count("real", "price-detail", status=200) == 9
    assert fake.count("real", msg_cd="EGW00201") > 0
    assert fake.requests_per_second_max("real", accepted_only=True) <= 5
    assert fake.requests_per_second_max("real") > 5


def test_pykis_retries_forever_unless_bounded(fake: FakeKis,
                                              connect: Callable[..., PyKis]) -> None:
    kis = connect(virtual=True)
    foreign_quote(kis, "AAPL", "NASDAQ")
    # EGW00201 forever: pykis sleeps 0.1 s and retries without a cap
    f = fake.inject("rate_limit", path="price-detail", times=None)
    th, out = in_thread(lambda: foreign_quote(kis, "AAPL", "NASDAQ"))
    time.sleep(0.8)
    assert th.is_alive() and f.hits >= 4
    fake.clear_faults()
    th.join(5)
    assert out["value"].price == 200
    # EGW00123 forever: pykis drops its token, issues a new one, retries (no cap either)
    fake.token_min_interval = 0
    f = fake.inject("token_expired", path="price-detail", times=None)
    th, out = in_thread(lambda: foreign_quote(kis, "AAPL", "NASDAQ"))
    time.sleep(0.8)
    assert th.is_alive() and f.hits >= 3 and fake.count("real", "tokenP") >= 3
    fake.clear_faults()
    th.join(5)
    assert "value" in out
    # a deadline adapter on kis._sessions bounds both loops
    adapter = bound(kis, timeout=2)
    fake.inject("rate_limit", path="price-detail", times=None)
    adapter.deadline.at = time.monotonic() + 0.5
    t0 = time.monotonic()
    with pytest.raises(requests.Timeout):
        foreign_quote(kis, "AAPL", "NASDAQ")
    assert time.monotonic() - t0 < 1.5


def test_faults(fake: FakeKis, connect: Callable[..., PyKis]) -> None:
    kis = connect(virtual=True)
    acct = kis.primary
    foreign_quote(kis, "AAPL", "NASDAQ")
    balance(kis, acct, country="US")
    fake.advance(61)

    fake.inject("token_limit", path="tokenP", domain="real")
    kis._token = None
    with pytest.raises(KisHTTPError) as e:
        foreign_quote(kis, "AAPL", "NASDAQ")
    assert e.value.status_code == 403 and "EGW00133" in e.value.text
    for status in (500, 502, 503):
        fake.inject(f"http_{status}", path="price-detail")
        with pytest.raises(KisHTTPError) as e:
            foreign_quote(kis, "AAPL", "NASDAQ")
        assert e.value.status_code == status and "<html>" in e.value.text
    fake.inject("malformed_json", path="price-detail")
    with pytest.raises(requests.JSONDecodeError):
        foreign_quote(kis, "AAPL", "NASDAQ")
    fake.inject("reject", path=ORDER, msg_cd="APBK0952", msg1="주문가능금액을 초과 했습니다")
    with pytest.raises(KisAPIError, match="APBK0952"):
        foreign_order(kis, acct, "NASDAQ", "AAPL", "buy", price=200, qty=1)
    fake.inject("market_closed", path=ORDER)
    with pytest.raises(KisMarketNotOpenedError):
        foreign_order(kis, acct, "NASDAQ", "AAPL", "buy", price=200, qty=1)
    assert fake.orders == {}

    # pykis sends no timeout: a slow answer is waited for; with an adapter it times out
    bound(kis, timeout=0.3)
    fake.inject("delay", path="price-detail", seconds=1)
    with pytest.raises(requests.ReadTimeout):
        foreign_quote(kis, "AAPL", "NASDAQ")
    # the answer is lost after the order was booked: reconcile through today's orders
    fake.inject("lose_answer", path=ORDER)
    with pytest.raises(requests.ConnectionError):
        foreign_order(kis, acct, "NASDAQ", "AAPL", "buy", price=201, qty=3)
    fake.inject("lose_answer", path=ORDER, seconds=1)         # answered after the client gave up
    with pytest.raises(requests.ReadTimeout):
        foreign_order(kis, acct, "NASDAQ", "AAPL", "buy", price=201, qty=2)
    assert sorted(o.qty for o in fake.orders.values()) == [2, 3]
    day = foreign_daily_orders(kis, acct, start=TODAY, end=TODAY, country="US")
    assert sorted(o.executed_qty for o in day.orders) == [2, 3]
    assert fake.holding("virtual", "AAPL")[0] == 5
    sent = fake.requests(path=ORDER)
    assert [r.fault for r in sent] == ["reject", "market_closed", "lose_answer", "lose_answer"]
    assert sent[2].status is None                 # dropped; sent[3] is answered a second late


def test_order_number_from_a_stored_odno(fake: FakeKis, connect: Callable[..., PyKis]) -> None:
    "After a restart the broker only has the ODNO string: rebuild the order to cancel it."
    kis = connect(virtual=True)
    fake.fill_mode = "never"
    placed = foreign_order(kis, kis.primary, "NYSE", "IBM", "buy", price=180, qty=1)
    again = KisOrder.from_number(kis, symbol="IBM", market="NYSE", account_number=kis.primary,
                                 branch="", number=placed.number)
    foreign_cancel_order(kis, again)
    assert fake.orders[placed.number].status == "cancelled"


def test_partial_fills_modify_and_commission(fake: FakeKis,
                                             connect: Callable[..., PyKis]) -> None:
    kis = connect(virtual=False)
    acct = kis.primary
    fake.fill_mode, fake.partial_qty, fake.commission_rate = "partial", 3, Decimal("0.001")
    o = foreign_order(kis, acct, "NASDAQ", "AAPL", "buy", price=200, qty=10)
    assert fake.holding("real", "AAPL") == (3, 200)
    assert fake.cash("real") == 100_000 - 600 - Decimal("0.60")
    b = balance(kis, acct, country="US")
    assert b.stock("AAPL").qty == 3 and b.deposits["USD"].amount == Decimal("99399.40")
    assert b.deposits["USD"].withdrawable_amount == Decimal("99399.40") - 7 * 200 * Decimal(
        "1.001")                                        # the open remainder is reserved
    new = foreign_modify_order(kis, o, price=199, qty=7)   # pending lookup + 1 POST
    assert fake.requests()[-1].body["RVSE_CNCL_DVSN_CD"] == "01"
    assert fake.orders[o.number].status == "replaced"
    (p,) = pending_orders(kis, acct, country="US").orders
    assert (p.number, p.qty, p.unit_price) == (new.number, 7, 199)
    fake.fill_mode = "immediate"
    fake.set_price("AAPL", 198)                          # the resting buy becomes marketable
    assert fake.holding("real", "AAPL")[0] == 10 and fake.open_orders() == []


def test_pykis_limiter_is_a_fixed_window(fake: FakeKis, connect: Callable[..., PyKis]) -> None:
    "At 2/s pykis can still put 3 requests into one sliding second; the fake notices."
    fake.rate_limits["real"] = 2
    kis = connect(virtual=False, rps=2)
    assert kis.token
    time.sleep(1.05)
    foreign_quote(kis, "AAPL", "NASDAQ")
    time.sleep(0.9)
    foreign_quote(kis, "AAPL", "NASDAQ")
    time.sleep(0.12)                                      # pykis opens a new window here
    foreign_quote(kis, "AAPL", "NASDAQ")
    foreign_quote(kis, "AAPL", "NASDAQ")
    assert fake.count(msg_cd="EGW00201") == 1 and fake.requests_per_second_max("real") >= 3


def test_raw_fetch(fake: FakeKis, connect: Callable[..., PyKis]) -> None:
    "kis.fetch for what python-kis lacks; with the default response type rt_cd is NOT checked."
    kis = connect(virtual=True)
    r = kis.fetch("/uapi/overseas-price/v1/quotations/price", api="HHDFS00000300",
                  params={"AUTH": "", "EXCD": "NAS", "SYMB": "AAPL"}, domain="real")
    assert (r.rt_cd, r.output.last) == ("0", "200.0000")
    o = foreign_order(kis, kis.primary, "NASDAQ", "AAPL", "buy", price=200, qty=1)
    r = kis.fetch("/uapi/overseas-stock/v1/trading/inquire-ccnl", api="VTTS3035R",
                  params={"PDNO": "", "ORD_STRT_DT": "20240311", "ORD_END_DT": "20240311",
                          "SLL_BUY_DVSN": "00", "CCLD_NCCS_DVSN": "00", "OVRS_EXCG_CD": "NASD",
                          "SORT_SQN": "DS", "ORD_DT": "", "ORD_GNO_BRNO": "", "ODNO": ""},
                  form=[kis.primary, KisPage.first().to(200)])
    assert [(x.odno, x.ft_ccld_qty, x.nccs_qty) for x in r.output] == [(o.number, "1", "0")]
    assert r.__response__.headers["tr_cont"] == "D" and r.ctx_area_nk200 == ""
    r = kis.fetch("/uapi/overseas-stock/v1/trading/order", method="POST", api="VTTT1002U",
                  body={"OVRS_EXCG_CD": "NASD", "PDNO": "AAPL", "ORD_QTY": "100000",
                        "OVRS_ORD_UNPR": "200.0000", "SLL_TYPE": "", "ORD_SVR_DVSN_CD": "0",
                        "ORD_DVSN": "00"}, form=[kis.primary])
    assert (r.rt_cd, r.msg_cd) == ("1", ERRORS["funds"][0])          # no exception raised
