"""LiveMarketStateActor: market state in real time, from KIS daily bars (modes vts and live).

Same calls as the replay MarketState (snapshot, bars, advance, remaining) plus
`wait_for_order_window`, so the ExecutionActor's loop is the same in every mode:

  wait_for_order_window  sleep until orders decided on the last final bar may go out (next
                         session's order time); bars that became final meanwhile join first
  snapshot               the last `lookback` FINAL bars: today's partial bar never enters
  advance                sleep until the next session's bar is final, fetch it, return it

With `realtime` (actors/gateway.py GatewayQuotes: the app key's one WebSocket session, in the
BrokerGateway) it also watches its symbols intraday — `live_quote(symbol)` (last trade, best
bid/ask, final one-minute bars), `stale()` (symbols whose feed went silent) and `marks()` (both
at once, for the loop's intraday risk check, actors/session_watch.py). Decisions never see any
of it: `snapshot` is final daily bars only, from REST, which also stays the truth at the close.

Prices are KIS's adjusted daily bars. After a split or similar event KIS re-adjusts the history:
when refreshed bars disagree with stored ones, that symbol's whole window is fetched again, so a
snapshot never mixes two adjustment bases.
"""
from __future__ import annotations

import datetime as dt
from typing import Callable

import numpy as np
import polars as pl
import ray

from actors.market_state import shared_window
from market.data import Panel
from market.session import Clock, SessionTimes

Fetch = Callable[[str, dt.date, dt.date], pl.DataFrame]  # symbol, start, end -> long daily bars
REFRESH_DAYS = 14          # calendar days re-read on each refresh (covers long weekends)
ADJUSTMENT_TOLERANCE = 1e-6


class KisDailyBars:
    """The fetch function over the app key's one KIS session (the BrokerGateway actor, shared
    with the execution loop's broker: one rate limiter, one token), found lazily in the process
    that uses it."""

    def __init__(self, environment, credentials, cache_dir=None):
        self.environment, self.credentials, self.cache_dir = environment, credentials, cache_dir
        self._rest = None

    def __call__(self, symbol: str, start: dt.date, end: dt.date) -> pl.DataFrame:
        from broker.kis.quotes import daily_bars

        if self._rest is None:
            from actors.gateway import GatewayRest

            self._rest = GatewayRest(self.environment, self.credentials, self.cache_dir)
        return daily_bars(self._rest, symbol, start, end)

    def __getstate__(self):  # the client (its actor handle) stays behind; credentials travel
        return {**self.__dict__, "_rest": None}


class FeedStalled(RuntimeError):
    """No new final bar long after one was due (feed down, or a long unlisted holiday)."""


class LiveMarketState:
    def __init__(self, fetch: Fetch, symbols: list[str], lookback: int, clock: Clock, session: SessionTimes,
                 poll_s: float = 60.0, days: int | None = None, stall_days: int = 10, load: bool = True,
                 realtime=None, max_silence_s: float = 60.0):
        """`load=False` defers reading the history to `load()` (an actor reports errors from a
        method call plainly; from its constructor only as a dead actor). `realtime`: live quotes
        (GatewayQuotes); a symbol silent for more than `max_silence_s` is stale."""
        if not symbols:
            raise ValueError("a live market state needs at least one symbol")
        self.fetch, self.symbols, self.lookback = fetch, sorted(symbols), int(lookback)
        self.clock, self.session, self.poll_s = clock, session, float(poll_s)
        self.days_left = days
        self.stall_days = stall_days
        self.realtime, self.max_silence_s = realtime, float(max_silence_s)
        if load:
            self.load()

    def load(self) -> str:
        """Read `lookback` final bars of every symbol (and start watching them live, with
        `realtime`: refused as a whole when they exceed the session's subscription cap);
        returns the newest bar's date."""
        self.frame = pl.concat([self._history(s) for s in self.symbols])
        self.panel = self._panel(self.session.last_final_day(self.clock.now()))
        if self.realtime is not None:
            self.realtime.watch(self.symbols)
        return self.today().isoformat()

    # --- intraday (the WebSocket feed; never part of a decision's snapshot) --------------------
    def live_quote(self, symbol: str) -> dict:
        """Last trade, touch, final one-minute bars and the minute still trading of one symbol."""
        if self.realtime is None:
            raise ValueError("this market state has no live feed (start it with realtime=...)")
        if symbol not in self.symbols:
            raise ValueError(f"{symbol} is not in this market state's universe ({len(self.symbols)} symbols)")
        return self.realtime.live_quote(symbol)

    def stale(self) -> dict[str, float | None]:
        """Symbols with nothing received for more than `max_silence_s` → seconds silent (None: never)."""
        if self.realtime is None:
            raise ValueError("this market state has no live feed (start it with realtime=...)")
        stale = self.realtime.stale(self.symbols, self.max_silence_s)
        if any(silent is None for silent in stale.values()):
            # never heard from: a restarted gateway has a fresh session without our registrations;
            # watching again registers what is missing and nothing twice
            self.realtime.watch(self.symbols)
        return stale

    def marks(self) -> dict:
        """For the intraday risk check (actors/session_watch.py), in one call: every symbol's last
        trade {price, time (exchange), received (epoch s)} and `stale()`'s silent symbols. A
        symbol never heard from is watched again, as in `stale`."""
        if self.realtime is None:
            raise ValueError("this market state has no live feed (start it with realtime=...)")
        view = self.realtime.marks(self.symbols, self.max_silence_s)
        if any(silent is None for silent in view["stale"].values()):
            self.realtime.watch(self.symbols)
        return view

    # --- the MarketState calls ------------------------------------------------------------------
    def today(self) -> dt.date:
        return self.panel.date(len(self.panel) - 1)

    def remaining(self) -> int:
        """Bars still to trade: the `days` budget, or unbounded (a large number) in production."""
        return 1 << 30 if self.days_left is None else self.days_left

    def snapshot(self, lookback: int) -> dict:
        return self.panel.tail(lookback).to_dict()

    def window(self, as_of, symbols, lookback: int) -> Panel:
        """A decision's bars by reference (serving resolves /v1/decide's `universe` requests here):
        final bars only, never more than the stored `lookback`."""
        return self.panel.window(as_of, symbols, lookback, known_until=self.today())

    def window_ref(self, as_of, symbols, lookback: int) -> ray.ObjectRef:
        return shared_window(self, as_of, symbols, lookback)

    def bars(self) -> dict:
        i = len(self.panel) - 1
        p = self.panel
        bars = {s: (p.open[i, j], p.high[i, j], p.low[i, j], p.close[i, j]) for j, s in enumerate(p.symbols)}
        return {"date": self.today(), "bars": bars, "benchmark": None}

    def wait_for_order_window(self) -> str:
        """Return (Seoul time, ISO) once orders decided on the newest final bar may be sent."""
        while True:
            self._refresh()
            now = self.clock.now()
            window = self.session.next_order_window(self.today(), now)
            if window <= now:
                return now.isoformat()
            self.clock.sleep((window - now).total_seconds())

    def advance(self) -> dict | None:
        """Block until a bar newer than the current one is final; return the newest."""
        if self.days_left is not None and self.days_left <= 0:
            return None
        last = self.today()
        due = self.session.next_session_day(last)
        while True:
            now = self.clock.now()
            final_at = self.session.final_at(due)
            if now < final_at:
                self.clock.sleep((final_at - now).total_seconds())
                continue
            if self._refresh():
                if self.days_left is not None:
                    self.days_left -= 1
                return self.bars()
            if now.date() - due > dt.timedelta(days=self.stall_days):
                raise FeedStalled(f"no daily bar after {last} although {due} was due {self.stall_days}+ days "
                                  f"ago (now {now:%Y-%m-%d %H:%M} KST): check the KIS feed and the holiday list")
            self.clock.sleep(self.poll_s)

    # --- internals ------------------------------------------------------------------------------
    def _history(self, symbol: str) -> pl.DataFrame:
        """Enough calendar days for `lookback` trading days (~250 per 365, plus holidays)."""
        end = self.clock.now().date()
        start = end - dt.timedelta(days=int(self.lookback * 1.5) + 30)
        bars = self.fetch(symbol, start, end).select("date", "symbol", "open", "high", "low", "close", "volume")
        if bars.is_empty():
            raise ValueError(f"KIS returned no daily bars for {symbol} between {start} and {end}: check the symbol code")
        return bars

    def _panel(self, last_final: dt.date) -> Panel:
        """The last `lookback` bars up to `last_final`; older rows leave the stored frame too."""
        final = self.frame.filter(pl.col("date") <= last_final)
        panel = Panel.from_frame(final).tail(self.lookback)
        self.frame = self.frame.filter(pl.col("date") >= panel.date(0))
        return panel

    def _refresh(self) -> bool:
        """Fetch the recent bars; True when a newer final bar joined the panel."""
        now = self.clock.now()
        start, final = now.date() - dt.timedelta(days=REFRESH_DAYS), self.session.last_final_day(now)
        parts = []
        for s in self.symbols:
            recent = self.fetch(s, start, now.date()).select(self.frame.columns)
            stored = self.frame.filter(pl.col("symbol") == s)
            if _readjusted(stored.filter(pl.col("date") <= final), recent.filter(pl.col("date") <= final)):
                recent = self._history(s)  # the whole window on the new adjustment basis
                stored = stored.head(0)
            else:
                stored = stored.filter(~pl.col("date").is_in(recent["date"].implode()))
            parts.append(pl.concat([stored, recent]))
        before = self.today()
        self.frame = pl.concat(parts).sort("date", "symbol")
        self.panel = self._panel(final)
        return self.today() > before


def _readjusted(stored: pl.DataFrame, recent: pl.DataFrame) -> bool:
    """Do the overlapping closes differ (KIS re-adjusted the series since we stored it)?"""
    both = stored.join(recent, on="date", suffix="_new")
    if both.is_empty():
        return False
    a, b = both["close"].to_numpy(), both["close_new"].to_numpy()
    ok = np.isfinite(a) & np.isfinite(b)
    return bool(np.any(np.abs(a[ok] - b[ok]) > ADJUSTMENT_TOLERANCE * np.abs(a[ok])))


LiveMarketStateActor = ray.remote(num_cpus=0)(LiveMarketState)
