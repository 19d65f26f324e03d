import datetime as dt

import pytest

from broker.base import OrderError, OrderRequest, OrderStatus, OrderType, Side
from broker.journal import DuplicateOrder, Journal
from broker.paper import PaperBroker
from market.accounting import CostModel

D0, D1, D2 = dt.date(2024, 3, 4), dt.date(2024, 3, 5), dt.date(2024, 3, 6)
NO_SLIP = CostModel(slippage_range_frac=0.0)


def broker(cash=10_000_000, costs=NO_SLIP):
    b = PaperBroker(cash, costs)
    b.on_bar(D0, {"005930": (70_000, 71_000, 69_500, 70_000)})
    return b


def test_market_buy_fills_at_next_open_with_commission():
    b = broker()
    order = b.submit(OrderRequest("o1", "005930", Side.BUY, 10))
    assert order.status is OrderStatus.OPEN and b.cash() == 10_000_000  # nothing happens before the next bar
    fills = b.on_bar(D1, {"005930": (70_300, 72_000, 70_000, 71_500)})
    assert [(f.qty, f.price, f.commission, f.tax) for f in fills] == [(10, 70_300, 105, 0)]
    assert b.cash() == 10_000_000 - 703_000 - 105
    assert b.positions() == {"005930": 10}
    assert order.status is OrderStatus.FILLED


def test_sell_pays_commission_and_dated_tax():
    b = broker()
    b.submit(OrderRequest("b", "005930", Side.BUY, 10))
    b.on_bar(D1, {"005930": (70_000, 70_000, 70_000, 70_000)})
    b.submit(OrderRequest("s", "005930", Side.SELL, 10))
    (fill,) = b.on_bar(D2, {"005930": (71_000, 71_500, 70_500, 71_000)})
    # 710,000 × 0.015% = 106.5 -> 106; 2024 KOSPI tax 0.18% = 1,278
    assert (fill.price, fill.commission, fill.tax) == (71_000, 106, 1_278)
    assert b.cash() == 10_000_000 - 700_000 - 105 + 710_000 - 106 - 1_278
    assert b.positions() == {}


def test_slippage_moves_price_against_the_trader_onto_the_tick_grid():
    b = broker(costs=CostModel(slippage_ticks=1.0, slippage_range_frac=0.0))
    b.submit(OrderRequest("o1", "005930", Side.BUY, 1))
    (fill,) = b.on_bar(D1, {"005930": (70_050, 72_000, 70_000, 71_500)})
    assert fill.price == 70_200  # 70,050 + one 100-won tick = 70,150 -> snapped up to 70,200


def test_limit_buy_fills_only_if_bar_trades_through():
    b = broker()
    b.submit(OrderRequest("l1", "005930", Side.BUY, 5, OrderType.LIMIT, 69_000))
    assert b.on_bar(D1, {"005930": (70_000, 71_000, 69_000, 70_500)}) == []  # touched, not through
    assert b.find_order("l1").status is OrderStatus.EXPIRED
    b.submit(OrderRequest("l2", "005930", Side.BUY, 5, OrderType.LIMIT, 69_000))
    (fill,) = b.on_bar(D2, {"005930": (70_000, 71_000, 68_500, 70_500)})
    assert fill.price == 69_000


def test_limit_order_off_grid_or_outside_limits_is_rejected_with_reason():
    b = broker()
    off = b.submit(OrderRequest("x1", "005930", Side.BUY, 1, OrderType.LIMIT, 70_050))
    assert off.status is OrderStatus.REJECTED and "tick grid" in off.reason
    high = b.submit(OrderRequest("x2", "005930", Side.BUY, 1, OrderType.LIMIT, 91_100))
    assert high.status is OrderStatus.REJECTED and "price limits" in high.reason
    assert b.open_orders() == []


def test_no_short_selling_and_locked_limit_day():
    b = broker()
    assert b.submit(OrderRequest("s", "005930", Side.SELL, 1)).status is OrderStatus.REJECTED
    b.submit(OrderRequest("b", "005930", Side.BUY, 1))
    assert b.on_bar(D1, {"005930": (91_000, 91_000, 91_000, 91_000)}) == []  # locked limit-up
    assert b.find_order("b").status is OrderStatus.EXPIRED and "locked" in b.find_order("b").reason


def test_buy_is_cut_to_what_cash_affords():
    b = broker(cash=200_000)
    b.submit(OrderRequest("b", "005930", Side.BUY, 5))
    (fill,) = b.on_bar(D1, {"005930": (70_000, 70_000, 70_000, 70_000)})
    assert fill.qty == 2 and b.cash() == 200_000 - 140_000 - 21 and b.cash() >= 0


def test_malformed_requests_fail_before_anything_happens():
    with pytest.raises(OrderError, match="positive whole number"):
        OrderRequest("q", "005930", Side.BUY, 0)
    with pytest.raises(OrderError, match="positive whole number"):
        OrderRequest("q", "005930", Side.BUY, 1.5)
    with pytest.raises(OrderError, match="limit_price"):
        OrderRequest("q", "005930", Side.BUY, 1, OrderType.LIMIT, None)


def test_resubmitting_a_client_id_does_not_double_the_order(tmp_path):
    b = broker()
    first = b.submit(OrderRequest("same", "005930", Side.BUY, 1))
    second = b.submit(OrderRequest("same", "005930", Side.BUY, 1))
    assert first is second and len(b.open_orders()) == 1
    journal = Journal(tmp_path / "j.sqlite", run_id="t")
    journal.record_intent(first.request, dt.datetime(2024, 3, 4, 15, 30, tzinfo=dt.timezone.utc))
    with pytest.raises(DuplicateOrder):
        journal.record_intent(first.request, dt.datetime(2024, 3, 4, 15, 30, tzinfo=dt.timezone.utc))
    assert [r["client_order_id"] for r in journal.unacknowledged()] == ["same"]
    journal.record_order(first)
    assert journal.unacknowledged() == []
