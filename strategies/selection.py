"""Choosing a configuration on validation windows only: walk-forward, never on the test window.

For a test window starting at `test_start`, every candidate is judged on its daily returns in the
`validation_days` trading days *before* `test_start` (dates >= test_start are cut off before any
number is computed), by Sharpe; the best one trades the test window. `walk_forward_choice`
repeats this for each test window and stitches the chosen candidates' test returns together.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from backtest.metrics import sharpe


def validation_slice(dates: np.ndarray, returns: np.ndarray, test_start, validation_days: int
                     ) -> np.ndarray:
    """The returns dated before `test_start`, the last `validation_days` of them."""
    dates = np.asarray(dates, dtype="datetime64[D]")
    before = dates < np.datetime64(test_start, "D")
    return np.asarray(returns, float)[before][-validation_days:]


def choose_on_validation(candidates: Mapping[str, tuple[np.ndarray, np.ndarray]], test_start,
                         validation_days: int = 2 * 252, min_days: int = 120) -> tuple[str, dict[str, float]]:
    """(the chosen name, each candidate's validation Sharpe). Ties: the first name given wins.

    `candidates`: name → (dates, daily returns dated at the close that realises them).
    """
    scores: dict[str, float] = {}
    for name, (dates, returns) in candidates.items():
        r = validation_slice(dates, returns, test_start, validation_days)
        if len(r) < min_days:
            raise ValueError(f"{name}: {len(r)} validation days before {test_start}, need {min_days}")
        scores[name] = float(sharpe(r))
    best = max(scores, key=lambda k: (scores[k], -list(scores).index(k)))
    return best, scores


def walk_forward_choice(candidates: Mapping[str, tuple[np.ndarray, np.ndarray]], test_starts, test_end,
                        validation_days: int = 2 * 252) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Stitched test returns of the candidate chosen before each window, and the choices.

    Windows run from each test start to the next one (the last to `test_end`, inclusive). The
    candidates must share one calendar. Switching costs between candidates are not modelled: each
    candidate's returns are those of its own continuous account.
    """
    starts = [np.datetime64(s, "D") for s in test_starts]
    dates = np.asarray(next(iter(candidates.values()))[0], dtype="datetime64[D]")
    for name, (d, _) in candidates.items():
        if not np.array_equal(np.asarray(d, dtype="datetime64[D]"), dates):
            raise ValueError(f"{name}: dates differ from the first candidate's")
    out_dates, out_returns, choices = [], [], []
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else np.datetime64(test_end, "D") + 1
        chosen, scores = choose_on_validation(candidates, start, validation_days)
        inside = (dates >= start) & (dates < stop)
        out_dates.append(dates[inside])
        out_returns.append(np.asarray(candidates[chosen][1], float)[inside])
        choices.append({"test_start": str(start), "chosen": chosen, "validation_sharpe": scores})
    return np.concatenate(out_dates), np.concatenate(out_returns), choices
