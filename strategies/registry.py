"""Strategies by name: what `trader backtest --strategy NAME` and the Serve ensemble can build.

A factory takes a `StrategyContext` (data files, seed, reporting lags, regime index) and returns a
fresh `Agent`. Side data (fundamentals, market caps, the regime index) is loaded from the
context's `DataPaths`; agents query it only as of each decision date.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from market.data import DataPaths
from strategies import defaults as D
from strategies.base import Agent
from strategies.baselines import BuyHoldSymbol, EqualWeightHold, EqualWeightRebalanced
from strategies.technical import TechnicalAgent


@dataclass(frozen=True)
class StrategyContext:
    paths: DataPaths = DataPaths()
    seed: int = 0
    # optional, with defaults, so older callers keep working
    quarter_lag_days: int = 45  # Q1/H1/Q3 statements usable this many days after period end
    annual_lag_days: int = 90  # FY statements
    regime_index: str = "KOSPI200"  # index the HMM regime detector reads
    model: str | None = None  # RL agents: models:/agent-dqn@champion or an agent folder; None = train
    train_iters: int = 10     # RL agents trained in fit() (no model): RLlib iterations
    rl_members: bool = True   # ensemble: add dqn/appo when a model exists for them (see ensemble())


def _engine(ctx: StrategyContext):
    from strategies.factors import FactorEngine
    from strategies.fundamentals import Fundamentals, MarketCaps, ReportingLag
    lag = ReportingLag(ctx.quarter_lag_days, ctx.annual_lag_days)
    return FactorEngine(Fundamentals.load(ctx.paths, lag), MarketCaps.load(ctx.paths))


def regime_source(ctx: StrategyContext, missing_ok: bool = False):
    """The regime source every ensemble uses — the backtester's and the served one: the whole
    index history (the HMM's refit rows count from the series start, so a truncated history would
    give other probabilities). `missing_ok`: None instead of DataError without index data."""
    from market.data import DataError
    from strategies.regime import RegimeDetector, RegimeSource
    try:
        source = RegimeSource.load(ctx.paths, ctx.regime_index, RegimeDetector(seed=ctx.seed))
    except DataError:
        if missing_ok:
            return None  # agents get their regime-neutral prior weights
        raise
    _ = source.path  # filter once now, not inside the first decision
    return source


_regime = regime_source


def factor(ctx: StrategyContext) -> Agent:
    from strategies.factor_model import FactorAgent
    return FactorAgent(_engine(ctx), name="factor")


def _forecast_features(ctx: StrategyContext):
    from market.data import load_index
    from strategies.features import FeatureBuilder
    idx = load_index(ctx.paths.path("index"), ctx.regime_index)
    return FeatureBuilder(idx["date"].to_numpy().astype("datetime64[D]"),
                          idx["close"].cast(float).to_numpy(), _engine(ctx))


def lgbm(ctx: StrategyContext, horizon: int = 20, rebalance: str = "monthly", name: str = "lgbm") -> Agent:
    """LightGBM rank forecaster (strategies/forecaster.py) on strategies/features.py, refitted
    every 252 bars on the data up to the decision (a continuous run refits yearly)."""
    from strategies.forecaster import LGBMForecaster
    return LGBMForecaster(_forecast_features(ctx), horizon=horizon, rebalance=rebalance, seed=ctx.seed,
                          refit_every=252, name=name)


def neural(ctx: StrategyContext, arch: str) -> Agent:
    """GRU / Transformer rank forecaster (strategies/neural.py) on 20-bar windows of the same
    features, 20-bar label, monthly top 10, refitted every 252 bars like lgbm."""
    from strategies.neural import SequenceForecaster
    return SequenceForecaster(_forecast_features(ctx), arch=arch, seed=ctx.seed, refit_every=252, name=arch)


def regime_factor(ctx: StrategyContext) -> Agent:
    from strategies.factor_model import FactorAgent
    return FactorAgent(_engine(ctx), regime=_regime(ctx), name="regime-factor")


def ensemble_members(engine, regime, names: tuple[str, ...] = D.ENSEMBLE_MEMBERS) -> dict[str, Agent]:
    """Fresh instances of the ensemble's members by registry name: the default ensemble's
    (strategies/defaults.py ENSEMBLE_MEMBERS, what `trader serve` and the demo run), or `names` of
    D.ALL_MEMBERS (what `ensemble-combined` / `-validated` use)."""
    from strategies.factor_model import FactorAgent
    makers: dict[str, Callable[[], Agent]] = {
        "regime-factor": lambda: FactorAgent(engine, regime=regime, name="regime-factor"),
        "technical": lambda: TechnicalAgent(),
        "equal-weight": lambda: EqualWeightRebalanced(name="equal-weight"),
    }
    unknown = set(names) - set(makers)
    if unknown:
        raise ValueError(f"not an ensemble member: {sorted(unknown)} (members: {list(makers)})")
    return {name: makers[name]() for name in names}


def ensemble(ctx: StrategyContext) -> Agent:
    """The regime-factor and equal-weight members, regime-weighted, built and sized as
    strategies/defaults.py says (a tilted equal-weight book, per-name caps, the drawdown step).

    Plus the RL agents that have a model (`rl_models`): optional members, left out with a note
    when their model saw data after the history the ensemble is fitted on (look-ahead).
    """
    from strategies.ensemble import EnsembleAgent
    regime = _regime(ctx)
    rl = {algo: _rl_agent(replace(ctx, model=uri), algo) for algo, uri in rl_models(ctx).items()}
    return EnsembleAgent({**ensemble_members(_engine(ctx), regime), **rl}, regime=regime, optional=tuple(rl))


def ensemble_combined(ctx: StrategyContext) -> Agent:
    """The ensemble as it was the default before the tilted book won on validation (issue 15): all
    three members, their combined weights as they are, the full RiskOverlay (pipeline.COMBINED_OVERLAY)."""
    from strategies.ensemble import EnsembleAgent
    from strategies.pipeline import COMBINED_OVERLAY
    regime = _regime(ctx)
    return EnsembleAgent(ensemble_members(_engine(ctx), regime, D.ALL_MEMBERS), regime=regime,
                         config=COMBINED_OVERLAY, name="ensemble-combined")


def ensemble_validated(ctx: StrategyContext) -> Agent:
    """The ensemble's members with their weights and the pipeline's construction / risk steps chosen
    in each fit on the last 2 years of the history (strategies/selection.py: ValidatedEnsemble)."""
    from strategies.selection import ValidatedEnsemble, default_variants, sectors
    regime, engine = _regime(ctx), _engine(ctx)
    return ValidatedEnsemble(lambda: ensemble_members(engine, regime, D.ALL_MEMBERS),
                             default_variants(regime, sectors(ctx.paths)))


def members_of(name: str) -> tuple[str, ...]:
    """The registry names the decision core combines for a strategy: an ensemble's members, else
    the strategy alone (served, a single strategy still goes through the core's risk sizing)."""
    return D.ENSEMBLE_MEMBERS if name == "ensemble" else (name,)


RL_ALGOS = ("dqn", "appo")

# The RL agents need RLlib, which lives in training/: a plain room must not import it (tests/unit/
# test_import_boundaries.py). training/strategies.py plugs them in when it is imported — the
# `trader` command line, the AgentActors and the tests' conftest do — by adding their factories
# to STRATEGIES and a model finder (the MLflow registry's champions) to MODEL_FINDERS.
MODEL_FINDERS: list[Callable[[StrategyContext], dict[str, str]]] = []


def plug_in(name: str, factory: Callable[[StrategyContext], Agent]) -> None:
    STRATEGIES[name] = factory


def rl_models(ctx: StrategyContext) -> dict[str, str]:
    """The RL models an ensemble adds: KRT_MODEL_<ALGO>, else what a plugged-in finder knows
    (`models:/agent-<algo>@champion` when the MLflow registry has one). Empty when
    `ctx.rl_members` is off."""
    import os

    if not ctx.rl_members:
        return {}
    found: dict[str, str] = {}
    for finder in MODEL_FINDERS:
        found.update(finder(ctx))
    out = {}
    for algo in RL_ALGOS:
        model = os.environ.get(f"KRT_MODEL_{algo.upper()}") or found.get(algo)
        if model:
            out[algo] = model
    return out


def _rl_agent(ctx: StrategyContext, algo: str) -> Agent:
    if algo not in STRATEGIES:
        raise ValueError(f"strategy {algo!r} is an RL agent: it needs training/ (import training.strategies, "
                         "as the trader command line does)")
    return STRATEGIES[algo](ctx)


STRATEGIES: dict[str, Callable[[StrategyContext], Agent]] = {
    "technical": lambda ctx: TechnicalAgent(),
    "factor": factor,
    "regime-factor": regime_factor,
    "ensemble": ensemble,
    "ensemble-validated": ensemble_validated,
    "ensemble-combined": ensemble_combined,
    "lgbm": lgbm,  # 20-bar forward-return rank, monthly top 10
    "lgbm-5d": lambda ctx: lgbm(ctx, horizon=5, rebalance="weekly", name="lgbm-5d"),
    "gru": lambda ctx: neural(ctx, "gru"),  # PyTorch, 20-bar windows of the features, monthly top 10
    "transformer": lambda ctx: neural(ctx, "transformer"),
    # baselines (strategies/baselines.py); the KOSPI200 index itself is a benchmark series
    # (backtest.baselines.BENCHMARKS), not a tradable agent
    "equal-weight-hold": lambda ctx: EqualWeightHold(),
    "equal-weight-monthly": lambda ctx: EqualWeightRebalanced(),
    "equal-weight": lambda ctx: EqualWeightRebalanced(name="equal-weight"),  # the ensemble's member
    "buy-hold-kodex200": lambda ctx: BuyHoldSymbol(price_file=ctx.paths.path("etf")),
}


def build(name: str, ctx: StrategyContext | None = None) -> Agent:
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}") from None
    return factory(ctx or StrategyContext())
