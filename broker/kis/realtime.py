"""Live quotes from the KIS WebSocket, in plain Python: last trade, best bid/ask, one-minute bars
and a stale-feed check per symbol. Fed by `KisWebSocket(on_record=quotes.on_record)`.

* Times are the exchange's (BSOP_DATE + STCK_CNTG_HOUR, Asia/Seoul) for the data, and this
  process's monotonic clock for staleness (a feed is stale when nothing *arrived* for a while,
  whatever time the records say — the simulator streams in fast time).
* A one-minute bar is final only once a print of a later minute arrived: `bars()` never returns
  the minute still trading (no decision can see a bar before it is complete); `partial_bar()`
  shows it, marked as such.
* `watch()` registers the TRs for a list of symbols within KIS's per-session cap (40
  registrations, summed over TRs, notices included) and refuses before sending anything when the
  list does not fit, saying how many would.
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from broker.kis.errors import SubscriptionCapError
from market.calendar import SEOUL


@dataclass(frozen=True)
class Trade:
    symbol: str
    time: dt.datetime       # exchange time
    price: int
    qty: int
    cum_volume: int
    received: float = 0.0   # wall-clock epoch seconds when it arrived here (tick-to-order latency)


@dataclass(frozen=True)
class Touch:
    symbol: str
    time: dt.datetime | None   # exchange time; None for a book frame before any trade told the date
    bid: int
    ask: int
    bid_size: int
    ask_size: int


@dataclass(frozen=True)
class MinuteBar:
    symbol: str
    start: dt.datetime      # the minute's first second (exchange time)
    open: int
    high: int
    low: int
    close: int
    volume: int
    final: bool


@dataclass
class _Symbol:
    trade: Trade | None = None
    touch: Touch | None = None
    bars: list[MinuteBar] = field(default_factory=list)    # final bars, oldest first
    building: list[int] | None = None                       # [open, high, low, close, volume] of the minute
    minute: dt.datetime | None = None
    last_seen: float | None = None                          # monotonic time of the last record
    stalled: bool = False


def _exchange_time(day: str, hhmmss: str) -> dt.datetime:
    return dt.datetime.strptime(day + hhmmss, "%Y%m%d%H%M%S").replace(tzinfo=SEOUL)


class RealtimeQuotes:
    def __init__(self, clock: Callable[[], float] = time.monotonic, max_bars: int = 400):
        """`clock`: the monotonic receipt clock (injectable for tests); `max_bars`: minute bars
        kept per symbol (a session has 381)."""
        self._clock, self.max_bars = clock, max_bars
        self._symbols: dict[str, _Symbol] = {}
        self._lock = threading.Lock()
        self._day = ""     # BSOP_DATE of the last trade (the book frame carries only the time)

    def __repr__(self) -> str:
        return f"RealtimeQuotes(symbols={len(self._symbols)})"

    # --- input ----------------------------------------------------------------------------------
    def on_record(self, tr_id: str, record: dict) -> None:
        """A parsed WebSocket record (broker/kis/ws.py); other TRs are ignored."""
        if tr_id == "H0STCNT0":
            self._on_trade(record)
        elif tr_id == "H0STASP0":
            self._on_book(record)

    def _on_trade(self, r: dict) -> None:
        sym = r["MKSC_SHRN_ISCD"]
        t = _exchange_time(r["BSOP_DATE"], r["STCK_CNTG_HOUR"])
        price, qty = int(float(r["STCK_PRPR"])), int(r["CNTG_VOL"] or 0)
        with self._lock:
            s = self._symbols.setdefault(sym, _Symbol())
            s.last_seen, s.stalled = self._clock(), False
            self._day = r["BSOP_DATE"]
            s.trade = Trade(sym, t, price, qty, int(r["ACML_VOL"] or 0), time.time())
            if r.get("ASKP1") and r.get("BIDP1"):
                s.touch = Touch(sym, t, int(float(r["BIDP1"])), int(float(r["ASKP1"])),
                                int(r.get("BIDP_RSQN1") or 0), int(r.get("ASKP_RSQN1") or 0))
            minute = t.replace(second=0)
            if s.minute is not None and minute < s.minute:
                return                          # a late print of a bar already closed: the bar stays final
            if s.minute != minute:
                if s.building is not None and s.minute is not None:
                    o, h, lo, c, v = s.building
                    s.bars.append(MinuteBar(sym, s.minute, o, h, lo, c, v, True))
                    del s.bars[:-self.max_bars]
                s.minute, s.building = minute, [price, price, price, price, qty]
            else:
                b = s.building
                b[1], b[2], b[3], b[4] = max(b[1], price), min(b[2], price), price, b[4] + qty

    def _on_book(self, r: dict) -> None:
        sym = r["MKSC_SHRN_ISCD"]
        with self._lock:
            s = self._symbols.setdefault(sym, _Symbol())
            s.last_seen, s.stalled = self._clock(), False
            when = _exchange_time(self._day, r["BSOP_HOUR"]) if self._day else None
            s.touch = Touch(sym, when, int(float(r["BIDP1"])), int(float(r["ASKP1"])),
                            int(r.get("BIDP_RSQN1") or 0), int(r.get("ASKP_RSQN1") or 0))

    # --- output ---------------------------------------------------------------------------------
    def last_trade(self, symbol: str) -> Trade | None:
        with self._lock:
            s = self._symbols.get(symbol)
            return s.trade if s else None

    def touch(self, symbol: str) -> Touch | None:
        """Best bid/ask: from the order book frame, or the trade frame's touch, whichever is newer."""
        with self._lock:
            s = self._symbols.get(symbol)
            return s.touch if s else None

    def bars(self, symbol: str) -> list[MinuteBar]:
        """Final one-minute bars only (a later minute has printed), oldest first."""
        with self._lock:
            s = self._symbols.get(symbol)
            return list(s.bars) if s else []

    def partial_bar(self, symbol: str) -> MinuteBar | None:
        """The minute still trading (final=False), for display, never for a decision."""
        with self._lock:
            s = self._symbols.get(symbol)
            if not s or s.building is None or s.minute is None:
                return None
            o, h, lo, c, v = s.building
            return MinuteBar(symbol, s.minute, o, h, lo, c, v, False)

    def stale(self, symbols: Iterable[str], max_silence_s: float) -> dict[str, float | None]:
        """Symbols with nothing received for more than `max_silence_s` → seconds silent (None:
        nothing ever received)."""
        now = self._clock()
        out: dict[str, float | None] = {}
        with self._lock:
            for sym in symbols:
                s = self._symbols.get(sym)
                if s is None or s.last_seen is None:
                    out[sym] = None
                elif now - s.last_seen > max_silence_s:
                    out[sym] = now - s.last_seen
        return out

    def new_stalls(self, symbols: Iterable[str], max_silence_s: float) -> dict[str, float | None]:
        """Like `stale`, but each stall is returned once (until data flows again): the call to make
        on a timer that sends cluster/alerts.py feed_stall_alert for what it returns."""
        found = self.stale(symbols, max_silence_s)
        with self._lock:
            fresh = {}
            for sym, silent in found.items():
                s = self._symbols.setdefault(sym, _Symbol())
                if not s.stalled:
                    s.stalled = True
                    fresh[sym] = silent
        return fresh


def watch(ws, symbols: list[str], book: bool = True) -> list[tuple[str, str]]:
    """Register H0STCNT0 (and H0STASP0 when `book`) for each symbol on a KisWebSocket. Refuses
    with SubscriptionCapError, before registering anything, when they do not all fit in the
    session's cap next to what is already registered."""
    trs = ("H0STCNT0", "H0STASP0") if book else ("H0STCNT0",)
    wanted = [(tr, sym) for sym in dict.fromkeys(symbols) for tr in trs]
    new = [item for item in wanted if item not in ws.subscriptions]
    used = len(ws.subscriptions)
    if used + len(new) > ws.cap:
        room = ws.cap - used
        raise SubscriptionCapError(
            "OPSP0008", "MAX SUBSCRIBE OVER", tr_id="/".join(trs),
            detail=f"watching {len(dict.fromkeys(symbols))} symbols needs {len(new)} more registrations "
                   f"({' + '.join(trs)} each); the session allows {ws.cap} and {used} are in use, so at most "
                   f"{max(room, 0) // len(trs)} symbols fit{' (or twice as many without the book)' if book else ''}")
    for tr, sym in new:
        ws.subscribe(tr, sym)
    return new
