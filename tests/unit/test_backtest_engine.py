"""The backtest engine and the shared accounting it runs on: hand-computed cases, the batch
execute path against the sequential rule, and account invariants on the shipped data."""
import datetime as dt

import numpy as np
import pytest

from backtest.engine import BacktestConfig, rebalance_mask, run_backtest, tax_rates_by_bar
from market import krx
from market.accounting import BUY, SELL, Bar, CostModel, FillStatus, QuoteTable, execute, fill_prices
from market.data import Panel

NO_SLIP = CostModel(slippage_range_frac=0.0)


def make_panel(dates, symbols, bars):
    """bars: {symbol: [(o, h, l, c) or None per date]} -> Panel (None = no bar)."""
    d = np.array(dates, dtype="datetime64[D]")
    arrays = {f: np.full((len(d), len(symbols)), np.nan) for f in ("open", "high", "low", "close", "volume")}
    for j, s in enumerate(symbols):
        for i, bar in enumerate(bars[s]):
            if bar is not None:
                for f, v in zip(("open", "high", "low", "close"), bar):
                    arrays[f][i, j] = v
                arrays["volume"][i, j] = 1000
    return Panel(dates=d, symbols=tuple(symbols), **arrays)


def flat(p):
    return (p, p, p, p)


# --- hand-computed accounting ------------------------------------------------------------------
def test_round_trip_fees_and_tax_across_the_2024_2025_rate_change():
    dates = ["2024-12-20", "2024-12-23", "2024-12-24", "2024-12-26", "2024-12-27", "2024-12-30", "2025-01-02"]
    panel = make_panel(dates, ["A", "B"], {
        "A": [flat(10_000), (10_050, 10_150, 10_000, 10_100), (10_200, 10_300, 10_100, 10_200),
              flat(10_200), flat(10_200), flat(10_200), flat(10_200)],
        "B": [flat(50_000), (50_500, 51_000, 50_500, 51_000), flat(51_000), flat(51_000),
              (52_000, 52_500, 51_500, 52_000), flat(52_000), flat(52_000)],
    })
    w = np.zeros((7, 2))
    w[0] = [0.4, 0.4]           # 12-20: buy both (fills 12-23)
    w[1] = [0.0, 0.4]           # 12-23: sell A (fills 12-24, settles 12-27: 2024 rate 0.18%)
    w[2] = [0.0, 0.4]
    w[3] = [0.0, 0.0]           # 12-26: sell B (fills 12-27, settles 2025-01-02: 0.15%)
    cfg = BacktestConfig(cash=10_000_000, costs=NO_SLIP, min_trade_value=1_000_000)
    r = run_backtest(w, panel, config=cfg)
    fills = r.fills.select("date", "symbol", "side", "qty", "price", "commission", "tax").rows()
    assert fills == [
        (dt.date(2024, 12, 23), "A", "buy", 400, 10_050, 603, 0),     # 4,020,000 × 0.015% = 603
        (dt.date(2024, 12, 23), "B", "buy", 80, 50_500, 606, 0),      # 4,040,000 × 0.015% = 606
        (dt.date(2024, 12, 24), "A", "sell", 400, 10_200, 612, 7_344),  # 4,080,000 × 0.18%
        (dt.date(2024, 12, 27), "B", "sell", 80, 52_000, 624, 6_240),   # 4,160,000 × 0.15%
    ]
    assert r.cash[1] == 10_000_000 - 4_020_603 - 4_040_606 == 1_938_791
    assert r.cash[2] == 1_938_791 + 4_080_000 - 612 - 7_344
    assert r.cash[-1] == 1_938_791 + 4_072_044 + 4_160_000 - 624 - 6_240 == 10_163_971
    assert r.equity[-1] == 10_163_971 and r.holdings[-1].tolist() == [0, 0]
    assert r.commission.sum() == 603 + 606 + 612 + 624 and r.tax.sum() == 7_344 + 6_240


@pytest.mark.parametrize("sell_day,rate", [
    ("2025-12-26", 0.0015),   # settles 2025-12-30
    ("2025-12-29", 0.0020),   # settles 2026-01-02 (KRX is closed on 12-31): the 2026 rate
    ("2025-12-30", 0.0020),
])
def test_sell_tax_follows_settlement_across_the_2025_2026_change(sell_day, rate):
    dates = ["2025-12-22", "2025-12-23", "2025-12-24", "2025-12-26", "2025-12-29", "2025-12-30",
             "2026-01-02", "2026-01-05"]
    panel = make_panel(dates, ["A"], {"A": [flat(20_000)] * len(dates)})
    w = np.zeros((len(dates), 1))
    sell_i = dates.index(sell_day)
    w[:sell_i - 1] = 0.5  # buys on 12-23, sold at the open of sell_day
    # min_trade_value: without it the one-share drift of the target after the buy's commission
    # (floor(0.5 × 9,999,250 / 20,000) = 249) would sell one share the next day
    r = run_backtest(w, panel, config=BacktestConfig(cash=10_000_000, costs=NO_SLIP, min_trade_value=100_000))
    sell = r.fills.filter(side="sell").row(0, named=True)
    assert sell["date"] == dt.date.fromisoformat(sell_day)
    assert sell["qty"] == 250 and sell["price"] == 20_000
    assert sell["tax"] == int(np.floor(5_000_000 * rate + 1e-9))
    assert sell["commission"] == 750


def test_limit_locked_day_fills_nothing_and_the_next_decision_retries():
    dates = ["2024-03-04", "2024-03-05", "2024-03-06", "2024-03-07"]
    panel = make_panel(dates, ["A"], {"A": [flat(10_000), flat(13_000), (13_100, 13_500, 13_000, 13_400),
                                            flat(13_400)]})
    # 03-05 opens and stays at the +30% limit (10,000 -> 13,000): locked, no fill
    w = np.full((4, 1), 0.5)
    r = run_backtest(w, panel, config=BacktestConfig(cash=1_000_000, costs=NO_SLIP, min_trade_value=100_000))
    assert r.holdings[1].tolist() == [0] and r.cash[1] == 1_000_000
    (fill,) = r.fills.rows(named=True)
    # decided on 03-05's close: floor(0.5 × 1,000,000 / 13,000) = 38 shares at the 03-06 open
    assert (fill["date"], fill["qty"], fill["price"]) == (dt.date(2024, 3, 6), 38, 13_100)


def test_slippage_rounds_onto_the_tick_grid_against_the_trader():
    dates = ["2024-03-04", "2024-03-05", "2024-03-06"]
    panel = make_panel(dates, ["A"], {"A": [flat(10_000), (10_000, 10_400, 9_900, 10_200), flat(10_200)]})
    w = np.array([[0.5], [0.0], [0.0]])
    costs = CostModel(slippage_ticks=0.0, slippage_range_frac=0.05)
    r = run_backtest(w, panel, config=BacktestConfig(cash=1_000_000, costs=costs))
    buy, sell = r.fills.rows(named=True)
    # 10,000 + 5% of the 500-won range = 10,025 -> tick 10 -> 10,030 (rounded up for a buy)
    assert buy["price"] == 10_030 and buy["qty"] == 50  # floor(0.5 × 1,000,000 / 10,000)
    # the sell gets 10,200 - 5% of nothing (a flat bar): the open itself, already on the grid
    assert sell["price"] == 10_200 and sell["tax"] == int(50 * 10_200 * 0.0018)


def test_suspended_bar_keeps_the_position_and_values_it_at_the_last_close():
    dates = ["2024-03-04", "2024-03-05", "2024-03-06", "2024-03-07"]
    panel = make_panel(dates, ["A"], {"A": [flat(10_000), flat(10_000), None, flat(11_000)]})
    w = np.array([[0.5], [0.0], [0.0], [0.0]])
    r = run_backtest(w, panel, config=BacktestConfig(cash=1_000_000, costs=NO_SLIP))
    # bought 50 on 03-05; the sell decided on 03-05 meets no bar on 03-06 and does not fill
    assert r.holdings[2].tolist() == [50] and r.equity[2] == r.cash[2] + 50 * 10_000
    assert r.holdings[3].tolist() == [0]  # the sell decided on 03-06 fills on 03-07
    assert r.fills.filter(side="sell")["date"].to_list() == [dt.date(2024, 3, 7)]


def test_symbols_before_their_first_bar_and_after_delisting_are_not_tradable():
    dates = ["2024-03-04", "2024-03-05", "2024-03-06", "2024-03-07", "2024-03-08"]
    panel = make_panel(dates, ["A", "NEW"], {
        "A": [flat(10_000)] * 5,
        "NEW": [None, None, flat(5_000), flat(5_000), flat(5_200)],
    })
    # a weight on NEW before its first bar (even if a strategy asks) is dropped
    w = np.tile([0.4, 0.4], (5, 1))
    r = run_backtest(w, panel, config=BacktestConfig(cash=1_000_000, costs=NO_SLIP, min_trade_value=100_000),
                     delisted={"A": dt.date(2024, 3, 7)})
    assert np.all(r.targets[:2, 1] == 0) and np.all(r.holdings[:3, 1] == 0)
    assert r.holdings[3, 1] > 0  # decided on 03-06 (its first bar), bought on 03-07
    # A is delisted on 03-07: the position is closed at its last close that day
    assert r.holdings[3, 0] == 0 and r.holdings[4, 0] == 0
    closeout = r.fills.filter((r.fills["symbol"] == "A") & (r.fills["side"] == "sell")).row(0, named=True)
    assert closeout["date"] == dt.date(2024, 3, 7) and closeout["price"] == 10_000


# --- the batch path equals the sequential rule ---------------------------------------------------
def _random_batch(rng, n_sym):
    n = int(rng.integers(1, 25))
    idx = rng.integers(0, n_sym, n)
    side = rng.choice([BUY, SELL], n)
    qty = rng.integers(1, 400, n)
    o = rng.choice([950, 4_990, 12_340, 70_000, 312_000], n).astype(float)
    h = o * (1 + rng.uniform(0, 0.05, n))
    lo = o * (1 - rng.uniform(0, 0.05, n))
    missing = rng.random(n) < 0.1
    o[missing] = np.nan
    bar = Bar(open=o, high=h, low=lo, prev_close=o * (1 + rng.uniform(-0.02, 0.02, n)))
    limit = np.where(rng.random(n) < 0.2, np.round(o / 10) * 10, np.nan)
    limit = np.where(np.isnan(o), np.nan, limit)
    return idx, side, qty, limit, bar


@pytest.mark.parametrize("seed", range(60))
def test_batch_execute_gives_exactly_the_sequential_result(seed):
    rng = np.random.default_rng(seed)
    n_sym = 8
    idx, side, qty, limit, bar = _random_batch(rng, n_sym)
    holdings = rng.integers(0, 300, n_sym)
    cash = int(rng.choice([0, 50_000, 3_000_000, 10**9]))  # from broke to plenty: both buy paths
    on = dt.date(2024, 5, 2)
    costs = CostModel(slippage_ticks=1.0)
    fast = execute(idx, side, qty, limit, bar, on, 0.0018, cash, holdings, costs)
    slow = execute(idx, side, qty, limit, bar, on, 0.0018, cash, holdings, costs, sequential=True)
    for f in ("qty", "price", "commission", "tax", "status", "holdings"):
        assert np.array_equal(getattr(fast, f), getattr(slow, f)), f
    assert fast.cash == slow.cash and fast.cash >= 0 and np.all(fast.holdings >= 0)


def test_cash_short_batch_cuts_the_first_unaffordable_buy_and_continues():
    bar = Bar(open=np.array([10_000.0, 10_000.0, 1_000.0]), high=np.array([10_000.0] * 2 + [1_000.0]),
              low=np.array([10_000.0] * 2 + [1_000.0]), prev_close=np.array([10_000.0, 10_000.0, 1_000.0]))
    ex = execute([0, 1, 2], [BUY, BUY, BUY], [5, 5, 3], [np.nan] * 3, bar, dt.date(2024, 5, 2), 0.0018,
                 70_000, np.zeros(3, dtype=np.int64), NO_SLIP)
    # 5 × 10,000 + 7 won fits (19,993 left); the second can pay for one share (10,001), the
    # third (3 × 1,000 + 0 won commission) still fits into the 9,992 left: later buys go on
    assert ex.qty.tolist() == [5, 1, 3]
    assert ex.status.tolist()[:2] == [FillStatus.FILLED, FillStatus.PARTIAL_CASH]
    assert ex.cash == 70_000 - 50_007 - 10_001 - 3 * 1_000 and ex.cash >= 0


def test_quote_table_matches_fill_prices_bar_by_bar_across_rule_changes():
    rng = np.random.default_rng(3)
    dates = np.array(["2015-06-12", "2015-06-15", "2023-01-20", "2023-01-25", "2024-12-27"], dtype="datetime64[D]")
    o = rng.choice([950.0, 1_995.0, 4_990.0, 12_340.0, 70_000.0, 99_950.0, 312_000.0], (5, 6))
    h, lo = o * 1.03, o * 0.97
    pc = o * rng.uniform(0.8, 1.2, (5, 6))
    o[2, 3] = np.nan
    costs = CostModel(slippage_ticks=1.0, slippage_range_frac=0.05)
    table = QuoteTable.build(dates, o, h, lo, pc, costs)
    for t, day in enumerate(dates.astype(object)):
        bar = Bar(open=o[t], high=h[t], low=lo[t], prev_close=pc[t])
        for side, grid in ((BUY, table.buy), (SELL, table.sell)):
            price, status = fill_prices(np.full(6, side), np.full(6, np.nan), bar, day, costs)
            assert np.array_equal(grid[t], price) and np.array_equal(table.status[t], status)


# --- schedules and calendars ----------------------------------------------------------------------
def test_rebalance_schedules_use_only_each_bars_own_date():
    dates = np.array(["2024-01-29", "2024-01-31", "2024-02-01", "2024-02-02", "2024-02-05", "2024-03-04"],
                     dtype="datetime64[D]")
    assert rebalance_mask(dates, "monthly", 0).tolist() == [True, False, True, False, False, True]
    assert rebalance_mask(dates, "weekly", 1).tolist() == [False, True, False, False, True, True]
    assert rebalance_mask(dates, "once", 2).tolist() == [False, False, True, False, False, False]
    assert rebalance_mask(dates, 2, 0).tolist() == [True, False, True, False, True, False]
    with pytest.raises(ValueError, match="rebalance"):
        BacktestConfig(rebalance="hourly")


def test_tax_rate_table_by_bar_uses_t_plus_2_settlement():
    dates = np.array(["2024-12-26", "2024-12-27", "2024-12-30", "2025-01-02", "2025-01-03"], dtype="datetime64[D]")
    assert tax_rates_by_bar(dates, krx.Market.KOSPI).tolist() == [0.0018, 0.0015, 0.0015, 0.0015, 0.0015]


# --- invariants on the shipped data -------------------------------------------------------------
@pytest.fixture(scope="module")
def real_panel():
    from market.data import load_panel

    return load_panel(start="2017-01-01", end="2019-12-31")


@pytest.mark.parametrize("rebalance", ["daily", "monthly"])
def test_account_invariants_on_real_data(real_panel, rebalance):
    from strategies.technical import TechnicalAgent

    r = run_backtest(TechnicalAgent(), real_panel, start="2017-06-01",
                     config=BacktestConfig(rebalance=rebalance, costs=CostModel(slippage_ticks=1.0)))
    value = np.sum(r.holdings * np.nan_to_num(r.prices), axis=1)
    assert np.allclose(r.cash + value, r.equity, rtol=0, atol=1e-6)
    assert np.all(r.cash >= 0) and np.all(r.holdings >= 0)
    assert len(r.fills) > 0 and np.all(r.fills["qty"].to_numpy() > 0)
    # every fill price is on the tick grid of its day and trades paid their costs
    for day, price in r.fills.select("date", "price").iter_rows():
        assert krx.on_tick_grid(price, day)
    assert r.commission.sum() == r.fills["commission"].sum() and r.tax.sum() == r.fills["tax"].sum()
    # holdings only change through fills: replaying the fills reproduces the final holdings
    net = {s: 0 for s in r.symbols}
    for s, side, q in r.fills.select("symbol", "side", "qty").iter_rows():
        net[s] += q if side == "buy" else -q
    assert [net[s] for s in r.symbols] == r.holdings[-1].tolist()
    # nothing is decided after the end, nothing fills before the first execution bar
    assert r.fills["date"].min() > r.dates[0]


def test_bad_inputs_are_named():
    panel = make_panel(["2024-03-04", "2024-03-05"], ["A"], {"A": [flat(10_000)] * 2})
    with pytest.raises(ValueError, match="shape"):
        run_backtest(np.zeros((2, 3)), panel)
    with pytest.raises(ValueError, match="sum to"):
        run_backtest(np.full((2, 1), 1.5), panel)
    with pytest.raises(TypeError, match="not a strategy"):
        run_backtest("nope", panel)
    with pytest.raises(ValueError, match="cash"):
        BacktestConfig(cash=-5)
