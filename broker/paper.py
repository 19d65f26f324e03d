"""PaperBroker: local fills of day orders at the next bar under the one accounting (no network).

Orders submitted after bar t's close wait for bar t+1: `on_bar` executes them through
`market.accounting.execute`, the same function the backtester and the RL environment use. Day
orders that do not fill on that bar expire.
"""
from __future__ import annotations

import datetime as dt
import itertools
import threading

import numpy as np

from broker.base import Broker, Fill, Order, OrderRequest, OrderStatus, OrderType, Side
from market import krx
from market.accounting import BUY, SELL, Bar, CostModel, FillStatus, execute
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
            pending = self.open_orders()
            new_fills: list[Fill] = []
            if pending:
                new_fills = self._execute(day, pending, bars)
            for sym, (_, _, _, close) in bars.items():
                if close == close:  # skip NaN closes
                    self._last_close[sym] = close
            self._last_date = day
            return new_fills

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
            pending = sum(o.request.qty for o in self.open_orders()
                          if o.request.symbol == request.symbol and o.request.side is Side.SELL)
            held = self._holdings.get(request.symbol, 0)
            if request.qty + pending > held:
                return f"sell of {request.qty} {request.symbol} exceeds the {held - pending} shares free to sell"
        return ""

    def _execute(self, day: dt.date, pending: list[Order], bars) -> list[Fill]:
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
            qty=np.array([o.request.qty for o in pending]),
            limit=np.array([o.request.limit_price if o.request.order_type is OrderType.LIMIT else np.nan
                            for o in pending], dtype=float),
            bar=bar, on=day, sell_tax_rate=krx.sell_tax_rate(settle, self._costs.market), cash=self._cash,
            holdings=np.array([self._holdings.get(s, 0) for s in symbols]), costs=self._costs)
        self._cash = result.cash
        self._holdings = {s: int(q) for s, q in zip(symbols, result.holdings) if q}
        fills = []
        at = open_time(day)
        for i, order in enumerate(pending):
            q = int(result.qty[i])
            order.filled_qty = q
            status = FillStatus(int(result.status[i]))
            if q == order.request.qty:
                order.status = OrderStatus.FILLED
            elif q > 0:
                order.status, order.reason = OrderStatus.PARTIAL, REASONS[status]
            else:
                order.status, order.reason = OrderStatus.EXPIRED, REASONS[status]
            if q:
                fills.append(Fill(order.client_order_id, order.broker_order_id, order.request.symbol,
                                  order.request.side, q, int(result.price[i]), int(result.commission[i]),
                                  int(result.tax[i]), at, fill_id="all"))  # a paper order fills once, at the open
        self._fills.extend(fills)
        return fills
