"""The batched accounting kernel equals the scalar accounting and the backtest engine, fill for fill.

Seeded random target sequences over real shipped bars (spans with real suspensions and real
limit locks: NAVER and Hanjin KAL in the 2013 split suspension, Daum's 2014 locks, Hyundai Glovis'
2015 lock, a 2022 lock under the tick table reform), plus a copied panel with constructed ones:
suspended days (no bar, zero volume), a flat zero-volume bar, limit-up and limit-down locks.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from backtest.engine import BacktestConfig, run_backtest
from market import krx
from market.accounting import (
    AccountingInputs,
    Bar,
    CostModel,
    FillStatus,
    QuoteTable,
    execute,
    execute_batch,
    orders_for_targets,
    orders_for_targets_batch,
)
from market.data import Panel, load_panel

SPANS = {
    # 2013 suspension of 035420/003490 (split), 2014 locks of 035720, 2015 lock of 086280, the
    # 2015-06-15 widening of the price limits from 15% to 30%
    "2013-2015": (("035720", "035420", "003490", "086280", "005930", "000660"), "2013-01-01", "2015-12-31"),
    # a 2022 lock of 138040 and the 2023-01-25 tick table reform
    "2022-2023": (("138040", "005930", "000660", "035720", "051910"), "2022-06-01", "2023-06-30"),
}


def with_constructed_days(panel: Panel) -> Panel:
    """A copy with suspended days, a zero-volume flat bar and limit-up / limit-down locks added."""
    o, h, lo, c, v = (getattr(panel, f).copy() for f in ("open", "high", "low", "close", "volume"))
    T = len(panel)
    # column 4: suspended for five days (no bar, no volume), then a flat bar with zero volume
    s = T // 3
    for a in (o, h, lo, c):
        a[s:s + 5, 4] = np.nan
    v[s:s + 5, 4] = 0.0
    o[s + 5, 4] = h[s + 5, 4] = lo[s + 5, 4] = c[s + 5, 4] = c[s - 1, 4]
    v[s + 5, 4] = 0.0
    # column 1: locked limit-up two days in a row, then limit-down (open = high = low = close)
    for k, side in ((T // 2, "up"), (T // 2 + 1, "up"), (T // 2 + 2, "down")):
        base = c[k - 1, 1]
        lower, upper = krx.price_limits(base, panel.date(k))
        o[k, 1] = h[k, 1] = lo[k, 1] = c[k, 1] = float(upper if side == "up" else lower)
    return dataclasses.replace(panel, open=o, high=h, low=lo, close=c, volume=v)


@pytest.fixture(scope="module", params=sorted(SPANS))
def panel(request) -> Panel:
    symbols, start, end = SPANS[request.param]
    return with_constructed_days(load_panel(symbols=list(symbols), start=start, end=end).select(symbols))


def random_targets(rng: np.random.Generator, n_accounts: int, n: int, previous: np.ndarray) -> np.ndarray:
    """Long-only targets: all cash, hold the last target, fully invested, or a random partial mix."""
    w = np.zeros((n_accounts, n))
    kind = rng.integers(0, 4, size=n_accounts)
    for e in range(n_accounts):
        if kind[e] == 1:
            w[e] = previous[e]
        elif kind[e] >= 2:
            chosen = rng.random(n) < 0.6
            chosen[rng.integers(n)] = True
            mix = np.where(chosen, rng.dirichlet(np.ones(n)), 0.0)
            w[e] = mix / mix.sum() * (1.0 if kind[e] == 2 else rng.uniform(0.2, 0.99))
    return w


def dense(ex, idx: np.ndarray, side: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """The scalar `Execution` laid out per symbol, as the batched one is."""
    out = {k: np.zeros(n, dtype=np.int64) for k in ("qty", "price", "commission", "tax", "side")}
    out["status"] = np.full(n, FillStatus.FILLED, dtype=np.int64)
    for k in ("qty", "price", "commission", "tax", "status"):
        out[k][idx] = getattr(ex, k)
    out["side"][idx] = side
    return out


@pytest.mark.parametrize("cash_buffer,min_trade_value", [(0.0, 0.0), (0.01, 1_000_000.0)])
def test_batched_kernel_equals_scalar_accounting_on_random_targets(panel, cash_buffer, min_trade_value):
    """E accounts, each at its own bar, stepped together; every step equals the scalar
    `orders_for_targets` at close t + `execute` on bar t+1 (prices from the raw bar, not the table)."""
    costs = CostModel(slippage_ticks=1.0, slippage_range_frac=0.05)
    inputs = AccountingInputs.build(panel.dates, panel.close)
    quotes = QuoteTable.build(panel.dates, panel.open, panel.high, panel.low, inputs.prev_close, costs)
    rng = np.random.default_rng(12)
    E, n, T = 12, len(panel.symbols), len(panel)
    steps = min(300, T // 2)
    start = rng.integers(0, T - steps - 1, size=E)
    start[:3] = 0  # a few accounts walk through the start, where some symbols have no close yet
    cash = rng.integers(2_000_000, 2_000_000_000, size=E).astype(np.int64)
    cash[0] = 150_000  # small enough that whole shares of the dearer symbols are unaffordable
    holdings = np.zeros((E, n), dtype=np.int64)
    ref_cash, ref_hold = cash.copy(), holdings.copy()
    w = np.zeros((E, n))
    seen = set()
    for k in range(steps):
        t = start + k
        w = random_targets(rng, E, n, w)
        sells, buys = orders_for_targets_batch(w, holdings, cash, inputs.ref_price[t], min_trade_value,
                                               cash_buffer)
        u = t + 1
        ex = execute_batch(sells, buys, quotes.buy[u], quotes.sell[u], quotes.status[u], inputs.sell_tax[u],
                           cash, holdings, costs)
        for e in range(E):
            idx, side, qty = orders_for_targets(w[e], ref_hold[e], int(ref_cash[e]), inputs.ref_price[t[e]],
                                                min_trade_value, cash_buffer)
            signed = np.zeros(n, dtype=np.int64)
            signed[idx] = side * qty
            assert np.array_equal(buys[e] - sells[e], signed), f"orders differ: account {e}, step {k}"
            ue = int(u[e])
            bar = Bar(open=panel.open[ue, idx], high=panel.high[ue, idx], low=panel.low[ue, idx],
                      prev_close=inputs.prev_close[ue, idx])
            ref = execute(idx, side, qty, np.full(len(idx), np.nan), bar, panel.date(ue),
                          float(inputs.sell_tax[ue]), int(ref_cash[e]), ref_hold[e], costs)
            want = dense(ref, idx, side, n)
            for key, arr in want.items():
                assert np.array_equal(getattr(ex, key)[e], arr), f"{key} differs: account {e}, step {k}"
            assert ex.cash[e] == ref.cash and np.array_equal(ex.holdings[e], ref.holdings)
            ref_cash[e], ref_hold[e] = ref.cash, ref.holdings
            seen.update(int(s) for s in ref.status)
        cash, holdings = ex.cash, ex.holdings
        assert (cash >= 0).all() and (holdings >= 0).all()
    # the sequences reached the rules under test, not only plain fills
    assert {FillStatus.FILLED, FillStatus.NO_BAR, FillStatus.LOCKED} <= seen
    if cash_buffer == 0.0:
        assert FillStatus.PARTIAL_CASH in seen or FillStatus.NO_CASH in seen


def test_batched_kernel_equals_backtest_engine(panel):
    """E random daily target matrices: the kernel stepping all E books over the panel gives the
    backtest engine's cash, holdings, commission, tax and fills, bar for bar."""
    costs = CostModel(slippage_ticks=0.0, slippage_range_frac=0.05)
    config = BacktestConfig(cash=300_000_000, costs=costs, min_trade_value=500_000.0, cash_buffer=0.005)
    rng = np.random.default_rng(3)
    E, n, T = 4, len(panel.symbols), len(panel)
    listed = ~np.isnan(AccountingInputs.build(panel.dates, panel.close).ref_price)
    matrices = np.zeros((E, T, n))
    w = np.zeros((E, n))
    for t in range(T):
        w = random_targets(rng, E, n, w)
        # a symbol without a bar yet is not tradable; the engine would drop its weight too
        matrices[:, t] = np.where(listed[t], w, 0.0)
    results = [run_backtest(matrices[e], panel, config=config) for e in range(E)]

    inputs = AccountingInputs.build(panel.dates, panel.close)
    quotes = QuoteTable.build(panel.dates, panel.open, panel.high, panel.low, inputs.prev_close, costs)
    cash = np.full(E, config.cash, dtype=np.int64)
    holdings = np.zeros((E, n), dtype=np.int64)
    fills: list[list[tuple]] = [[] for _ in range(E)]
    for t in range(T - 1):
        sells, buys = orders_for_targets_batch(matrices[:, t], holdings, cash,
                                               np.broadcast_to(inputs.ref_price[t], (E, n)),
                                               config.min_trade_value, config.cash_buffer)
        u = t + 1
        ex = execute_batch(sells, buys, np.broadcast_to(quotes.buy[u], (E, n)),
                           np.broadcast_to(quotes.sell[u], (E, n)), np.broadcast_to(quotes.status[u], (E, n)),
                           np.full(E, inputs.sell_tax[u]), cash, holdings, costs)
        cash, holdings = ex.cash, ex.holdings
        for e, res in enumerate(results):
            assert res.cash[u] == cash[e] and np.array_equal(res.holdings[u], holdings[e]), (e, u)
            assert res.commission[u] == ex.commission[e].sum() and res.tax[u] == ex.tax[e].sum(), (e, u)
            for side in (-1, 1):  # the engine lists a bar's sells first, then its buys, by symbol
                for j in np.flatnonzero((ex.side[e] == side) & (ex.qty[e] > 0)):
                    fills[e].append((str(panel.dates[u]), panel.symbols[j], "buy" if side == 1 else "sell",
                                     int(ex.qty[e, j]), int(ex.price[e, j]), int(ex.commission[e, j]),
                                     int(ex.tax[e, j])))
    for e, res in enumerate(results):
        engine_fills = [(str(r[0]), *r[1:]) for r in res.fills.iter_rows()]
        assert engine_fills == fills[e] and len(fills[e]) > 100


def test_batched_orders_reject_short_and_leverage_naming_the_account():
    hold, px = np.zeros((2, 2), dtype=np.int64), np.full((2, 2), 10_000.0)
    with pytest.raises(ValueError, match="no leverage.*account 1"):
        orders_for_targets_batch(np.array([[0.5, 0.5], [0.7, 0.7]]), hold, np.full(2, 10**6), px)
    with pytest.raises(ValueError, match="no short.*account 0"):
        orders_for_targets_batch(np.array([[-0.1, 0.5], [0.2, 0.2]]), hold, np.full(2, 10**6), px)
    with pytest.raises(ValueError, match="one order per account and symbol"):
        execute_batch(np.ones((1, 2), dtype=np.int64), np.ones((1, 2), dtype=np.int64), np.ones((1, 2)),
                      np.ones((1, 2)), np.zeros((1, 2)), np.zeros(1), np.full(1, 10**6), hold[:1])
