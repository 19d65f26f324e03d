"""Position and gross-exposure caps: the last guard on any target weights before orders."""
from __future__ import annotations

import numpy as np


def apply_caps(weights: np.ndarray, max_position: float, max_gross: float) -> np.ndarray:
    """Clip each weight to `max_position`, then scale the book down to `max_gross` if above it.

    Excess is not redistributed: a cap lowers exposure, it never raises another position.
    """
    if not 0 < max_position <= 1 or not 0 < max_gross <= 1:
        raise ValueError(f"caps must be in (0, 1], got max_position={max_position}, max_gross={max_gross}")
    w = np.clip(np.nan_to_num(np.asarray(weights, dtype=float)), 0.0, max_position)
    gross = w.sum()
    return w * (max_gross / gross) if gross > max_gross else w


def cap_weights(w: np.ndarray, cap: float) -> np.ndarray:
    """Cap each weight at `cap`; the excess goes to uncapped names pro rata (never above the cap).

    Unlike `apply_caps`, this keeps the book's gross where it can: used when choosing weights
    inside a strategy, not as the final guard.
    """
    w = np.asarray(w, float).copy()
    for _ in range(len(w) + 1):
        over = w > cap + 1e-12
        if not over.any():
            break
        excess = (w[over] - cap).sum()
        w[over] = cap
        free = (w > 0) & (w < cap - 1e-12)
        if not free.any():
            break
        w[free] += excess * w[free] / w[free].sum()
    return np.minimum(w, cap)
