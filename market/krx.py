"""KRX trading rules: tick size, daily price limits, commission and the dated sell-tax table.

Every function works on scalars and on numpy arrays alike, so the paper broker (one order at a
time) and the backtester (all symbols of a bar at once) share one implementation.

Sources: ../shared/kis/KIS_API.md §7 (tick table since 2023-01-25, price limit rule, costs) and
the Korean securities-transaction-tax law history (rates by settlement date).
"""
from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from enum import Enum

import numpy as np


class Market(str, Enum):
    KOSPI = "KOSPI"
    KOSDAQ = "KOSDAQ"
    KONEX = "KONEX"


# --- tick size ------------------------------------------------------------------------------
# (upper bound of the price band, tick) pairs; the last band has no upper bound.
TICK_REFORM_DATE = dt.date(2023, 1, 25)
_TICKS_SINCE_2023 = (
    (2_000, 1), (5_000, 5), (20_000, 10), (50_000, 50), (200_000, 100), (500_000, 500), (np.inf, 1_000),
)
_TICKS_KOSPI_BEFORE_2023 = (
    (1_000, 1), (5_000, 5), (10_000, 10), (50_000, 50), (100_000, 100), (500_000, 500), (np.inf, 1_000),
)
_TICKS_KOSDAQ_BEFORE_2023 = ((1_000, 1), (5_000, 5), (10_000, 10), (50_000, 50), (np.inf, 100))


def _tick_table(market: Market | str, on: dt.date) -> tuple[np.ndarray, np.ndarray]:
    return _tick_arrays(Market(market), on >= TICK_REFORM_DATE)


@functools.lru_cache(maxsize=None)
def _tick_arrays(market: Market, reformed: bool) -> tuple[np.ndarray, np.ndarray]:
    # built once per (market, regime): the backtester asks for it on every bar
    table: tuple[tuple[float, int], ...]
    if reformed:
        table = _TICKS_SINCE_2023
    elif market == Market.KOSPI:
        table = _TICKS_KOSPI_BEFORE_2023
    else:
        table = _TICKS_KOSDAQ_BEFORE_2023
    bounds, ticks = zip(*table)
    b, t = np.asarray(bounds, dtype=float), np.asarray(ticks, dtype=np.int64)
    b.setflags(write=False)
    t.setflags(write=False)
    return b, t


def tick_size(price, on: dt.date, market: Market | str = Market.KOSPI):
    """Tick (KRW) for a price on a date. Works on scalars and arrays (NaN prices give tick 1)."""
    bounds, ticks = _tick_table(market, on)
    p = np.asarray(price, dtype=float)
    idx = np.searchsorted(bounds, np.where(np.isnan(p), 0.0, p), side="right")
    out = ticks[np.minimum(idx, len(ticks) - 1)]
    return out if out.ndim else int(out)


def round_to_tick(price, on: dt.date, market: Market | str = Market.KOSPI, direction: str = "nearest"):
    """Snap a price onto the tick grid: direction 'up', 'down' or 'nearest'. Returns int64 KRW.

    The tick is taken at the snapped side of the price, so a price just under a band boundary
    rounded up lands on the boundary (e.g. 1,999.5 up -> 2,000), never between grid points.
    """
    p = np.asarray(price, dtype=float)
    if np.any(p[~np.isnan(p)] <= 0):
        raise ValueError(f"price must be positive to snap onto the tick grid, got {price!r}")
    tick = tick_size(p, on, market)
    if direction == "down":
        out = np.floor(p / tick + 1e-9) * tick
    elif direction == "up":
        out = np.ceil(p / tick - 1e-9) * tick
        # rounding up across a band boundary can only land on the boundary, which is on both grids
    elif direction == "nearest":
        out = np.floor(p / tick + 0.5) * tick
    else:
        raise ValueError(f"direction must be 'up', 'down' or 'nearest', got {direction!r}")
    out = np.where(np.isnan(p), 0, out).astype(np.int64)
    return out if out.ndim else int(out)


def on_tick_grid(price, on: dt.date, market: Market | str = Market.KOSPI):
    p = np.asarray(price, dtype=float)
    ok = (p > 0) & (np.mod(p, tick_size(p, on, market)) == 0)
    return ok if ok.ndim else bool(ok)


# --- daily price limits ---------------------------------------------------------------------
LIMIT_WIDENED_DATE = dt.date(2015, 6, 15)


def price_limit_pct(on: dt.date) -> float:
    """±30% since 2015-06-15, ±15% before."""
    return 0.30 if on >= LIMIT_WIDENED_DATE else 0.15


def price_limits(base_price, on: dt.date, market: Market | str = Market.KOSPI):
    """(lower, upper) daily limit prices in KRW for a base price (normally the previous close).

    KRX rule (KIS_API.md §7.3): width = floor(base × pct / tick(base)) × tick(base); the upper
    limit is snapped down and the lower limit up onto the grid of the resulting price.
    """
    base = np.asarray(base_price, dtype=float)
    tick = tick_size(base, on, market)
    width = np.floor(base * price_limit_pct(on) / tick + 1e-9) * tick
    upper = round_to_tick(base + width, on, market, "down")
    lower_raw = np.maximum(base - width, 1.0)
    lower = round_to_tick(lower_raw, on, market, "up")
    return lower, upper


# --- costs ----------------------------------------------------------------------------------
DEFAULT_COMMISSION_RATE = 0.00015  # 0.015% each side; KIS non-face-to-face is 0.0140527%


@dataclass(frozen=True)
class TaxPeriod:
    start: dt.date  # first settlement date the rates apply to
    kospi: float
    kosdaq: float
    konex: float


# Securities transaction tax incl. the agricultural special tax on KOSPI, sell side only, by
# settlement date (T+2). Rates in fractions of the sale value.
SELL_TAX_TABLE: tuple[TaxPeriod, ...] = (
    TaxPeriod(dt.date(1996, 4, 1), 0.0030, 0.0030, 0.0030),
    TaxPeriod(dt.date(2019, 6, 3), 0.0025, 0.0025, 0.0010),
    TaxPeriod(dt.date(2021, 1, 1), 0.0023, 0.0023, 0.0010),
    TaxPeriod(dt.date(2023, 1, 1), 0.0020, 0.0020, 0.0010),
    TaxPeriod(dt.date(2024, 1, 1), 0.0018, 0.0018, 0.0010),
    TaxPeriod(dt.date(2025, 1, 1), 0.0015, 0.0015, 0.0010),
    TaxPeriod(dt.date(2026, 1, 1), 0.0020, 0.0020, 0.0010),
)
SETTLEMENT_LAG_DAYS = 2  # T+2


def sell_tax_rate(settlement_date: dt.date, market: Market | str = Market.KOSPI) -> float:
    """Sell-side tax rate in force for a trade settling on `settlement_date`."""
    if settlement_date < SELL_TAX_TABLE[0].start:
        raise ValueError(f"no sell-tax rate known before {SELL_TAX_TABLE[0].start}: {settlement_date}")
    period = [p for p in SELL_TAX_TABLE if p.start <= settlement_date][-1]
    return {Market.KOSPI: period.kospi, Market.KOSDAQ: period.kosdaq, Market.KONEX: period.konex}[Market(market)]


def sell_tax_rates(settlement_dates, market: Market | str = Market.KOSPI) -> np.ndarray:
    """`sell_tax_rate` for an array of settlement dates at once (the backtester's per-bar table)."""
    d = np.asarray(settlement_dates, dtype="datetime64[D]")
    starts = np.array([p.start for p in SELL_TAX_TABLE], dtype="datetime64[D]")
    if len(d) and d.min() < starts[0]:
        raise ValueError(f"no sell-tax rate known before {SELL_TAX_TABLE[0].start}: {d.min()}")
    m = Market(market)
    rates = np.array([{Market.KOSPI: p.kospi, Market.KOSDAQ: p.kosdaq, Market.KONEX: p.konex}[m]
                      for p in SELL_TAX_TABLE])
    return rates[np.searchsorted(starts, d, side="right") - 1]


def commission(notional, rate: float = DEFAULT_COMMISSION_RATE):
    """Broker commission in whole KRW (fractions of a won are truncated, as brokers do)."""
    out = np.floor(np.asarray(notional, dtype=float) * rate + 1e-9).astype(np.int64)
    return out if out.ndim else int(out)


def sell_tax(notional, rate: float):
    """Sell tax in whole KRW (truncated below one won)."""
    out = np.floor(np.asarray(notional, dtype=float) * rate + 1e-9).astype(np.int64)
    return out if out.ndim else int(out)
