"""Dynamic multi-factor model: group weights from recent rank IC (and the regime), long-only targets.

At each rebalance (every `rebalance_every` bars) on date t:
  1. new IC observations: for observation rows s = t - h, t - 2h, … (h = `ic_horizon`) not yet
     seen, the Spearman rank correlation between each factor group's score at s and the return
     from s to s + h — all of it realised by t, so fitted only on the past;
  2. group weights: mean IC over the last `ic_lookback` observations (regime-conditional when a
     regime source is given: each observation counts by the overlap Σ_r p_s(r)·p_t(r) between its
     regime and today's), clipped at 0, normalised, shrunk toward the prior (`ic_shrink`); the
     regime version's prior tilts by regime (`regime_priors`);
  3. composite score → top_k names, score-weighted (or equal), capped at max_weight;
  4. the regime version scales exposure by the bear probability (`bear_exposure`);
  5. turnover control: move `step` of the way from the drifted current portfolio to the target,
     scaled down so one-way turnover stays <= `max_turnover`, and drop trades < `no_trade_band`.
Between rebalances the agent returns its drifted holdings (no trading).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from market.data import Panel
from strategies.factors import FACTOR_GROUPS, FactorEngine, composite_scores, group_scores
from strategies.regime import REGIMES, RegimeSource
from strategies.risk import cap_weights

GROUPS = tuple(FACTOR_GROUPS)

DEFAULT_REGIME_PRIORS: dict[str, dict[str, float]] = {
    "bull": {"value": 1.0, "growth": 1.5, "momentum": 1.5, "reversal": 0.5, "quality": 0.5, "profitability": 1.0},
    "bear": {"value": 1.5, "growth": 0.5, "momentum": 0.5, "reversal": 1.0, "quality": 1.5, "profitability": 1.0},
    "sideways": {"value": 1.25, "growth": 1.0, "momentum": 0.75, "reversal": 1.25, "quality": 1.0,
                 "profitability": 1.0},
}


def rank_ic(score: np.ndarray, fwd: np.ndarray, min_count: int = 10) -> float:
    """Spearman correlation over symbols with both values (NaN if fewer than min_count)."""
    ok = np.isfinite(score) & np.isfinite(fwd)
    if ok.sum() < min_count:
        return np.nan
    a = np.argsort(np.argsort(score[ok])).astype(float)
    b = np.argsort(np.argsort(fwd[ok])).astype(float)
    a -= a.mean()
    b -= b.mean()
    den = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / den) if den > 0 else np.nan


def drift_weights(w: np.ndarray, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    """Weights after prices move from p0 to p1 with no trading (cash is the remainder)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(np.isfinite(p0) & np.isfinite(p1) & (p0 > 0), p1 / p0, 1.0)
    value = w * g
    total = value.sum() + (1.0 - w.sum())
    return value / total if total > 0 else np.zeros_like(w)


@dataclass
class FactorAgent:
    engine: FactorEngine
    regime: RegimeSource | None = None
    top_k: int = 10
    weighting: str = "score"  # "score" | "equal"
    max_weight: float = 0.15
    rebalance_every: int = 21
    ic_horizon: int = 21
    ic_lookback: int = 12
    ic_shrink: float = 0.5  # 0 = pure IC weights, 1 = pure prior
    regime_priors: dict = field(default_factory=lambda: DEFAULT_REGIME_PRIORS)
    bear_exposure: float = 0.5  # gross exposure when p(bear) = 1 (regime version only)
    step: float = 1.0  # turnover control: fraction of the way to the new target
    max_turnover: float = 0.5  # one-way turnover cap per rebalance (sum|Δw|/2; entry from cash = 0.5)
    no_trade_band: float = 0.005
    name: str = "factor"
    last_weights: dict = field(default_factory=dict, repr=False)  # group → weight at last rebalance
    _ic: dict = field(default_factory=dict, repr=False)  # obs date → (regime row, {group: IC})
    _held: tuple | None = field(default=None, repr=False)  # (date, close row, weights)
    _rebalanced_at: object = field(default=None, repr=False)

    def __post_init__(self):
        if self.weighting not in ("score", "equal"):
            raise ValueError(f"weighting must be 'score' or 'equal', got {self.weighting!r}")
        if self.top_k < 1 or not 0 < self.max_weight <= 1 or not 0 < self.step <= 1 or self.max_turnover <= 0:
            raise ValueError("need top_k >= 1, 0 < max_weight <= 1, 0 < step <= 1, max_turnover > 0")
        if self.rebalance_every < 1 or self.ic_horizon < 1 or self.ic_lookback < 1:
            raise ValueError("rebalance_every, ic_horizon and ic_lookback must be >= 1")

    @property
    def lookback(self) -> int:
        return self.engine.lookback + self.ic_horizon * self.ic_lookback

    def fit(self, history: Panel) -> None:
        """Nothing to pre-fit: IC weights are learnt walk-forward inside target_weights."""

    def _regime_row(self, date) -> np.ndarray | None:
        if self.regime is None:
            return None
        p = self.regime.probs_at(date)
        return None if p is None else np.array([p[r] for r in REGIMES])

    def _update_ics(self, window: Panel):
        last = len(window) - 1
        for k in range(1, self.ic_lookback + 1):
            s = last - k * self.ic_horizon
            if s < self.engine.lookback:
                break
            key = window.dates[s]
            if key in self._ic:
                continue
            g = group_scores(self.engine.exposures(window, s))
            with np.errstate(divide="ignore", invalid="ignore"):
                fwd = window.close[s + self.ic_horizon] / window.close[s] - 1.0
            self._ic[key] = (self._regime_row(key), {name: rank_ic(v, fwd) for name, v in g.items()})

    def group_weights(self, date, regime_now: np.ndarray | None) -> dict[str, float]:
        """IC-driven group weights shrunk toward the (regime) prior; sums to 1."""
        if regime_now is not None:
            pri = {g: sum(regime_now[i] * self.regime_priors[r].get(g, 1.0) for i, r in enumerate(REGIMES))
                   for g in GROUPS}
        else:
            pri = {g: 1.0 for g in GROUPS}
        tot = sum(pri.values())
        pri = {g: v / tot for g, v in pri.items()}
        keys = sorted(k for k in self._ic if k < np.datetime64(date, "D"))[-self.ic_lookback:]
        ic_mean = {}
        for g in GROUPS:
            vals, wts = [], []
            for k in keys:
                reg, ics = self._ic[k]
                if np.isfinite(ics.get(g, np.nan)):
                    vals.append(ics[g])
                    wts.append(1.0 if regime_now is None or reg is None else 0.1 + float(reg @ regime_now))
            ic_mean[g] = float(np.average(vals, weights=wts)) if vals else 0.0
        pos = {g: max(v, 0.0) for g, v in ic_mean.items()}
        s = sum(pos.values())
        if s <= 0:
            return pri
        return {g: (1 - self.ic_shrink) * pos[g] / s + self.ic_shrink * pri[g] for g in GROUPS}

    def target_weights(self, window: Panel) -> np.ndarray:
        n = len(window.symbols)
        t = window.dates[-1]
        last = window.close[-1]
        if len(window) <= self.engine.lookback:
            return np.zeros(n)
        current = np.zeros(n)
        if self._held is not None and self._held[0] < t:
            current = drift_weights(self._held[2], self._held[1], last)
            current = np.where(np.isfinite(last), current, 0.0)
        due = self._rebalanced_at is None or int(np.sum(window.dates > self._rebalanced_at)) >= self.rebalance_every
        if not due:
            self._held = (t, last.copy(), current)
            return current
        self._update_ics(window)
        regime_now = self._regime_row(t)
        gw = self.group_weights(t, regime_now)
        self.last_weights = gw
        score, coverage = composite_scores(group_scores(self.engine.exposures(window)), gw)
        score = np.where(np.isfinite(last) & (coverage > 0), score, np.nan)
        ok = np.flatnonzero(np.isfinite(score))
        target = np.zeros(n)
        if len(ok):
            chosen = ok[np.argsort(-score[ok], kind="stable")[: self.top_k]]
            raw = (score[chosen] - score[chosen].min() + 0.5) if self.weighting == "score" else np.ones(len(chosen))
            target[chosen] = raw / raw.sum()
            target = cap_weights(target, self.max_weight)
        if regime_now is not None:
            target *= 1.0 - (1.0 - self.bear_exposure) * regime_now[REGIMES.index("bear")]
        move = self.step * (target - current)
        turnover = np.abs(move).sum() / 2
        if turnover > self.max_turnover:
            move *= self.max_turnover / turnover
        new = current + move
        new = np.where(np.abs(new - current) < self.no_trade_band, current, new)
        new = np.clip(new, 0.0, None)
        if new.sum() > 1.0:
            new /= new.sum()
        self._rebalanced_at = t
        self._held = (t, last.copy(), new)
        return new
