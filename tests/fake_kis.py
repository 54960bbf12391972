"""A loopback fake of the KIS Open API (US stocks) that python-kis's real HTTP code runs against.

One `FakeKis` serves two ports on 127.0.0.1: the real-domain role (`real_url`) and the virtual
(paper) role (`virtual_url`). It speaks the KIS wire format (JSON `rt_cd`/`msg_cd`/`msg1`/`output*`,
a `tr_cont` header on every answer, `ctx_area_fk200`/`nk200` cursors, HTTP 500 gateway errors),
checks credentials, tokens and tr_ids per domain, keeps its own clock (XNYS sessions decide whether
orders are accepted), serves quotes and daily bars, keeps an order book and a USD cash/holdings
ledger per account, rate-limits per domain, logs every request and injects faults.

Error codes: EGW00201/00123/00133/00121/00103/02004/02006/02007, APBK1664, APBK0656, APBK0952,
APBK1507, IGW00019, MCA00124 and the success codes are the ones KIS is publicly reported to send.
Codes marked "fake-chosen" in `ERRORS` are placeholders where no public report was found.

    with FakeKis("2024-03-11T14:00-04:00", rate_limits={"real": 20, "virtual": 2}) as fake:
        fake.add_symbol("AAPL", "NAS", last=190, bars=df, adjusted=df_adj)
        fake.patch_pykis(monkeypatch)                    # pykis.kis.REAL_DOMAIN / VIRTUAL_DOMAIN
        kis = PyKis(**fake.pykis_kwargs(virtual=True))   # paper: real + virtual keys
        ...
        fake.inject("lose_answer", path="trading/order")
        assert fake.count("virtual", "trading/order") == 1
        assert fake.requests_per_second_max("virtual") <= 2
"""
from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit
from zoneinfo import ZoneInfo

import pandas as pd

from stockstock.calendar import is_open, session_open_close

__all__ = ["Domain", "Credentials", "LoggedRequest", "Fault", "FakeOrder", "FakeKis", "ERRORS",
           "ENDPOINTS", "FAULT_KINDS"]

Domain = Literal["real", "virtual"]
DOMAINS: tuple[Domain, Domain] = ("real", "virtual")
KST = ZoneInfo("Asia/Seoul")
NEW_YORK = ZoneInfo("America/New_York")
Bar = tuple[date, Decimal, Decimal, Decimal, Decimal, int]  # date, open, high, low, close, volume

# ---------------------------------------------------------------------------------------------
# endpoints and tr_ids
P_TOKEN = "/oauth2/tokenP"
P_REVOKE = "/oauth2/revokeP"
P_PRICE = "/uapi/overseas-price/v1/quotations/price"
P_DETAIL = "/uapi/overseas-price/v1/quotations/price-detail"
P_DAILY = "/uapi/overseas-price/v1/quotations/dailyprice"
P_INFO = "/uapi/domestic-stock/v1/quotations/search-info"
P_KR_PRICE = "/uapi/domestic-stock/v1/quotations/inquire-price"
P_ORDER = "/uapi/overseas-stock/v1/trading/order"
P_RVSECNCL = "/uapi/overseas-stock/v1/trading/order-rvsecncl"
P_CCNL = "/uapi/overseas-stock/v1/trading/inquire-ccnl"
P_NCCS = "/uapi/overseas-stock/v1/trading/inquire-nccs"
P_PRESENT = "/uapi/overseas-stock/v1/trading/inquire-present-balance"
P_BALANCE = "/uapi/overseas-stock/v1/trading/inquire-balance"
P_PSAMOUNT = "/uapi/overseas-stock/v1/trading/inquire-psamount"


def _same(*tr: str) -> dict[Domain, frozenset[str]]:
    return {"real": frozenset(tr), "virtual": frozenset(tr)}


def _rv(real: set[str], virtual: set[str]) -> dict[Domain, frozenset[str]]:
    return {"real": frozenset(real), "virtual": frozenset(virtual)}


# path -> (HTTP method, accepted tr_ids per domain). Quotations use the same tr_id on both.
ENDPOINTS: dict[str, tuple[str, dict[Domain, frozenset[str]]]] = {
    P_PRICE: ("GET", _same("HHDFS00000300")),
    P_DETAIL: ("GET", _same("HHDFS76200200")),
    P_DAILY: ("GET", _same("HHDFS76240000")),
    P_INFO: ("GET", _same("CTPF1604R")),
    P_KR_PRICE: ("GET", _same("FHKST01010100")),
    P_ORDER: ("POST", _rv({"TTTT1002U", "TTTT1006U"}, {"VTTT1002U", "VTTT1001U"})),
    P_RVSECNCL: ("POST", _rv({"TTTT1004U"}, {"VTTT1004U"})),
    P_CCNL: ("GET", _rv({"TTTS3035R"}, {"VTTS3035R"})),
    P_NCCS: ("GET", _rv({"TTTS3018R"}, {"VTTS3018R"})),
    P_PRESENT: ("GET", _rv({"CTRP6504R"}, {"VTRP6504R"})),
    P_BALANCE: ("GET", _rv({"TTTS3012R"}, {"VTTS3012R"})),
    P_PSAMOUNT: ("GET", _rv({"TTTS3007R"}, {"VTTS3007R"})),
}
REAL_ONLY_TR = frozenset().union(*(t["real"] - t["virtual"] for _, t in ENDPOINTS.values()))
VIRTUAL_ONLY_TR = frozenset().union(*(t["virtual"] - t["real"] for _, t in ENDPOINTS.values()))
BUY_TR = {"TTTT1002U", "VTTT1002U"}
SELL_TR = {"TTTT1006U", "VTTT1001U"}

# (msg_cd, msg1). HTTP status is decided where they are used.
ERRORS: dict[str, tuple[str, str]] = {
    "rate_limit": ("EGW00201", "초당 거래건수를 초과하였습니다."),
    "token_expired": ("EGW00123", "기간이 만료된 token 입니다."),
    "token_invalid": ("EGW00121", "유효하지 않은 token 입니다."),
    "token_limit": ("EGW00133", "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)"),
    "bad_appkey": ("EGW00103", "유효하지 않은 AppKey입니다."),
    "bad_secret": ("EGW00105", "유효하지 않은 AppSecret입니다."),
    "not_real_tr": ("EGW02004", "실전투자 TR 이 아닙니다."),
    "not_virtual_tr": ("EGW02006", "모의투자 TR 이 아닙니다."),
    "not_virtual_key": ("EGW02007", "해당 앱키는 모의투자용 앱키가 아닙니다."),
    "bad_tr_id": ("OPSQ0002", "없는 서비스 코드 입니다"),  # fake-chosen
    "no_service": ("MCA00124", "해당 서비스를 찾을수 없습니다."),
    "market_closed": ("APBK1664", "장운영시간이 아닙니다."),  # msg1 fake-chosen
    "no_symbol": ("APBK0656", "해당종목정보가 없습니다."),
    "funds": ("APBK0952", "주문가능금액을 초과 했습니다"),
    "qty": ("APBK0986", "주문가능수량을 초과 했습니다"),  # fake-chosen
    "ord_dvsn": ("IGW00019", "주문구분을 확인해주세요"),
    "min_price": ("APBK1507", "가격 $0.01 미만시 온라인 주문불가"),
    "tick": ("APBK0507", "호가단위 오류입니다."),  # fake-chosen
    "bad_qty": ("APBK0508", "주문수량을 확인하세요."),  # fake-chosen
    "account": ("OPSQ0013", "계좌번호를 확인하세요."),  # fake-chosen
    "no_order": ("APBK0344", "정정/취소할 주문이 없습니다."),  # fake-chosen
    "no_data": ("KIER2570", "조회할 자료가 없습니다."),  # rt_cd "7"; fake-chosen msg_cd
    "ok_order": ("APBK0013", "주문 전송 완료 되었습니다."),
    "ok_quote": ("MCA00000", "정상처리 되었습니다."),
    "ok_query": ("KIOK0510", "조회가 완료되었습니다"),
    "ok_more": ("KIOK0500", "조회가 계속됩니다..다음버튼을 Click 하십시오."),
}

# exchange short code (quotes) -> (order code, search-info product type, name)
EXCHANGES: dict[str, tuple[str, str, str]] = {
    "NAS": ("NASD", "512", "나스닥"),
    "NYS": ("NYSE", "513", "뉴욕"),
    "AMS": ("AMEX", "529", "아멕스"),
}
ORDER_CODE_TO_SHORT = {v[0]: k for k, v in EXCHANGES.items()}
TYPE_TO_SHORT = {v[1]: k for k, v in EXCHANGES.items()}

FAULT_KINDS = frozenset({
    "rate_limit", "token_expired", "token_limit", "http_error", "malformed_json", "delay",
    "reject", "market_closed", "lose_answer"})
_HTTP_SHORTCUTS = {"http_500": 500, "http_502": 502, "http_503": 503}


# ---------------------------------------------------------------------------------------------
# small value types
def _key(seed: str, n: int) -> str:
    out = ""
    for i in itertools.count():
        out += hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()
        if len(out) >= n:
            return ("PS" + out)[:n] if n == 36 else out[:n]
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Credentials:
    "Fake KIS credentials with the real lengths: appkey 36, secretkey 180, account NNNNNNNN-NN."
    appkey: str
    secretkey: str
    account: str
    id: str = "fakeuser"

    def __post_init__(self) -> None:
        if len(self.appkey) != 36 or len(self.secretkey) != 180:
            raise ValueError("appkey must be 36 chars and secretkey 180 chars")
        if len(self.account) != 11 or self.account[8] != "-":
            raise ValueError("account must look like NNNNNNNN-NN")

    @classmethod
    def make(cls, seed: str, account: str) -> Credentials:
        return cls(_key(seed + "/appkey", 36), _key(seed + "/secret", 180), account)

    @property
    def cano(self) -> str:
        return self.account[:8]

    @property
    def product(self) -> str:
        return self.account[9:]


@dataclass
class LoggedRequest:
    "One request as the fake saw it (status None: the answer was withheld / connection dropped)."
    t: float  # time.monotonic() at arrival
    domain: Domain
    method: str
    path: str
    tr_id: str | None
    tr_cont: str | None
    params: dict[str, str]
    body: Any
    headers: dict[str, str]
    status: int | None = None
    msg_cd: str | None = None
    fault: str | None = None


@dataclass
class Fault:
    "An injected fault; `times=None` means forever. `hits` counts how often it fired."
    kind: str
    path: str | None = None
    tr_id: str | None = None
    domain: Domain | None = None
    times: int | None = 1
    seconds: float | None = None
    status: int | None = None
    msg_cd: str | None = None
    msg1: str | None = None
    hits: int = 0

    def matches(self, domain: Domain, path: str, tr_id: str | None) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.domain is not None and self.domain != domain:
            return False
        if self.path is not None and not _path_matches(path, self.path):
            return False
        return self.tr_id is None or self.tr_id == tr_id


def _path_matches(path: str, pattern: str) -> bool:
    "Exact path, or a suffix after a '/': 'order' matches .../order but not .../order-rvsecncl."
    return path == pattern or path.endswith("/" + pattern.lstrip("/"))


@dataclass
class _Token:
    token: str
    domain: Domain
    appkey: str
    issued: datetime
    expires: datetime


@dataclass
class _Symbol:
    symbol: str
    exchange: str  # NAS / NYS / AMS
    last: Decimal
    name: str
    raw: list[Bar] = field(default_factory=list)
    adjusted: list[Bar] | None = None


@dataclass
class _Holding:
    symbol: str
    qty: int = 0
    cost: Decimal = Decimal(0)  # purchase amount (avg price x qty), fees excluded


@dataclass
class _Account:
    domain: Domain
    creds: Credentials
    cash: Decimal
    holdings: dict[str, _Holding] = field(default_factory=dict)
    realized: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)


@dataclass
class FakeOrder:
    "An order (or a cancel/modify request row) in the fake's book."
    odno: str
    domain: Domain
    symbol: str
    exchange: str  # order code NASD / NYSE / AMEX
    side: Literal["buy", "sell"]
    qty: int
    price: Decimal
    ord_dvsn: str
    placed_at: datetime  # fake clock, UTC
    kind: Literal["order", "modify", "cancel"] = "order"
    orgn_odno: str = ""
    status: str = "open"  # open / filled / cancelled / replaced / expired
    fills: list[tuple[int, Decimal, datetime]] = field(default_factory=list)
    closed_qty: int = 0  # cancelled / replaced / expired remainder

    @property
    def filled_qty(self) -> int:
        return sum(q for q, _, _ in self.fills)

    @property
    def fill_amount(self) -> Decimal:
        return sum((q * p for q, p, _ in self.fills), Decimal(0))

    @property
    def avg_fill_price(self) -> Decimal:
        return self.fill_amount / self.filled_qty if self.filled_qty else Decimal(0)

    @property
    def remaining(self) -> int:
        return self.qty - self.filled_qty if self.status == "open" else 0


@dataclass
class _Reply:
    status: int
    payload: dict[str, Any] | None = None
    raw: bytes | None = None
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering
    delay_after: float = 0.0  # wait this long after processing, before answering
    fault: str | None = None

    @property
    def msg_cd(self) -> str | None:
        if not self.payload:
            return None
        return self.payload.get("msg_cd") or self.payload.get("error_code")


def _d(x: Any) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(str(x))


def _p4(x: Decimal | float | int) -> str:
    "Price as KIS writes US prices: 4 decimals."
    return f"{_d(x):.4f}"


def _p2(x: Decimal | float | int) -> str:
    return f"{_d(x):.2f}"


def _as_utc(t: datetime | str | pd.Timestamp) -> datetime:
    ts = pd.Timestamp(t)
    if ts.tzinfo is None:
        raise ValueError(f"{t!r} has no time zone")
    return ts.tz_convert("UTC").to_pydatetime()


def _bars_from_frame(df: pd.DataFrame) -> list[Bar]:
    frame = df.rename(columns=str.lower)
    missing = {"open", "high", "low", "close", "volume"} - set(frame.columns)
    if missing:
        raise ValueError(f"bars need columns open/high/low/close/volume; missing {missing}")
    days = pd.DatetimeIndex(frame.index).date
    rows = [(d, _d(round(float(o), 4)), _d(round(float(h), 4)), _d(round(float(lo), 4)),
             _d(round(float(c), 4)), int(v))
            for d, o, h, lo, c, v in zip(days, frame["open"], frame["high"], frame["low"],
                                         frame["close"], frame["volume"], strict=True)]
    return sorted(rows)


# ---------------------------------------------------------------------------------------------
# HTTP plumbing
class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fake: FakeKis, domain: Domain) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.fake = fake
        self.domain: Domain = domain


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60
    disable_nagle_algorithm = True  # else headers and body leave in two segments: +40 ms each
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server API)
        self.server.fake._serve(self, "GET")

    def do_POST(self) -> None:  # noqa: N802
        self.server.fake._serve(self, "POST")

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


# ---------------------------------------------------------------------------------------------
class FakeKis:
    """Loopback fake KIS Open API with a real and a virtual domain. See the module docstring.

    `now`: the fake clock's start instant (aware). The clock is frozen unless `ticking=True`
    (then it advances with the wall clock from `now`); move it with `set_time` / `advance`.
    `rate_limits`: requests per sliding second per domain (None = unlimited).
    `fill_mode`: marketable limit orders fill at the last price at once ("immediate"), by
    `partial_qty` shares ("partial", at submission only) or never ("never"); `fill()` always works.
    `token_min_interval`: seconds between issuances per appkey on the fake clock (EGW00133).
    `expiry_in_wall_time`: report `access_token_token_expired` as wall-clock now + validity
    (python-kis compares it with the wall clock; tokens still expire on the fake clock).
    `unknown_token_code`: answer for an unknown token (KIS sends EGW00121; EGW00123 makes
    python-kis reissue and retry).
    """

    def __init__(self, now: datetime | str | pd.Timestamp, *,
                 real: Credentials | None = None, virtual: Credentials | None = None,
                 cash_usd: float | Decimal = 100_000,
                 virtual_cash_usd: float | Decimal | None = None,
                 rate_limits: dict[Domain, float | None] | None = None,
                 fill_mode: Literal["immediate", "partial", "never"] = "immediate",
                 partial_qty: int = 1, commission_rate: float | Decimal = 0,
                 usd_krw: float | Decimal = 1350, page_size: int = 20, bars_page_size: int = 100,
                 ticking: bool = False, token_min_interval: float = 60.0,
                 token_validity: timedelta = timedelta(days=1),
                 expiry_in_wall_time: bool = True,
                 unknown_token_code: str = "EGW00123") -> None:
        self.creds: dict[Domain, Credentials | None] = {
            "real": real or Credentials.make("fake-real", "12345678-01"),
            "virtual": virtual or Credentials.make("fake-virtual", "50012345-01"),
        }
        self.rate_limits: dict[Domain, float | None] = {"real": 20, "virtual": 2}
        self.rate_limits.update(rate_limits or {})
        self.fill_mode = fill_mode
        self.partial_qty = partial_qty
        self.commission_rate = _d(commission_rate)
        self.usd_krw = _d(usd_krw)
        self.page_size = page_size
        self.bars_page_size = bars_page_size
        self.token_min_interval = token_min_interval
        self.token_validity = token_validity
        self.expiry_in_wall_time = expiry_in_wall_time
        self.unknown_token_code = unknown_token_code
        # per-domain answer for orders outside the session (real KIS virtual servers have been
        # seen answering 40570000 "모의투자 장시작전 입니다." instead; set it here to test that)
        self.market_closed_answer: dict[Domain, tuple[str, str]] = {
            d: ERRORS["market_closed"] for d in DOMAINS}
        self.ticking = ticking
        self._t0 = _as_utc(now)
        self._mono0 = time.monotonic()
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._log: list[LoggedRequest] = []
        self._faults: list[Fault] = []
        self._tokens: dict[str, _Token] = {}
        self._last_issue: dict[str, datetime] = {}
        self._token_seq = itertools.count(1)
        self._odno_seq = itertools.count(1)
        self._window: dict[Domain, list[float]] = {d: [] for d in DOMAINS}
        self._symbols: dict[str, _Symbol] = {}
        self.orders: dict[str, FakeOrder] = {}
        vcash = cash_usd if virtual_cash_usd is None else virtual_cash_usd
        self.accounts: dict[Domain, _Account] = {}
        for dom, amount in (("real", cash_usd), ("virtual", vcash)):
            c = self.creds[dom]  # type: ignore[index]
            if c is not None:
                self.accounts[dom] = _Account(dom, c, _d(amount))  # type: ignore[index]
        self._servers: dict[Domain, _Server] = {}
        self._threads: list[threading.Thread] = []

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> FakeKis:
        if self._servers:
            return self
        self._stop.clear()
        for dom in DOMAINS:
            srv = _Server(self, dom)
            th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                                  name=f"fake-kis-{dom}", daemon=True)
            th.start()
            self._servers[dom] = srv
            self._threads.append(th)
        return self

    def stop(self) -> None:
        self._stop.set()
        for srv in self._servers.values():
            srv.shutdown()
            srv.server_close()
        for th in self._threads:
            th.join(timeout=2)
        self._servers.clear()
        self._threads.clear()

    def __enter__(self) -> FakeKis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, domain: Domain) -> str:
        return f"http://127.0.0.1:{self._servers[domain].server_address[1]}"

    @property
    def real_url(self) -> str:
        return self.url("real")

    @property
    def virtual_url(self) -> str:
        return self.url("virtual")

    # -- pointing python-kis at the fake ------------------------------------------------------
    def patch_pykis(self, monkeypatch: Any) -> None:
        "Point python-kis's URL builder at this fake (pytest's `monkeypatch`)."
        import pykis.kis
        monkeypatch.setattr(pykis.kis, "REAL_DOMAIN", self.real_url)
        monkeypatch.setattr(pykis.kis, "VIRTUAL_DOMAIN", self.virtual_url)

    def pykis_kwargs(self, virtual: bool) -> dict[str, Any]:
        "Keyword arguments for `PyKis(**kw)`: real keys always, virtual keys for paper mode."
        real = self.creds["real"]
        assert real is not None
        kw: dict[str, Any] = dict(id=real.id, appkey=real.appkey, secretkey=real.secretkey,
                                  account=real.account, use_websocket=False)
        if virtual:
            v = self.creds["virtual"]
            assert v is not None
            kw.update(virtual_id=v.id, virtual_appkey=v.appkey, virtual_secretkey=v.secretkey,
                      account=v.account)
        return kw

    # -- clock -------------------------------------------------------------------------------
    @property
    def now(self) -> datetime:
        "The fake clock (aware UTC)."
        if self.ticking:
            return self._t0 + timedelta(seconds=time.monotonic() - self._mono0)
        return self._t0

    def set_time(self, t: datetime | str | pd.Timestamp) -> None:
        with self._lock:
            self._t0, self._mono0 = _as_utc(t), time.monotonic()
            self._sweep()

    def advance(self, seconds: float = 0, **delta: float) -> None:
        "Move the clock forward: `advance(61)`, `advance(days=1)`."
        with self._lock:
            self._t0 = self.now + timedelta(seconds=seconds, **delta)
            self._mono0 = time.monotonic()
            self._sweep()

    def market_open(self) -> bool:
        return is_open(self.now)

    # -- market data -------------------------------------------------------------------------
    def add_symbol(self, symbol: str, exchange: str = "NAS", *, last: float | Decimal = 100,
                   name: str | None = None, bars: pd.DataFrame | None = None,
                   adjusted: pd.DataFrame | None = None) -> None:
        "Register a US symbol on NAS/NYS/AMS (also accepts NASD/NYSE/AMEX)."
        exchange = ORDER_CODE_TO_SHORT.get(exchange, exchange)
        if exchange not in EXCHANGES:
            raise ValueError(f"exchange must be NAS/NYS/AMS, got {exchange!r}")
        with self._lock:
            self._symbols[symbol] = _Symbol(symbol, exchange, _d(last), name or f"{symbol} INC")
            if bars is not None:
                self.set_bars(symbol, bars, adjusted)

    def set_bars(self, symbol: str, raw: pd.DataFrame,
                 adjusted: pd.DataFrame | None = None) -> None:
        """Daily bars (index: dates; columns open/high/low/close/volume). MODP=0 serves `raw`,
        MODP=1 serves `adjusted` (default: the same as `raw`). Bars after the fake's New York
        date are never served."""
        with self._lock:
            s = self._symbols[symbol]
            s.raw = _bars_from_frame(raw)
            s.adjusted = None if adjusted is None else _bars_from_frame(adjusted)

    def set_price(self, symbol: str, price: float | Decimal) -> None:
        "Set the last price; in fill_mode 'immediate' open orders that become marketable fill."
        with self._lock:
            self._sweep()
            self._symbols[symbol].last = _d(price)
            if self.fill_mode == "immediate":
                for o in list(self.orders.values()):
                    if o.symbol == symbol and o.status == "open" and o.kind != "cancel":
                        self._auto_fill(o, full=True)

    def last_price(self, symbol: str) -> Decimal:
        return self._symbols[symbol].last

    # -- account helpers ---------------------------------------------------------------------
    def set_cash(self, domain: Domain, usd: float | Decimal) -> None:
        with self._lock:
            self.accounts[domain].cash = _d(usd)

    def set_holding(self, domain: Domain, symbol: str, qty: int,
                    avg_price: float | Decimal) -> None:
        with self._lock:
            acct = self.accounts[domain]
            if qty <= 0:
                acct.holdings.pop(symbol, None)
            else:
                acct.holdings[symbol] = _Holding(symbol, qty, _d(avg_price) * qty)

    def cash(self, domain: Domain) -> Decimal:
        return self.accounts[domain].cash

    def holding(self, domain: Domain, symbol: str) -> tuple[int, Decimal]:
        "(qty, avg price) of a holding; (0, 0) when none."
        h = self.accounts[domain].holdings.get(symbol)
        if h is None or h.qty == 0:
            return 0, Decimal(0)
        return h.qty, h.cost / h.qty

    def open_orders(self, domain: Domain | None = None) -> list[FakeOrder]:
        with self._lock:
            self._sweep()
            return [o for o in self.orders.values()
                    if o.status == "open" and (domain is None or o.domain == domain)]

    def place_order(self, domain: Domain, symbol: str, side: Literal["buy", "sell"], qty: int,
                    price: float | Decimal, *, auto_fill: bool = False) -> FakeOrder:
        "Put an order straight into the book (no HTTP, no checks), e.g. to seed a crash scenario."
        with self._lock:
            o = self._new_order(domain, symbol, self._excg(symbol), side, qty, _d(price), "00")
            if auto_fill:
                self._auto_fill(o, full=self.fill_mode == "immediate")
            return o

    def fill(self, odno: str, qty: int | None = None, price: float | Decimal | None = None) -> None:
        "Fill `qty` (default: all remaining) of an open order at `price` (default: its limit)."
        with self._lock:
            o = self.orders[odno]
            if o.status != "open":
                raise ValueError(f"order {odno} is {o.status}")
            q = o.remaining if qty is None else qty
            if not 0 < q <= o.remaining:
                raise ValueError(f"cannot fill {q} of {o.remaining} remaining")
            self._apply_fill(o, q, o.price if price is None else _d(price))

    def cancel(self, odno: str) -> None:
        "Cancel the remainder of an open order on the exchange side (no request row)."
        with self._lock:
            self._close_order(self.orders[odno], "cancelled")

    # -- faults ------------------------------------------------------------------------------
    def inject(self, kind: str, *, path: str | None = None, tr_id: str | None = None,
               domain: Domain | None = None, times: int | None = 1, seconds: float | None = None,
               status: int | None = None, msg_cd: str | None = None,
               msg1: str | None = None) -> Fault:
        """Inject a fault for the next `times` matching requests (None = forever).

        kinds: rate_limit (500 EGW00201), token_expired (500 EGW00123), token_limit (403 EGW00133),
        http_error / http_500 / http_502 / http_503 (`status`, HTML body), malformed_json (200,
        truncated JSON), delay (`seconds` before processing), reject (200 rt_cd 1, `msg_cd`/`msg1`,
        default insufficient funds), market_closed (200 APBK1664), lose_answer (process the request
        -- an order IS booked -- then drop the connection; with `seconds`, answer that late).
        `path` matches the exact path or its last segments ('order', 'quotations/price').
        """
        if kind in _HTTP_SHORTCUTS:
            kind, status = "http_error", _HTTP_SHORTCUTS[kind]
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULT_KINDS)}")
        if kind in ("delay",) and seconds is None:
            raise ValueError("delay needs seconds")
        f = Fault(kind, path, tr_id, domain, times, seconds, status, msg_cd, msg1)
        with self._lock:
            self._faults.append(f)
        return f

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    # -- request log -------------------------------------------------------------------------
    @property
    def log(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def requests(self, domain: Domain | None = None, path: str | None = None,
                 tr_id: str | None = None, status: int | None = None,
                 msg_cd: str | None = None) -> list[LoggedRequest]:
        "Logged requests matching every given filter (path: exact or last segments)."
        return [r for r in self.log
                if (domain is None or r.domain == domain)
                and (path is None or _path_matches(r.path, path))
                and (tr_id is None or r.tr_id == tr_id)
                and (status is None or r.status == status)
                and (msg_cd is None or r.msg_cd == msg_cd)]

    def count(self, domain: Domain | None = None, path: str | None = None,
              tr_id: str | None = None, status: int | None = None,
              msg_cd: str | None = None) -> int:
        return len(self.requests(domain, path, tr_id, status, msg_cd))

    def counts_by_path(self, domain: Domain | None = None) -> Counter[str]:
        return Counter(r.path for r in self.log if domain is None or r.domain == domain)

    def requests_per_second_max(self, domain: Domain, *, path: str | None = None,
                                accepted_only: bool = False) -> int:
        "Most requests that arrived at `domain` within any 1-second sliding window."
        times = sorted(r.t for r in self.requests(domain, path)
                       if not accepted_only or r.msg_cd != ERRORS["rate_limit"][0])
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= 1.0:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    # =========================================================================================
    # request handling
    def _serve(self, h: _Handler, method: str) -> None:
        domain = h.server.domain
        split = urlsplit(h.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k.lower(): v for k, v in h.headers.items()}
        entry = LoggedRequest(time.monotonic(), domain, method, split.path, headers.get("tr_id"),
                              headers.get("tr_cont"), params, body, headers)
        with self._lock:
            self._log.append(entry)
        if self._stop.is_set():
            h.close_connection = True
            return
        try:
            reply = self._dispatch(domain, method, split.path, headers, params, body, entry.t)
        except Exception as e:  # a bug in the fake: answer 500 like an unexpected server error
            reply = _Reply(500, raw=f"fake_kis internal error: {e!r}".encode(),
                           content_type="text/plain")
        entry.fault = reply.fault
        entry.msg_cd = reply.msg_cd
        if reply.delay_after:
            self._stop.wait(reply.delay_after)
        if reply.drop:
            h.close_connection = True
            return
        entry.status = reply.status
        data = reply.raw if reply.raw is not None else json.dumps(
            reply.payload, ensure_ascii=False).encode()
        try:
            h.send_response(reply.status)
            h.send_header("Content-Type", reply.content_type)
            h.send_header("Content-Length", str(len(data)))
            h.send_header("tr_id", entry.tr_id or "")
            h.send_header("gt_uid", f"FAKE{int(entry.t * 1e6):020d}")
            hdrs = {"tr_cont": "D", **reply.headers}  # KIS always sends tr_cont
            for k, v in hdrs.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(data)
        except OSError:  # the client gave up (timeout) before we answered
            h.close_connection = True

    def _take_fault(self, domain: Domain, path: str, tr_id: str | None) -> Fault | None:
        with self._lock:
            for f in self._faults:
                if f.matches(domain, path, tr_id):
                    f.hits += 1
                    return f
        return None

    def _dispatch(self, domain: Domain, method: str, path: str, headers: dict[str, str],
                  params: dict[str, str], body: Any, arrived: float) -> _Reply:
        tr_id = headers.get("tr_id")
        fault = self._take_fault(domain, path, tr_id)
        if fault is not None:
            if fault.kind == "delay":
                self._stop.wait(fault.seconds or 0)
            elif fault.kind != "lose_answer":
                reply = self._fault_reply(fault)
                reply.fault = fault.kind
                return reply
        if not self._admit(domain, arrived):
            return self._gw_error("rate_limit", fault="server_rate_limit")
        with self._lock:
            self._sweep()
            reply = self._route(domain, method, path, headers, params, body)
        if fault is not None and fault.kind == "lose_answer":
            reply.fault = "lose_answer"
            if fault.seconds:
                reply.delay_after = fault.seconds
            else:
                reply.drop = True
        elif fault is not None:
            reply.fault = fault.kind
        return reply

    def _admit(self, domain: Domain, now: float) -> bool:
        "Sliding 1-second window over admitted requests, on their logged arrival times."
        limit = self.rate_limits.get(domain)
        with self._lock:
            win = [t for t in self._window[domain] if now - t < 1.0]
            if limit is not None and len(win) >= limit:
                self._window[domain] = win
                return False
            win.append(now)
            self._window[domain] = win
            return True

    def _fault_reply(self, f: Fault) -> _Reply:
        if f.kind == "rate_limit":
            return self._gw_error("rate_limit")
        if f.kind == "token_expired":
            return self._gw_error("token_expired")
        if f.kind == "token_limit":
            return self._token_error("token_limit")
        if f.kind == "http_error":
            status = f.status or 502
            html = (f"<html><head><title>{status} Bad Gateway</title></head><body><center><h1>"
                    f"{status}</h1></center><hr><center>nginx</center></body></html>")
            return _Reply(status, raw=html.encode(), content_type="text/html")
        if f.kind == "malformed_json":
            return _Reply(200, raw=b'{"rt_cd":"0","msg_cd":"MCA00000","output":{"last":"1',
                          headers={"tr_cont": "D"})
        if f.kind == "reject":
            code, msg = ERRORS["funds"]
            return self._api_error(f.msg_cd or code, f.msg1 or msg)
        if f.kind == "market_closed":
            return self._api_error(*ERRORS["market_closed"])
        raise AssertionError(f.kind)

    # -- answers -------------------------------------------------------------------------------
    @staticmethod
    def _gw_error(name: str, status: int = 500, fault: str | None = None) -> _Reply:
        code, msg = ERRORS[name]
        return _Reply(status, {"rt_cd": "1", "msg_cd": code, "msg1": msg}, fault=fault)

    @staticmethod
    def _token_error(name: str) -> _Reply:
        code, msg = ERRORS[name]
        return _Reply(403, {"error_description": msg, "error_code": code})

    @staticmethod
    def _api_error(code: str, msg: str, rt_cd: str = "1") -> _Reply:
        "A business error: HTTP 200 with rt_cd != 0 (python-kis raises KisAPIError)."
        return _Reply(200, {"rt_cd": rt_cd, "msg_cd": code, "msg1": msg})

    @staticmethod
    def _ok(payload: dict[str, Any], ok: str = "ok_query", tr_cont: str = "D") -> _Reply:
        code, msg = ERRORS[ok]
        return _Reply(200, {"rt_cd": "0", "msg_cd": code, "msg1": msg, **payload},
                      headers={"tr_cont": tr_cont})

    # -- routing ---------------------------------------------------------------------------------
    def _route(self, domain: Domain, method: str, path: str, headers: dict[str, str],
               params: dict[str, str], body: Any) -> _Reply:
        if path == P_TOKEN and method == "POST":
            return self._token(domain, body if isinstance(body, dict) else {})
        if path == P_REVOKE and method == "POST":
            b = body if isinstance(body, dict) else {}
            self._tokens.pop(str(b.get("token", "")), None)
            return _Reply(200, {"code": 200, "message": "접근토큰 폐기에 성공하였습니다"})
        spec = ENDPOINTS.get(path)
        if spec is None or spec[0] != method:
            code, msg = ERRORS["no_service"]
            return _Reply(404, {"rt_cd": "1", "msg_cd": code, "msg1": msg})
        if (err := self._check_auth(domain, headers)) is not None:
            return err
        tr_id = headers.get("tr_id", "")
        if tr_id not in spec[1][domain]:
            if domain == "real" and tr_id in VIRTUAL_ONLY_TR:
                return self._gw_error("not_real_tr")
            if domain == "virtual" and tr_id in REAL_ONLY_TR:
                return self._gw_error("not_virtual_tr")
            return self._gw_error("bad_tr_id")
        up = {k.upper(): v for k, v in params.items()}
        b = {k.upper(): v for k, v in body.items()} if isinstance(body, dict) else {}
        cont = headers.get("tr_cont", "") == "N"
        handlers: dict[str, Any] = {
            P_PRICE: lambda: self._price(up),
            P_DETAIL: lambda: self._price_detail(up),
            P_DAILY: lambda: self._dailyprice(up),
            P_INFO: lambda: self._search_info(up),
            P_KR_PRICE: lambda: self._ok({"output": {"stck_prpr": "0", "stck_shrn_iscd": ""}},
                                         "ok_quote"),
            P_ORDER: lambda: self._order(domain, tr_id, b),
            P_RVSECNCL: lambda: self._rvsecncl(domain, b),
            P_CCNL: lambda: self._ccnl(domain, up, cont),
            P_NCCS: lambda: self._nccs(domain, up, cont),
            P_PRESENT: lambda: self._present_balance(domain, up),
            P_BALANCE: lambda: self._balance(domain, up, cont),
            P_PSAMOUNT: lambda: self._psamount(domain, up),
        }
        return handlers[path]()

    # -- auth ------------------------------------------------------------------------------------
    def _key_error(self, domain: Domain, appkey: str | None, secret: str | None,
                   token_endpoint: bool) -> _Reply | None:
        own = self.creds[domain]
        other = self.creds["virtual" if domain == "real" else "real"]
        if other is not None and appkey == other.appkey:
            name = "not_real_tr" if domain == "real" else "not_virtual_key"
        elif own is None or appkey != own.appkey:
            name = "bad_appkey"
        elif secret != own.secretkey:
            name = "bad_secret"
        else:
            return None
        return self._token_error(name) if token_endpoint else self._gw_error(name)

    def _token(self, domain: Domain, body: dict[str, Any]) -> _Reply:
        appkey, secret = body.get("appkey"), body.get("appsecret")
        if (err := self._key_error(domain, appkey, secret, True)) is not None:
            return err
        assert appkey is not None
        now = self.now
        last = self._last_issue.get(appkey)
        if last is not None and 0 <= (now - last).total_seconds() < self.token_min_interval:
            return self._token_error("token_limit")
        self._last_issue[appkey] = now
        n = next(self._token_seq)
        tok = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzUxMiJ9." + hashlib.sha256(
            f"{domain}:{appkey}:{n}".encode()).hexdigest() + f".fake{domain}{n}"
        expires = now + self.token_validity
        self._tokens[tok] = _Token(tok, domain, appkey, now, expires)
        shown = (datetime.now(UTC) + self.token_validity if self.expiry_in_wall_time else expires)
        return _Reply(200, {
            "access_token": tok,
            "access_token_token_expired": shown.astimezone(KST).strftime("%Y-%m-%d %H:%M:%S"),
            "token_type": "Bearer",
            "expires_in": int(self.token_validity.total_seconds()),
        })

    def _check_auth(self, domain: Domain, headers: dict[str, str]) -> _Reply | None:
        if (err := self._key_error(domain, headers.get("appkey"), headers.get("appsecret"),
                                   False)) is not None:
            return err
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        tok = self._tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if tok is None or tok.domain != domain or tok.appkey != headers.get("appkey"):
            code = self.unknown_token_code
            msg = dict(ERRORS.values()).get(code, "유효하지 않은 token 입니다.")
            return _Reply(500, {"rt_cd": "1", "msg_cd": code, "msg1": msg})
        if self.now >= tok.expires:
            return self._gw_error("token_expired")
        return None

    # -- market data ----------------------------------------------------------------------------
    def _lookup(self, excd: str, symb: str) -> _Symbol | None:
        s = self._symbols.get(symb)
        return s if s is not None and s.exchange == excd else None

    def _ny_today(self) -> date:
        return self.now.astimezone(NEW_YORK).date()

    def _visible_bars(self, s: _Symbol, adjusted: bool
                      ) -> list[Bar]:
        rows = s.adjusted if adjusted and s.adjusted is not None else s.raw
        today = self._ny_today()
        return [r for r in rows if r[0] <= today]

    def _prev_close(self, s: _Symbol) -> Decimal:
        today = self._ny_today()
        prev = [r for r in s.raw if r[0] < today]
        return prev[-1][4] if prev else s.last

    def _today_bar(self, s: _Symbol) -> Bar | None:
        today = self._ny_today()
        return next((r for r in s.raw if r[0] == today), None)

    @staticmethod
    def _sign(diff: Decimal) -> str:
        return "2" if diff > 0 else "5" if diff < 0 else "3"

    def _price(self, p: dict[str, str]) -> _Reply:
        s = self._lookup(p.get("EXCD", ""), p.get("SYMB", ""))
        keys = ("rsym", "zdiv", "base", "pvol", "last", "sign", "diff", "rate", "tvol", "tamt",
                "ordy")
        if s is None:
            return self._ok({"output": dict.fromkeys(keys, "")}, "ok_quote")
        base = self._prev_close(s)
        bar = self._today_bar(s)
        diff = s.last - base
        vol = bar[5] if bar else 0
        return self._ok({"output": {
            "rsym": f"D{s.exchange}{s.symbol}", "zdiv": "4", "base": _p4(base), "pvol": "0",
            "last": _p4(s.last), "sign": self._sign(diff), "diff": _p4(abs(diff)),
            "rate": _p2(diff / base * 100 if base else 0), "tvol": str(vol),
            "tamt": _p2(s.last * vol), "ordy": "매수가능"}}, "ok_quote")

    def _price_detail(self, p: dict[str, str]) -> _Reply:
        s = self._lookup(p.get("EXCD", ""), p.get("SYMB", ""))
        keys = ("rsym pvol open high low last base tomv pamt uplp dnlp h52p h52d l52p l52d "
                "perx pbrx epsx bpsx shar mcap curr zdiv vnit t_xprc t_xdif t_xrat p_xprc p_xdif "
                "p_xrat t_rate p_rate t_xsgn p_xsng e_ordyn e_hogau e_icod e_parp tvol tamt "
                "etyp_nm").split()
        if s is None:
            return self._ok({"output": dict.fromkeys(keys, "")}, "ok_quote")
        base = self._prev_close(s)
        bar = self._today_bar(s)
        o, hi, lo, vol = ((bar[1], max(bar[2], s.last), min(bar[3], s.last), bar[5]) if bar
                          else (s.last, s.last, s.last, 0))
        diff = s.last - base
        rows = self._visible_bars(s, False)[-252:]
        h52 = max(rows, key=lambda r: r[2]) if rows else None
        l52 = min(rows, key=lambda r: r[3]) if rows else None
        out = {
            "rsym": f"D{s.exchange}{s.symbol}", "pvol": "0", "open": _p4(o), "high": _p4(hi),
            "low": _p4(lo), "last": _p4(s.last), "base": _p4(base), "tomv": "0", "pamt": "0",
            "uplp": _p4(base * Decimal("1.3")), "dnlp": _p4(base * Decimal("0.7")),
            "h52p": _p4(h52[2] if h52 else s.last),
            "h52d": (h52[0] if h52 else self._ny_today()).strftime("%Y%m%d"),
            "l52p": _p4(l52[3] if l52 else s.last),
            "l52d": (l52[0] if l52 else self._ny_today()).strftime("%Y%m%d"),
            "perx": "0.00", "pbrx": "0.00", "epsx": "0.00", "bpsx": "0.00", "shar": "0",
            "mcap": "0", "curr": "USD", "zdiv": "4", "vnit": "1",
            "t_xprc": _p2(s.last * self.usd_krw), "t_xdif": _p2(diff * self.usd_krw),
            "t_xrat": _p2(diff / base * 100 if base else 0),
            "p_xprc": _p2(base * self.usd_krw), "p_xdif": "0", "p_xrat": "0.00",
            "t_rate": _p2(self.usd_krw), "p_rate": _p2(self.usd_krw),
            "t_xsgn": self._sign(diff), "p_xsng": "3", "e_ordyn": "매매 가능",
            "e_hogau": "0.0100" if s.last >= 1 else "0.0001", "e_icod": "FAKE SECTOR",
            "e_parp": "0.0000", "tvol": str(vol), "tamt": _p2(s.last * vol), "etyp_nm": "",
        }
        return self._ok({"output": out}, "ok_quote")

    def _dailyprice(self, p: dict[str, str]) -> _Reply:
        s = self._lookup(p.get("EXCD", ""), p.get("SYMB", ""))
        if s is None:
            return self._ok({"output1": {"rsym": "", "zdiv": "", "nrec": ""}, "output2": []},
                            "ok_quote")
        rows = self._visible_bars(s, p.get("MODP") == "1")
        gubn = p.get("GUBN", "0")
        if gubn in ("1", "2"):
            rows = _resample(rows, weekly=gubn == "1")
        bymd = p.get("BYMD", "").strip()
        cursor = datetime.strptime(bymd, "%Y%m%d").date() if bymd else self._ny_today()
        older = [r for r in rows if r[0] <= cursor]
        page = older[::-1][: self.bars_page_size]
        prev_close = {r[0]: rows[i - 1][4] for i, r in enumerate(rows) if i > 0}
        out2 = []
        for d, o, hi, lo, c, v in page:
            pc = prev_close.get(d, c)
            diff = c - pc
            out2.append({"xymd": d.strftime("%Y%m%d"), "clos": _p4(c), "sign": self._sign(diff),
                         "diff": _p4(abs(diff)), "rate": _p2(diff / pc * 100 if pc else 0),
                         "open": _p4(o), "high": _p4(hi), "low": _p4(lo), "tvol": str(v),
                         "tamt": _p2(c * v), "pbid": _p4(c), "vbid": "0", "pask": _p4(c),
                         "vask": "0"})
        more = len(older) > len(page)
        return self._ok({"output1": {"rsym": f"D{s.exchange}{s.symbol}", "zdiv": "4",
                                     "nrec": str(len(out2))}, "output2": out2},
                        "ok_quote", tr_cont="M" if more else "D")

    def _search_info(self, p: dict[str, str]) -> _Reply:
        s = self._symbols.get(p.get("PDNO", ""))
        ptype = p.get("PRDT_TYPE_CD", "")
        if s is None or TYPE_TO_SHORT.get(ptype) != s.exchange:
            return self._api_error(*ERRORS["no_data"], rt_cd="7")
        return self._ok({"output": {
            "pdno": s.symbol, "prdt_type_cd": ptype, "shtn_pdno": s.symbol,
            "std_pdno": f"US{hashlib.md5(s.symbol.encode()).hexdigest()[:9].upper()}0",
            "prdt_abrv_name": s.name, "prdt_name": s.name, "prdt_name120": s.name,
            "prdt_eng_name": s.name, "prdt_eng_abrv_name": s.name, "prdt_eng_name120": s.name,
            "ovrs_excg_cd": EXCHANGES[s.exchange][0], "tr_crcy_cd": "USD",
            "natn_cd": "840", "natn_name": "미국"}})

    # -- orders ----------------------------------------------------------------------------------
    def _excg(self, symbol: str) -> str:
        return EXCHANGES[self._symbols[symbol].exchange][0]

    def _account_ok(self, domain: Domain, fields: dict[str, Any]) -> bool:
        acct = self.accounts.get(domain)
        return (acct is not None and fields.get("CANO") == acct.creds.cano
                and fields.get("ACNT_PRDT_CD") == acct.creds.product)

    def _reserved_cash(self, domain: Domain) -> Decimal:
        return sum((o.remaining * o.price * (1 + self.commission_rate)
                    for o in self.orders.values()
                    if o.domain == domain and o.side == "buy" and o.kind != "cancel"),
                   Decimal(0))

    def _reserved_qty(self, domain: Domain, symbol: str) -> int:
        return sum(o.remaining for o in self.orders.values()
                   if o.domain == domain and o.side == "sell" and o.symbol == symbol
                   and o.kind != "cancel")

    def _orderable_qty(self, domain: Domain, symbol: str) -> int:
        h = self.accounts[domain].holdings.get(symbol)
        return (h.qty if h else 0) - self._reserved_qty(domain, symbol)

    def _new_order(self, domain: Domain, symbol: str, excg: str, side: Literal["buy", "sell"],
                   qty: int, price: Decimal, ord_dvsn: str, kind: Literal[
                       "order", "modify", "cancel"] = "order", orgn: str = "") -> FakeOrder:
        odno = f"{30_000_000 + next(self._odno_seq):010d}"
        o = FakeOrder(odno, domain, symbol, excg, side, qty, price, ord_dvsn, self.now, kind, orgn)
        if kind == "cancel":
            o.status = "done"
        self.orders[odno] = o
        return o

    def _order_answer(self, o: FakeOrder) -> _Reply:
        return self._ok({"output": {"KRX_FWDG_ORD_ORGNO": "01790", "ODNO": o.odno,
                                    "ORD_TMD": o.placed_at.astimezone(KST).strftime("%H%M%S")}},
                        "ok_order")

    def _order(self, domain: Domain, tr_id: str, b: dict[str, Any]) -> _Reply:
        if not self._account_ok(domain, b):
            return self._api_error(*ERRORS["account"])
        side: Literal["buy", "sell"] = "buy" if tr_id in BUY_TR else "sell"
        sll_type = str(b.get("SLL_TYPE", ""))
        if (side == "sell") != (sll_type == "00"):
            return self._api_error(*ERRORS["ord_dvsn"])
        ord_dvsn = str(b.get("ORD_DVSN", ""))
        allowed = ({"00"} if domain == "virtual" else
                   {"00", "32", "34"} if side == "buy" else {"00", "31", "32", "33", "34"})
        if ord_dvsn not in allowed:
            return self._gw_error("ord_dvsn")
        symbol, excg = str(b.get("PDNO", "")), str(b.get("OVRS_EXCG_CD", ""))
        s = self._symbols.get(symbol)
        if s is None or EXCHANGES[s.exchange][0] != excg:
            return self._api_error(*ERRORS["no_symbol"])
        try:
            qty = int(str(b.get("ORD_QTY", "0")))
            price = _d(str(b.get("OVRS_ORD_UNPR", "0")))
        except (ValueError, ArithmeticError):
            return self._api_error(*ERRORS["bad_qty"])
        if qty <= 0:
            return self._api_error(*ERRORS["bad_qty"])
        if ord_dvsn in ("00", "32", "34") and price < Decimal("0.01"):
            return self._api_error(*ERRORS["min_price"])
        tick = Decimal("0.01") if price >= 1 else Decimal("0.0001")
        if price % tick != 0:
            return self._api_error(*ERRORS["tick"])
        if not self.market_open():
            return self._api_error(*self.market_closed_answer[domain])
        if side == "buy":
            avail = self.accounts[domain].cash - self._reserved_cash(domain)
            if qty * price * (1 + self.commission_rate) > avail:
                return self._api_error(*ERRORS["funds"])
        elif qty > self._orderable_qty(domain, symbol):
            return self._api_error(*ERRORS["qty"])
        o = self._new_order(domain, symbol, excg, side, qty, price, ord_dvsn)
        if ord_dvsn == "00":
            self._auto_fill(o, full=self.fill_mode == "immediate")
        return self._order_answer(o)

    def _rvsecncl(self, domain: Domain, b: dict[str, Any]) -> _Reply:
        if not self._account_ok(domain, b):
            return self._api_error(*ERRORS["account"])
        orig = self.orders.get(str(b.get("ORGN_ODNO", "")))
        if (orig is None or orig.domain != domain or orig.status != "open"
                or orig.symbol != b.get("PDNO") or orig.exchange != b.get("OVRS_EXCG_CD")):
            return self._api_error(*ERRORS["no_order"])
        if not self.market_open():
            return self._api_error(*self.market_closed_answer[domain])
        dvsn = str(b.get("RVSE_CNCL_DVSN_CD", ""))
        remaining = orig.remaining
        if dvsn == "02":
            row = self._new_order(domain, orig.symbol, orig.exchange, orig.side, remaining,
                                  orig.price, orig.ord_dvsn, "cancel", orig.odno)
            self._close_order(orig, "cancelled")
            return self._order_answer(row)
        if dvsn == "01":
            try:
                qty = int(str(b.get("ORD_QTY", "0")))
                price = _d(str(b.get("OVRS_ORD_UNPR", "0")))
            except (ValueError, ArithmeticError):
                return self._api_error(*ERRORS["bad_qty"])
            if not 0 < qty <= remaining or price < Decimal("0.01"):
                return self._api_error(*ERRORS["bad_qty"])
            self._close_order(orig, "replaced")
            new = self._new_order(domain, orig.symbol, orig.exchange, orig.side, qty, price,
                                  orig.ord_dvsn, "modify", orig.odno)
            self._auto_fill(new, full=self.fill_mode == "immediate")
            return self._order_answer(new)
        return self._gw_error("ord_dvsn")

    def _marketable(self, o: FakeOrder) -> bool:
        last = self._symbols[o.symbol].last
        return o.price >= last if o.side == "buy" else o.price <= last

    def _auto_fill(self, o: FakeOrder, full: bool) -> None:
        if self.fill_mode == "never" or o.status != "open" or o.ord_dvsn != "00":
            return
        if not self.market_open():
            return
        if not self._marketable(o):
            return
        q = o.remaining if full else min(self.partial_qty, o.remaining)
        if q > 0:
            self._apply_fill(o, q, self._symbols[o.symbol].last)

    def _apply_fill(self, o: FakeOrder, qty: int, price: Decimal) -> None:
        acct = self.accounts[o.domain]
        gross = qty * price
        fee = (gross * self.commission_rate).quantize(Decimal("0.01"))
        acct.fees += fee
        h = acct.holdings.setdefault(o.symbol, _Holding(o.symbol))
        if o.side == "buy":
            acct.cash -= gross + fee
            h.qty += qty
            h.cost += gross
        else:
            avg = h.cost / h.qty if h.qty else Decimal(0)
            acct.cash += gross - fee
            acct.realized += (price - avg) * qty
            h.qty -= qty
            h.cost -= avg * qty
            if h.qty <= 0:
                acct.holdings.pop(o.symbol, None)
        o.fills.append((qty, price, self.now))
        if o.filled_qty >= o.qty:
            o.status = "filled"

    def _close_order(self, o: FakeOrder, status: str) -> None:
        if o.status != "open":
            raise ValueError(f"order {o.odno} is {o.status}")
        o.closed_qty = o.remaining
        o.status = status

    def _sweep(self) -> None:
        "Day orders: whatever is still open at the close of its session expires."
        now = self.now
        for o in self.orders.values():
            if o.status != "open":
                continue
            d = o.placed_at.astimezone(NEW_YORK).date()
            try:
                close = session_open_close(d)[1]
            except ValueError:  # seeded outside a session (place_order): never expires by itself
                continue
            if now >= close:
                self._close_order(o, "expired")

    # -- account queries -------------------------------------------------------------------------
    def _paged(self, rows: list[dict[str, Any]], p: dict[str, str], cont: bool, fk: str
               ) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
        nk = p.get("CTX_AREA_NK200", "").strip()
        start = int(nk) if cont and nk.isdigit() else 0
        page = rows[start: start + self.page_size]
        nxt = start + len(page)
        more = nxt < len(rows)
        ctx = {"ctx_area_fk200": fk, "ctx_area_nk200": str(nxt) if more else ""}
        return page, ctx, "M" if more else "D"

    def _row(self, o: FakeOrder) -> dict[str, Any]:
        s = self._symbols.get(o.symbol)
        ny = o.placed_at.astimezone(NEW_YORK)
        kst = o.placed_at.astimezone(KST)
        cancel = o.kind == "cancel"  # a cancel request row: nothing of it is "executed"
        ccld = 0 if cancel else o.filled_qty
        nccs = 0 if cancel else o.remaining
        state = ("거부" if o.status == "rejected" else "완료" if cancel or o.status != "open"
                 else "접수")
        return {
            "ord_dt": ny.strftime("%Y%m%d"), "ord_gno_brno": "01790", "odno": o.odno,
            "orgn_odno": o.orgn_odno, "sll_buy_dvsn_cd": "02" if o.side == "buy" else "01",
            "sll_buy_dvsn_cd_name": "매수" if o.side == "buy" else "매도",
            "rvse_cncl_dvsn": {"order": "00", "modify": "01", "cancel": "02"}[o.kind],
            "rvse_cncl_dvsn_name": {"order": "", "modify": "정정", "cancel": "취소"}[o.kind],
            "pdno": o.symbol, "prdt_name": s.name if s else o.symbol,
            "ft_ord_qty": str(o.qty), "ft_ord_unpr3": _p4(o.price),
            "ft_ccld_qty": str(ccld), "ft_ccld_unpr3": _p4(o.avg_fill_price),
            "ft_ccld_amt3": _p2(o.fill_amount), "nccs_qty": str(nccs), "prcs_stat_name": state,
            "rjct_rson": "", "rjct_rson_name": "", "ord_tmd": ny.strftime("%H%M%S"),
            "tr_mket_name": EXCHANGES[ORDER_CODE_TO_SHORT[o.exchange]][2], "tr_crcy_cd": "USD",
            "tr_natn": "840", "tr_natn_name": "미국", "natn_cd": "840", "ovrs_excg_cd": o.exchange,
            "dmst_ord_dt": kst.strftime("%Y%m%d"), "thco_ord_tmd": kst.strftime("%H%M%S"),
            "loan_type_cd": "10", "loan_dt": "", "mdia_dvsn_name": "OpenAPI",
            "usa_amk_exts_rqst_yn": "N", "splt_buy_attr_name": "",
            "rvse_cncl_dvsn_cd": {"order": "00", "modify": "01", "cancel": "02"}[o.kind],
        }

    @staticmethod
    def _excg_filter(code: str, exchange: str, exact: bool) -> bool:
        "'', '%' = all; NASD = all US unless `exact` (virtual balance); else that exchange."
        if code in ("", "%"):
            return True
        if code == "NASD" and not exact:
            return True
        return code == exchange

    def _ccnl(self, domain: Domain, p: dict[str, str], cont: bool) -> _Reply:
        if not self._account_ok(domain, p):
            return self._api_error(*ERRORS["account"])
        start = p.get("ORD_STRT_DT", "") or "00000000"
        end = p.get("ORD_END_DT", "") or "99999999"
        pdno, sb, cn = p.get("PDNO", ""), p.get("SLL_BUY_DVSN", "00"), p.get("CCLD_NCCS_DVSN", "00")
        rows = []
        for o in self.orders.values():
            if o.domain != domain or not self._excg_filter(p.get("OVRS_EXCG_CD", ""), o.exchange,
                                                           False):
                continue
            r = self._row(o)
            if not start <= r["ord_dt"] <= end or pdno not in ("", "%", o.symbol):
                continue
            if sb in ("01", "02") and r["sll_buy_dvsn_cd"] != sb:
                continue
            if (cn == "01" and int(r["ft_ccld_qty"]) == 0) or (cn == "02" and r["nccs_qty"] == "0"):
                continue
            rows.append((o.placed_at, o.odno, r))
        rows.sort(key=lambda x: (x[0], x[1]), reverse=p.get("SORT_SQN", "DS") == "AS")
        page, ctx, more = self._paged([r for _, _, r in rows], p, cont, f"{start}{end}{pdno}")
        return self._ok({**ctx, "output": page}, "ok_more" if more == "M" else "ok_query", more)

    def _nccs(self, domain: Domain, p: dict[str, str], cont: bool) -> _Reply:
        if not self._account_ok(domain, p):
            return self._api_error(*ERRORS["account"])
        rows = [self._row(o) for o in sorted(self.orders.values(), key=lambda o: o.placed_at)
                if o.domain == domain and o.status == "open" and o.kind != "cancel"
                and self._excg_filter(p.get("OVRS_EXCG_CD", ""), o.exchange, False)]
        page, ctx, more = self._paged(rows, p, cont, p.get("OVRS_EXCG_CD", ""))
        return self._ok({**ctx, "output": page}, "ok_more" if more == "M" else "ok_query", more)

    def _holding_rows(self, domain: Domain) -> list[tuple[_Holding, _Symbol | None, Decimal]]:
        out = []
        for h in sorted(self.accounts[domain].holdings.values(), key=lambda h: h.symbol):
            s = self._symbols.get(h.symbol)
            out.append((h, s, s.last if s else (h.cost / h.qty if h.qty else Decimal(0))))
        return out

    def _present_balance(self, domain: Domain, p: dict[str, str]) -> _Reply:
        if not self._account_ok(domain, p):
            return self._api_error(*ERRORS["account"])
        acct = self.accounts[domain]
        rate = self.usd_krw
        us = p.get("NATN_CD", "000") in ("000", "840", "")
        out1 = []
        for h, s, last in (self._holding_rows(domain) if us else []):
            excg = EXCHANGES[s.exchange][0] if s else "NASD"
            value = last * h.qty
            out1.append({
                "prdt_name": s.name if s else h.symbol, "cblc_qty13": str(h.qty),
                "thdt_buy_ccld_qty1": "0", "thdt_sll_ccld_qty1": "0",
                "ccld_qty_smtl1": str(h.qty), "ord_psbl_qty1": str(self._orderable_qty(
                    domain, h.symbol)), "frcr_pchs_amt": _p4(h.cost), "frcr_evlu_amt2": _p4(value),
                "evlu_pfls_amt2": _p4(value - h.cost),
                "evlu_pfls_rt1": _p2((value - h.cost) / h.cost * 100 if h.cost else 0),
                "pdno": h.symbol, "bass_exrt": _p4(rate), "buy_crcy_cd": "USD",
                "ovrs_now_pric1": _p4(last), "avg_unpr3": _p4(h.cost / h.qty),
                "tr_mket_name": EXCHANGES[ORDER_CODE_TO_SHORT[excg]][2], "natn_kor_name": "미국",
                "pchs_rmnd_wcrc_amt": _p2(h.cost * rate), "thdt_buy_ccld_frcr_amt": "0",
                "thdt_sll_ccld_frcr_amt": "0", "unit_amt": "1", "std_pdno": "",
                "prdt_type_cd": EXCHANGES[ORDER_CODE_TO_SHORT[excg]][1], "scts_dvsn_name": "",
                "loan_rmnd": "0", "loan_dt": "", "loan_expd_dt": "", "ovrs_excg_cd": excg,
                "item_lnkg_excg_cd": excg})
        reserved = self._reserved_cash(domain)
        stock_value = sum((last * h.qty for h, _, last in self._holding_rows(domain)), Decimal(0))
        cost = sum((h.cost for h, _, _ in self._holding_rows(domain)), Decimal(0))
        out2 = [{
            "crcy_cd": "USD", "crcy_cd_name": "미국 달러", "frcr_buy_amt_smtl": "0",
            "frcr_sll_amt_smtl": "0", "frcr_dncl_amt_2": _p2(acct.cash),
            "frst_bltn_exrt": _p4(rate), "frcr_buy_mgn_amt": _p2(reserved),
            "frcr_etc_mgna": "0.00", "frcr_drwg_psbl_amt_1": _p2(acct.cash - reserved),
            "frcr_evlu_amt2": _p2(acct.cash * rate), "acpl_cstd_crcy_yn": "N",
            "nxdy_frcr_drwg_psbl_amt": _p2(acct.cash - reserved)}]
        out3 = {
            "pchs_amt_smtl": _p2(cost * rate), "evlu_amt_smtl": _p2(stock_value * rate),
            "evlu_pfls_amt_smtl": _p2((stock_value - cost) * rate), "dncl_amt": "0",
            "cma_evlu_amt": "0", "tot_dncl_amt": _p2(acct.cash * rate), "etc_mgna": "0",
            "wdrw_psbl_tot_amt": _p2((acct.cash - reserved) * rate),
            "frcr_evlu_tota": _p2((acct.cash + stock_value) * rate),
            "evlu_erng_rt1": _p2((stock_value - cost) / cost * 100 if cost else 0),
            "pchs_amt_smtl_amt": _p2(cost * rate), "evlu_amt_smtl_amt": _p2(stock_value * rate),
            "tot_evlu_pfls_amt": _p2((stock_value - cost) * rate),
            "tot_asst_amt": _p2((acct.cash + stock_value) * rate), "buy_mgn_amt": "0",
            "mgna_tota": "0", "frcr_use_psbl_amt": _p2(acct.cash - reserved),
            "ustl_sll_amt_smtl": "0", "ustl_buy_amt_smtl": "0", "tot_frcr_cblc_smtl": "0",
            "tot_loan_amt": "0"}
        return self._ok({"output1": out1, "output2": out2, "output3": out3})

    def _balance(self, domain: Domain, p: dict[str, str], cont: bool) -> _Reply:
        if not self._account_ok(domain, p):
            return self._api_error(*ERRORS["account"])
        acct = self.accounts[domain]
        code = p.get("OVRS_EXCG_CD", "")
        rows = []
        for h, s, last in self._holding_rows(domain):
            excg = EXCHANGES[s.exchange][0] if s else "NASD"
            if not self._excg_filter(code, excg, exact=domain == "virtual"):
                continue
            value = last * h.qty
            rows.append({
                "cano": acct.creds.cano, "acnt_prdt_cd": acct.creds.product,
                "prdt_type_cd": EXCHANGES[ORDER_CODE_TO_SHORT[excg]][1], "ovrs_pdno": h.symbol,
                "ovrs_item_name": s.name if s else h.symbol,
                "frcr_evlu_pfls_amt": _p4(value - h.cost),
                "evlu_pfls_rt": _p2((value - h.cost) / h.cost * 100 if h.cost else 0),
                "pchs_avg_pric": _p4(h.cost / h.qty), "ovrs_cblc_qty": str(h.qty),
                "ord_psbl_qty": str(self._orderable_qty(domain, h.symbol)),
                "frcr_pchs_amt1": _p4(h.cost), "ovrs_stck_evlu_amt": _p4(value),
                "now_pric2": _p4(last), "tr_crcy_cd": "USD", "ovrs_excg_cd": excg,
                "loan_type_cd": "10", "loan_dt": "", "expd_dt": ""})
        page, ctx, more = self._paged(rows, p, cont, code)
        cost = sum((h.cost for h, _, _ in self._holding_rows(domain)), Decimal(0))
        out2 = {"frcr_pchs_amt1": _p2(cost), "ovrs_rlzt_pfls_amt": _p2(acct.realized),
                "ovrs_tot_pfls": _p2(acct.realized), "rlzt_erng_rt": "0.00",
                "tot_evlu_pfls_amt": "0.00", "tot_pftrt": "0.00",
                "frcr_buy_amt_smtl1": "0.00", "ovrs_rlzt_pfls_amt2": _p2(acct.realized),
                "frcr_buy_amt_smtl2": "0.00"}
        return self._ok({**ctx, "output1": page, "output2": out2},
                        "ok_more" if more == "M" else "ok_query", more)

    def _psamount(self, domain: Domain, p: dict[str, str]) -> _Reply:
        if not self._account_ok(domain, p):
            return self._api_error(*ERRORS["account"])
        s = self._symbols.get(p.get("ITEM_CD", ""))
        if s is None:
            return self._api_error(*ERRORS["no_data"], rt_cd="7")
        try:
            price = _d(p.get("OVRS_ORD_UNPR", "0") or "0")
        except ArithmeticError:
            price = Decimal(0)
        price = price if price > 0 else s.last
        avail = self.accounts[domain].cash - self._reserved_cash(domain)
        qty = int((avail / (price * (1 + self.commission_rate))).to_integral_value(ROUND_FLOOR))
        qty = max(qty, 0)
        return self._ok({"output": {
            "tr_crcy_cd": "USD", "ord_psbl_frcr_amt": _p2(avail), "sll_ruse_psbl_amt": "0.00",
            "ovrs_ord_psbl_amt": _p2(avail), "max_ord_psbl_qty": str(qty),
            "echm_af_ord_psbl_amt": "0.00", "echm_af_ord_psbl_qty": "0",
            "ord_psbl_qty": str(qty), "exrt": _p4(self.usd_krw),
            "frcr_ord_psbl_amt1": _p2(avail), "ovrs_max_ord_psbl_qty": str(qty)}})

    # -- debugging -------------------------------------------------------------------------------
    def dump(self) -> Iterator[str]:
        "One line per logged request (for assertion messages)."
        for r in self.log:
            yield (f"{r.t:.3f} {r.domain:7} {r.method:4} {r.path} tr_id={r.tr_id} "
                   f"-> {r.status} {r.msg_cd or ''} {r.fault or ''}")


def _resample(rows: list[Bar], weekly: bool
              ) -> list[Bar]:
    "Weekly (ISO week) or monthly bars stamped with the period's last trading date."
    groups: dict[tuple[int, int], list[Bar]] = {}
    for r in rows:
        k = (r[0].isocalendar()[0], r[0].isocalendar()[1]) if weekly else (r[0].year, r[0].month)
        groups.setdefault(k, []).append(r)
    out = []
    for g in groups.values():
        out.append((g[-1][0], g[0][1], max(x[2] for x in g), min(x[3] for x in g), g[-1][4],
                    sum(x[5] for x in g)))
    return sorted(out)
