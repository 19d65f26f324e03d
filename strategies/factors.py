"""Cross-sectional factor exposures on a decision date, point in time.

`FactorEngine.exposures(window, row)` uses price rows <= row of the window, statements public on
that date (`Fundamentals.as_of`) and the point-in-time market cap (`MarketCaps.as_of`). Each raw
factor is winsorised at the `winsor` quantiles across the symbols that have it, then z-scored.
Missing data stays NaN (a symbol without statements has no value/growth/quality/profitability
score); `composite_scores` then treats a missing factor as neutral (0) and reports coverage.

Factors (sign: higher = more attractive):
  value:         book_to_price = equity / cap, earnings_to_price = TTM net income (owners) / cap
  growth:        revenue_growth, earnings_growth = latest quarter vs the same quarter a year ago
  momentum:      mom_12_1 = return from t-252 to t-21;  reversal = minus the last 21-day return
  quality:       earnings_stability = -std/mean|.| of 8 quarters of net income;
                 low_leverage = -liabilities/assets (balance sheets are sparse in the data)
  profitability: roe = TTM net income / equity, operating_margin = TTM operating income / revenue
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from market.data import Panel
from strategies.fundamentals import Fundamentals, MarketCaps

FACTOR_GROUPS: dict[str, tuple[str, ...]] = {
    "value": ("book_to_price", "earnings_to_price"),
    "growth": ("revenue_growth", "earnings_growth"),
    "momentum": ("mom_12_1",),
    "reversal": ("reversal",),
    "quality": ("earnings_stability", "low_leverage"),
    "profitability": ("roe", "operating_margin"),
}
FACTORS: tuple[str, ...] = tuple(f for fs in FACTOR_GROUPS.values() for f in fs)
_FUND_ITEMS = ("total_equity", "net_income_owners_ttm", "net_income_ttm", "revenue_q", "revenue_q_1y",
               "net_income_q", "net_income_q_1y", "earnings_stability", "total_assets", "total_liabilities",
               "operating_income_ttm", "revenue_ttm")


def winsorised_zscore(x: np.ndarray, winsor: float = 0.05, min_count: int = 5) -> np.ndarray:
    """Clip at the winsor/1-winsor quantiles of the finite values, then z-score; NaN stays NaN.

    Fewer than `min_count` finite values → all NaN (a cross-section that small says nothing).
    """
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x)
    if ok.sum() < min_count:
        return np.full_like(x, np.nan)
    lo, hi = np.quantile(x[ok], [winsor, 1 - winsor])
    c = np.clip(x, lo, hi)
    sd = np.std(c[ok])
    if sd == 0:
        return np.where(ok, 0.0, np.nan)
    return np.where(ok, (c - np.mean(c[ok])) / sd, np.nan)


def _ratio(a: np.ndarray, b: np.ndarray, positive_denominator: bool = True) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = np.isfinite(a) & np.isfinite(b) & ((b > 0) if positive_denominator else (b != 0))
        return np.where(ok, a / np.where(ok, b, 1.0), np.nan)


@dataclass
class FactorEngine:
    fundamentals: Fundamentals | None = None
    market_caps: MarketCaps | None = None
    winsor: float = 0.05
    momentum_long: int = 252
    momentum_skip: int = 21
    reversal_window: int = 21

    @property
    def lookback(self) -> int:
        return self.momentum_long + 1

    def raw(self, window: Panel, row: int = -1) -> dict[str, np.ndarray]:
        """Raw (un-normalised) factor values at window row `row`, from data at or before it."""
        row = row % len(window)
        close = window.close[: row + 1]
        n = close.shape[1]
        last = close[-1]
        out: dict[str, np.ndarray] = {}
        if len(close) > self.momentum_long:
            out["mom_12_1"] = _ratio(close[-1 - self.momentum_skip], close[-1 - self.momentum_long]) - 1.0
        else:
            out["mom_12_1"] = np.full(n, np.nan)
        if len(close) > self.reversal_window:
            out["reversal"] = -(_ratio(last, close[-1 - self.reversal_window]) - 1.0)
        else:
            out["reversal"] = np.full(n, np.nan)
        nan = np.full(n, np.nan)
        if self.fundamentals is not None:
            f = self.fundamentals.as_of(window.date(row), window.symbols, _FUND_ITEMS)
        else:
            f = {k: nan for k in _FUND_ITEMS}
        cap = (self.market_caps.as_of(row, window.dates, window.symbols, window.close)
               if self.market_caps is not None else nan)
        ni = np.where(np.isfinite(f["net_income_owners_ttm"]), f["net_income_owners_ttm"], f["net_income_ttm"])
        out["book_to_price"] = _ratio(f["total_equity"], cap)
        out["earnings_to_price"] = _ratio(ni, cap)
        # growth relative to |base| so a loss shrinking counts as growth
        out["revenue_growth"] = _ratio(f["revenue_q"] - f["revenue_q_1y"], f["revenue_q_1y"])
        out["earnings_growth"] = _ratio(f["net_income_q"] - f["net_income_q_1y"], np.abs(f["net_income_q_1y"]))
        out["earnings_stability"] = f["earnings_stability"]
        out["low_leverage"] = -_ratio(f["total_liabilities"], f["total_assets"])
        out["roe"] = _ratio(ni, f["total_equity"])
        out["operating_margin"] = _ratio(f["operating_income_ttm"], f["revenue_ttm"])
        alive = np.isfinite(last)  # no bar today: not investable, no score
        return {k: np.where(alive, v, np.nan) for k, v in out.items()}

    def exposures(self, window: Panel, row: int = -1) -> dict[str, np.ndarray]:
        """Winsorised cross-sectional z-scores of every factor (NaN = missing)."""
        return {k: winsorised_zscore(v, self.winsor) for k, v in self.raw(window, row).items()}


def group_scores(z: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Average the factors of each group (ignoring missing members); NaN if all are missing."""
    out = {}
    for g, members in FACTOR_GROUPS.items():
        stack = np.vstack([z[m] for m in members])
        cnt = np.isfinite(stack).sum(axis=0)
        with np.errstate(invalid="ignore"):
            out[g] = np.where(cnt > 0, np.nansum(stack, axis=0) / np.maximum(cnt, 1), np.nan)
    return out


def composite_scores(groups: dict[str, np.ndarray], weights: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sum of group scores; a missing group counts as 0 (neutral).

    Returns (score, coverage) where coverage is the share of total |weight| that had data.
    """
    n = len(next(iter(groups.values())))
    score, cov = np.zeros(n), np.zeros(n)
    total = sum(abs(w) for w in weights.values()) or 1.0
    for g, w in weights.items():
        v = groups[g]
        ok = np.isfinite(v)
        score += np.where(ok, w * v, 0.0)
        cov += np.where(ok, abs(w), 0.0)
    return score, cov / total
