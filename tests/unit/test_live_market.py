"""Session timing and the real-time market state: orders only in the next session's window,
decisions only on final bars (never today's partial bar), re-adjusted history re-read whole."""
from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from actors.live_market import FeedStalled, LiveMarketState
from market.calendar import SEOUL
from market.session import SessionTimes


def kst(day: str, hhmm: str) -> dt.datetime:
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time.fromisoformat(hhmm), tzinfo=SEOUL)


class ManualClock:
    def __init__(self, now: dt.datetime):
        self.t, self.slept = now, []

    def now(self) -> dt.datetime:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += dt.timedelta(seconds=seconds)


class Exchange:
    """Daily bars a KIS-like feed serves: every bar up to `clock`'s now, today's as a partial bar
    during the session; `split` re-bases the history the way KIS's adjusted chart does."""

    def __init__(self, clock: ManualClock, days: list[dt.date], symbols=("005930", "000660")):
        self.clock, self.days, self.symbols, self.factor = clock, days, symbols, 1.0

    def price(self, i: int, s: str) -> float:
        return (100.0 + i) * (2 if s == "000660" else 1) / self.factor

    def __call__(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        now = self.clock.now()
        rows = [(d, i) for i, d in enumerate(self.days) if start <= d <= end
                and (d < now.date() or (d == now.date() and now.time() >= dt.time(9, 0)))]
        partial = [d == now.date() and now.time() < dt.time(15, 30) for d, _ in rows]
        close = [self.price(i, symbol) + (0.5 if p else 0) for (d, i), p in zip(rows, partial)]
        return pl.DataFrame({"date": [d for d, _ in rows], "symbol": [symbol] * len(rows), "open": close,
                             "high": close, "low": close, "close": close, "volume": [1.0] * len(rows)},
                            schema={"date": pl.Date, "symbol": pl.Utf8, "open": pl.Float64, "high": pl.Float64,
                                    "low": pl.Float64, "close": pl.Float64, "volume": pl.Float64})


WEEKDAYS = [d for d in (dt.date(2026, 9, 1) + dt.timedelta(days=i) for i in range(60)) if d.weekday() < 5]


def test_order_window_is_the_next_open_session():
    s = SessionTimes(holidays=frozenset({dt.date(2026, 10, 5)}))
    fri, mon, tue = dt.date(2026, 10, 2), dt.date(2026, 10, 5), dt.date(2026, 10, 6)
    # decided Friday evening: Monday is a holiday, so Tuesday 09:00:30
    assert s.next_order_window(fri, kst("2026-10-02", "20:00")) == kst("2026-10-06", "09:00:30")
    # started during Tuesday's session, Friday's bar the last final one: orders go out now
    assert s.next_order_window(fri, kst("2026-10-06", "11:00")) == kst("2026-10-06", "11:00")
    # after the cutoff nothing goes out today: the next session's window
    assert s.next_order_window(fri, kst("2026-10-06", "15:16")) == kst("2026-10-07", "09:00:30")
    assert s.next_order_window(tue, kst("2026-10-06", "15:50")) == kst("2026-10-07", "09:00:30")
    assert not s.is_session_day(mon) and s.is_session_day(tue) and not s.is_session_day(dt.date(2026, 10, 3))
    assert s.last_final_day(kst("2026-10-06", "15:44")) == mon
    assert s.last_final_day(kst("2026-10-06", "15:45")) == tue
    with pytest.raises(ValueError, match="order_time < order_cutoff < bar_final"):
        SessionTimes(order_time=dt.time(16, 0))


def test_snapshot_never_holds_todays_partial_bar():
    clock = ManualClock(kst("2026-10-14", "11:00"))
    feed = Exchange(clock, WEEKDAYS)
    m = LiveMarketState(feed, ["005930", "000660"], 10, clock, SessionTimes(), poll_s=60)
    assert m.today() == dt.date(2026, 10, 13)  # the 14th's bar is partial at 11:00
    snap = m.snapshot(10)
    assert snap["dates"][-1] == "2026-10-13" and len(snap["dates"]) == 10
    assert m.wait_for_order_window() == kst("2026-10-14", "11:00").isoformat()  # inside the window: now
    bar = m.advance()  # sleeps until the 14th's bar is final, then returns it
    assert bar["date"] == dt.date(2026, 10, 14) and clock.now() >= kst("2026-10-14", "15:45")
    i = WEEKDAYS.index(dt.date(2026, 10, 14))
    assert bar["bars"]["005930"][3] == feed.price(i, "005930")  # the final close, not the partial one


def test_waits_for_the_next_session_and_skips_listed_holidays():
    clock = ManualClock(kst("2026-10-02", "16:00"))  # Friday after the close
    days = [d for d in WEEKDAYS if d != dt.date(2026, 10, 5)]
    m = LiveMarketState(Exchange(clock, days), ["005930"], 5, clock,
                        SessionTimes(holidays=frozenset({dt.date(2026, 10, 5)})), poll_s=60)
    assert m.today() == dt.date(2026, 10, 2)
    m.wait_for_order_window()
    assert clock.now() == kst("2026-10-06", "09:00:30")
    assert m.advance()["date"] == dt.date(2026, 10, 6) and clock.now() == kst("2026-10-06", "15:45")


def test_unlisted_holiday_costs_polling_then_the_next_bar_arrives():
    clock = ManualClock(kst("2026-10-02", "16:00"))
    days = [d for d in WEEKDAYS if d != dt.date(2026, 10, 5)]
    m = LiveMarketState(Exchange(clock, days), ["005930"], 5, clock, SessionTimes(), poll_s=600)
    assert m.advance()["date"] == dt.date(2026, 10, 6)  # polled through the holiday Monday
    assert clock.now().date() == dt.date(2026, 10, 6) and clock.now().time() >= dt.time(15, 45)


def test_a_split_re_reads_the_whole_window_on_the_new_basis():
    clock = ManualClock(kst("2026-10-13", "16:00"))
    feed = Exchange(clock, WEEKDAYS)
    m = LiveMarketState(feed, ["005930"], 20, clock, SessionTimes(), poll_s=60)
    feed.factor = 2.0  # KIS re-adjusts every past bar after a 2:1 split
    m.wait_for_order_window()
    m.advance()
    closes = m.snapshot(20)["close"]
    expected = [feed.price(WEEKDAYS.index(dt.date.fromisoformat(d)), "005930") for d in m.snapshot(20)["dates"]]
    assert [row[0] for row in closes] == expected  # one basis throughout, none of the old prices


def test_a_dead_feed_is_reported_not_waited_on_forever():
    clock = ManualClock(kst("2026-10-02", "16:00"))
    feed = Exchange(clock, [d for d in WEEKDAYS if d <= dt.date(2026, 10, 2)])
    m = LiveMarketState(feed, ["005930"], 5, clock, SessionTimes(), poll_s=3600, stall_days=3)
    with pytest.raises(FeedStalled, match="no daily bar after 2026-10-02"):
        m.advance()


def test_days_budget_ends_the_loop():
    clock = ManualClock(kst("2026-10-02", "16:00"))
    m = LiveMarketState(Exchange(clock, WEEKDAYS), ["005930"], 5, clock, SessionTimes(), days=1)
    assert m.remaining() == 1
    assert m.advance() is not None and m.remaining() == 0 and m.advance() is None


def test_a_symbol_without_bars_is_named():
    clock = ManualClock(kst("2026-10-02", "16:00"))
    feed = Exchange(clock, WEEKDAYS)
    with pytest.raises(ValueError, match="no daily bars for 999999"):
        LiveMarketState(lambda s, a, b: feed(s, a, b).head(0) if s == "999999" else feed(s, a, b),
                        ["005930", "999999"], 5, clock, SessionTimes())
