"""The risk engine (broker/risk_engine.py): each rule denies what it exists for and lets the rest
through; the book is projected after each allowed order; the operator's state in the journal."""
from __future__ import annotations

import datetime as dt

import pytest

from broker.base import OrderRequest, OrderType, Side
from broker.journal import Journal
from broker.risk_engine import (
    Book,
    DailyLossLimit,
    MaxGross,
    MaxOrderValue,
    MaxPosition,
    OrderRateThrottle,
    PriceCollar,
    RiskEngine,
    TradingState,
    build_protections,
)

DAY = dt.date(2023, 12, 27)
NOW = dt.datetime(2023, 12, 27, 15, 30)


def book(**kw) -> Book:
    base = dict(day=DAY, cash=50_000_000.0, positions={"005930": 500}, last_close={"005930": 78_000.0, "000660": 140_000.0},
                previous_close={"005930": 77_000.0, "000660": 139_000.0}, day_start_equity=89_000_000.0)
    return Book(**{**base, **kw})


def buy(symbol="000660", qty=10, **kw) -> OrderRequest:
    return OrderRequest(f"r-{symbol}-{qty}-B", symbol, Side.BUY, qty, **kw)


def sell(symbol="005930", qty=100) -> OrderRequest:
    return OrderRequest(f"r-{symbol}-{qty}-S", symbol, Side.SELL, qty)


def test_defaults_let_an_ordinary_rebalance_through():
    engine, b = RiskEngine(), book()
    assert engine.check(sell(), b, NOW).allowed
    assert engine.check(buy(qty=100), b, NOW).allowed       # 14 M KRW of a 89 M book
    assert b.positions == {"005930": 400, "000660": 100} and b.cash == 50_000_000 + 100 * 78_000 - 100 * 140_000


@pytest.mark.parametrize("state,order,allowed", [
    (TradingState.HALTED, sell(), False),
    (TradingState.HALTED, buy(), False),
    (TradingState.REDUCING, sell(), True),
    (TradingState.REDUCING, sell(qty=501), False),   # more than held: would open a short
    (TradingState.REDUCING, buy(), False),
])
def test_trading_state(state, order, allowed):
    verdict = RiskEngine([]).check(order, book(state=state), NOW)
    assert verdict.allowed is allowed
    assert allowed or (verdict.rule == "trading_state" and state.value in verdict.reason)


def test_decision_halted_means_reduce_only_and_the_stricter_state_wins():
    assert TradingState.from_decision("HALTED") is TradingState.REDUCING
    assert TradingState.from_decision("REDUCING") is TradingState.ACTIVE   # the pipeline sized it already
    assert TradingState.stricter(TradingState.ACTIVE, TradingState.HALTED, TradingState.REDUCING) is TradingState.HALTED


def test_max_order_value():
    v = RiskEngine([MaxOrderValue(max_krw=1_000_000)]).check(buy(qty=10), book(), NOW)
    assert not v.allowed and v.rule == "max_order_value" and "1,400,000" in v.reason


def test_position_and_gross_caps_count_the_orders_already_allowed_this_bar():
    engine = RiskEngine([MaxPosition(max_fraction=0.25), MaxGross(max_fraction=1.0)])
    b = book()                                                   # equity 89 M, 39 M held
    assert engine.check(buy(qty=100), b, NOW).allowed            # 14 M: 15.7 %
    second = engine.check(OrderRequest("r-2", "000660", Side.BUY, 70), b, NOW)
    assert not second.allowed and second.rule == "max_position"  # 24.1 M: 27 % after the first
    engine = RiskEngine([MaxGross(max_fraction=0.6)])
    assert not engine.check(buy(qty=120), book(), NOW).allowed   # 39 M + 16.8 M > 53.4 M
    assert engine.check(sell(qty=500), book(), NOW).allowed       # sells never grow exposure


def test_price_collar_against_the_last_close_and_the_krx_limit():
    engine = RiskEngine([PriceCollar(max_deviation=0.5)])
    assert engine.check(buy(qty=1, order_type=OrderType.LIMIT, limit_price=141_000), book(), NOW).allowed
    far = engine.check(buy(qty=1, order_type=OrderType.LIMIT, limit_price=185_000), book(), NOW)
    assert not far.allowed and "KRX daily limit" in far.reason   # upper limit of 139,000 is 180,700
    tight = RiskEngine([PriceCollar(max_deviation=0.05)]).check(
        buy(qty=1, order_type=OrderType.LIMIT, limit_price=150_000), book(), NOW)
    assert not tight.allowed and "from the last close" in tight.reason
    unpriced = RiskEngine([PriceCollar()]).check(buy("035420"), book(), NOW)
    assert not unpriced.allowed and "no last close" in unpriced.reason


def test_daily_loss_limit_allows_only_reducing_orders():
    engine = RiskEngine([DailyLossLimit(max_loss=0.05)])
    down = book(day_start_equity=100_000_000.0)                # 89 M now: 11 % down on the day
    v = engine.check(buy(), down, NOW)
    assert not v.allowed and v.rule == "daily_loss_limit" and "11.0%" in v.reason
    assert engine.check(sell(), down, NOW).allowed


def test_order_rate_counts_allowed_orders_per_session_time():
    engine = RiskEngine([OrderRateThrottle(max_orders=2, per_s=60)])
    b = book(cash=1e12)
    assert engine.check(buy(qty=1), b, NOW).allowed
    assert engine.check(OrderRequest("r-3", "000660", Side.BUY, 1), b, NOW).allowed
    third = engine.check(OrderRequest("r-4", "000660", Side.BUY, 1), b, NOW + dt.timedelta(seconds=30))
    assert not third.allowed and third.rule == "order_rate"
    assert engine.check(OrderRequest("r-5", "000660", Side.BUY, 1), b, NOW + dt.timedelta(seconds=61)).allowed


def test_protections_are_built_from_settings_entries_with_clear_errors():
    built = build_protections([{"name": "max_order_value", "max_krw": 5}, {"name": "order_rate", "max_orders": 9}])
    assert [p.name for p in built] == ["max_order_value", "order_rate"] and built[0].max_krw == 5
    with pytest.raises(ValueError, match="unknown protection 'stoploss'.*known: max_order_value"):
        build_protections([{"name": "stoploss"}])
    with pytest.raises(ValueError, match="max_order_value takes max_krw, got limit"):
        build_protections([{"name": "max_order_value", "limit": 1}])


def test_settings_refuse_an_unknown_protection(tmp_path):
    from cluster.settings import SettingsError, load_settings

    path = tmp_path / "trader.yaml"
    path.write_text("risk_engine:\n  protections:\n    - {name: max_order_value, max_krw: 1000}\n")
    assert load_settings(path).risk_engine.protections == [{"name": "max_order_value", "max_krw": 1000}]
    path.write_text("risk_engine:\n  protections:\n    - {name: nope}\n")
    with pytest.raises(SettingsError, match="unknown protection 'nope'"):
        load_settings(path)


def test_operator_state_latest_word_wins_per_run_and_survives_reopening(tmp_path):
    path = tmp_path / "j.sqlite"
    j = Journal(path)
    assert j.control("run1")["state"] == "ACTIVE"
    j.set_control("HALTED", "maintenance")
    j.set_control("REDUCING", "this account only", run_id="run2")
    j.close()
    j = Journal(path, run_id="run1")
    assert j.control()["state"] == "HALTED" and j.control("run2")["state"] == "REDUCING"
    j.set_control("ACTIVE", "over")
    assert j.control()["state"] == j.control("run2")["state"] == "ACTIVE"
    with pytest.raises(ValueError, match="ACTIVE, REDUCING or HALTED"):
        j.set_control("PAUSED", "x")


def test_a_denied_order_is_journaled_with_its_reason_and_is_not_unsettled(tmp_path):
    j = Journal(tmp_path / "j.sqlite", run_id="r")
    j.record_denied(buy(), NOW, "risk max_order_value: too big")
    (row,) = j.orders()
    assert row["state"] == "denied" and row["reason"] == "risk max_order_value: too big"
    assert j.unsettled() == []      # nothing to ask the broker about: it never went out
