"""The agent interface: everything known at the close of bar t in, target weights out.

An agent sees only a `Panel` window that ends at its decision bar (`window.upto(t)`), plus side
data it was built with (fundamentals, market caps) that it must query *as of* the window's last
date. Weights are long-only fractions of equity aligned with `window.symbols`, summing to <= 1.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from market.data import Panel


@runtime_checkable
class Agent(Protocol):
    # read-only in the protocol: agents implement them as attributes or properties
    @property
    def name(self) -> str: ...

    @property
    def lookback(self) -> int:
        """Bars of history a decision needs (the window may be longer)."""

    def fit(self, history: Panel) -> None:
        """Learn from data strictly before the first decision (may be a no-op)."""

    def target_weights(self, window: Panel) -> np.ndarray:
        """Target weights for the window's symbols, decided at the close of its last bar."""


class AgentAbstains(ValueError):
    """The agent cannot decide on this window (e.g. its fixed universe is not all in it).

    Not an error of the request: an ensemble leaves the agent out of this one decision and
    combines the agents that did decide. An agent that trades a fixed universe exposes it as
    `required_symbols`, so a host can tell before stepping (or building) it.
    """


class LookAheadError(ValueError):
    """`fit(history)` refused a model that was trained or selected on data after the history ends.

    A standalone backtest fails on it; an ensemble leaves an optional member out instead.
    """


def check_weights(weights: np.ndarray, n_symbols: int, who: str) -> np.ndarray:
    """Validate an agent's output: finite, long-only, no leverage. Returns float64 weights."""
    w = np.asarray(weights, dtype=float)
    if w.shape != (n_symbols,):
        raise ValueError(f"{who}: weights have shape {w.shape}, want ({n_symbols},)")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{who}: weights contain NaN or inf")
    if np.any(w < -1e-12):
        raise ValueError(f"{who}: negative weights (short selling is not allowed)")
    if w.sum() > 1.0 + 1e-9:
        raise ValueError(f"{who}: weights sum to {w.sum():.6f} > 1 (no leverage)")
    return np.clip(w, 0.0, None)
