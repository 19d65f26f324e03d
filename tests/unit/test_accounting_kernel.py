"""The backtest engine's compiled accounting (market/accounting_kernel.py) equals the scalar
accounting fill for fill and won for won.

The reference is the engine's loop written with the scalar functions the paper broker uses:
`orders_for_targets` at the close of each decision bar and `execute` on the next bar's raw
prices (`fill_prices`, not the quote table), delisted positions closed at the last close. It runs
on seeded random target matrices over real shipped bars with real suspensions and limit locks
(the spans and constructed days of test_accounting_batch.py), with delistings, initial holdings,
a start inside the panel, the rebalance band, and a wide panel (89 symbols: numpy's pairwise
summation in full, not only its short-array loop).
"""
from __future__ import annotations

import numpy as np
import pytest

from backtest.engine import BacktestConfig, delisting_index, first_bar_index, rebalance_mask, run_backtest
from market import krx
from market.accounting import AccountingInputs, Bar, CostModel, FillStatus, execute, orders_for_targets
from market.accounting_kernel import _pairwise_sum, _size_orders
from market.data import Panel, load_panel
from tests.unit.test_accounting_batch import panel, random_targets  # noqa: F401  (the shared fixture)


def reference_backtest(matrix: np.ndarray, data: Panel, config: BacktestConfig, s: int, e: int,
                       delisted: dict, holdings: np.ndarray, cash: int):
    """The engine's rules stepped with the scalar accounting; returns the per-bar account, the
    fills and orders as the engine lists them, and the fill statuses met."""
    T, n = data.close.shape
    costs = config.costs
    inputs = AccountingInputs.build(data.dates, data.close, costs.market, config.sell_tax)
    listed_from, delisted_at = first_bar_index(data.close), delisting_index(data.dates, data.symbols, delisted)
    rows = np.arange(T)[:, None]
    tradable = (listed_from[None, :] <= rows) & (delisted_at[None, :] > rows + 1)
    ref_at = np.where(tradable, inputs.ref_price, np.nan)
    weights = np.where(tradable, np.clip(matrix, 0.0, None), 0.0)
    t0 = max(s - 1, 0)
    decisions = rebalance_mask(data.dates, config.rebalance, t0)
    holdings = holdings.copy()
    book = [(cash, holdings.copy(), 0, 0, 0.0)]
    fills, orders, statuses = [], [], set()
    for t in range(t0, e):
        u = t + 1
        comm = tax = 0
        traded = 0.0
        if decisions[t]:
            min_trade = config.min_trade_value
            if config.rebalance_band > 0:
                equity = cash + float(np.sum(holdings * np.nan_to_num(ref_at[t])))
                min_trade = max(min_trade, config.rebalance_band * equity)
            idx, side, qty = orders_for_targets(weights[t], holdings, cash, ref_at[t], min_trade, config.cash_buffer)
            orders += [(t, int(j), int(sd), int(q)) for j, sd, q in zip(idx, side, qty)]
            if len(idx):
                bar = Bar(open=data.open[u, idx], high=data.high[u, idx], low=data.low[u, idx],
                          prev_close=inputs.prev_close[u, idx])
                ex = execute(idx, side, qty, np.full(len(idx), np.nan), bar, data.date(u), float(inputs.sell_tax[u]),
                             cash, holdings, costs)
                cash, holdings = ex.cash, ex.holdings
                statuses.update(int(st) for st in ex.status)
                for k in np.flatnonzero(ex.qty > 0):
                    fills.append((u, int(idx[k]), int(side[k]), int(ex.qty[k]), int(ex.price[k]),
                                  int(ex.commission[k]), int(ex.tax[k])))
                comm, tax = int(ex.commission.sum()), int(ex.tax.sum())
                traded = float((ex.qty * ex.price).sum())
        for j in np.flatnonzero((delisted_at == u) & (holdings > 0)):
            px = int(np.nan_to_num(inputs.ref_price[u, j]))
            q = int(holdings[j])
            c, tx = krx.commission(q * px, costs.commission_rate), krx.sell_tax(q * px, float(inputs.sell_tax[u]))
            holdings[j] = 0
            cash += q * px - c - tx
            fills.append((u, int(j), -1, q, px, c, tx))
            comm, tax, traded = comm + c, tax + tx, traded + float(q * px)
        book.append((cash, holdings.copy(), comm, tax, traded))
    return book, fills, orders, statuses


def engine_rows(res, data: Panel, frame) -> list[tuple]:
    col = {sym: j for j, sym in enumerate(data.symbols)}
    t = np.searchsorted(data.dates, frame["date"].to_numpy().astype("datetime64[D]"))
    side = np.where(frame["side"].to_numpy() == "buy", 1, -1)
    rest = [frame[c].to_list() for c in frame.columns if c not in ("date", "symbol", "side")]
    return [(int(ti), col[s], int(sd), *map(int, r)) for ti, s, sd, *r in
            zip(t, frame["symbol"].to_list(), side, *rest)]


def assert_engine_equals_reference(matrix, data, config, start, end, delisted, holdings, cash):
    s = int(np.searchsorted(data.dates, np.datetime64(start, "D")))
    e = data.index_of(end)
    res = run_backtest(matrix, data, start=start, end=end, config=config, delisted=delisted,
                       initial_holdings=holdings, initial_cash=cash)
    book, fills, orders, statuses = reference_backtest(matrix, data, config, s, e, delisted, holdings, cash)
    assert len(res.cash) == len(book) > 100
    for i, (c, h, comm, tax, traded) in enumerate(book):
        assert res.cash[i] == c and np.array_equal(res.holdings[i], h), f"account differs on row {i}"
        assert (res.commission[i], res.tax[i], res.traded_value[i]) == (comm, tax, traded), f"costs differ on row {i}"
    assert engine_rows(res, data, res.fills) == fills
    assert engine_rows(res, data, res.orders) == orders
    # the same targets through the per-decision path (a callable strategy) give the same book
    by_bar = run_backtest(lambda window: np.clip(matrix[len(window) - 1], 0.0, None), data, start=start, end=end,
                          config=config, delisted=delisted, initial_holdings=holdings, initial_cash=cash)
    assert np.array_equal(by_bar.cash, res.cash) and np.array_equal(by_bar.holdings, res.holdings)
    assert by_bar.fills.equals(res.fills) and by_bar.orders.equals(res.orders)
    return res, statuses


@pytest.mark.parametrize("case", ["daily, no buffer, delisted", "weekly, band, start inside"])
def test_engine_equals_scalar_accounting_on_random_targets(panel, case):  # noqa: F811
    rng = np.random.default_rng(7)
    T, n = panel.close.shape
    costs = CostModel(slippage_ticks=1.0, slippage_range_frac=0.05)
    if case.startswith("daily"):
        config = BacktestConfig(cash=3_000_000, costs=costs, cash_buffer=0.0)
        start, end = panel.date(0), panel.date(T - 1)
    else:
        config = BacktestConfig(cash=500_000_000, costs=costs, rebalance="weekly", min_trade_value=200_000.0,
                                rebalance_band=0.002)
        start, end = panel.date(40), panel.date(T - 30)
    # delisted mid-span (the shipped data has no delisting), and an account that starts invested
    delisted = {panel.symbols[2]: panel.date(T // 2), panel.symbols[3]: panel.date(3 * T // 4)}
    holdings = rng.integers(0, 30, size=n).astype(np.int64)
    seen: set[int] = set()
    for _ in range(3):
        w, matrix = np.zeros((1, n)), np.zeros((T, n))
        for t in range(T):
            w = random_targets(rng, 1, n, w)
            matrix[t] = w[0]
        res, statuses = assert_engine_equals_reference(matrix, panel, config, start, end, delisted, holdings,
                                                       config.cash)
        seen |= statuses
        assert (res.fills["tax"] > 0).any()
    # the sequences reached the rules under test, not only plain fills
    assert {FillStatus.FILLED, FillStatus.NO_BAR, FillStatus.LOCKED} <= seen
    if config.cash_buffer == 0.0:
        assert FillStatus.PARTIAL_CASH in seen


def test_engine_equals_scalar_accounting_on_a_wide_panel():
    """89 symbols: equity and budgets are numpy's pairwise sums over blocks of 8, which the
    kernel must reproduce to the bit for the whole shares to agree."""
    wide = load_panel(start="2020-01-01", end="2020-12-31")
    T, n = wide.close.shape
    assert n >= 64
    rng = np.random.default_rng(11)
    matrix = np.zeros((T, n))
    w = np.zeros((1, n))
    for t in range(T):
        w = random_targets(rng, 1, n, w)
        matrix[t] = w[0]
    config = BacktestConfig(cash=2_000_000_000, costs=CostModel(), cash_buffer=0.003)
    holdings = np.where(rng.random(n) < 0.3, rng.integers(1, 50, size=n), 0).astype(np.int64)
    res, _ = assert_engine_equals_reference(matrix, wide, config, wide.date(0), wide.date(T - 1),
                                            {wide.symbols[5]: wide.date(100)}, holdings, 1_000_000_000)
    assert len(res.fills) > 5_000


def test_pairwise_sum_is_numpys_to_the_bit():
    rng = np.random.default_rng(0)
    for n in [*range(0, 140), 255, 256, 1000, 1031, 4099]:
        a = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 12, n)
        assert _pairwise_sum(a, 0, n) == a.sum(), n
        assert _pairwise_sum(a, 3, n - 3 if n > 3 else 0) == a[3:].sum(), n


def test_order_sizing_equals_orders_for_targets_on_whole_share_boundaries():
    """Random accounts of 1..300 symbols, each with one weight set exactly on a whole-share
    boundary of the equity: there, the order of the floating-point additions decides the share,
    so only numpy's own summation order gives `orders_for_targets`' orders."""
    rng = np.random.default_rng(5)
    decided_by_sum_order = 0
    for _ in range(400):
        n = int(rng.integers(1, 300))
        px = np.round(rng.uniform(1_000, 300_000, n), 2)
        px[rng.random(n) < 0.1] = np.nan  # no price yet: not traded
        holdings = rng.integers(0, 2_000, n).astype(np.int64)
        cash = int(rng.integers(0, 10**9))
        values = np.where(px > 0, holdings * px, 0.0)
        equity = cash + float(values.sum())
        priced = np.flatnonzero(px > 0)
        if not len(priced) or equity <= 0:
            continue
        j = int(rng.choice(priced))
        on_boundary = (holdings[j] + int(rng.integers(-5, 8))) * px[j] / equity
        if not 0 <= on_boundary < 0.9:
            continue
        w = np.where(rng.random(n) < 0.5, rng.dirichlet(np.ones(n)), 0.0) * rng.uniform(0, 1 - on_boundary)
        w[j] = on_boundary
        min_trade, buffer = float(rng.choice([0.0, 300_000.0])), float(rng.choice([0.0, 0.01]))
        idx, side, qty = orders_for_targets(w, holdings, cash, px, min_trade, buffer)
        sells, buys = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        _size_orders(w, holdings, cash, px, min_trade, buffer, sells, buys, np.zeros(n))
        want = np.zeros(n, dtype=np.int64)
        want[idx] = side * qty
        assert np.array_equal(buys - sells, want)
        in_order = float(cash)
        for v in values:
            in_order += v
        decided_by_sum_order += np.floor(w[j] * in_order / px[j]) != np.floor(w[j] * equity / px[j])
    assert decided_by_sum_order >= 10
