"""Intraday risk rules (broker/risk_engine.py IntradayLossLimit, PositionStop): the book marked at
live last-trade prices → actions. Pure functions of (book, marks, time); no Ray, no I/O."""
from __future__ import annotations

import datetime as dt

import pytest

from broker.base import OrderRequest, Side
from broker.risk_engine import (
    Book,
    IntradayLossLimit,
    PositionStop,
    RiskEngine,
    TradingState,
    build_intraday_rules,
    evaluate_intraday,
    marked_equity,
)

DAY = dt.date(2023, 5, 3)
NOW = dt.datetime(2023, 5, 3, 11, 0)


def book(**kw) -> Book:
    # 10,000,000 cash + 100 × 70,000 + 50 × 100,000 = 22,000,000 at the previous close
    base = dict(day=DAY, cash=10_000_000.0, positions={"005930": 100, "000660": 50},
                last_close={"005930": 70_000.0, "000660": 100_000.0},
                previous_close={"005930": 69_000.0, "000660": 99_000.0}, day_start_equity=22_000_000.0)
    return Book(**{**base, **kw})


def test_position_stop_sells_the_whole_holding_once_the_mark_reaches_the_stop():
    rule = PositionStop(max_drop=0.05)                 # stop at 66,500 for 005930 (previous close 70,000)
    assert rule.evaluate(book(), {"005930": 66_600, "000660": 100_000}, NOW) == []
    actions = rule.evaluate(book(), {"005930": 66_500, "000660": 100_000}, NOW)
    assert [(a.rule, a.symbol, a.qty, a.state) for a in actions] == [("position_stop", "005930", 100, None)]
    assert "-5.00%" in actions[0].reason and "previous close 70,000" in actions[0].reason


def test_position_stop_never_judges_a_name_without_a_mark_or_not_held():
    rule = PositionStop(max_drop=0.05)
    assert rule.evaluate(book(), {"000660": 100_000}, NOW) == []          # 005930 unmarked (stale): waits
    assert rule.evaluate(book(positions={"005930": 0}), {"005930": 50_000}, NOW) == []   # nothing held


def test_intraday_loss_limit_enters_reducing_and_flattens_when_configured():
    # marks: 100 × 63,000 + 50 × 90,000 = 10,800,000 → equity 20,800,000: a 5.45% loss
    marks = {"005930": 63_000, "000660": 90_000}
    assert marked_equity(book(), marks) == 20_800_000
    assert IntradayLossLimit(max_loss=0.06).evaluate(book(), marks, NOW) == []
    only_state = IntradayLossLimit(max_loss=0.05).evaluate(book(), marks, NOW)
    assert [(a.state, a.symbol) for a in only_state] == [(TradingState.REDUCING, None)]
    assert "5.45%" in only_state[0].reason
    flat = IntradayLossLimit(max_loss=0.05, flatten=True).evaluate(book(), marks, NOW)
    assert [(a.state, a.symbol, a.qty) for a in flat] == [
        (TradingState.REDUCING, None, 0), (None, "000660", 50), (None, "005930", 100)]


def test_intraday_loss_limit_waits_while_a_held_name_is_unmarked():
    """A stale feed never turns into a loss on an old price: no mark for a held name, no verdict."""
    assert marked_equity(book(), {"005930": 10_000}) is None
    assert IntradayLossLimit(max_loss=0.01, flatten=True).evaluate(book(), {"005930": 10_000}, NOW) == []


def test_a_stop_sell_passes_the_risk_engine_in_reducing_and_projects_the_book_flat():
    """The loss limit's REDUCING lets the stops' sells through (they shrink a position) and no buy;
    once the sell is allowed the projected book holds nothing, so the stop does not fire again."""
    b = book(state=TradingState.REDUCING)
    rule = PositionStop(max_drop=0.05)
    (action,) = rule.evaluate(b, {"005930": 60_000, "000660": 100_000}, NOW)
    engine = RiskEngine()
    sell = OrderRequest("r-005930-STOP", action.symbol, Side.SELL, action.qty)
    assert engine.check(sell, b, NOW).allowed
    assert rule.evaluate(b, {"005930": 60_000, "000660": 100_000}, NOW) == []
    buy = OrderRequest("r-000660-B", "000660", Side.BUY, 1)
    assert engine.check(buy, b, NOW).reason.startswith("trading state REDUCING")


def test_rules_come_from_settings_entries_and_bad_ones_are_named():
    rules = build_intraday_rules([{"name": "intraday_loss_limit", "max_loss": 0.03, "flatten": True},
                                  {"name": "position_stop", "max_drop": 0.07}])
    assert rules == [IntradayLossLimit(0.03, True), PositionStop(0.07)]
    assert build_intraday_rules() == []                  # off unless configured
    with pytest.raises(ValueError, match="unknown rule 'trailing'.*intraday_loss_limit, position_stop"):
        build_intraday_rules([{"name": "trailing"}])
    with pytest.raises(ValueError, match="position_stop takes max_drop, got pct"):
        build_intraday_rules([{"name": "position_stop", "pct": 0.1}])
    with pytest.raises(ValueError, match="max_drop must be in"):
        build_intraday_rules([{"name": "position_stop", "max_drop": 7}])


def test_evaluate_intraday_keeps_rule_order():
    rules = [IntradayLossLimit(max_loss=0.05), PositionStop(max_drop=0.05)]
    actions = evaluate_intraday(rules, book(), {"005930": 63_000, "000660": 90_000}, NOW)
    assert [(a.rule, a.symbol) for a in actions] == [
        ("intraday_loss_limit", None), ("position_stop", "000660"), ("position_stop", "005930")]
