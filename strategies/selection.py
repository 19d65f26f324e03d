"""Choosing a configuration on validation windows only: walk-forward, never on the test window.

For a test window starting at `test_start`, every candidate is judged on its daily returns in the
`validation_days` trading days *before* `test_start` (dates >= test_start are cut off before any
number is computed), by Sharpe; the best one trades the test window. `walk_forward_choice`
repeats this for each test window and stitches the chosen candidates' test returns together.

`ValidatedEnsemble` makes the same kind of choice inside `fit(history)`: member weights and the
pipeline's construction / risk steps are chosen on the last two years of the history it is given,
so in a walk-forward run (backtest.walkforward) each test year is traded by the ensemble that won
on the years before it, with the account and every switching cost carried through.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from backtest.metrics import sharpe

if TYPE_CHECKING:
    from strategies.ensemble import MetaEnsemble


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


# ------------------------------------------------------------------------------ member weights

def simplex_grid(n: int, step: float) -> np.ndarray:
    """Every weight vector of n non-negative multiples of `step` summing to 1."""
    m = round(1 / step)
    if n == 1:
        return np.ones((1, 1))
    out = []

    def rec(prefix, left, k):
        if k == 1:
            out.append(prefix + [left])
            return
        for i in range(left + 1):
            rec(prefix + [i], left - i, k - 1)
    rec([], m, n)
    return np.array(out, float) / m


def blend_weights(member_returns: Mapping[str, np.ndarray], step: float = 0.1) -> tuple[dict[str, float], float]:
    """Member weights (a grid of the simplex) whose blend of the members' daily returns has the
    highest Sharpe, and that Sharpe. Ties: the first grid point (order of `member_returns`)."""
    names = list(member_returns)
    r = np.vstack([np.asarray(member_returns[k], float) for k in names])
    grid = simplex_grid(len(names), step if len(names) <= 4 else 0.25)
    blended = grid @ r
    sd = blended.std(axis=1, ddof=1)
    sh = np.where(sd > 0, blended.mean(axis=1) / np.where(sd > 0, sd, 1) * np.sqrt(252), -np.inf)
    best = int(np.argmax(sh))
    return {k: float(w) for k, w in zip(names, grid[best])}, float(sh[best])


def fixed_weights(weights: Mapping[str, float]):
    """A MetaEnsemble that gives the members these weights in every regime, with no online update."""
    from strategies.ensemble import MetaEnsemble
    from strategies.regime import REGIMES

    # a member at 0 gets a tiny prior: the combiner needs a positive total, and 1e-9 of a book is
    # below any order size
    priors = {r: {k: max(float(w), 1e-9) for k, w in weights.items()} for r in REGIMES}
    return MetaEnsemble(regime_priors=priors, eta=0.0, min_share=0.0)


@dataclass
class ValidatedEnsemble:
    """An ensemble chosen on the validation span at the end of the history it is fitted on.

    fit(history): on the last `validation_days` rows of `history` (each run fitted on the rows
    before that span — nothing after `history` exists for it):
      1. every member trades alone → member weights = the simplex grid point with the best
         Sharpe of the blended daily returns (`blend_weights`);
      2. every `variant` (a pipeline configuration: construction / risk layer) trades the
         ensemble with those fixed weights → the best Sharpe wins;
    then the winner is built afresh and fitted on the whole history. Between fits it is that
    EnsembleAgent (decisions, rebalance cadence, account): a walk-forward run refits it before
    each test window, so each window's choice is made on the years just before it.

    `members()` builds fresh member agents; `variants[name](meta)` builds the EnsembleAgent of a
    variant around those members with the given combiner.
    """
    members: Callable[[], dict]
    variants: Mapping[str, Callable[[dict, MetaEnsemble], Any]]
    validation_days: int = 2 * 252
    step: float = 0.1
    backtest_config: Any = None          # backtest.engine.BacktestConfig for the validation runs
    name: str = "ensemble-validated"
    chosen: dict = field(default_factory=dict)
    history_of_choices: list = field(default_factory=list)
    agent: Any = None
    needs_account = True

    def __post_init__(self):
        if not self.variants:
            raise ValueError("a validated ensemble needs at least one variant")
        first = next(iter(self.variants.values()))
        self.agent = first(self.members(), fixed_weights({k: 1.0 for k in self.members()}))

    @property
    def rebalance(self):
        return self.agent.rebalance

    @property
    def lookback(self) -> int:
        return self.agent.lookback

    @property
    def agent_weights_log(self) -> list:
        return getattr(self.agent, "agent_weights_log", [])

    def fit(self, history) -> None:
        # the engine lives in backtest/, which imports strategies/: imported here, not at the top
        from backtest.engine import BacktestConfig, run_backtest

        config = self.backtest_config or BacktestConfig(min_trade_value=200_000)
        if len(history) < self.validation_days + 2:
            raise ValueError(f"{self.name}: {len(history)} rows of history, need more than "
                             f"{self.validation_days} for the validation span")
        start = history.date(len(history) - self.validation_days)
        member_returns = {k: run_backtest(m, history, start, None, config).returns
                          for k, m in self.members().items()}
        weights, member_sharpe = blend_weights(member_returns, self.step)
        scores = {}
        for name, make in self.variants.items():
            agent = make(self.members(), fixed_weights(weights))
            scores[name] = float(sharpe(run_backtest(agent, history, start, None, config).returns))
        best = max(scores, key=lambda k: (scores[k], -list(scores).index(k)))
        self.chosen = {"as_of": str(history.date(len(history) - 1)), "validation_start": str(start),
                       "member_weights": weights, "blend_sharpe": member_sharpe, "variant": best,
                       "variant_sharpe": scores}
        self.history_of_choices.append(self.chosen)
        self.agent = self.variants[best](self.members(), fixed_weights(weights))
        self.agent.fit(history)

    def target_weights(self, window, account=None) -> np.ndarray:
        return self.agent.target_weights(window, account)


def sectors(paths) -> dict[str, str]:
    """symbol → KRX/KSIC industry from the statements file (82 of 105 symbols; the rest, mostly
    financials, count as a sector of their own). A company's industry does not change in the
    panel, so the map carries no information from after a decision."""
    import polars as pl

    d = pl.read_parquet(paths.path("fundamentals"), columns=["symbol", "industry"]).drop_nulls().unique("symbol")
    return dict(zip(d["symbol"].to_list(), d["industry"].to_list()))


def default_variants(regime, sector_map: Mapping[str, str]) -> dict:
    """The pipeline configurations the validated ensemble chooses among (each around the member
    weights fitted on the same validation span): with or without top-k construction, with the
    overlay, the ERC risk model or no risk layer."""
    from strategies.construction import TopkDropout
    from strategies.ensemble import EnsembleAgent
    from strategies.pipeline import DecisionConfig
    from strategies.risk import RiskModel, RiskOverlay

    dropout_score = TopkDropout(k=10, n_drop=2, weighting="score", band=0.01, max_turnover=0.3)
    overlay = RiskOverlay(vol_target=0.15, floor=0.5, max_position=0.15, sector_cap=0.3, sectors=dict(sector_map))

    combined = DecisionConfig(construction=None)  # the combination as it is, whatever the default

    def make(config, risk):
        return lambda members, meta: EnsembleAgent(members, meta=meta, regime=regime, config=config, risk=risk)
    return {
        "combined weights, no risk layer": make(combined, None),
        "combined weights + overlay": make(combined, overlay),
        "combined weights + ERC/CVaR risk model": make(combined, RiskModel()),
        "top-10 dropout-2 score-weighted, no risk layer": make(DecisionConfig(construction=dropout_score), None),
        "top-10 dropout-2 score-weighted + overlay": make(DecisionConfig(construction=dropout_score), overlay),
    }
