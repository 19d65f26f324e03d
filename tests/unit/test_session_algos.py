"""The session driver of the execution algorithms (actors/session_algos.py) on its own: a real
paper book as the broker and a real SQLite journal; the loop's order path is the stand-in of
tests/unit/test_session_watch.py plus the risk engine (the whole path runs in
tests/integration/test_execution_algos_rehearsal.py)."""
from __future__ import annotations

import datetime as dt

from actors.session_algos import SessionAlgos
from broker.base import OrderRequest, OrderStatus, Side
from broker.execution_algos import AlgoConfig, plan_for
from broker.journal import Journal
from broker.paper import PaperBroker
from broker.risk_engine import Book, MaxOrderValue, MaxPosition, RiskEngine, TradingState
from market.calendar import SEOUL

DAY = dt.date(2023, 5, 3)
START = dt.datetime.combine(DAY, dt.time(9, 0, 30), tzinfo=SEOUL)
CUTOFF = dt.datetime.combine(DAY, dt.time(15, 15), tzinfo=SEOUL)
PARENT = OrderRequest("w-20230502-005930-B", "005930", Side.BUY, 100)


class Loop:
    def __init__(self, path, broker, max_krw=1e12):
        self.journal = Journal(path, run_id="w")
        self.broker = broker
        # a position cap the parent fits under once, not twice: a replacement must not count double
        self.risk = RiskEngine([MaxOrderValue(max_krw), MaxPosition(max_fraction=0.8)])
        self.halted = ""

    def _send_checked(self, request, book, stamp, blocked, parent_id=None):
        if not self.risk.check(request, book, stamp).allowed:
            self.journal.record_denied(request, stamp, "denied", parent_id)
            return None
        self.journal.record_intent(request, stamp, parent_id)
        order = self.broker.submit(request)
        self.journal.record_order(order)
        return order


class LostCancel(PaperBroker):
    """A venue whose cancel answer is lost: the order still shows as working."""

    def cancel(self, broker_order_id):
        return self._orders[broker_order_id]


def book() -> Book:
    return Book(day=DAY, cash=10_000_000.0, positions={}, last_close={"005930": 65_000.0},
                previous_close={"005930": 65_000.0}, day_start_equity=10_000_000.0)


def broker(kind=PaperBroker) -> PaperBroker:
    b = kind(10_000_000)
    b.on_bar(dt.date(2023, 5, 2), {"005930": (65_000, 65_500, 64_500, 65_000)})
    return b


def marks(bid, ask):
    return {"005930": {"price": bid, "bid": bid, "ask": ask}}


def test_a_moved_touch_cancels_the_child_and_replaces_it_under_the_same_parent(tmp_path):
    loop = Loop(tmp_path / "j.sqlite", broker())
    plan = plan_for(AlgoConfig("limit_touch", touch_window_min=30), PARENT, START, CUTOFF, 65_000)
    algos = SessionAlgos(loop, [plan], book(), set())
    algos.poll(START, {})                                        # no quote yet: nothing sent
    algos.poll(START, marks(64_900, 65_000))
    algos.poll(START + dt.timedelta(minutes=1), marks(64_900, 65_000))
    algos.poll(START + dt.timedelta(minutes=2), marks(64_800, 64_900))
    rows = loop.journal.children(PARENT.client_order_id)
    assert [(r["client_order_id"], r["limit_price"], r["state"]) for r in rows] == [
        (f"{PARENT.client_order_id}-L01", 64_900, "cancelled"), (f"{PARENT.client_order_id}-L02", 64_800, "open")]
    algos.poll(plan.end, marks(64_800, 64_900))                  # the window ends: the rest at market
    rows = loop.journal.children(PARENT.client_order_id)
    assert [(r["client_order_id"], r["order_type"], r["qty"]) for r in rows][-1] == \
        (f"{PARENT.client_order_id}-M", "market", 100)
    assert algos.done and [o.client_order_id for o in algos.sent] == [r["client_order_id"] for r in rows]


def test_a_child_whose_cancel_is_not_confirmed_is_never_replaced(tmp_path):
    loop = Loop(tmp_path / "j.sqlite", broker(LostCancel))
    plan = plan_for(AlgoConfig("limit_touch"), PARENT, START, CUTOFF, 65_000)
    algos = SessionAlgos(loop, [plan], book(), set())
    algos.poll(START, marks(64_900, 65_000))
    algos.poll(START + dt.timedelta(minutes=1), marks(64_700, 64_800))
    algos.poll(plan.end, marks(64_700, 64_800))
    rows = loop.journal.children(PARENT.client_order_id)
    assert [(r["client_order_id"], r["state"]) for r in rows] == [(f"{PARENT.client_order_id}-L01", "open")]
    assert algos.done


def test_each_twap_child_meets_the_risk_engine_and_a_stop_ends_the_plan(tmp_path):
    loop = Loop(tmp_path / "j.sqlite", broker(), max_krw=1_000_000)
    parent = OrderRequest("w-20230502-005930-B", "005930", Side.BUY, 46)
    plan = plan_for(AlgoConfig("twap", twap_window_min=30, twap_children=3), parent, START, CUTOFF)
    algos = SessionAlgos(loop, [plan], book(), set())
    algos.poll(START, {})
    algos.poll(START + dt.timedelta(minutes=10), {})
    algos.stop_symbol("005930")
    algos.poll(START + dt.timedelta(minutes=20), {})
    rows = loop.journal.children(parent.client_order_id)
    # 16 × 65,000 is above the limit, 15 × 65,000 is not; the third child never goes out
    assert [(r["client_order_id"][-3:], r["qty"], r["state"]) for r in rows] == [("T01", 16, "denied"),
                                                                               ("T02", 15, "open")]
    assert algos.done and [o.status for o in algos.sent] == [OrderStatus.OPEN]


def test_the_watchs_reducing_state_holds_for_the_children(tmp_path):
    loop = Loop(tmp_path / "j.sqlite", broker())
    plan = plan_for(AlgoConfig("twap", twap_window_min=20, twap_children=2), PARENT, START, CUTOFF)
    algos = SessionAlgos(loop, [plan], book(), set())
    watch_book = book()
    algos.poll(START, {}, watch_book)
    watch_book.state = TradingState.REDUCING          # an intraday loss limit fired
    algos.poll(START + dt.timedelta(minutes=10), {}, watch_book)
    rows = loop.journal.children(PARENT.client_order_id)
    assert [(r["client_order_id"][-3:], r["state"]) for r in rows] == [("T01", "open"), ("T02", "denied")]
