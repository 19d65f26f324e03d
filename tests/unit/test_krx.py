import datetime as dt

import numpy as np
import pytest

from market import krx
from market.calendar import TradingCalendar

NEW = dt.date(2023, 6, 1)
OLD = dt.date(2022, 6, 1)


@pytest.mark.parametrize("price,tick", [
    (1_999, 1), (2_000, 5), (4_995, 5), (5_000, 10), (19_990, 10), (20_000, 50), (49_950, 50),
    (50_000, 100), (199_900, 100), (200_000, 500), (499_500, 500), (500_000, 1_000),
])
def test_tick_table_since_2023_reform_at_band_boundaries(price, tick):
    assert krx.tick_size(price, NEW) == tick


@pytest.mark.parametrize("price,kospi,kosdaq", [
    (999, 1, 1), (1_000, 5, 5), (9_990, 10, 10), (10_000, 50, 50), (99_900, 100, 100),
    (100_000, 500, 100), (500_000, 1_000, 100),
])
def test_tick_table_before_reform_differs_by_market(price, kospi, kosdaq):
    assert krx.tick_size(price, OLD, krx.Market.KOSPI) == kospi
    assert krx.tick_size(price, OLD, krx.Market.KOSDAQ) == kosdaq


def test_reform_date_switches_table():
    assert krx.tick_size(15_000, dt.date(2023, 1, 24)) == 50
    assert krx.tick_size(15_000, dt.date(2023, 1, 25)) == 10


def test_round_to_tick_directions_and_vectors():
    assert krx.round_to_tick(53_049, NEW, direction="down") == 53_000
    assert krx.round_to_tick(53_001, NEW, direction="up") == 53_100
    assert krx.round_to_tick(53_050, NEW, direction="nearest") == 53_100
    assert krx.round_to_tick(1_999.5, NEW, direction="up") == 2_000
    out = krx.round_to_tick(np.array([1_234.4, 70_050.0]), NEW, direction="down")
    assert out.tolist() == [1_234, 70_000] and out.dtype == np.int64
    with pytest.raises(ValueError, match="positive"):
        krx.round_to_tick(-5, NEW)
    with pytest.raises(ValueError, match="direction"):
        krx.round_to_tick(100, NEW, direction="sideways")


def test_price_limits_match_kis_examples():
    # KIS_API.md §7.3: Samsung base 87,400 -> 61,200 / 113,600 (after the reform)
    assert krx.price_limits(87_400, NEW) == (61_200, 113_600)
    # SK hynix base 128,500 under the pre-2023 tick -> 90,000 / 167,000
    assert krx.price_limits(128_500, OLD) == (90_000, 167_000)


def test_price_limit_was_15_percent_before_2015_06_15():
    assert krx.price_limit_pct(dt.date(2015, 6, 12)) == 0.15
    assert krx.price_limit_pct(dt.date(2015, 6, 15)) == 0.30
    lower, upper = krx.price_limits(10_000, dt.date(2015, 6, 12))
    assert (lower, upper) == (8_500, 11_500)


@pytest.mark.parametrize("settle,kospi,kosdaq", [
    (dt.date(2023, 12, 29), 0.0020, 0.0020),
    (dt.date(2024, 1, 2), 0.0018, 0.0018),
    (dt.date(2024, 12, 31), 0.0018, 0.0018),
    (dt.date(2025, 1, 2), 0.0015, 0.0015),
    (dt.date(2025, 12, 31), 0.0015, 0.0015),
    (dt.date(2026, 1, 2), 0.0020, 0.0020),
    (dt.date(2022, 12, 30), 0.0023, 0.0023),
])
def test_sell_tax_table_boundaries(settle, kospi, kosdaq):
    assert krx.sell_tax_rate(settle, krx.Market.KOSPI) == kospi
    assert krx.sell_tax_rate(settle, krx.Market.KOSDAQ) == kosdaq


def test_tax_follows_settlement_date_not_trade_date():
    # a trade on 2024-12-27 (Fri) settles 2024-12-31... KRX closes 12-31, so on 2025-01-02
    cal = TradingCalendar(np.array(["2024-12-26", "2024-12-27", "2024-12-30", "2025-01-02", "2025-01-03"],
                                   dtype="datetime64[D]"))
    assert cal.settlement_date(dt.date(2024, 12, 26)) == dt.date(2024, 12, 30)
    assert cal.settlement_date(dt.date(2024, 12, 27)) == dt.date(2025, 1, 2)
    assert krx.sell_tax_rate(cal.settlement_date(dt.date(2024, 12, 27))) == 0.0015
    # past the calendar's end, weekdays stand in
    assert cal.settlement_date(dt.date(2025, 1, 3)) == dt.date(2025, 1, 7)


def test_costs_truncate_to_whole_won():
    assert krx.commission(1_000_000) == 150
    assert krx.commission(99_999) == 14          # 14.99985 -> 14
    assert krx.sell_tax(1_234_567, 0.0018) == 2_222  # 2222.22 -> 2222
    with pytest.raises(ValueError, match="before"):
        krx.sell_tax_rate(dt.date(1990, 1, 1))
