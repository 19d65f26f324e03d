"""PaperBroker: local fills of day orders at the next bar under the one accounting (no network).

Orders submitted after bar t's close wait for bar t+1: `on_bar` executes them through
`market.accounting.execute`, the same function the backtester and the RL environment use. Day
orders that do not fill on that bar expire.

The simulator's intraday session (broker/sim) also trades single prints: `on_print` fills the
open orders of one symbol against one print through the same `execute` (the print as a bar whose
open, high and low are the print, so a market order takes the print and a limit fills when the
print reaches it; commission and the dated tax as on the daily bar), capped at the print's volume
when the path has volume (a print at a daily price limit fills nobody: the accounting's locked
rule, conservative as on the daily bar). An order that met a print is a session order: `on_bar` no longer fills
it on the daily bar (the path after it was placed is what it could trade against); what is left
of it expires there, like any day order.
"""
from __future__ import annotations

import datetime as dt
import itertools
import threading

import numpy as np

from broker.base import Broker, Fill, Order, OrderRequest, OrderStatus, OrderType, Side
from market import krx
from market.accounting import BUY, SELL, Bar, CostModel, FillStatus, execute, fill_prices
from market.calendar import TradingCalendar, decision_time, open_time

REASONS = {
    FillStatus.NO_BAR: "no bar: the symbol did not trade that day",
    FillStatus.LOCKED: "the stock was locked at its daily price limit",
    FillStatus.NOT_REACHED: "the market did not trade through the limit price",
    FillStatus.NO_CASH: "not enough cash for one share",
    FillStatus.NO_POSITION: "nothing held to sell",
    FillStatus.PARTIAL_CASH: "cut to the shares the cash affords",
    FillStatus.PARTIAL_POSITION: "cut to the shares held",
}


class PaperBroker(Broker):
    def __init__(self, cash: int, costs: CostModel = CostModel(), calendar: TradingCalendar | None = None):
        if not isinstance(cash, int) or cash < 0:
            raise ValueError(f"starting cash must be a non-negative whole number of KRW, got {cash!r}")
        self._cash = cash
        self._holdings: dict[str, int] = {}
        self._last_close: dict[str, float] = {}
        self._last_date: dt.date | None = None
        self._orders: dict[str, Order] = {}          # by broker order id
        self._by_client: dict[str, str] = {}
        self._fills: list[Fill] = []
        self._ids = itertools.count(1)
        self._costs = costs
        self._calendar = calendar
        self._lock = threading.Lock()
        self._session_orders: set[str] = set()       # broker ids of orders that met an intraday print

    # --- Broker interface ---------------------------------------------------------------
    def submit(self, request: OrderRequest) -> Order:
        with self._lock:
            if request.client_order_id in self._by_client:
                return self._orders[self._by_client[request.client_order_id]]
            order = Order(request=request, broker_order_id=f"P{next(self._ids):09d}", status=OrderStatus.OPEN,
                          submitted_at=self._now())
            reason = self._refusal(request)
            if reason:
                order.status, order.reason = OrderStatus.REJECTED, reason
            self._orders[order.broker_order_id] = order
            self._by_client[request.client_order_id] = order.broker_order_id
            return order

    def cancel(self, broker_order_id: str) -> Order:
        with self._lock:
            order = self._orders.get(broker_order_id)
            if order is None:
                raise KeyError(f"unknown order id {broker_order_id!r}")
            if order.status is OrderStatus.OPEN:
                order.status = OrderStatus.CANCELLED
            return order

    def find_order(self, client_order_id: str) -> Order | None:
        oid = self._by_client.get(client_order_id)
        return None if oid is None else self._orders[oid]

    def open_orders(self) -> list[Order]:
        return [o for o in self._orders.values() if o.status is OrderStatus.OPEN]

    def fills(self) -> list[Fill]:
        return list(self._fills)

    def positions(self) -> dict[str, int]:
        return {s: q for s, q in self._holdings.items() if q}

    def cash(self) -> int:
        return self._cash

    # --- the market moves ---------------------------------------------------------------
    def on_bar(self, day: dt.date, bars: dict[str, tuple[float, float, float, float]]) -> list[Fill]:
        """Bar `day` arrives ({symbol: (open, high, low, close)}): open orders execute on it."""
        with self._lock:
            if self._last_date is not None and day <= self._last_date:
                raise ValueError(f"bars must arrive in date order: {day} after {self._last_date}")
            pending = [o for o in self.open_orders() if o.broker_order_id not in self._session_orders]
            for order in self.open_orders():
                if order.broker_order_id in self._session_orders:   # traded the session's path: a day order ends
                    order.status = OrderStatus.PARTIAL if order.filled_qty else OrderStatus.EXPIRED
                    order.reason = order.reason or "the session's prints after it was placed did not fill it"
            self._session_orders.clear()
            new_fills: list[Fill] = []
            if pending:
                new_fills = self._execute(day, pending, bars, open_time(day))
            for sym, (_, _, _, close) in bars.items():
                if close == close:  # skip NaN closes
                    self._last_close[sym] = close
            self._last_date = day
            return new_fills

    def execute_now(self, day: dt.date, bars: dict[str, tuple[float, float, float, float]],
                    broker_order_ids: list[str], at: dt.datetime | None = None) -> list[Fill]:
        """Open orders `broker_order_ids` that arrived during the session of bar `day` execute on it
        at once, by the same rule as `on_bar` (the KIS simulator fills a market order when it arrives
        in its session clock, `at`: default the open); the bar's close is not taken yet (that is `on_bar`)."""
        with self._lock:
            if self._last_date is not None and day <= self._last_date:
                raise ValueError(f"bar {day} has already closed (last bar {self._last_date})")
            wanted = set(broker_order_ids)
            pending = [o for o in self.open_orders() if o.broker_order_id in wanted]
            return self._execute(day, pending, bars, at or open_time(day)) if pending else []

    def on_print(self, day: dt.date, symbol: str, price: int, volume: int | None, at: dt.datetime) -> list[Fill]:
        """One intraday print of `symbol` on session `day` (before that day's `on_bar`): its open
        orders, oldest first, fill at it as far as they reach it, `volume` shares in all (None:
        no volume on the path, no cap)."""
        with self._lock:
            if self._last_date is not None and day <= self._last_date:
                raise ValueError(f"a print of {day} after the bar of {self._last_date} traded")
            pending = [o for o in self.open_orders() if o.request.symbol == symbol]
            if not pending:
                return []
            self._session_orders.update(o.broker_order_id for o in pending)
            px = float(price)
            bar = Bar(open=np.array([px]), high=np.array([px]), low=np.array([px]),
                      prev_close=np.array([self._last_close.get(symbol, np.nan)]))
            room = volume
            takes: list[tuple[Order, int]] = []
            for order in pending:
                limit = order.request.limit_price if order.request.order_type is OrderType.LIMIT else np.nan
                side = BUY if order.request.side is Side.BUY else SELL
                _, status = fill_prices(np.array([side]), np.array([limit], dtype=float), bar, day, self._costs)
                if status[0] != FillStatus.FILLED:
                    continue          # not reached (or a locked print): it waits for the next one
                take = order.request.qty - order.filled_qty
                if room is not None:
                    take = min(take, room)
                    room -= take
                if take > 0:
                    takes.append((order, take))
            if not takes:
                return []
            return self._execute(day, [o for o, _ in takes], {symbol: (px, px, px, px)}, at,
                                 qty={o.broker_order_id: q for o, q in takes})

    def mark_to_market(self) -> float:
        """Cash plus holdings at the last closes."""
        return self._cash + sum(q * self._last_close.get(s, 0.0) for s, q in self._holdings.items())

    def last_close(self, symbol: str) -> float | None:
        return self._last_close.get(symbol)

    # --- internals ----------------------------------------------------------------------
    def _now(self) -> dt.datetime:
        day = self._last_date or dt.date.today()
        return decision_time(day)

    def _refusal(self, request: OrderRequest) -> str:
        base = self._last_close.get(request.symbol)
        if base is None:
            return f"unknown symbol {request.symbol!r}: no price seen yet"
        on = self._last_date
        if request.order_type is OrderType.LIMIT:
            if not krx.on_tick_grid(request.limit_price, on, self._costs.market):
                return f"limit price {request.limit_price} is off the tick grid (tick {krx.tick_size(request.limit_price, on)})"
            lower, upper = krx.price_limits(base, on, self._costs.market)
            if not lower <= request.limit_price <= upper:
                return f"limit price {request.limit_price} outside the daily price limits [{lower}, {upper}]"
        if request.side is Side.SELL:
            pending = sum(o.request.qty - o.filled_qty for o in self.open_orders()
                          if o.request.symbol == request.symbol and o.request.side is Side.SELL)
            held = self._holdings.get(request.symbol, 0)
            if request.qty + pending > held:
                return f"sell of {request.qty} {request.symbol} exceeds the {held - pending} shares free to sell"
        return ""

    def _execute(self, day: dt.date, pending: list[Order], bars, at: dt.datetime,
                 qty: dict[str, int] | None = None) -> list[Fill]:
        """`qty`: shares to trade per order now (an intraday print); default what is left of each."""
        want = [qty[o.broker_order_id] if qty else o.request.qty - o.filled_qty for o in pending]
        symbols = sorted({o.request.symbol for o in pending} | set(self._holdings))
        col = {s: i for i, s in enumerate(symbols)}
        nan4 = (np.nan, np.nan, np.nan, np.nan)
        quotes = np.array([[bars.get(o.request.symbol, nan4)[k] for k in range(3)] for o in pending], dtype=float)
        bar = Bar(open=quotes[:, 0], high=quotes[:, 1], low=quotes[:, 2],
                  prev_close=np.array([self._last_close.get(o.request.symbol, np.nan) for o in pending]))
        settle = self._calendar.settlement_date(day) if self._calendar else np.busday_offset(day, 2).item()
        result = execute(
            symbol_idx=np.array([col[o.request.symbol] for o in pending]),
            side=np.array([BUY if o.request.side is Side.BUY else SELL for o in pending]),
            qty=np.array(want),
            limit=np.array([o.request.limit_price if o.request.order_type is OrderType.LIMIT else np.nan
                            for o in pending], dtype=float),
            bar=bar, on=day, sell_tax_rate=krx.sell_tax_rate(settle, self._costs.market), cash=self._cash,
            holdings=np.array([self._holdings.get(s, 0) for s in symbols]), costs=self._costs)
        self._cash = result.cash
        self._holdings = {s: int(q) for s, q in zip(symbols, result.holdings) if q}
        fills = []
        for i, order in enumerate(pending):
            q = int(result.qty[i])
            before = order.filled_qty
            order.filled_qty = before + q
            status = FillStatus(int(result.status[i]))
            if order.filled_qty == order.request.qty:
                order.status = OrderStatus.FILLED
            elif qty is not None and q == want[i]:
                pass              # an intraday print's share of it: the rest keeps working
            elif order.filled_qty > 0:
                order.status, order.reason = OrderStatus.PARTIAL, REASONS[status]
            else:
                order.status, order.reason = OrderStatus.EXPIRED, REASONS[status]
            if q:
                # a daily-bar order fills once, at the open ("all"); session fills are told apart
                # by the order's cumulative quantity after each
                fill_id = "all" if qty is None and before == 0 else f"cum{order.filled_qty}"
                fills.append(Fill(order.client_order_id, order.broker_order_id, order.request.symbol,
                                  order.request.side, q, int(result.price[i]), int(result.commission[i]),
                                  int(result.tax[i]), at, fill_id=fill_id))
        self._fills.extend(fills)
        return fills
