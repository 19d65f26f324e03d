"""The KRX trading calendar (days the market traded) and Seoul-time decision stamps."""
from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np

SEOUL = ZoneInfo("Asia/Seoul")
MARKET_OPEN = dt.time(9, 0)
MARKET_CLOSE = dt.time(15, 30)


def decision_time(day: dt.date) -> dt.datetime:
    """A daily decision is made on the close of its bar: 15:30 KST that day."""
    return dt.datetime.combine(day, MARKET_CLOSE, tzinfo=SEOUL)


def open_time(day: dt.date) -> dt.datetime:
    """Orders decided the evening before execute at the open: 09:00 KST."""
    return dt.datetime.combine(day, MARKET_OPEN, tzinfo=SEOUL)


class TradingCalendar:
    """Sorted unique trading dates; answers next/previous trading day and T+n settlement."""

    def __init__(self, dates: np.ndarray):
        self.dates = np.asarray(dates, dtype="datetime64[D]")
        if len(self.dates) > 1 and not np.all(np.diff(self.dates).astype(int) > 0):
            raise ValueError("trading calendar dates must be strictly increasing")

    @classmethod
    def from_dates(cls, dates) -> "TradingCalendar":
        return cls(np.unique(np.asarray(dates).astype("datetime64[D]")))

    def __len__(self) -> int:
        return len(self.dates)

    def __contains__(self, day) -> bool:
        d = np.datetime64(day, "D")
        i = np.searchsorted(self.dates, d)
        return bool(i < len(self.dates) and self.dates[i] == d)

    def offset(self, day: dt.date, n: int) -> dt.date:
        """The trading day n sessions after `day` (which need not be a trading day itself).

        Beyond the last known date, weekdays stand in for trading days, so T+2 of the newest
        bar still has an answer.
        """
        d = np.datetime64(day, "D")
        i = int(np.searchsorted(self.dates, d, side="right")) - 1  # last trading day <= day
        target = i + n
        if 0 <= target < len(self.dates):
            return self.dates[target].item()
        last = self.dates[-1].item() if len(self.dates) else day
        extra = target - (len(self.dates) - 1)
        out = np.busday_offset(np.datetime64(last, "D"), extra, roll="forward").item()
        assert isinstance(out, dt.date)
        return out

    def settlement_date(self, trade_day: dt.date, lag: int = 2) -> dt.date:
        return self.offset(trade_day, lag)
