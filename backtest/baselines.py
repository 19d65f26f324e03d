"""Benchmarks that are series, not agents: buy-and-hold of the KOSPI200 index itself.

An index cannot be traded, so `buy-hold-kospi200` is its level series scaled to the starting
cash (no costs, no dividends: the KRX index is a price index). The tradable version is the
`buy-hold-kodex200` agent (strategies/baselines.py).
"""
from __future__ import annotations

import datetime as dt
from typing import Callable

import numpy as np
import polars as pl

from backtest.data import benchmark_levels
from backtest.engine import BacktestConfig, BacktestResult
from market.data import DataPaths, Panel


def index_buy_hold(panel: Panel, paths: DataPaths, start: dt.date, end: dt.date, config: BacktestConfig,
                   symbol: str = "KOSPI200") -> BacktestResult:
    s = int(np.searchsorted(panel.dates, np.datetime64(start, "D")))
    e = panel.index_of(end)
    t0 = max(s - 1, 0)
    dates = panel.dates[t0:e + 1]
    levels = benchmark_levels(dates, paths.path("index"), symbol)
    if np.isnan(levels[0]):
        raise ValueError(f"{symbol} has no close on {dates[0]}")
    for i in range(1, len(levels)):  # a missing index day repeats the last level
        if np.isnan(levels[i]):
            levels[i] = levels[i - 1]
    equity = config.cash * levels / levels[0]
    n = len(dates)
    zeros = np.zeros(n, dtype=np.int64)
    # one "unit" worth the whole equity: fully invested, cash + units × price = equity
    return BacktestResult(
        dates=dates, symbols=(symbol,), equity=equity, cash=zeros.copy(), holdings=np.ones((n, 1), dtype=np.int64),
        prices=equity[:, None].copy(), targets=np.ones((n, 1)), commission=zeros.copy(), tax=zeros.copy(),
        traded_value=np.zeros(n), fills=pl.DataFrame(schema={"date": pl.Date, "symbol": pl.Utf8, "side": pl.Utf8,
                                                            "qty": pl.Int64, "price": pl.Int64,
                                                            "commission": pl.Int64, "tax": pl.Int64}),
        strategy=f"buy-hold-{symbol.lower()}")


BENCHMARKS: dict[str, Callable[..., BacktestResult]] = {
    "buy-hold-kospi200": index_buy_hold,
}
