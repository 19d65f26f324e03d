"""Baselines every strategy must beat: buy-and-hold and equal-weight portfolios.

* `equal-weight-hold`: equal weights over the symbols trading at the first decision, then held
  (the weights drift with prices; `rebalance = "once"` tells the backtester not to trade again).
* `equal-weight-monthly`: equal weights over the symbols trading at each month's first bar.
* `buy-hold-kodex200`: all-in KODEX 200 (069500), bought once and held. The ETF is not in the
  stock panel: the agent names its price file in `extra_prices`, and `backtest.data.panel_for`
  adds it. The raw close is used (what one can trade); the ETF's dividends are not credited,
  which understates this baseline by roughly the KOSPI200 dividend yield (~1.5-2% a year).
* `buy-hold-kospi200` (the index itself) cannot be traded, so it is a benchmark series in
  `backtest.baselines`, not an agent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from market.data import Panel

KODEX200 = "069500"


def _last_known(close: np.ndarray) -> np.ndarray:
    """Each column's last non-NaN close in the window (NaN if none)."""
    ok = ~np.isnan(close)
    last = np.where(ok.any(axis=0), len(close) - 1 - np.argmax(ok[::-1], axis=0), 0)
    out = close[last, np.arange(close.shape[1])]
    return np.where(ok.any(axis=0), out, np.nan)


@dataclass
class EqualWeightHold:
    """Buy an equal-weight basket once and hold it."""

    name: str = "equal-weight-hold"
    lookback: int = 1
    rebalance: str = "once"
    _entry: dict = field(default_factory=dict, repr=False)  # symbol -> (weight, entry close)

    def fit(self, history: Panel) -> None:
        """Nothing to learn; a new fit starts a new holding period."""
        self._entry = {}

    def target_weights(self, window: Panel) -> np.ndarray:
        n = len(window.symbols)
        if len(window) == 0:
            return np.zeros(n)
        last = window.close[-1]
        if not self._entry:
            live = np.flatnonzero(np.isfinite(last) & (last > 0))
            if len(live) == 0:
                return np.zeros(n)
            self._entry = {window.symbols[j]: (1.0 / len(live), float(last[j])) for j in live}
        # later decisions (if a caller asks) are the drifted weights of the held basket
        px = _last_known(window.close)
        value = np.zeros(n)
        for j, s in enumerate(window.symbols):
            if s in self._entry and np.isfinite(px[j]):
                w0, p0 = self._entry[s]
                value[j] = w0 * px[j] / p0
        total = value.sum()
        return value / total if total > 0 else value


@dataclass
class EqualWeightRebalanced:
    """Equal weights over the symbols that traded on the decision bar, rebalanced periodically."""

    rebalance: str = "monthly"
    name: str = "equal-weight-monthly"
    lookback: int = 1

    def fit(self, history: Panel) -> None:
        """Rule-based: nothing to learn."""

    def target_weights(self, window: Panel) -> np.ndarray:
        n = len(window.symbols)
        if len(window) == 0:
            return np.zeros(n)
        live = np.isfinite(window.close[-1]) & (window.close[-1] > 0)
        return live / live.sum() if live.any() else np.zeros(n)


@dataclass
class BuyHoldSymbol:
    """All-in one instrument (default KODEX 200), bought once and held."""

    symbol: str = KODEX200
    price_file: Path | None = None
    name: str = "buy-hold-kodex200"
    lookback: int = 1
    rebalance: str = "once"

    @property
    def extra_prices(self) -> tuple[Path, ...]:
        return () if self.price_file is None else (Path(self.price_file),)

    def fit(self, history: Panel) -> None:
        """Nothing to learn."""

    def target_weights(self, window: Panel) -> np.ndarray:
        if self.symbol not in window.symbols:
            raise ValueError(f"{self.name}: {self.symbol} is not in the panel; build the panel with "
                             f"backtest.data.panel_for(agent, panel) so its price file is added")
        w = np.zeros(len(window.symbols))
        j = window.symbols.index(self.symbol)
        if len(window) and np.isfinite(window.close[-1, j]):
            w[j] = 1.0
        return w
