"""Portfolio construction: from per-name scores to target weights that keep the members' conviction.

`TopkDropout` is modelled on Qlib's TopkDropoutStrategy: hold `k` names; at each rebalance drop at
most `n_drop` of the worst-scored held names — and only for a not-held name that scores strictly
higher — and fill back to `k` with the best names not held. The book is then weighted equally
("equal") or by score ("score"), and two churn controls follow:
  * a rebalance band: a name that stays in the book keeps its current weight when the target
    differs from it by less than `band` (of equity) — a small drift is not worth the commission;
  * a turnover budget: the one-way turnover Σ|Δw|/2 of one rebalance is at most `max_turnover`;
    above it every trade is scaled down by the same factor (the book moves part of the way).

Held = the current weights above `min_held`; it comes from the real account (the pipeline's
`Account.valuation`), so nothing but the book itself carries the hysteresis from one decision to the
next. A held name with no bar on the decision day (`tradable` false) cannot be sold: it keeps its
weight and its seat.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHTINGS = ("equal", "score")


@dataclass(frozen=True)
class TopkDropout:
    k: int = 10
    n_drop: int = 2
    weighting: str = "equal"           # "equal" | "score"
    gross: float = 1.0                 # weight of the whole book (the risk layer scales it after)
    band: float = 0.01                 # no trade for a kept name whose weight moves less than this
    max_turnover: float | None = None  # one-way turnover budget per rebalance; None: unlimited
    min_held: float = 1e-4             # weights above this count as held

    def __post_init__(self):
        if self.k < 1 or not 0 <= self.n_drop <= self.k:
            raise ValueError(f"need k >= 1 and 0 <= n_drop <= k, got k={self.k}, n_drop={self.n_drop}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if not 0 < self.gross <= 1 or not 0 <= self.band < 1:
            raise ValueError(f"need 0 < gross <= 1 and 0 <= band < 1, got {self.gross}, {self.band}")
        if self.max_turnover is not None and not 0 < self.max_turnover <= 1:
            raise ValueError(f"max_turnover must be in (0, 1] or None, got {self.max_turnover}")

    def select(self, scores: np.ndarray, held: np.ndarray, tradable: np.ndarray) -> tuple[np.ndarray, dict]:
        """The names to hold (bool mask) and what was dropped and bought (indices)."""
        n = len(scores)
        s = np.where(tradable & np.isfinite(scores), scores, -np.inf)
        stuck = held & ~tradable            # cannot be sold today: keeps its seat
        sellable = held & tradable
        keep = held.copy()
        candidates = np.flatnonzero(~held & np.isfinite(s))
        candidates = candidates[np.argsort(-s[candidates], kind="stable")]
        # more than k held (a smaller k, or names left from another book): the worst go first,
        # not counted against n_drop (they are over the limit, not swapped)
        over = int(keep.sum()) - self.k
        forced: list[int] = []
        if over > 0:
            worst = np.flatnonzero(sellable)
            worst = worst[np.argsort(s[worst], kind="stable")][:over]
            keep[worst] = False
            forced = [int(i) for i in worst]
        # swaps: the worst held vs the best not held, at most n_drop, only for a strictly better name
        held_now = np.flatnonzero(keep & sellable)
        held_now = held_now[np.argsort(s[held_now], kind="stable")]
        dropped: list[int] = []
        for i, c in zip(held_now[: self.n_drop], candidates):
            if s[c] > s[i]:
                keep[i] = False
                dropped.append(int(i))
            else:
                break
        # fill the free seats with the best names not held (a name with no score is never bought)
        free = self.k - int(keep.sum())
        # (score weighting gives a name scored 0 no weight: buying it would leave the seat empty)
        floor = 0.0 if self.weighting == "score" else -np.inf
        bought = [int(c) for c in candidates[: max(free, 0)] if s[c] > floor]
        keep[bought] = True
        assert keep.sum() <= max(self.k, int(stuck.sum())), "top-k holds more than k names"
        return keep, {"dropped": forced + dropped, "swapped_out": dropped, "bought": bought, "n": n}

    def construct(self, scores: np.ndarray, current: np.ndarray, tradable: np.ndarray | None = None
                  ) -> tuple[np.ndarray, dict]:
        """Target weights (sum <= gross) and a report (held, dropped, bought, turnover)."""
        scores = np.asarray(scores, float)
        current = np.clip(np.nan_to_num(np.asarray(current, float)), 0.0, None)
        n = len(scores)
        if current.shape != (n,):
            raise ValueError(f"current weights have shape {current.shape}, scores ({n},)")
        tradable = np.ones(n, bool) if tradable is None else np.asarray(tradable, bool)
        held = current > self.min_held
        keep, report = self.select(scores, held, tradable)
        target = np.zeros(n)
        stuck = keep & ~tradable
        target[stuck] = current[stuck]
        movable = np.flatnonzero(keep & tradable)
        room = max(self.gross - target.sum(), 0.0)
        if len(movable):
            if self.weighting == "equal":
                target[movable] = room / len(movable)
            else:
                sc = np.clip(np.nan_to_num(scores[movable]), 0.0, None)
                target[movable] = room * (sc / sc.sum() if sc.sum() > 0 else np.full(len(movable), 1 / len(movable)))
        # rebalance band: kept names hold still when the move is small
        kept = movable[held[movable]]
        still = kept[np.abs(target[kept] - current[kept]) < self.band]
        target[still] = current[still]
        if target.sum() > 1.0:  # drifted winners held still can push the book over 1: trim the movers
            movers = np.setdiff1d(movable, still)
            excess = target.sum() - 1.0
            if len(movers) and target[movers].sum() > 0:
                target[movers] *= max(1.0 - excess / target[movers].sum(), 0.0)
            else:
                target *= 1.0 / target.sum()
        turnover = 0.5 * float(np.abs(target - current).sum())
        scale = 1.0
        if self.max_turnover is not None and turnover > self.max_turnover:
            scale = self.max_turnover / turnover
            target = current + scale * (target - current)
            target = np.where(tradable, target, current)
        report.update({"held": [int(i) for i in np.flatnonzero(target > self.min_held)],
                       "turnover": 0.5 * float(np.abs(target - current).sum()), "turnover_scale": scale,
                       "banded": [int(i) for i in still]})
        return np.clip(target, 0.0, None), report


def rank_scores(member_weights: dict[str, np.ndarray], agent_weights: dict[str, float]) -> np.ndarray:
    """Agent-weighted average of each member's cross-sectional percentile rank of its weights.

    Ties (a member's unheld names all at 0, the equal-weight member's whole book) share their
    average rank, so a member that does not discriminate moves no name against another.
    """
    names = sorted(member_weights)
    n = len(next(iter(member_weights.values())))
    total = np.zeros(n)
    for a in names:
        w = np.asarray(member_weights[a], float)
        order = np.argsort(w, kind="stable")
        ranks = np.empty(n)
        ranks[order] = np.arange(n, dtype=float)
        for v in np.unique(w):  # average rank over ties
            tie = w == v
            ranks[tie] = ranks[tie].mean()
        total += agent_weights.get(a, 0.0) * (ranks / max(n - 1, 1))
    return total
