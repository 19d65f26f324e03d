"""Technical agent: trend filter + momentum + RSI + Bollinger mean reversion → long-only weights.

A symbol is eligible when its price is above its long moving average and the short average is
above the long one (an uptrend). Eligible symbols are ranked by a score that mixes medium-term
momentum (cross-sectional z-score) with an RSI term that prefers pull-backs inside the trend
(low RSI) over overbought names, and a mean-reversion term: minus the Bollinger z-score (distance
of the close from its `meanrev_window` average in standard deviations), so a stretched name is
marked down and a dip is marked up. The top `top_k` get score-proportional weights capped at
`max_weight`. Exposure scales with breadth (the share of the universe in an uptrend), so the
agent steps aside in broad down-markets. Every parameter is a field, exposed for tuning.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from market.data import Panel
from strategies.caps import cap_weights


def sma(x: np.ndarray, n: int) -> np.ndarray:
    """Mean of the last n rows (NaN if any of them is NaN). x: (T, N) -> (N,)."""
    return np.mean(x[-n:], axis=0) if len(x) >= n else np.full(x.shape[1], np.nan)


def rsi(close: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder-style RSI over the last n changes (simple averages). close: (T, N) -> (N,)."""
    if len(close) < n + 1:
        return np.full(close.shape[1], np.nan)
    d = np.diff(close[-(n + 1):], axis=0)
    up = np.mean(np.clip(d, 0, None), axis=0)
    down = np.mean(np.clip(-d, 0, None), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rs = up / down
        out = 100.0 - 100.0 / (1.0 + rs)
    return np.where(down == 0, np.where(up > 0, 100.0, 50.0), out)


def mean_reversion(close: np.ndarray, n: int = 20) -> np.ndarray:
    """Minus the Bollinger z-score of the last close vs its n-bar mean and std (NaN if unknown)."""
    if len(close) < n:
        return np.full(close.shape[1], np.nan)
    w = close[-n:]
    mu, sd = np.mean(w, axis=0), np.std(w, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, -(close[-1] - mu) / sd, 0.0)


def zscore(x: np.ndarray) -> np.ndarray:
    ok = np.isfinite(x)
    if ok.sum() < 2:
        return np.where(ok, 0.0, np.nan)
    mu, sd = np.mean(x[ok]), np.std(x[ok])
    return np.where(ok, (x - mu) / (sd if sd > 0 else 1.0), np.nan)


@dataclass
class TechnicalAgent:
    short_window: int = 20
    long_window: int = 60
    momentum_window: int = 60
    rsi_window: int = 14
    momentum_weight: float = 1.0
    rsi_weight: float = 0.5
    meanrev_window: int = 20
    meanrev_weight: float = 0.5
    top_k: int = 5
    max_weight: float = 0.25
    rebalance: str | int = "weekly"  # read by the backtester: daily trading costs ~7% a year
    name: str = "technical"

    def __post_init__(self):
        if not 0 < self.short_window < self.long_window:
            raise ValueError(f"need 0 < short_window < long_window, got {self.short_window}, {self.long_window}")
        if self.meanrev_window < 2:
            raise ValueError(f"need meanrev_window >= 2, got {self.meanrev_window}")
        if self.top_k < 1 or not 0 < self.max_weight <= 1:
            raise ValueError(f"need top_k >= 1 and 0 < max_weight <= 1, got {self.top_k}, {self.max_weight}")

    @property
    def lookback(self) -> int:
        return max(self.long_window, self.momentum_window, self.rsi_window, self.meanrev_window) + 1

    def fit(self, history: Panel) -> None:
        """Rule-based: nothing to learn."""

    def target_weights(self, window: Panel) -> np.ndarray:
        close = window.close
        n = close.shape[1]
        if len(close) < self.lookback:
            return np.zeros(n)
        last = close[-1]
        long_ma, short_ma = sma(close, self.long_window), sma(close, self.short_window)
        uptrend = (last > long_ma) & (short_ma > long_ma)  # NaN compares False
        momentum = last / close[-1 - self.momentum_window] - 1.0
        score = (self.momentum_weight * zscore(momentum)
                 + self.rsi_weight * (50.0 - rsi(close, self.rsi_window)) / 50.0
                 + self.meanrev_weight * mean_reversion(close, self.meanrev_window))
        score = np.where(uptrend & np.isfinite(score), score, np.nan)
        has_data = np.isfinite(last) & np.isfinite(long_ma)
        breadth = uptrend.sum() / max(has_data.sum(), 1)
        eligible = np.flatnonzero(np.isfinite(score))
        if len(eligible) == 0:
            return np.zeros(n)
        chosen = eligible[np.argsort(-score[eligible], kind="stable")[: self.top_k]]
        raw = score[chosen] - score[chosen].min() + 1.0  # positive, keeps rank order
        w = np.zeros(n)
        w[chosen] = raw / raw.sum()
        w = cap_weights(w, self.max_weight)
        return w * breadth
