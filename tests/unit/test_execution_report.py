"""The execution report's arithmetic (reports/execution.py): slippage signs, the synthetic day's
open and VWAP, and the journal's fills attributed to their parent's algorithm (stops left out)."""
from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from broker.base import Fill, OrderRequest, Side
from broker.journal import Journal
from broker.sim.intraday import synth_session
from market.calendar import SEOUL
from reports.execution import Benchmark, benchmarks, journal_slippage, slippage_bps

DAY = dt.date(2023, 5, 2)
AT = dt.datetime.combine(DAY, dt.time(9, 0), tzinfo=SEOUL)


def test_slippage_is_a_cost_when_a_buy_pays_more_or_a_sell_gets_less():
    assert slippage_bps("buy", 101.0, 100.0) == pytest.approx(100.0)
    assert slippage_bps("sell", 101.0, 100.0) == pytest.approx(-100.0)
    assert slippage_bps("sell", 99.0, 100.0) == pytest.approx(100.0)


def test_benchmarks_are_the_paths_first_print_and_its_volume_weighted_price():
    bar = (65_000.0, 66_000.0, 64_500.0, 65_500.0, 1_000_000)
    replay = pl.DataFrame({"symbol": ["005930"], "date": [DAY], "open": [bar[0]], "high": [bar[1]], "low": [bar[2]],
                           "close": [bar[3]], "volume": [bar[4]]})
    b = benchmarks(replay, seed=3)[("005930", DAY)]
    prints = synth_session("005930", DAY, bar, seed=3)
    assert b.open == 65_000 == prints[0].price
    assert b.vwap == pytest.approx(sum(p.price * p.qty for p in prints) / 1_000_000)
    assert 64_500 <= b.vwap <= 66_000


def test_fills_count_for_their_parents_algorithm_weighted_by_notional(tmp_path):
    j = Journal(tmp_path / "j.sqlite", run_id="r")
    parent = OrderRequest("r-P", "005930", Side.BUY, 30)
    j.record_parent(parent, AT, "twap", {})
    kids = [OrderRequest("r-P-T01", "005930", Side.BUY, 10), OrderRequest("r-P-T02", "005930", Side.BUY, 20)]
    for kid in kids:
        j.record_intent(kid, AT, parent_id="r-P")
    j.record_intent(OrderRequest("r-S", "000660", Side.SELL, 5), AT)
    j.record_intent(OrderRequest("r-S-STOP", "000660", Side.SELL, 5), AT)
    for cid, sym, side, qty, price in (("r-P-T01", "005930", Side.BUY, 10, 101), ("r-P-T02", "005930", Side.BUY, 20, 98),
                                        ("r-S", "000660", Side.SELL, 5, 200), ("r-S-STOP", "000660", Side.SELL, 5, 150)):
        j.record_fill(Fill(cid, "o", sym, side, qty, price, 0, 0, AT, fill_id="x"))
    j.close()
    bench = {("005930", DAY): Benchmark(open=100.0, vwap=99.0), ("000660", DAY): Benchmark(open=210.0, vwap=200.0)}
    out = journal_slippage(tmp_path / "j.sqlite", bench)
    twap_vwap = (1010 * (101 / 99 - 1) + 1960 * (98 / 99 - 1)) * 1e4 / 2970
    assert out["twap"]["vwap"] == pytest.approx(twap_vwap) and out["twap"]["orders"] == 1 and out["twap"]["fills"] == 2
    assert out["twap"]["open"] == pytest.approx((1010 * 0.01 + 1960 * -0.02) * 1e4 / 2970)
    assert out["market_open"] == {"vwap": pytest.approx(0.0), "open": pytest.approx((1 - 200 / 210) * 1e4),
                                  "notional": 1000, "fills": 1, "orders": 1}
