"""A virtual session clock for the KIS simulator: rehearse the real-time loop in fast time.

Server side (`VirtualSession`): virtual Seoul time moves only when a client sleeps on it. The
simulator's replay dates are the session days: at 09:00 of each the market opens (orders are
accepted; without the intraday stream a market order fills as it arrives, on that day's replay
bar, and its execution notice goes out then, stamped with the session time), at 15:30 it closes
and that day's replay bar trades (orders still open fill at its prices, and the bar joins the
daily chart); with the intraday
stream on, the synthetic session streams as time passes (SimServer.stream_session). Client side
(`SimClock`): the `market.session.Clock` protocol over the simulator's admin endpoint, so every
process of the loop (Ray actors included) shares one time.
"""
from __future__ import annotations

import datetime as dt
import threading

import requests

from market.calendar import MARKET_CLOSE, MARKET_OPEN, SEOUL


class VirtualSession:
    def __init__(self, server, start: dt.datetime | None = None):
        """`server`: a started SimServer with a replay frame. Time starts at 08:00 of the first
        replay date after the exchange's last traded day, unless `start` is given."""
        self.server = server
        self.lock = threading.Lock()
        if start is None:
            day = server.next_replay_date()
            if day is None:
                raise ValueError("the simulator has no replay bars: a session clock needs them")
            start = dt.datetime.combine(day, dt.time(8, 0), tzinfo=SEOUL)
        self.now = start.astimezone(SEOUL)
        self.server.exchange.session_day = lambda: self.now.date()  # orders are dated by the session
        self.server.exchange.session_now = lambda: self.now           # ... and fill when they arrive in it
        self.server.exchange.session_bars = self._session_bars
        self.server.set_market_open(self._in_session(self.now))

    def _in_session(self, t: dt.datetime) -> bool:
        day = self.server.next_replay_date()
        return day == t.date() and MARKET_OPEN <= t.time() < MARKET_CLOSE

    def _session_bars(self) -> tuple[dt.date, dict] | None:
        """The replay bar of the session under way (a market order arriving now fills on it), or
        None. With the intraday stream on there is none: orders fill against the streamed prints
        (a stop sent at 14:00 must not fill at the day's open)."""
        if self.server.intraday_enabled or not self._in_session(self.now):
            return None
        return self.server._next_replay_bar()

    def sleep(self, seconds: float) -> dt.datetime:
        """Move time forward, opening and closing each replay session passed on the way."""
        if seconds < 0:
            raise ValueError(f"cannot sleep a negative time ({seconds} s)")
        with self.lock:
            end = self.now + dt.timedelta(seconds=seconds)
            while (day := self.server.next_replay_date()) is not None:
                if dt.datetime.combine(day, MARKET_CLOSE, tzinfo=SEOUL) > end:
                    break
                self.server.advance()  # the replay bar of `day` trades at the close and is published
            if self.server.intraday_enabled and day == end.date() and end.time() >= MARKET_OPEN:
                self.server.stream_session(until=end.time())   # the synthetic session so far
            self.now = end
            self.server.set_market_open(self._in_session(end))
            return self.now


class SimClock:
    """`Clock` backed by the simulator's virtual session (admin endpoint, shared secret)."""

    def __init__(self, rest_url: str, admin_secret: str, timeout_s: float = 30.0):
        self.url = rest_url.rstrip("/") + "/admin/clock"
        self.admin_secret = admin_secret
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"SimClock({self.url!r})"

    def _post(self, body: dict) -> dt.datetime:
        resp = requests.post(self.url, json=body, headers={"x-sim-admin": self.admin_secret}, timeout=self.timeout_s)
        if resp.status_code != 200:
            raise RuntimeError(f"simulator clock: HTTP {resp.status_code} {resp.text[:200]}")
        return dt.datetime.fromisoformat(resp.json()["now"])

    def now(self) -> dt.datetime:
        return self._post({})

    def sleep(self, seconds: float) -> None:
        self._post({"sleep_s": max(0.0, float(seconds))})
