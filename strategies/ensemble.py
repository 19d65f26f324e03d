"""Meta-ensemble: combine agents' target weights with regime-dependent, performance-updated weights.

Agent weight a_i ∝ prior_i(regime) · exp(eta · S_i), floored at `min_share` and renormalised, where
  prior_i(regime) = Σ_r p(r) · regime_priors[r][i]   (p(r) from the forward-filtered HMM;
                                                     no regime → the average prior)
  S_i = Σ_k decay^k · log(1 + w_i(t_k) · R(t_k → t_k+1))   (exponential weights / Hedge on each
                                                     agent's realised out-of-sample log growth)
Combined weights = Σ_i a_i · w_i: long-only and sum <= 1 whenever every member's are.

Everything that changes over time lives in `EnsembleState` (plain data, `to_dict`/`from_dict`),
passed in and returned: `MetaEnsemble` itself holds only configuration, so a Ray Serve deployment
can keep the state in its replica (or an actor) and call `combine`/`update` per request.

`EnsembleAgent` is the backtester's thin adapter over the one per-bar decision core
(strategies/pipeline.py: score the previous decision, combine, remember, size, protect), the
same core the Serve deployments adapt. A member that abstains (raises
`AgentAbstains`) is left out of that decision; an `optional` member whose `fit` refuses the history
(`LookAheadError`: a registered model that saw data after it) is left out until a later fit.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from market.data import Panel
from strategies.base import AgentAbstains, LookAheadError, check_weights
from strategies.regime import REGIMES, RegimeSource
from strategies.risk import RiskModel


@dataclass
class EnsembleState:
    scores: dict[str, float] = field(default_factory=dict)  # S_i, decayed log growth
    last_targets: dict[str, list[float]] = field(default_factory=dict)  # to score on the next update
    last_date: str | None = None
    updates: int = 0

    def to_dict(self) -> dict:
        return {"scores": dict(self.scores), "last_targets": {k: list(v) for k, v in self.last_targets.items()},
                "last_date": self.last_date, "updates": self.updates}

    @classmethod
    def from_dict(cls, d: dict | None) -> "EnsembleState":
        d = d or {}
        return cls(scores={k: float(v) for k, v in d.get("scores", {}).items()},
                   last_targets={k: [float(x) for x in v] for k, v in d.get("last_targets", {}).items()},
                   last_date=d.get("last_date"), updates=int(d.get("updates", 0)))


log = logging.getLogger(__name__)

DEFAULT_PRIORS: dict[str, dict[str, float]] = {
    # why: trend-following pays in calm up-markets, fundamentals hold up better in sell-offs.
    # RL agents (dqn, appo): trained on 2008-2016, which holds every regime (the 2008 crash, the
    # 2011 sell-off, long flat stretches), with a drawdown penalty and an all-cash action, so they
    # get no bull/bear tilt (1.0, the factor agent's level). Lower in sideways markets (0.75):
    # they trade only five names, and when trends do not persist each switch of template costs
    # turnover for little gain. The online performance score moves them from there.
    # Agents not listed here get 1.0 in every regime (`MetaEnsemble._prior`).
    "bull": {"technical": 1.5, "factor": 1.0, "regime-factor": 1.0, "equal-weight": 1.0, "dqn": 1.0, "appo": 1.0},
    "bear": {"technical": 0.5, "factor": 1.0, "regime-factor": 1.5, "equal-weight": 0.5, "dqn": 1.0, "appo": 1.0},
    "sideways": {"technical": 0.75, "factor": 1.25, "regime-factor": 1.25, "equal-weight": 1.0,
                 "dqn": 0.75, "appo": 0.75},
}


@dataclass
class MetaEnsemble:
    regime_priors: dict[str, dict[str, float]] = field(default_factory=lambda: DEFAULT_PRIORS)
    eta: float = 5.0  # learning rate on the decayed log growth
    decay: float = 0.99  # per update; ~100 decisions of memory
    min_share: float = 0.05  # no agent is ever switched off completely (it may come back)

    def __post_init__(self):
        if self.eta < 0 or not 0 < self.decay <= 1 or not 0 <= self.min_share < 1:
            raise ValueError("need eta >= 0, 0 < decay <= 1, 0 <= min_share < 1")

    def _prior(self, agent: str, regime_probs: dict[str, float] | None) -> float:
        def p(reg):
            return float(self.regime_priors.get(reg, {}).get(agent, 1.0))
        if not regime_probs:
            return float(np.mean([p(r) for r in REGIMES]))
        total = sum(regime_probs.values())
        if total <= 0:
            raise ValueError(f"regime probabilities sum to {total}")
        return sum(v / total * p(r) for r, v in regime_probs.items())

    def agent_weights(self, agents: list[str], regime_probs: dict[str, float] | None,
                      state: EnsembleState | None = None) -> tuple[dict[str, float], dict]:
        state = state or EnsembleState()
        prior = {a: self._prior(a, regime_probs) for a in agents}
        score = {a: state.scores.get(a, 0.0) for a in agents}
        m = max(score.values()) if score else 0.0
        raw = {a: prior[a] * np.exp(self.eta * (score[a] - m)) for a in agents}  # shift: no overflow
        total = sum(raw.values())
        w = {a: float(raw[a] / total) for a in agents}
        if self.min_share > 0 and len(agents) > 1:
            floor = min(self.min_share, 1.0 / len(agents))
            w = {a: float(floor + (1 - floor * len(agents)) * v) for a, v in w.items()}
        return w, {"prior": prior, "performance_score": score}

    def combine(self, agent_targets: dict[str, np.ndarray], regime_probs: dict[str, float] | None = None,
                state: EnsembleState | None = None, symbols: list[str] | None = None,
                top: int = 10) -> tuple[np.ndarray, dict]:
        """Combined target weights and a JSON-friendly explanation of how they were made."""
        if not agent_targets:
            raise ValueError("combine needs at least one agent's targets")
        names = sorted(agent_targets)
        mats = {a: np.asarray(agent_targets[a], float) for a in names}
        n = len(mats[names[0]])
        for a in names:
            check_weights(mats[a], n, f"agent {a!r}")
        aw, parts = self.agent_weights(names, regime_probs, state)
        combined: np.ndarray = np.sum([aw[a] * mats[a] for a in names], axis=0)
        order = np.argsort(-combined, kind="stable")[:top]
        label = (lambda i: symbols[i]) if symbols is not None else (lambda i: int(i))
        explanation = {
            "agent_weights": aw,
            "regime_probs": dict(regime_probs) if regime_probs else None,
            **parts,
            "agent_gross": {a: float(mats[a].sum()) for a in names},
            "gross": float(combined.sum()),
            "top_positions": [{"symbol": label(i), "weight": float(combined[i]),
                               "from": {a: float(aw[a] * mats[a][i]) for a in names}}
                              for i in order if combined[i] > 0],
        }
        return combined, explanation

    def update(self, state: EnsembleState | None, asset_returns: np.ndarray,
               agent_targets: dict[str, np.ndarray] | None = None) -> EnsembleState:
        """Score each agent's previous targets on the realised asset returns since they were set.

        `agent_targets` defaults to the state's `last_targets`. Returns a new state whose
        last_targets is empty (call `remember` with the new decision's targets).
        """
        state = EnsembleState.from_dict((state or EnsembleState()).to_dict())
        prev = agent_targets if agent_targets is not None else state.last_targets
        r = np.nan_to_num(np.asarray(asset_returns, float))  # no bar → no move
        for a, w in prev.items():
            w = np.asarray(w, float)
            if w.shape != r.shape:
                raise ValueError(f"agent {a!r} targets have shape {w.shape}, returns {r.shape}")
            growth = max(1.0 + float(w @ r), 1e-6)
            state.scores[a] = self.decay * state.scores.get(a, 0.0) + float(np.log(growth))
        for a in list(state.scores):
            if a not in prev:
                state.scores[a] *= self.decay
        state.updates += 1
        state.last_targets = {}
        return state

    @staticmethod
    def remember(state: EnsembleState, agent_targets: dict[str, np.ndarray], date: str | None = None) -> EnsembleState:
        state.last_targets = {a: [float(x) for x in np.asarray(w, float)] for a, w in agent_targets.items()}
        state.last_date = date
        return state


@dataclass
class EnsembleAgent:
    """The backtester's adapter over the one decision core (strategies/pipeline.py).

    Members' targets on the snapshot the service would see (the last `lookback` bars) →
    `DecisionPipeline.decide` against the backtest's real account (the engine passes it:
    `needs_account`). `rebalance` tells the engine to ask only every `config.rebalance_every` bars,
    exactly the bars on which the served pipeline decides (it holds in between).
    `last_explanation` holds the latest decision's explanation (agent weights, regime, risk
    report, abstentions).

    `optional`: names of members (the RL agents) that `fit` leaves out, with a printed and logged
    note kept in `notes`, when they refuse the history with `LookAheadError`; every fit tries all
    members again. Other errors, and any error of a required member, propagate.
    """
    members: dict
    meta: MetaEnsemble = field(default_factory=MetaEnsemble)
    risk: RiskModel | None | str = "default"   # "default": the config's RiskModel; None: no sizing
    regime: RegimeSource | None = None
    config: Any = None                          # strategies.pipeline.DecisionConfig (default: the project's)
    name: str = "ensemble"
    optional: tuple[str, ...] = ()
    notes: list = field(default_factory=list)
    last_explanation: dict = field(default_factory=dict)
    # (decision date, agent weights) per decision: the reports show the member weights over time
    agent_weights_log: list = field(default_factory=list)
    needs_account = True  # the engine passes the account to target_weights

    def __post_init__(self):
        from strategies.pipeline import DecisionConfig, DecisionPipeline

        if not self.members:
            raise ValueError("an ensemble needs at least one member agent")
        unknown = set(self.optional) - set(self.members)
        if unknown:
            raise ValueError(f"optional members {sorted(unknown)} are not members")
        if not set(self.members) - set(self.optional):
            raise ValueError("an ensemble needs at least one member that is not optional")
        self.all_members = dict(self.members)  # `members`: the ones active since the last fit
        self.config = self.config or DecisionConfig()
        self.pipeline = DecisionPipeline(self.config, self.meta, self.risk, self.regime)
        self.risk = self.pipeline.risk
        self.state = None  # DecisionState, started at the first decision

    @property
    def rebalance(self) -> int:
        return self.config.rebalance_every

    @property
    def lookback(self) -> int:
        return self.pipeline.lookback(m.lookback for m in self.all_members.values())

    def fit(self, history: Panel) -> None:
        active = {}
        for name, m in self.all_members.items():
            try:
                m.fit(history)
            except LookAheadError as exc:
                if name not in self.optional:
                    raise
                note = f"{self.name}: left out {name}: {exc}"
                self.notes.append(note)
                log.warning(note)
                print(note, file=sys.stderr, flush=True)
                continue
            active[name] = m
        self.members = active

    def target_weights(self, window: Panel, account=None) -> np.ndarray:
        """`account`: the book at this close (strategies.pipeline.Account); None = all cash."""
        from strategies.pipeline import Snapshot

        view = window.tail(self.lookback)  # exactly the snapshot the service is sent
        snap = Snapshot.from_panel(view)
        state = self.state or self.pipeline.start(snap.symbols)
        if not self.pipeline.due(snap, state):  # asked between decisions (not by the engine): hold
            decision, self.state = self.pipeline.hold(snap, account, state)
            return decision.targets
        n = len(snap.symbols)
        targets, abstained = {}, {}
        for k, m in self.members.items():
            try:
                targets[k] = check_weights(m.target_weights(view), n, k)
            except AgentAbstains as exc:  # cannot decide on this window: combine the others
                abstained[k] = str(exc)
        if not targets:
            raise ValueError(f"{self.name}: no member could decide on {snap.as_of}: {abstained}")
        decision, self.state = self.pipeline.decide(snap, account, targets, abstained, state)
        expl = dict(decision.explanation)
        if isinstance(expl.get("risk"), dict):
            expl["risk"] = {k: v for k, v in expl["risk"].items() if k != "risk_contributions"}
        self.last_explanation = expl
        self.agent_weights_log.append((snap.as_of.isoformat(), dict(decision.agent_weights)))
        return decision.targets
