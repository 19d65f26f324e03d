"""The session's execution algorithms: the day's plans (broker/execution_algos.py) driven on the
session watch's polls (actors/session_watch.py), in the real-time loop.

At the order time the loop journals each decided order as a parent (journal `parent_orders`)
and hands its plan here instead of sending it. At every poll — and once at the session's start —
each plan says what it wants next and this driver does it:

* a child goes out by the loop's own order path (TradingLoop._send_checked: the risk engine on
  the children's book — the account at the session's start with every child allowed so far
  projected — the intent journaled under its parent before the send, the broker);
* a cancel goes to the broker, and the child's answer (state, filled shares) is journaled at
  once; the plan learns the child's fills from it before it replaces the child, and the part that
  never traded is taken back from the books' projections (so the replacement is not counted
  twice against the position and exposure limits). A child whose
  cancel leaves it working (the cancel's outcome unknown) ends its plan: nothing replaces an
  order that may still fill.

The watch's trading state (an intraday loss limit's REDUCING) holds for the children from the
next poll on (the risk engine then lets only reducing children through), and the kill switch
stops every plan. Sells the children send are projected onto the watch's book, so an intraday
stop sells only what is not already being sold; a stop on a name ends that name's plans (its
working limit child is cancelled) before the stop goes out.
"""
from __future__ import annotations

import datetime as dt

from broker.base import Order, OrderRequest, OrderStatus, Side
from broker.execution_algos import Cancel, Plan
from broker.risk_engine import Book, TradingState, reference_price


class SessionAlgos:
    def __init__(self, loop, plans: list[Plan], book: Book, blocked: set[str]):
        """`loop`: the TradingLoop; `book`: the children's risk book; `blocked`: symbols with an
        order of unknown outcome (no child goes out for them)."""
        self.loop, self.plans, self.book, self.blocked = loop, plans, book, blocked
        self.sent: list[Order] = []                 # every child the broker took (looked up after the bar)
        self._orders: dict[str, Order] = {}         # child client order id → its latest answer
        self._watch_book: Book | None = None

    @property
    def done(self) -> bool:
        return all(plan.done for plan in self.plans)

    def poll(self, now: dt.datetime, marks: dict[str, dict], watch_book: Book | None = None) -> None:
        """Act on every plan at session time `now`; `marks`: the fresh live marks by symbol
        (LiveMarketState.marks: price, bid, ask); `watch_book`: the watch's, whose trading state
        (an intraday loss limit's REDUCING) holds for the children too."""
        self._watch_book = watch_book
        if watch_book is not None:
            self.book.state = TradingState.stricter(self.book.state, watch_book.state)
        if self.loop.halted:         # the kill switch: nothing more goes out
            for plan in self.plans:
                self.stop_symbol(plan.parent.symbol)
            return
        for plan in self.plans:
            mark = marks.get(plan.parent.symbol) or {}
            touch = (int(mark["bid"]), int(mark["ask"])) if mark.get("bid") and mark.get("ask") else None
            for _ in range(4):        # a poll does at most: cancel, replace — or cancel, sweep
                action = plan.next(now, touch)
                if action is None:
                    break
                if isinstance(action, Cancel):
                    self._cancel(plan, action.client_order_id)
                else:
                    self._place(plan, action.request, now, watch_book)

    def stop_symbol(self, symbol: str) -> None:
        """An intraday stop takes `symbol` over: its plans send nothing more."""
        for plan in self.plans:
            if plan.parent.symbol == symbol and not plan.done:
                working = plan.stop()
                if working is not None:
                    self._cancel(plan, working)

    def _place(self, plan: Plan, request: OrderRequest, now: dt.datetime, watch_book: Book | None) -> None:
        order = self.loop._send_checked(request, self.book, now, self.blocked, parent_id=plan.parent.client_order_id)
        plan.placed(request, working=order is not None and order.status is OrderStatus.OPEN)
        if order is None:
            return
        self.sent.append(order)
        self._orders[request.client_order_id] = order
        if watch_book is not None and request.side is Side.SELL:
            watch_book.apply(request, watch_book.price(request.symbol))

    def _cancel(self, plan: Plan, client_order_id: str) -> None:
        order = self._orders.get(client_order_id)
        answer = None
        if order is not None and order.broker_order_id:
            try:
                answer = self.loop.broker.cancel(order.broker_order_id)
            except RuntimeError:      # the venue could not be read (KisError): its state is unknown
                answer = None
            if answer is not None:
                self.loop.journal.record_order(answer)
                self._orders[client_order_id] = answer
        if answer is None or answer.status is OrderStatus.OPEN or answer.status is OrderStatus.UNKNOWN:
            plan.stop()               # it may still fill: never replace it
            return
        # the books projected the whole child when it went out: take back the part that never traded
        request, unfilled = answer.request, answer.request.qty - answer.filled_qty
        if unfilled > 0:
            self.book.apply(_opposite(request, unfilled), reference_price(request, self.book))
            if self._watch_book is not None and request.side is Side.SELL:
                self._watch_book.apply(_opposite(request, unfilled), self._watch_book.price(request.symbol))
        plan.ended(client_order_id, answer.filled_qty)


def _opposite(request: OrderRequest, qty: int) -> OrderRequest:
    """`qty` shares the other way (to undo a projection of `request`); never sent."""
    return OrderRequest(request.client_order_id, request.symbol,
                        Side.SELL if request.side is Side.BUY else Side.BUY, qty)
