"""Session timing for trading in real time (vts, live): when orders may go out, when a day's bar
is final, and the clock that says what time it is.

A daily decision uses bars up to the last *final* bar; its orders go out at `order_time` of the
next session (market orders into continuous trading, as the backtester fills at the next open)
and no later than `order_cutoff` (before the 15:20 closing auction). A day's bar is final at
`bar_final` (after the 15:30 close; KIS's daily chart shows today's partial bar during the session).

The clock is a seam: `WallClock` is Seoul wall time; the local KIS simulator has a virtual
session clock (broker/sim/clock.py) so the same loop can be rehearsed in fast time.
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Protocol

from market.calendar import SEOUL


class Clock(Protocol):
    def now(self) -> dt.datetime:
        """Aware datetime (any zone; compared in Seoul time)."""

    def sleep(self, seconds: float) -> None: ...


class WallClock:
    def now(self) -> dt.datetime:
        return dt.datetime.now(SEOUL)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


@dataclass(frozen=True)
class SessionTimes:
    order_time: dt.time = dt.time(9, 0, 30)    # orders go out once continuous trading has begun
    order_cutoff: dt.time = dt.time(15, 15)    # none after this: the closing auction starts at 15:20
    bar_final: dt.time = dt.time(15, 45)       # the day's daily bar is complete from here on
    holidays: frozenset[dt.date] = field(default_factory=frozenset)  # weekday KRX holidays

    def __post_init__(self):
        if not self.order_time < self.order_cutoff < self.bar_final:
            raise ValueError(f"session times must satisfy order_time < order_cutoff < bar_final, got "
                             f"{self.order_time} / {self.order_cutoff} / {self.bar_final}")

    def is_session_day(self, day: dt.date) -> bool:
        return day.weekday() < 5 and day not in self.holidays

    def last_final_day(self, now: dt.datetime) -> dt.date:
        """Bars dated up to this day are final at `now`; today's counts only after `bar_final`."""
        local = now.astimezone(SEOUL)
        return local.date() if local.time() >= self.bar_final else local.date() - dt.timedelta(days=1)

    def next_session_day(self, after: dt.date) -> dt.date:
        day = after + dt.timedelta(days=1)
        while not self.is_session_day(day):
            day += dt.timedelta(days=1)
        return day

    def next_order_window(self, last_bar: dt.date, now: dt.datetime) -> dt.datetime:
        """When orders decided on `last_bar` may go out: `order_time` of the first session day after
        `last_bar` whose window has not closed yet at `now` (now itself when the window is open)."""
        local = now.astimezone(SEOUL)
        day = self.next_session_day(max(last_bar, local.date() - dt.timedelta(days=1)))  # today at the earliest
        if local >= dt.datetime.combine(day, self.order_cutoff, tzinfo=SEOUL):
            day = self.next_session_day(day)  # today's window has closed
        return max(dt.datetime.combine(day, self.order_time, tzinfo=SEOUL), local)

    def final_at(self, day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, self.bar_final, tzinfo=SEOUL)
