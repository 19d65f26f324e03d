"""Performance metrics of a daily equity curve (KRX: 252 trading days a year).

Conventions (the same as empyrical, which tests/unit/test_backtest_metrics.py checks them
against): simple daily returns; annual return is the geometric (CAGR) rate over
len(returns) / 252 years; volatility is the sample standard deviation (ddof=1) × √252; Sharpe
and Sortino use a zero risk-free rate; Sortino's downside deviation is the root mean square of
the negative returns over all days; the information ratio is the mean active return over its
standard deviation, annualised with √252; beta is cov(r, b) / var(b).
"""
from __future__ import annotations

import numpy as np

TRADING_DAYS = 252
# a dispersion below this is floating-point noise (e.g. a strategy that is its own benchmark)
ZERO_DISPERSION = 1e-12


def daily_returns(equity: np.ndarray) -> np.ndarray:
    e = np.asarray(equity, dtype=float)
    return e[1:] / e[:-1] - 1.0


def max_drawdown(equity: np.ndarray) -> float:
    """Largest peak-to-trough loss as a negative fraction (0.0 if the curve never falls)."""
    e = np.asarray(equity, dtype=float)
    return float(np.min(e / np.maximum.accumulate(e) - 1.0)) if len(e) else 0.0


def drawdown(equity: np.ndarray) -> np.ndarray:
    e = np.asarray(equity, dtype=float)
    return e / np.maximum.accumulate(e) - 1.0


def max_drawdown_duration(equity: np.ndarray) -> int:
    """Longest stretch (in bars) spent below a previous peak, counting an unrecovered tail."""
    under = drawdown(equity) < 0
    longest = run = 0
    for u in under:
        run = run + 1 if u else 0
        longest = max(longest, run)
    return int(longest)


def annual_return(r: np.ndarray) -> float:
    r = np.asarray(r, dtype=float)
    if len(r) == 0:
        return 0.0
    growth = float(np.prod(1.0 + r))
    return growth ** (TRADING_DAYS / len(r)) - 1.0 if growth > 0 else -1.0


def annual_volatility(r: np.ndarray) -> float:
    r = np.asarray(r, dtype=float)
    return float(np.std(r, ddof=1) * np.sqrt(TRADING_DAYS)) if len(r) > 1 else 0.0


def sharpe(r: np.ndarray) -> float:
    r = np.asarray(r, dtype=float)
    sd = np.std(r, ddof=1) if len(r) > 1 else 0.0
    return float(np.mean(r) / sd * np.sqrt(TRADING_DAYS)) if sd > ZERO_DISPERSION else 0.0


def downside_deviation(r: np.ndarray) -> float:
    r = np.asarray(r, dtype=float)
    return float(np.sqrt(np.mean(np.minimum(r, 0.0) ** 2)) * np.sqrt(TRADING_DAYS)) if len(r) else 0.0


def sortino(r: np.ndarray) -> float:
    dd = downside_deviation(r)
    return float(np.mean(r) * TRADING_DAYS / dd) if dd > 0 else 0.0


def calmar(r: np.ndarray) -> float:
    mdd = max_drawdown(np.r_[1.0, np.cumprod(1.0 + np.asarray(r, dtype=float))])
    return float(annual_return(r) / -mdd) if mdd < 0 else 0.0


def tracking_error(r: np.ndarray, b: np.ndarray) -> float:
    active = np.asarray(r, dtype=float) - np.asarray(b, dtype=float)
    sd = float(np.std(active, ddof=1)) if len(active) > 1 else 0.0
    return sd * np.sqrt(TRADING_DAYS) if sd > ZERO_DISPERSION else 0.0


def information_ratio(r: np.ndarray, b: np.ndarray) -> float:
    active = np.asarray(r, dtype=float) - np.asarray(b, dtype=float)
    sd = np.std(active, ddof=1) if len(active) > 1 else 0.0
    return float(np.mean(active) / sd * np.sqrt(TRADING_DAYS)) if sd > ZERO_DISPERSION else 0.0


def beta(r: np.ndarray, b: np.ndarray) -> float:
    r, b = np.asarray(r, dtype=float), np.asarray(b, dtype=float)
    if len(r) < 2:
        return 0.0
    var = np.var(b, ddof=1)
    return float(np.cov(r, b, ddof=1)[0, 1] / var) if var > 0 else 0.0


def hit_rate(r: np.ndarray) -> float:
    """Share of days with a positive return among days with a non-zero return."""
    r = np.asarray(r, dtype=float)
    moved = r != 0
    return float(np.mean(r[moved] > 0)) if moved.any() else 0.0


def rolling_sharpe(r: np.ndarray, window: int = 126) -> np.ndarray:
    """Annualised Sharpe over a trailing window (NaN until the window is full)."""
    r = np.asarray(r, dtype=float)
    out = np.full(len(r), np.nan)
    if len(r) < window or window < 2:
        return out
    view = np.lib.stride_tricks.sliding_window_view(r, window)
    mu, sd = view.mean(axis=1), view.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[window - 1:] = np.where(sd > 0, mu / sd * np.sqrt(TRADING_DAYS), 0.0)
    return out


def benchmark_returns(benchmark: np.ndarray) -> np.ndarray:
    """Daily returns of a benchmark level series; a missing level repeats the last known one."""
    b = np.asarray(benchmark, dtype=float).copy()
    for i in range(1, len(b)):
        if np.isnan(b[i]):
            b[i] = b[i - 1]
    if np.isnan(b[0]):
        raise ValueError("the benchmark has no value on the first day of the span")
    return b[1:] / b[:-1] - 1.0


def compute(equity: np.ndarray, benchmark: np.ndarray | None = None, traded_value: float = 0.0,
            costs: float = 0.0, orders: int = 0) -> dict[str, float]:
    """Every metric of a run. `benchmark`: the benchmark's level on the same days as `equity`
    (e.g. KOSPI200 closes); `traded_value` KRW bought + sold; `costs` KRW commission + tax."""
    e = np.asarray(equity, dtype=float)
    if len(e) < 2 or np.any(~np.isfinite(e)) or e[0] <= 0:
        raise ValueError("need at least two finite equity values, the first positive")
    r = daily_returns(e)
    years = len(r) / TRADING_DAYS
    out = {
        "total_return": float(e[-1] / e[0] - 1.0),
        "annual_return": annual_return(r),
        "annual_volatility": annual_volatility(r),
        "sharpe": sharpe(r),
        "sortino": sortino(r),
        "calmar": calmar(r),
        "max_drawdown": max_drawdown(e),
        "max_drawdown_duration": max_drawdown_duration(e),
        "hit_rate": hit_rate(r),
        "turnover": float(traded_value / 2 / np.mean(e) / years) if years > 0 else 0.0,
        "costs": float(costs),
        "costs_pct_of_start": float(costs / e[0]),
        "orders": int(orders),
        "days": int(len(e)),
        "final_equity": float(e[-1]),
    }
    if benchmark is not None:
        b = np.asarray(benchmark, dtype=float)
        if b.shape != e.shape:
            raise ValueError(f"benchmark has {b.shape} values, equity {e.shape}")
        br = benchmark_returns(b)
        out.update({
            "benchmark_total_return": float(np.prod(1 + br) - 1.0),
            "benchmark_annual_return": annual_return(br),
            "information_ratio": information_ratio(r, br),
            "tracking_error": tracking_error(r, br),
            "beta": beta(r, br),
            "alpha_annual": float((np.mean(r) - beta(r, br) * np.mean(br)) * TRADING_DAYS),
        })
    return out


def summary(equity: np.ndarray, traded_value: float = 0.0, orders: int = 0) -> dict[str, float]:
    """The headline metrics. `traded_value` (KRW bought + sold) gives annualised one-way turnover."""
    full = compute(equity, traded_value=traded_value, orders=orders)
    keys = ("total_return", "annual_return", "annual_volatility", "sharpe", "max_drawdown", "turnover",
            "orders", "days")
    return {k: full[k] for k in keys}
