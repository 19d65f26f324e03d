"""Execution algorithms (broker/execution_algos.py): the TWAP child schedule (even in time and
shares, deterministic ids, never past the cutoff, resumed without re-sending), the limit at the
touch on the KRX tick grid and its cancel/replace when the touch moves, the sweep at the end of
the window, and the journal keeping each child under its parent (schema 3, v2 files migrated)."""
from __future__ import annotations

import datetime as dt
import sqlite3

import pytest

from broker.base import OrderRequest, OrderType, Side
from broker.execution_algos import (
    AlgoConfig,
    Cancel,
    Place,
    TouchPlan,
    plan_for,
    touch_price,
    twap_schedule,
)
from broker.journal import SCHEMA_VERSION, DuplicateOrder, Journal
from market import krx
from market.calendar import SEOUL

DAY = dt.date(2023, 5, 8)
START = dt.datetime.combine(DAY, dt.time(9, 0, 30), tzinfo=SEOUL)
CUTOFF = dt.datetime.combine(DAY, dt.time(15, 15), tzinfo=SEOUL)
BUY = OrderRequest("run-20230508-005930-B", "005930", Side.BUY, 100)
SELL = OrderRequest("run-20230508-000660-S", "000660", Side.SELL, 7)


def at(hhmm: str) -> dt.datetime:
    return dt.datetime.combine(DAY, dt.time.fromisoformat(hhmm), tzinfo=SEOUL)


def test_twap_children_are_even_in_time_and_shares_with_deterministic_ids():
    schedule = twap_schedule(OrderRequest("p", "005930", Side.BUY, 20), START, START + dt.timedelta(minutes=60), 6)
    assert [t for t, _ in schedule] == [START + dt.timedelta(minutes=10 * k) for k in range(6)]
    assert [c.qty for _, c in schedule] == [4, 4, 3, 3, 3, 3] and sum(c.qty for _, c in schedule) == 20
    assert [c.client_order_id for _, c in schedule] == [f"p-T{k:02d}" for k in range(1, 7)]
    assert all(c.order_type is OrderType.MARKET and c.side is Side.BUY for _, c in schedule)
    # fewer shares than children: one share each, never an empty child
    small = twap_schedule(OrderRequest("q", "005930", Side.SELL, 3), START, START + dt.timedelta(minutes=60), 6)
    assert [c.qty for _, c in small] == [1, 1, 1] and [t for t, _ in small][-1] == START + dt.timedelta(minutes=40)


def test_a_twap_window_past_the_cutoff_ends_at_the_cutoff_and_children_go_when_due():
    plan = plan_for(AlgoConfig("twap", twap_window_min=600, twap_children=4), BUY, at("14:00"), CUTOFF)
    assert [t for t, _ in plan.schedule] == [at("14:00"), at("14:18:45"), at("14:37:30"), at("14:56:15")]
    assert plan.next(at("13:59"), None) is None
    sent = []
    for now in (at("14:00"), at("14:10"), at("14:20"), at("14:40"), at("15:00"), at("15:15")):
        while (action := plan.next(now, None)) is not None:
            assert isinstance(action, Place)
            sent.append((now, action.request.client_order_id))
            plan.placed(action.request, working=action.request.qty != 25)   # a denied child is skipped
    assert sent == [(at("14:00"), f"{BUY.client_order_id}-T01"), (at("14:20"), f"{BUY.client_order_id}-T02"),
                    (at("14:40"), f"{BUY.client_order_id}-T03"), (at("15:00"), f"{BUY.client_order_id}-T04")]
    assert plan.done


def test_a_restarted_twap_plan_skips_the_children_already_journaled():
    plan = plan_for(AlgoConfig("twap", twap_window_min=60, twap_children=3), BUY, START, CUTOFF)
    plan.resume({f"{BUY.client_order_id}-T01", f"{BUY.client_order_id}-T02"})
    action = plan.next(CUTOFF, None)
    assert isinstance(action, Place) and action.request.client_order_id == f"{BUY.client_order_id}-T03"


def test_touch_price_joins_the_best_bid_or_ask_on_the_tick_grid_inside_the_limits():
    assert touch_price(Side.BUY, 65_400, 65_500, DAY) == 65_400
    assert touch_price(Side.SELL, 65_400, 65_500, DAY) == 65_500
    # an off-grid quote (tick 100 at 65,000) is snapped away from crossing: buy down, sell up
    assert touch_price(Side.BUY, 65_450, 65_550, DAY) == 65_400
    assert touch_price(Side.SELL, 65_450, 65_550, DAY) == 65_600
    lower, upper = krx.price_limits(50_000, DAY)
    assert touch_price(Side.SELL, 70_000, 70_100, DAY, previous_close=50_000) == upper
    assert touch_price(Side.BUY, 30_000, 30_050, DAY, previous_close=50_000) == lower
    assert all(krx.on_tick_grid(p, DAY) for p in (65_400, 65_600, upper, lower))


def test_limit_touch_reprices_by_cancel_replace_and_sweeps_the_rest_at_the_window_end():
    plan = plan_for(AlgoConfig("limit_touch", touch_window_min=30), BUY, START, CUTOFF, previous_close=65_000)
    assert isinstance(plan, TouchPlan) and plan.end == START + dt.timedelta(minutes=30)
    assert plan.next(START, None) is None                            # no quote yet: nothing
    first = plan.next(START, (65_400, 65_500))
    assert isinstance(first, Place) and first.request.client_order_id == f"{BUY.client_order_id}-L01"
    assert (first.request.order_type, first.request.limit_price, first.request.qty) == (OrderType.LIMIT, 65_400, 100)
    plan.placed(first.request, working=True)
    assert plan.next(at("09:05"), (65_400, 65_500)) is None          # the touch did not move
    assert plan.next(at("09:06"), (65_300, 65_400)) == Cancel(f"{BUY.client_order_id}-L01")
    plan.ended(f"{BUY.client_order_id}-L01", filled=40)              # its fills known after the cancel
    second = plan.next(at("09:06"), (65_300, 65_400))
    assert isinstance(second, Place) and second.request.client_order_id == f"{BUY.client_order_id}-L02"
    assert (second.request.limit_price, second.request.qty) == (65_300, 60)
    plan.placed(second.request, working=True)
    assert plan.next(plan.end, (65_300, 65_400)) == Cancel(f"{BUY.client_order_id}-L02")
    plan.ended(f"{BUY.client_order_id}-L02", filled=15)
    sweep = plan.next(plan.end, (65_300, 65_400))
    assert isinstance(sweep, Place) and sweep.request.client_order_id == f"{BUY.client_order_id}-M"
    assert (sweep.request.order_type, sweep.request.qty) == (OrderType.MARKET, 45)
    plan.placed(sweep.request, working=True)
    assert plan.done and plan.next(plan.end, (65_300, 65_400)) is None and plan.prices == [65_400, 65_300]


def test_a_denied_touch_child_ends_its_parent_and_a_filled_one_needs_no_sweep():
    denied = plan_for(AlgoConfig("limit_touch"), SELL, START, CUTOFF)
    child = denied.next(START, (120_000, 120_100))
    assert child.request.limit_price == 120_100
    denied.placed(child.request, working=False)
    assert denied.done and denied.next(CUTOFF, (120_000, 120_100)) is None
    filled = plan_for(AlgoConfig("limit_touch"), SELL, START, CUTOFF)
    child = filled.next(START, (120_000, 120_100))
    filled.placed(child.request, working=True)
    assert filled.next(at("09:30"), (119_900, 120_000)) == Cancel(child.request.client_order_id)
    filled.ended(child.request.client_order_id, filled=7)
    assert filled.done and filled.next(CUTOFF, None) is None


def test_settings_of_an_algorithm_are_checked_by_name():
    with pytest.raises(ValueError, match="execution.algo must be one of market_open, limit_touch, twap"):
        AlgoConfig("vwap")
    with pytest.raises(ValueError, match="twap_children"):
        AlgoConfig("twap", twap_children=0)
    with pytest.raises(ValueError, match="no plan"):
        plan_for(AlgoConfig(), BUY, START, CUTOFF)


def test_children_are_journaled_under_their_parent_and_a_parent_once(tmp_path):
    j = Journal(tmp_path / "j.sqlite", run_id="run")
    j.record_parent(BUY, START, "twap", {"children": 2})
    with pytest.raises(DuplicateOrder):
        j.record_parent(BUY, START, "twap", {"children": 2})
    kids = [c for _, c in twap_schedule(BUY, START, START + dt.timedelta(minutes=10), 2)]
    j.record_intent(kids[0], START, parent_id=BUY.client_order_id)
    j.record_denied(kids[1], START, "risk max_order_value: too big", parent_id=BUY.client_order_id)
    j.record_intent(OrderRequest("other", "005930", Side.SELL, 1), START)
    assert [(r["client_order_id"], r["state"]) for r in j.children(BUY.client_order_id)] == \
        [(kids[0].client_order_id, "intent"), (kids[1].client_order_id, "denied")]
    assert [(p["client_order_id"], p["algo"], p["qty"]) for p in j.parents()] == [(BUY.client_order_id, "twap", 100)]
    j.close()


def test_a_schema_2_journal_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "v2.sqlite"
    j = Journal(path, run_id="run")
    j.record_intent(SELL, START)
    j.close()
    db = sqlite3.connect(path)            # make it what version 2 wrote: no parent column or table
    db.executescript("DROP TABLE parent_orders; ALTER TABLE orders DROP COLUMN parent_id; PRAGMA user_version=2;")
    db.close()
    ro = Journal(path, readonly=True)     # a watcher reads it as it is
    assert [r["client_order_id"] for r in ro.orders()] == [SELL.client_order_id]
    ro.close()
    j = Journal(path, run_id="run")
    assert j.query("PRAGMA user_version")[0]["user_version"] == SCHEMA_VERSION == 3
    assert [(r["client_order_id"], r["parent_id"]) for r in j.orders()] == [(SELL.client_order_id, None)]
    j.record_parent(BUY, START, "limit_touch", {})
    j.record_intent(OrderRequest(f"{BUY.client_order_id}-L01", "005930", Side.BUY, 100, OrderType.LIMIT, 65_400),
                    START, parent_id=BUY.client_order_id)
    assert len(j.children(BUY.client_order_id)) == 1
    j.close()
