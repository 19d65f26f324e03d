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

`TiltedEqualWeight` keeps the breadth of the equal-weight book and adds the members' signal: equal
weight over every tradable name (or the better-scored half), each tilted by its cross-sectional
percentile rank of the score, w_i ∝ max(0, 1 + tilt·(rank_i − mean rank)), capped per name (the
excess goes to the uncapped names in proportion; when every name is capped the rest stays cash).
tilt = 0 is the equal-weight book. The same rebalance band as TopkDropout keeps small drifts still.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WEIGHTINGS = ("equal", "score")



def _inputs(scores, current, tradable, min_held: float):
    """A construction step's inputs as arrays: scores, current weights (≥ 0, NaN as 0), the
    tradable mask (all when None) and which names are held (weight above `min_held`)."""
    scores = np.asarray(scores, float)
    current = np.clip(np.nan_to_num(np.asarray(current, float)), 0.0, None)
    if current.shape != scores.shape:
        raise ValueError(f"current weights have shape {current.shape}, scores {scores.shape}")
    tradable = np.ones(len(scores), bool) if tradable is None else np.asarray(tradable, bool)
    return scores, current, tradable, current > min_held

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
        scores, current, tradable, held = _inputs(scores, current, tradable, self.min_held)
        n = len(scores)
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
        target, still = hold_small_moves(target, current, movable[held[movable]], movable, self.band, 1.0)
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


def hold_small_moves(target: np.ndarray, current: np.ndarray, kept: np.ndarray, movable: np.ndarray,
                     band: float, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """The rebalance band: each `kept` name (held, tradable) whose target differs from its current
    weight by less than `band` keeps its current weight. Drifted winners held still can push the
    book over `limit`: the other movable names are trimmed (all names, if none is left to trim).
    Returns the new target and the indices held still."""
    target = target.copy()
    still = kept[np.abs(target[kept] - current[kept]) < band]
    target[still] = current[still]
    if target.sum() > limit:
        movers = np.setdiff1d(movable, still)
        excess = target.sum() - limit
        if len(movers) and target[movers].sum() > 0:
            target[movers] *= max(1.0 - excess / target[movers].sum(), 0.0)
        else:
            target *= limit / target.sum()
    return target, still


def percentile_ranks(x: np.ndarray) -> np.ndarray:
    """Cross-sectional rank of each value in [0, 1] (lowest 0, highest 1); ties share their average
    rank, so the mean rank is exactly 0.5 and a constant input ranks every name 0.5."""
    x = np.asarray(x, float)
    n = len(x)
    if n <= 1:
        return np.full(n, 0.5)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(n)
    ranks[order] = np.arange(n, dtype=float)
    for v in np.unique(x):  # average rank over ties
        tie = x == v
        ranks[tie] = ranks[tie].mean()
    return ranks / (n - 1)


def capped_proportional(raw: np.ndarray, total: float, cap: float) -> np.ndarray:
    """Weights ∝ `raw` summing to `total`, none above `cap`: a capped name's excess goes to the
    uncapped ones in proportion to `raw` (water-filling); when all are capped the sum is below
    `total` (the rest stays cash)."""
    raw = np.clip(np.asarray(raw, float), 0.0, None)
    w = np.zeros(len(raw))
    free = raw > 0
    left = total
    while left > 1e-12 and free.any():
        share = left * raw[free] / raw[free].sum()
        idx = np.flatnonzero(free)
        over = share > cap
        if not over.any():
            w[idx] += share
            break
        w[idx[over]] = cap
        left = total - w.sum()
        free[idx[over]] = False
    return w


BREADTHS = ("all", "top-half")


@dataclass(frozen=True)
class TiltedEqualWeight:
    """Equal weight over the tradable names, tilted by the score's cross-sectional rank.

    w_i ∝ max(0, 1 + tilt · (rank_i − mean rank)) with rank_i in [0, 1] (ties share their average
    rank: names no member tells apart keep equal weights among themselves); tilt = 0 is equal
    weight, tilt = 1 gives the best-ranked name three times the worst one's weight, from tilt = 2
    on the worst-ranked names get none. `breadth`: "all" tradable names, or the
    "top-half" (names whose score is at least the median; ties at the median all stay). Every name
    is capped at `max_weight`; the book sums to at most `gross`.
    """

    tilt: float = 1.0
    breadth: str = "all"               # "all" | "top-half"
    max_weight: float = 0.05           # cap per name, fraction of equity
    gross: float = 1.0
    band: float = 0.0                  # no trade for a held name whose weight moves less than this
    min_held: float = 1e-4

    def __post_init__(self):
        if not np.isfinite(self.tilt) or self.tilt < 0:
            raise ValueError(f"tilt must be a finite number >= 0, got {self.tilt}")
        if self.breadth not in BREADTHS:
            raise ValueError(f"breadth must be one of {BREADTHS}, got {self.breadth!r}")
        if not 0 < self.gross <= 1 or not 0 < self.max_weight <= 1 or not 0 <= self.band < 1:
            raise ValueError(f"need 0 < gross <= 1, 0 < max_weight <= 1 and 0 <= band < 1, got "
                             f"{self.gross}, {self.max_weight}, {self.band}")

    def construct(self, scores: np.ndarray, current: np.ndarray, tradable: np.ndarray | None = None
                  ) -> tuple[np.ndarray, dict]:
        """Target weights (sum <= gross, each <= max_weight) and a report (held, turnover)."""
        scores, current, tradable, held = _inputs(scores, current, tradable, self.min_held)
        n = len(scores)
        target = np.zeros(n)
        stuck = held & ~tradable            # no bar today: cannot be traded, keeps its weight
        target[stuck] = current[stuck]
        eligible = np.flatnonzero(tradable & np.isfinite(scores))
        if self.breadth == "top-half" and len(eligible):
            eligible = eligible[scores[eligible] >= np.median(scores[eligible])]
        if len(eligible):
            rank = percentile_ranks(scores[eligible])
            raw = np.maximum(0.0, 1.0 + self.tilt * (rank - rank.mean()))
            target[eligible] = capped_proportional(raw, max(self.gross - target.sum(), 0.0), self.max_weight)
        movable = np.flatnonzero(tradable)
        kept = movable[held[movable] & (current[movable] <= self.max_weight)]
        target, still = hold_small_moves(target, current, kept, movable, self.band, self.gross)
        target = np.clip(target, 0.0, None)
        return target, {"held": [int(i) for i in np.flatnonzero(target > self.min_held)],
                        "turnover": 0.5 * float(np.abs(target - current).sum()),
                        "banded": [int(i) for i in still]}


def construction_from_dict(d):
    """A construction from its fields (what `dataclasses.asdict` of a DecisionConfig makes of it, e.g.
    the config Serve's deployments are bound with); a construction object or None passes through."""
    if d is None or isinstance(d, (TopkDropout, TiltedEqualWeight)):
        return d
    d = dict(d)
    kind = TiltedEqualWeight if "tilt" in d else TopkDropout
    return kind(**d)


def rank_scores(member_weights: dict[str, np.ndarray], agent_weights: dict[str, float]) -> np.ndarray:
    """Agent-weighted average of each member's cross-sectional percentile rank of its weights.

    Ties (a member's unheld names all at 0, the equal-weight member's whole book) share their
    average rank, so a member that does not discriminate moves no name against another.
    """
    names = sorted(member_weights)
    n = len(next(iter(member_weights.values())))
    total = np.zeros(n)
    for a in names:
        total += agent_weights.get(a, 0.0) * percentile_ranks(member_weights[a])
    return total
