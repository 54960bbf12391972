"""Market calendar: DST edges seen from Seoul, convention edges, and properties over 2000–2026."""

from __future__ import annotations

import warnings
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockstock import calendar as mcal

REASONS = {"weekend", "holiday", "before_open", "after_close", "early_close_done"}


def test_module_does_not_shadow_stdlib_calendar() -> None:
    import calendar

    assert mcal.__name__ == "stockstock.calendar"
    assert calendar is not mcal and hasattr(calendar, "monthrange")
    assert calendar.monthrange(2024, 2) == (3, 29)


# --- DST edges, as the owner in Seoul sees them -----------------------------------------------
# US DST 2024: starts Sun 10 March, ends Sun 3 November. Korea has no DST.
# Winter (EST): session 23:30–06:00 KST. Summer (EDT): 22:30–05:00 KST.
@pytest.mark.parametrize(
    ("kst", "is_open", "reason"),
    [
        # last winter session before the spring change (Fri 8 March, EST)
        ("2024-03-08 22:30", False, "before_open"),  # 08:30 EST
        ("2024-03-08 23:29", False, "before_open"),
        ("2024-03-08 23:30", True, None),  # 09:30 EST
        ("2024-03-09 05:59", True, None),  # 15:59 EST, Saturday morning in Seoul
        ("2024-03-09 06:00", False, "after_close"),  # 16:00 EST
        # the change itself falls on a weekend
        ("2024-03-10 22:30", False, "weekend"),  # Sunday 09:30 EDT
        ("2024-03-11 05:00", False, "weekend"),  # Sunday 16:00 EDT
        # first summer session (Mon 11 March, EDT)
        ("2024-03-11 22:29", False, "before_open"),
        ("2024-03-11 22:30", True, None),  # 09:30 EDT
        ("2024-03-12 04:59", True, None),
        ("2024-03-12 05:00", False, "after_close"),  # 16:00 EDT
        ("2024-03-12 05:30", False, "after_close"),  # would still be open in winter
        # last summer session before the autumn change (Fri 1 November, EDT)
        ("2024-11-01 22:30", True, None),
        ("2024-11-02 04:59", True, None),
        ("2024-11-02 05:00", False, "after_close"),
        ("2024-11-03 23:30", False, "weekend"),  # Sunday 09:30 EST
        # first winter session (Mon 4 November, EST)
        ("2024-11-04 22:30", False, "before_open"),  # 08:30 EST: summer habit is an hour early
        ("2024-11-04 23:29", False, "before_open"),
        ("2024-11-04 23:30", True, None),
        ("2024-11-05 05:30", True, None),  # 15:30 EST
        ("2024-11-05 06:00", False, "after_close"),
    ],
)
def test_dst_edges_in_kst(kst: str, is_open: bool, reason: str | None) -> None:
    ts = pd.Timestamp(kst, tz="Asia/Seoul")
    status = mcal.market_status(ts)
    assert (mcal.is_open(ts), status.is_open, status.reason) == (is_open, is_open, reason)


@pytest.mark.parametrize(
    ("day", "kst_open", "kst_close", "zone"),
    [
        ("2024-03-08", "2024-03-08 23:30", "2024-03-09 06:00", "EST"),
        ("2024-03-11", "2024-03-11 22:30", "2024-03-12 05:00", "EDT"),
        ("2024-11-01", "2024-11-01 22:30", "2024-11-02 05:00", "EDT"),
        ("2024-11-04", "2024-11-04 23:30", "2024-11-05 06:00", "EST"),
        ("2024-07-03", "2024-07-03 22:30", "2024-07-04 02:00", "EDT"),  # early close 13:00
        ("2024-11-29", "2024-11-29 23:30", "2024-11-30 03:00", "EST"),  # early close 13:00
        ("2013-01-02", "2013-01-02 23:30", "2013-01-03 06:00", "EST"),  # sim replay era
    ],
)
def test_session_hours_in_kst(day: str, kst_open: str, kst_close: str, zone: str) -> None:
    opens, closes = mcal.session_open_close(day)
    assert mcal.to_kst(opens).strftime("%Y-%m-%d %H:%M") == kst_open
    assert mcal.to_kst(closes).strftime("%Y-%m-%d %H:%M") == kst_close
    assert mcal.to_et(opens).strftime("%H:%M %Z") == f"09:30 {zone}"


# --- the [open, close) convention -------------------------------------------------------------
@pytest.mark.parametrize(
    ("et", "is_open", "reason"),
    [
        ("2024-03-11 09:29:59.999999", False, "before_open"),
        ("2024-03-11 09:30:00", True, None),
        ("2024-03-11 15:59:59.999999", True, None),
        ("2024-03-11 16:00:00", False, "after_close"),
        ("2024-11-29 12:59:59", True, None),
        ("2024-11-29 13:00:00", False, "early_close_done"),
        ("2024-11-29 16:00:00", False, "early_close_done"),
        ("2024-07-03 13:00:00", False, "early_close_done"),
        ("2024-11-28 12:00:00", False, "holiday"),  # Thanksgiving
        ("2024-07-04 12:00:00", False, "holiday"),
        ("2024-07-06 12:00:00", False, "weekend"),
    ],
)
def test_open_close_instants(et: str, is_open: bool, reason: str | None) -> None:
    ts = pd.Timestamp(et, tz="America/New_York")
    status = mcal.market_status(ts)
    assert (status.is_open, status.reason) == (is_open, reason)
    assert mcal.is_open(ts.to_pydatetime()) == is_open  # plain aware datetime works too


def test_early_close_day_after_thanksgiving() -> None:
    assert mcal.is_holiday("2024-11-28") and not mcal.is_session("2024-11-28")
    assert mcal.is_early_close("2024-11-29") and mcal.is_early_close(date(2024, 7, 3))
    assert not mcal.is_early_close("2024-11-27") and not mcal.is_early_close("2024-11-28")
    ts = pd.Timestamp("2024-11-29 14:00", tz="America/New_York")
    assert mcal.last_completed_session(ts) == date(2024, 11, 29)
    assert mcal.next_open(ts) == pd.Timestamp("2024-12-02 14:30", tz="UTC")
    assert mcal.describe_session("2024-11-29") == (
        "2024-11-29 (early close) 09:30–13:00 EST = 23:30–03:00 KST")


def test_holidays_regular_and_unscheduled() -> None:
    regular = ["2024-01-01", "2024-01-15", "2024-02-19", "2024-03-29", "2024-05-27",
               "2024-06-19", "2024-07-04", "2024-09-02", "2024-11-28", "2024-12-25"]
    assert all(mcal.is_holiday(d) for d in regular)
    assert len(mcal.sessions_between("2024-01-01", "2024-12-31")) == 252
    assert mcal.is_session("2021-06-18") and mcal.is_holiday("2023-06-19")  # Juneteenth from 2022
    unscheduled = ["2001-09-11", "2001-09-14", "2004-06-11", "2007-01-02", "2012-10-29",
                   "2012-10-30", "2018-12-05", "2025-01-09"]
    assert all(mcal.is_holiday(d) for d in unscheduled)
    assert mcal.previous_session("2001-09-17") == date(2001, 9, 10)
    assert mcal.next_session("2012-10-26") == date(2012, 10, 31)


def test_future_years_are_covered() -> None:
    # The hourly run must always find a next open: the calendar reaches two years ahead.
    now = datetime.now(UTC)
    assert mcal.next_open(now) > now
    christmas = date(now.year + 1, 12, 25)
    assert mcal.is_holiday(christmas) == (christmas.weekday() < 5)  # a weekend one isn't a holiday


@pytest.mark.parametrize(
    "call",
    [mcal.as_utc, mcal.to_et, mcal.to_kst, mcal.is_open, mcal.next_open, mcal.next_close,
     mcal.last_completed_session, mcal.market_status, mcal.format_instant],
)
def test_naive_instants_are_refused(call) -> None:
    with pytest.raises(ValueError, match="no time zone"):
        call(datetime(2024, 3, 11, 10, 0))


@pytest.mark.parametrize(
    "call", [mcal.is_session, mcal.is_holiday, mcal.is_early_close, mcal.next_session,
             mcal.previous_session, mcal.describe_session],
)
def test_date_helpers_refuse_instants(call) -> None:
    with pytest.raises(ValueError, match="not a date"):
        call(pd.Timestamp("2024-07-05 02:00", tz="Asia/Seoul"))  # Thursday in New York
    with pytest.raises(ValueError, match="outside the XNYS calendar"):
        call("1980-01-02")


def test_out_of_range_instants() -> None:
    with pytest.raises(ValueError, match="outside the XNYS calendar"):
        mcal.is_open("1985-06-03T15:00Z")
    with pytest.raises(ValueError, match="no XNYS session completed"):
        mcal.last_completed_session("1990-01-02T15:00Z")


# --- properties over random instants 2000–2026 --------------------------------------------------
instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2026, 12, 31),
                        timezones=st.just(UTC))
ONE_US = timedelta(microseconds=1)


@settings(max_examples=300, deadline=None, database=None)
@given(instants)
def test_next_open_and_close_properties(ts: datetime) -> None:
    nxt_open, nxt_close = mcal.next_open(ts), mcal.next_close(ts)
    assert nxt_open > ts and mcal.is_open(nxt_open) and not mcal.is_open(nxt_open - ONE_US)
    assert nxt_close > ts and not mcal.is_open(nxt_close) and mcal.is_open(nxt_close - ONE_US)
    assert mcal.is_open(ts) == (nxt_close < nxt_open)


@settings(max_examples=300, deadline=None, database=None)
@given(instants)
def test_market_status_properties(ts: datetime) -> None:
    status = mcal.market_status(ts)
    assert status.is_open == mcal.is_open(ts)
    assert (status.reason is None) == status.is_open and (status.reason in REASONS | {None})
    day = mcal.to_et(ts).date()
    assert status.session == (day if mcal.is_session(day) else None)
    if status.reason in ("weekend", "holiday"):
        assert (day.weekday() >= 5) == (status.reason == "weekend")
    if status.is_open:
        assert status.session is not None
        assert mcal.session_open_close(status.session)[1] == status.next_close
    done = mcal.last_completed_session(ts)
    assert mcal.session_open_close(done)[1] <= ts < mcal.session_open_close(
        mcal.next_session(done))[1]
    assert status.describe().startswith("open until" if status.is_open else "closed (")


@settings(max_examples=200, deadline=None, database=None)
@given(instants)
def test_is_open_agrees_with_exchange_calendars(ts: datetime) -> None:
    minute = pd.Timestamp(ts).floor("min")
    with warnings.catch_warnings():  # xcals 4.13 on pandas 3.1 warns on its own minute index
        warnings.simplefilter("ignore", DeprecationWarning)
        expected = mcal.get_calendar().is_open_on_minute(minute)
    assert mcal.is_open(minute) == expected


@settings(max_examples=200, deadline=None, database=None)
@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2026, 12, 31)))
def test_date_properties(d: date) -> None:
    weekend = d.weekday() >= 5
    assert sum([mcal.is_session(d), mcal.is_holiday(d), weekend]) == 1
    assert mcal.previous_session(d) < d < mcal.next_session(d)
    assert (mcal.next_session(mcal.previous_session(d)) == d) == mcal.is_session(d)
    window = mcal.sessions_between(d - timedelta(days=10), d + timedelta(days=10))
    assert (d in window) == mcal.is_session(d) and window == sorted(window)
    assert not mcal.is_early_close(d) or mcal.is_session(d)
