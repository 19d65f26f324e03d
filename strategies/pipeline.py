"""The per-bar decision, in one place: score the previous decision → regime-weighted combination →
remember → risk sizing → protections.

Every caller is a thin adapter over `DecisionPipeline`:
* the backtester's `EnsembleAgent` (strategies/ensemble.py) — backtests and walk-forward reports;
* the Serve deployments (serving/app.py) — the demo, `trader run` and live trading;
* `trader check-parity` (cluster/parity.py) proves the two trade the same orders.

Inputs and outputs are frozen dataclasses: a `Snapshot` (the bars a decision may see), the
`Account` it sizes against, the `DecisionState` carried from one decision to the next (plain data,
JSON round-trip, stored by run id outside any Serve replica) and the `Decision` with its
explanation. The members' own targets are an input too: the backtester computes them in process,
Serve asks one AgentActor per member; the pipeline never cares which.

One behaviour for research and service (the choices, and why):
* Cadence: a decision every `rebalance_every` bars (default 5); on the bars in between the book
  is held — no member is asked, nothing is scored or sized, no order is sent. Why: the members
  trade slow signals (the factor model rebalances monthly, the technical agent weekly), the
  walk-forward reports were made at this cadence, and daily re-sizing of a CVaR-budgeted book
  mostly buys commission. The backtester asks only on decision bars (`EnsembleAgent.rebalance`),
  the service is asked every bar and answers `rebalance: false` in between.
* Equity: the drawdown protection and the current weights come from the real account (cash and
  shares, valued at the last known close in the snapshot), in both. The backtester used to keep a
  shadow equity of its own targets without costs; a protection is about the book that actually
  lost the money, costs included, so the real account it is.
* Risk window: the risk model sizes on the last `risk_window` (250) daily returns, in both (Serve
  used the whole snapshot); the snapshot length asked from the service (`lookback`) covers it.
* Members see exactly the snapshot the service would give them: the last `lookback` bars.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np

from strategies import defaults as D
from strategies.base import check_weights
from strategies.construction import TiltedEqualWeight, TopkDropout, construction_from_dict, rank_scores
from strategies.ensemble import EnsembleState, MetaEnsemble
from strategies.risk import DrawdownProtection, RiskModel, RiskOverlay


class StateConflict(ValueError):
    """The request does not continue the run's decision history (another universe, or a date
    that is not after the last one answered)."""


def default_construction() -> TiltedEqualWeight | None:
    """The project's construction step (strategies/defaults.py: CONSTRUCTION)."""
    if D.CONSTRUCTION == "combined":
        return None
    if D.CONSTRUCTION == "tilted-ew":
        return TiltedEqualWeight(tilt=D.TILT, max_weight=D.TILT_MAX_WEIGHT, band=D.TILT_BAND)
    raise ValueError(f"strategies/defaults.py: CONSTRUCTION must be 'combined' or 'tilted-ew', got {D.CONSTRUCTION!r}")


@dataclass(frozen=True)
class DecisionConfig:
    """How the pipeline decides. The defaults are the project's (strategies/defaults.py)."""

    rebalance_every: int = D.REBALANCE_EVERY
    risk_window: int = D.RISK_WINDOW
    max_position: float = D.MAX_POSITION
    max_gross: float = D.MAX_GROSS
    cvar_budget: float = D.CVAR_BUDGET
    min_lookback: int = D.MIN_LOOKBACK
    risk_layer: str = D.RISK_LAYER        # "overlay" (RiskOverlay) | "erc" (RiskModel)
    # the overlay's steps: None = no volatility step; a drawdown floor of 1 = no drawdown step
    # (both off leaves the caps and the tail report: the default, chosen on validation)
    vol_target: float | None = D.VOL_TARGET
    exposure_floor: float = D.EXPOSURE_FLOOR
    drawdown_floor: float = D.DRAWDOWN_FLOOR
    # portfolio construction (strategies/construction.py): None = the combined weights as they are;
    # a TopkDropout turns the combination into a score per name and holds its top k; a
    # TiltedEqualWeight holds every tradable name, equal weight tilted by the score's rank. A dict
    # of a construction's fields (dataclasses.asdict of a config, as Serve is bound) is rebuilt.
    construction: TopkDropout | TiltedEqualWeight | None = default_construction()
    # what the construction ranks on: "weights" (the regime/performance-weighted combination of the
    # members' weights) or "rank" (the same agent weights over each member's percentile ranks)
    score: str = "weights"

    def __post_init__(self):
        object.__setattr__(self, "construction", construction_from_dict(self.construction))
        if self.risk_layer not in ("overlay", "erc"):
            raise ValueError(f"risk_layer must be 'overlay' or 'erc', got {self.risk_layer!r}")
        if self.score not in ("weights", "rank"):
            raise ValueError(f"score must be 'weights' or 'rank', got {self.score!r}")
        if self.score == "rank" and self.construction is None:
            raise ValueError("score='rank' makes scores, not weights: it needs a construction step")
        if self.rebalance_every < 1:
            raise ValueError(f"rebalance_every must be >= 1 bar, got {self.rebalance_every}")
        if self.risk_window < 2:
            raise ValueError(f"risk_window must be >= 2 returns, got {self.risk_window}")

    def risk_model(self, **overrides: Any) -> RiskModel | RiskOverlay:
        """The configured risk layer. The overlay's CVaR budget is off by default (it cost return and
        saved less drawdown than the volatility target in reports/strategies_ablation.py)."""
        if self.risk_layer == "erc":
            return RiskModel(max_position=self.max_position, max_gross=self.max_gross,
                             cvar_budget=self.cvar_budget, **overrides)
        return RiskOverlay(**{"vol_target": self.vol_target, "floor": min(self.exposure_floor, self.max_gross),
                              "dd_floor": self.drawdown_floor, "max_position": self.max_position,
                              "max_gross": self.max_gross, **overrides})


# the ensemble as it was the default until the tilted book won on validation (issue 15): the
# combined weights as they are, the full overlay (15 % volatility target, drawdown step). What
# `--strategy ensemble-combined` runs and the reports compare against.
COMBINED_OVERLAY = DecisionConfig(construction=None, risk_layer="overlay", vol_target=0.15, drawdown_floor=0.5)


@dataclass(frozen=True)
class Snapshot:
    """The bars a decision at the close of `as_of` may see: rows = dates (ending at as_of)."""

    dates: np.ndarray          # datetime64[D], strictly increasing
    symbols: tuple[str, ...]
    close: np.ndarray          # (T, N) float, NaN = no bar

    def __post_init__(self):
        if len(self.dates) == 0 or self.close.shape != (len(self.dates), len(self.symbols)):
            raise ValueError(f"snapshot closes have shape {self.close.shape}, want "
                             f"({len(self.dates)}, {len(self.symbols)}) with at least one date")

    @classmethod
    def from_panel(cls, panel) -> "Snapshot":
        return cls(np.asarray(panel.dates, dtype="datetime64[D]"), tuple(panel.symbols),
                   np.asarray(panel.close, dtype=float))

    @property
    def as_of(self) -> dt.date:
        return self.dates[-1].astype("datetime64[D]").item()

    def last_known_close(self) -> np.ndarray:
        """Per symbol the last close in the snapshot (NaN if it has none): what a book is valued at."""
        c = self.close
        idx = np.where(np.isfinite(c), np.arange(len(c))[:, None], 0)
        return c[idx.max(axis=0), np.arange(c.shape[1])]


@dataclass(frozen=True)
class Account:
    """The book a decision sizes against: cash and whole shares."""

    cash: int
    positions: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def empty(cls, cash: int = D.STARTING_CASH) -> "Account":
        return cls(int(cash), {})

    def valuation(self, snap: Snapshot) -> tuple[float, np.ndarray]:
        """(equity, current weights aligned with the snapshot's symbols). Holdings outside the
        snapshot are not in this decision and count at 0 (the loop does not trade them either)."""
        px = np.nan_to_num(snap.last_known_close())
        held = np.array([self.positions.get(s, 0) for s in snap.symbols], dtype=float)
        equity = float(self.cash) + float(held @ px)
        weights = held * px / equity if equity > 0 else np.zeros(len(snap.symbols))
        return equity, weights


@dataclass(frozen=True)
class DecisionState:
    """What one run carries from decision to decision (JSON via to_dict/from_dict)."""

    symbols: tuple[str, ...] = ()
    scores: Mapping[str, float] = field(default_factory=dict)             # members' decayed log growth
    last_targets: Mapping[str, tuple[float, ...]] = field(default_factory=dict)  # scored next decision
    last_date: str | None = None          # the last decision (rebalance) date
    last_close: tuple[float, ...] | None = None  # closes at that decision (NaN: no bar)
    updates: int = 0
    protection: Mapping[str, Any] | None = None  # DrawdownProtection: ACTIVE / REDUCING / HALTED
    seen: str | None = None               # the last date answered (a decision or a hold)

    @property
    def trading_state(self) -> str:
        return str((self.protection or {}).get("state", "ACTIVE"))

    def ensemble(self) -> EnsembleState:
        return EnsembleState(scores=dict(self.scores), last_targets={k: list(v) for k, v in self.last_targets.items()},
                             last_date=self.last_date, updates=self.updates)

    def to_dict(self) -> dict:
        return {"symbols": list(self.symbols), "scores": dict(self.scores),
                "last_targets": {k: list(v) for k, v in self.last_targets.items()},
                "last_date": self.last_date,
                "last_close": None if self.last_close is None else [None if not np.isfinite(v) else v
                                                                     for v in self.last_close],
                "updates": self.updates, "protection": dict(self.protection) if self.protection else None,
                "seen": self.seen}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DecisionState":
        lc = d.get("last_close")
        return cls(symbols=tuple(d.get("symbols", ())), scores={k: float(v) for k, v in d.get("scores", {}).items()},
                   last_targets={k: tuple(float(x) for x in v) for k, v in d.get("last_targets", {}).items()},
                   last_date=d.get("last_date"),
                   last_close=None if lc is None else tuple(np.nan if v is None else float(v) for v in lc),
                   updates=int(d.get("updates", 0)), protection=dict(d["protection"]) if d.get("protection") else None,
                   seen=d.get("seen"))


# Sized targets, and the scores a construction ranks, are whole multiples of this fraction of equity
# (a tenth of a won on 100 M KRW): far coarser than floating-point noise, far finer than any order.
# The same code and data give floats a few ulps apart on another machine (another BLAS kernel:
# reports/strategies.md, "Noise"); on the grid those ulps almost never change a rank or a target,
# so they no longer change an order and, from there, the whole path.
WEIGHT_GRID = 1e-9


def on_weight_grid(weights: np.ndarray) -> np.ndarray:
    """`weights` rounded down to the grid: never more than decided, so the sum stays within its cap."""
    return np.floor(np.asarray(weights, float) / WEIGHT_GRID) * WEIGHT_GRID


@dataclass(frozen=True)
class Decision:
    """The answer for one bar: sized target weights and how they were made."""

    as_of: dt.date
    symbols: tuple[str, ...]
    targets: np.ndarray                       # sized weights of equity (what to hold after the next open)
    rebalance: bool                           # False: a hold bar, targets are the current weights
    members: Mapping[str, np.ndarray] = field(default_factory=dict)   # each deciding member's targets
    abstained: Mapping[str, str] = field(default_factory=dict)
    agent_weights: Mapping[str, float] = field(default_factory=dict)
    regime: Mapping[str, float] | None = None
    explanation: Mapping[str, Any] = field(default_factory=dict)      # combination + risk report

    def targets_dict(self) -> dict[str, float]:
        return {s: float(w) for s, w in zip(self.symbols, self.targets)}


class DecisionPipeline:
    """The decision core. Holds configuration only; the state goes in and comes out."""

    def __init__(self, config: DecisionConfig = DecisionConfig(), meta: MetaEnsemble | None = None,
                 risk: RiskModel | None | str = "default", regime=None):
        self.config = config
        self.meta = meta or MetaEnsemble()
        self.risk = config.risk_model() if isinstance(risk, str) else risk
        self.regime = regime  # a RegimeSource (probs_at(date)) or None: regime-neutral priors

    # --- what a caller needs to know first --------------------------------------------------
    def lookback(self, member_lookbacks) -> int:
        """Bars a snapshot must hold: the members' needs, the risk window's closes, the floor."""
        need = [self.config.min_lookback, *map(int, member_lookbacks)]
        if self.risk is not None:
            need.append(self.config.risk_window + 1)
        return max(need)

    def start(self, symbols) -> DecisionState:
        return DecisionState(symbols=tuple(symbols))

    def check(self, snap: Snapshot, state: DecisionState) -> None:
        """Refuse a snapshot that does not continue the state's history."""
        if state.symbols and tuple(snap.symbols) != tuple(state.symbols):
            raise StateConflict(f"the run trades {len(state.symbols)} symbols {list(state.symbols)[:5]}…; "
                                f"this snapshot has another universe (start a new run for it)")
        if state.seen is not None and snap.as_of.isoformat() <= state.seen:
            raise StateConflict(f"the run has answered up to {state.seen}; {snap.as_of} does not come after it")

    def due(self, snap: Snapshot, state: DecisionState) -> bool:
        """A decision bar: the first one, or `rebalance_every` bars after the last decision."""
        if state.last_date is None:
            return True
        since = int(np.sum(snap.dates > np.datetime64(state.last_date, "D")))
        return since >= self.config.rebalance_every

    # --- the steps --------------------------------------------------------------------------
    def score_previous(self, snap: Snapshot, state: DecisionState) -> DecisionState:
        """Each member's previous targets earn the close-to-close returns since that decision."""
        if not state.last_targets or state.last_close is None:
            return state
        then, last = np.asarray(state.last_close, float), snap.close[-1]
        if then.shape != last.shape:
            raise StateConflict(f"the remembered closes have {then.shape[0]} symbols, the snapshot {last.shape[0]}")
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(np.isfinite(last) & np.isfinite(then) & (then > 0), last / then - 1.0, 0.0)
        es = self.meta.update(state.ensemble(), r)
        return replace(state, scores=es.scores, last_targets={}, updates=es.updates)

    def combine(self, snap: Snapshot, member_targets: Mapping[str, np.ndarray], state: DecisionState
                ) -> tuple[np.ndarray, dict, DecisionState]:
        """Score the previous decision, combine the members regime-weighted, remember them."""
        n = len(snap.symbols)
        if not member_targets:
            raise ValueError(f"no member decided on {snap.as_of}")
        targets = {k: check_weights(v, n, f"member {k!r}") for k, v in member_targets.items()}
        state = self.score_previous(snap, state)
        probs = self.regime.probs_at(snap.as_of) if self.regime is not None else None
        combined, expl = self.meta.combine(targets, probs, state.ensemble(), list(snap.symbols))
        if self.config.score == "rank":
            combined = rank_scores(targets, expl["agent_weights"])
        state = replace(state, last_targets={k: tuple(float(x) for x in v) for k, v in targets.items()},
                        last_date=snap.as_of.isoformat(), last_close=tuple(float(x) for x in snap.close[-1]))
        return combined, expl, state

    def sizing_window(self, snap: Snapshot) -> Snapshot:
        """The bars `size` reads (the risk window's closes and the last close): a caller that sizes
        elsewhere (the Serve Risk deployment) sends only these."""
        keep = self.config.risk_window + 1
        if len(snap.dates) <= keep:
            return snap
        trimmed = Snapshot(snap.dates[-keep:], snap.symbols, snap.close[-keep:])
        # the book is valued at each name's last known close: keep everything when one is older
        same_book = np.array_equal(trimmed.last_known_close(), snap.last_known_close(), equal_nan=True)
        return trimmed if same_book else snap

    def size(self, snap: Snapshot, account: Account | None, combined: np.ndarray, state: DecisionState
             ) -> tuple[np.ndarray, dict, DecisionState]:
        """Construction (top-k), risk sizing (exposure, caps) and protections (drawdown)."""
        last = snap.close[-1]
        equity, current = (account or Account.empty()).valuation(snap)
        construction: dict = {}
        if self.config.construction is not None:
            # ranked on the grid: scores no member tells apart by a billionth share rank (ulps
            # apart on one machine, equal on another, they would flip whole ranks)
            combined, construction = self.config.construction.construct(on_weight_grid(combined), current,
                                                                        np.isfinite(last))
            construction = {k: [snap.symbols[i] for i in v] if isinstance(v, list) else v
                            for k, v in construction.items()}
        if self.risk is None:
            report = {"construction": construction} if construction else {}
            return np.where(np.isfinite(last), combined, 0.0), report, state
        c = snap.close[-self.config.risk_window - 1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            rets = c[1:] / c[:-1] - 1.0
        book: dict = {"weights": current, "protection": dict(state.protection or DrawdownProtection().to_dict()),
                      "symbols": snap.symbols}
        if equity > 0 and np.isfinite(equity):
            book["equity"] = equity
        sized, report = self.risk.size(combined, rets, book)
        contributions = report.pop("risk_contributions", {})
        report["risk_contributions"] = {snap.symbols[i]: v for i, v in contributions.items()}
        if construction:
            report["construction"] = construction
        # no bar on the decision day: no price to size an order on, no new money for it
        sized = check_weights(np.where(np.isfinite(last), sized, 0.0), len(snap.symbols), "risk sizing")
        return sized, report, replace(state, protection=report["protection"])

    def decide(self, snap: Snapshot, account: Account | None, member_targets: Mapping[str, np.ndarray],
               abstained: Mapping[str, str] | None, state: DecisionState) -> tuple[Decision, DecisionState]:
        """The whole decision for a bar on which `due` is true."""
        account = account or Account.empty()
        combined, expl, state = self.combine(snap, member_targets, state)
        sized, report, state = self.size(snap, account, combined, state)
        return self.finish(snap, member_targets, abstained, combined, expl, sized, report, state)

    def finish(self, snap: Snapshot, member_targets, abstained, combined, expl: dict, sized, report: dict,
               state: DecisionState) -> tuple[Decision, DecisionState]:
        """Assemble the Decision (also used by a caller that ran `size` elsewhere, e.g. Serve's Risk)."""
        explanation = dict(expl)
        if abstained:
            explanation["abstained"] = dict(abstained)
        explanation["risk"] = report
        state = replace(state, seen=snap.as_of.isoformat())
        return Decision(as_of=snap.as_of, symbols=tuple(snap.symbols), targets=on_weight_grid(sized),
                        rebalance=True, members={k: np.asarray(v, float) for k, v in member_targets.items()},
                        abstained=dict(abstained or {}), agent_weights=dict(expl["agent_weights"]),
                        regime=expl.get("regime_probs"), explanation=explanation), state

    def hold(self, snap: Snapshot, account: Account | None, state: DecisionState) -> tuple[Decision, DecisionState]:
        """A bar between decisions: keep the book (targets = current weights; nothing is sent)."""
        _, current = (account or Account.empty()).valuation(snap)
        since = int(np.sum(snap.dates > np.datetime64(state.last_date, "D"))) if state.last_date else 0
        explanation = {"hold": f"{since} of {self.config.rebalance_every} bars since the decision of "
                               f"{state.last_date}", "risk": {"state": state.trading_state}}
        state = replace(state, seen=snap.as_of.isoformat())
        return Decision(as_of=snap.as_of, symbols=tuple(snap.symbols), targets=current, rebalance=False,
                        explanation=explanation), state
