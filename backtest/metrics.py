"""Performance metrics of a daily equity curve (KRX: 252 trading days a year)."""
from __future__ import annotations

import numpy as np

TRADING_DAYS = 252


def daily_returns(equity: np.ndarray) -> np.ndarray:
    e = np.asarray(equity, dtype=float)
    return e[1:] / e[:-1] - 1.0


def max_drawdown(equity: np.ndarray) -> float:
    """Largest peak-to-trough loss as a negative fraction (0.0 if the curve never falls)."""
    e = np.asarray(equity, dtype=float)
    return float(np.min(e / np.maximum.accumulate(e) - 1.0)) if len(e) else 0.0


def summary(equity: np.ndarray, traded_value: float = 0.0, orders: int = 0) -> dict[str, float]:
    """The headline metrics. `traded_value` (KRW bought + sold) gives annualised one-way turnover."""
    e = np.asarray(equity, dtype=float)
    if len(e) < 2 or e[0] <= 0:
        raise ValueError("need at least two positive equity values")
    r = daily_returns(e)
    years = len(r) / TRADING_DAYS
    total = e[-1] / e[0] - 1.0
    vol = float(np.std(r, ddof=1) * np.sqrt(TRADING_DAYS)) if len(r) > 1 else 0.0
    mean = float(np.mean(r)) * TRADING_DAYS
    return {
        "total_return": float(total),
        "annual_return": float((1 + total) ** (1 / years) - 1) if total > -1 else -1.0,
        "annual_volatility": vol,
        "sharpe": mean / vol if vol > 0 else 0.0,
        "max_drawdown": max_drawdown(e),
        "turnover": float(traded_value / 2 / np.mean(e) / years) if years > 0 else 0.0,
        "orders": int(orders),
        "days": int(len(e)),
    }
