"""Equal weight over every symbol with a bar today: the naive diversified benchmark agent.

It rebalances only every `rebalance_every` bars and holds (drifts) in between, so its costs stay
small. Useful on its own as a benchmark and inside the ensemble as a low-risk member.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from market.data import Panel
from strategies.factor_model import drift_weights


@dataclass
class EqualWeightAgent:
    rebalance_every: int = 21
    name: str = "equal-weight"
    lookback: int = 1
    _held: tuple | None = field(default=None, repr=False)
    _since: int = field(default=0, repr=False)

    def __post_init__(self):
        if self.rebalance_every < 1:
            raise ValueError(f"rebalance_every must be >= 1, got {self.rebalance_every}")

    def fit(self, history: Panel) -> None:
        """Nothing to learn."""

    def target_weights(self, window: Panel) -> np.ndarray:
        last = window.close[-1]
        alive = np.isfinite(last)
        t = window.dates[-1]
        if self._held is not None and self._held[0] < t:
            self._since += 1
            if self._since < self.rebalance_every:
                w = np.where(alive, drift_weights(self._held[2], self._held[1], last), 0.0)
                self._held = (t, last.copy(), w)
                return w
        w = np.where(alive, 1.0 / max(alive.sum(), 1), 0.0)
        self._held, self._since = (t, last.copy(), w), 0
        return w
