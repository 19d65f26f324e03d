"""Targets → orders, and that nothing after a decision's bar reaches it."""
import dataclasses
import datetime as dt

import numpy as np
import pytest

from actors.market_state import MarketState
from market.accounting import BUY, SELL, Bar, CostModel, FillStatus, execute, orders_for_targets
from market.data import load_panel
from strategies.technical import TechnicalAgent


def test_orders_for_targets_whole_shares_sells_first_and_no_leverage():
    holdings = np.array([100, 0, 50])
    px = np.array([10_000.0, 50_000.0, 2_000.0])
    idx, side, qty = orders_for_targets(np.array([0.0, 0.5, 0.1]), holdings, 1_000_000, px, cash_buffer=0.0)
    # equity = 1,000,000 + 1,000,000 + 100,000 = 2,100,000
    orders = {(int(i), int(s)): int(q) for i, s, q in zip(idx, side, qty)}
    assert orders == {(0, SELL): 100, (1, BUY): 21, (2, BUY): 55}
    assert side[0] == SELL  # sells come first
    with pytest.raises(ValueError, match="no leverage"):
        orders_for_targets(np.array([0.7, 0.7, 0.0]), holdings, 1_000_000, px)
    with pytest.raises(ValueError, match="no short"):
        orders_for_targets(np.array([-0.1, 0.0, 0.0]), holdings, 1_000_000, px)


def test_buys_are_scaled_into_cash_with_the_buffer():
    idx, side, qty = orders_for_targets(np.array([1.0]), np.array([0]), 1_000_000, np.array([10_000.0]),
                                        cash_buffer=0.01)
    assert qty.tolist() == [99]  # 100 shares would need 1,010,000 with the 1% buffer


def test_small_rebalances_below_min_trade_value_are_skipped():
    idx, side, qty = orders_for_targets(np.array([0.5]), np.array([49]), 510_000, np.array([10_000.0]),
                                        min_trade_value=20_000)
    assert len(qty) == 0


def test_execute_never_takes_cash_negative_and_caps_sells_at_holding():
    bar = Bar(open=np.array([10_000.0, 20_000.0]), high=np.array([10_500.0, 20_500.0]),
              low=np.array([9_900.0, 19_800.0]), prev_close=np.array([10_000.0, 20_000.0]))
    res = execute(np.array([0, 1]), np.array([SELL, BUY]), np.array([30, 100]), np.array([np.nan, np.nan]), bar,
                  dt.date(2024, 5, 2), 0.0018, cash=500_000, holdings=np.array([20, 0]),
                  costs=CostModel(slippage_range_frac=0.0))
    assert res.qty[0] == 20 and res.status[0] == FillStatus.PARTIAL_POSITION
    assert res.status[1] == FillStatus.PARTIAL_CASH and res.cash >= 0
    assert res.holdings.tolist() == [0, res.qty[1]]
    spent = int(res.qty[1]) * 20_000 + int(res.commission[1])
    received = 20 * 10_000 - int(res.commission[0]) - int(res.tax[0])
    assert res.cash == 500_000 + received - spent


def test_snapshot_holds_nothing_after_the_decision_bar():
    panel = load_panel(symbols=["005930", "000660"], start="2023-01-01", end="2023-03-31")
    state = MarketState(panel, start_index=20)
    snap = state.snapshot(lookback=10)
    assert snap["dates"][-1] == str(panel.dates[20]) and len(snap["dates"]) == 10
    state.advance()
    assert state.snapshot(10)["dates"][-1] == str(panel.dates[21])


def test_technical_decision_ignores_everything_after_its_bar():
    panel = load_panel(symbols=["005930", "000660", "035420", "005380", "051910", "006400"],
                       start="2022-01-01", end="2023-12-28")
    agent = TechnicalAgent(top_k=3)
    t = 300
    rng = np.random.default_rng(0)
    future = {f: getattr(panel, f).copy() for f in ("open", "high", "low", "close", "volume")}
    for a in future.values():
        a[t + 1:] *= rng.uniform(0.5, 1.5, size=a[t + 1:].shape)
    scrambled = dataclasses.replace(panel, **future)
    assert not np.allclose(scrambled.close[t + 1:], panel.close[t + 1:], equal_nan=True)
    np.testing.assert_array_equal(agent.target_weights(panel.upto(panel.date(t))),
                                  agent.target_weights(scrambled.upto(scrambled.date(t))))
