"""Per-position weight caps shared by the strategies."""
from __future__ import annotations

import numpy as np


def cap_weights(w: np.ndarray, cap: float) -> np.ndarray:
    """Cap each weight at `cap`; the excess goes to uncapped names pro rata (never above the cap).

    Keeps the book's gross where it can: the technical agent, the factor model and the risk
    model's risk-parity weights all cap this way.
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
