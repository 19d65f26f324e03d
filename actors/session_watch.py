"""The session watch: intraday risk on live marks, between the order window and the daily bar.

In the real-time loop (LiveConfig.realtime with `risk_engine.intraday` rules), once the day's
decided orders are out the ExecutionActor's step hands the session to this watch instead of
sleeping straight to the final bar. Every `every_s` seconds of session time until the order cutoff
it reads the live marks (LiveMarketState.marks: the last trade per symbol from the gateway's
WebSocket session), evaluates the intraday rules (broker/risk_engine.py IntradayLossLimit,
PositionStop) on the book and acts:

* a trading-state change (the loss limit's REDUCING) holds for the rest of the day; journaled
  (journal `intraday_events`) and alerted once;
* a sell goes out once per symbol per day, by the loop's own order path
  (TradingLoop._send_checked): `RiskEngine.check`, journaled as intent before it is sent, through
  the same broker; the rule and reason are journaled as an intraday event and alerted.

The watch's book is the account at the session's start (cash, settled holdings) with the day's
sells projected (the decision's and the stops'): a name already being sold is not stopped again,
and a buy still working is not yet a holding. A mark counts only if it is from today's session
and its symbol's feed is not stale (`feed_silence_s`): a stale symbol is alerted once per stall
and simply not judged until it trades again — never stopped on an old price. Each poll journals
the book at its marks (journal `session_marks`: the dashboard's live marks and P&L). Daily
decisions never see any of this (they read final daily bars only).

`samples` keeps, per poll and symbol, the timestamps (epoch s) of the tick's receipt in the
gateway, the marks' read here and the rules' verdict, and per stop order its submit's answer:
bench/realtime_latency.py reports them.
"""
from __future__ import annotations

import datetime as dt
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.base import OrderRequest, Side
from broker.risk_engine import Book, IntradayRule, TradingState, evaluate_intraday, marked_equity
from cluster import alerts
from market.calendar import SEOUL
from market.session import Clock, SessionTimes


@dataclass
class SessionWatch:
    rules: list[IntradayRule]
    every_s: float
    session: SessionTimes
    clock: Clock
    read_marks: Callable[[], dict]   # LiveMarketState.marks of the loop's market actor
    samples: deque = field(default_factory=lambda: deque(maxlen=100_000), repr=False)
    stops: list[dict] = field(default_factory=list, repr=False)

    def __post_init__(self):
        if self.every_s <= 0:
            raise ValueError(f"risk_engine.intraday_every_s must be > 0, got {self.every_s}")

    def run(self, loop, book: Book, algos=None) -> list:
        """Watch today's session for `loop` (a TradingLoop) on `book`, and drive `algos` (the day's
        execution algorithms, actors/session_algos.py SessionAlgos) on the same polls — once at
        the start, then every poll; returns the stop orders and children sent (their answers are
        looked up with the day's other orders after the bar). Without rules the watch ends as soon
        as the algorithms are done."""
        now = self.clock.now().astimezone(SEOUL)
        day = now.date()
        until = dt.datetime.combine(day, self.session.order_cutoff, tzinfo=SEOUL)
        sent: list = []
        fired: set[str] = set()
        stalled: set[str] = set()
        run_id = loop.config.run_id
        if algos is not None:
            algos.poll(now, self._fresh(self.read_marks(), day), book)
        while now < until and (self.rules or (algos is not None and not algos.done)):
            step = min(self.every_s, (until - now).total_seconds())
            self.clock.sleep(step)
            # the sleep's end, without asking the clock again (in fast time it moves only by sleeps;
            # in real time this lags the wall by the checks' processing, milliseconds a poll)
            now = now + dt.timedelta(seconds=step)
            view = self.read_marks()
            read_at = time.time()
            loop.journal_session_fills()   # fills execution notices reported since the last poll
            stale = view["stale"]
            for symbol in sorted(set(stale) - stalled):      # each stall once, until it trades again
                loop._alert(alerts.feed_stall_alert(symbol, stale[symbol]))
            stalled = set(stale)
            fresh = self._fresh(view, day)
            marks = {s: float(m["price"]) for s, m in fresh.items()}
            actions = evaluate_intraday(self.rules, book, marks, now)
            judged_at = time.time()
            for s, m in fresh.items():
                self.samples.append({"symbol": s, "received": m["received"], "read": read_at, "judged": judged_at})
            for action in actions:
                if action.state is not None:
                    new = TradingState.stricter(book.state, action.state)
                    if new is not book.state:
                        loop.journal.record_intraday_event(now, action.rule, None, f"state {new.value}", action.reason)
                        loop._alert(alerts.intraday_risk_alert(run_id, action.rule, None, f"state {new.value}",
                                                               action.reason))
                        loop._alert(alerts.trading_state_alert(run_id, book.state, new, action.reason))
                        book.state = new
                symbol = action.symbol
                if symbol is None or symbol in fired or loop.halted or book.positions.get(symbol, 0) <= 0:
                    continue
                fired.add(symbol)
                if algos is not None:   # the stop takes the name over from its algorithm
                    algos.stop_symbol(symbol)
                qty = min(action.qty, book.positions[symbol])
                request = OrderRequest(f"{run_id}-{day:%Y%m%d}-{symbol}-STOP", symbol, Side.SELL, qty)
                loop.journal.record_intraday_event(now, action.rule, symbol, f"sell {qty}", action.reason,
                                                   request.client_order_id)
                loop._alert(alerts.intraday_risk_alert(run_id, action.rule, symbol, f"sell {qty}", action.reason))
                order = loop._send_checked(request, book, now, set())
                if order is not None:
                    sent.append(order)
                self.stops.append({"symbol": symbol, "rule": action.rule, "at": now.isoformat(),
                                   "received": fresh[symbol]["received"], "read": read_at, "judged": judged_at,
                                   "submitted": time.time(), "sent": order is not None})
            self._record_marks(loop.journal, now, book, marks)
            if algos is not None:
                algos.poll(now, fresh, book)
        return sent + (algos.sent if algos is not None else [])

    @staticmethod
    def _record_marks(journal, now: dt.datetime, book: Book, marks: dict[str, float]) -> None:
        """The book at this poll's marks, for the dashboard (after the rules acted: never in the
        way of a stop). A held name without a fresh mark is listed with mark None."""
        held = {s: q for s, q in book.positions.items() if q > 0}
        journal.record_marks(now, book.cash, marked_equity(book, marks), book.day_start_equity,
                             {s: {"qty": q, "mark": marks.get(s), "reference": book.price(s)}
                              for s, q in sorted(held.items())})

    @staticmethod
    def _fresh(view: dict, day: dt.date) -> dict:
        """The marks that count: today's, of symbols whose feed is not stale."""
        return {s: m for s, m in view["marks"].items() if s not in view["stale"] and m["time"].date() == day}
