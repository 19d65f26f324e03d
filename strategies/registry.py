"""Strategies by name: what `trader backtest --strategy NAME` and the Serve ensemble can build.

A factory takes a `StrategyContext` (data files, seed, reporting lags, regime index) and returns a
fresh `Agent`. Side data (fundamentals, market caps, the regime index) is loaded from the
context's `DataPaths`; agents query it only as of each decision date.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from market.data import DataPaths
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


def _regime(ctx: StrategyContext):
    from strategies.regime import RegimeDetector, RegimeSource
    return RegimeSource.load(ctx.paths, ctx.regime_index, RegimeDetector(seed=ctx.seed))


def factor(ctx: StrategyContext) -> Agent:
    from strategies.factor_model import FactorAgent
    return FactorAgent(_engine(ctx), name="factor")


def regime_factor(ctx: StrategyContext) -> Agent:
    from strategies.factor_model import FactorAgent
    return FactorAgent(_engine(ctx), regime=_regime(ctx), name="regime-factor")


def ensemble(ctx: StrategyContext) -> Agent:
    """Factor + technical + equal-weight members, regime-weighted, sized by the risk model.

    Plus the RL agents that have a model (`rl_models`): optional members, left out with a note
    when their model saw data after the history the ensemble is fitted on (look-ahead).
    """
    from strategies.ensemble import EnsembleAgent
    from strategies.factor_model import FactorAgent
    regime = _regime(ctx)
    members = {
        "regime-factor": FactorAgent(_engine(ctx), regime=regime, name="regime-factor"),
        "technical": TechnicalAgent(),
        "equal-weight": EqualWeightRebalanced(name="equal-weight"),
    }
    rl = {algo: _rl_agent(replace(ctx, model=uri), algo) for algo, uri in rl_models(ctx).items()}
    return EnsembleAgent({**members, **rl}, regime=regime, optional=tuple(rl))


RL_ALGOS = ("dqn", "appo")


def rl_models(ctx: StrategyContext) -> dict[str, str]:
    """The RL models an ensemble adds: KRT_MODEL_<ALGO>, else `models:/agent-<algo>@champion` when
    the MLflow registry (MLFLOW_TRACKING_URI, else the embedded store if it exists) has one.
    Checking creates no store. Empty when `ctx.rl_members` is off."""
    import os

    if not ctx.rl_members:
        return {}
    out = {}
    for algo in RL_ALGOS:
        model = os.environ.get(f"KRT_MODEL_{algo.upper()}")
        if not model:
            from training import registry as R
            uri = R.existing_tracking_uri()
            if uri is not None and R.alias_version(uri, algo, R.CHAMPION) is not None:
                model = f"models:/{R.model_name(algo)}@{R.CHAMPION}"
        if model:
            out[algo] = model
    return out


STRATEGIES: dict[str, Callable[[StrategyContext], Agent]] = {
    "technical": lambda ctx: TechnicalAgent(),
    "dqn": lambda ctx: _rl_agent(ctx, "dqn"),
    "appo": lambda ctx: _rl_agent(ctx, "appo"),
    "factor": factor,
    "regime-factor": regime_factor,
    "ensemble": ensemble,
    # baselines (strategies/baselines.py); the KOSPI200 index itself is a benchmark series
    # (backtest.baselines.BENCHMARKS), not a tradable agent
    "equal-weight-hold": lambda ctx: EqualWeightHold(),
    "equal-weight-monthly": lambda ctx: EqualWeightRebalanced(),
    "buy-hold-kodex200": lambda ctx: BuyHoldSymbol(price_file=ctx.paths.path("etf")),
}


def _rl_agent(ctx: StrategyContext, algo: str) -> Agent:
    """RL agents live in training/ (they need RLlib); imported only when asked for.

    The model comes from the context, else from KRT_MODEL_<ALGO> (e.g. KRT_MODEL_DQN=
    models:/agent-dqn@champion), so any command that builds strategies by name can load one;
    with neither, the agent trains in fit() on the history before the first decision.
    """
    import os

    from training.policy import RLAgent

    model = ctx.model or os.environ.get(f"KRT_MODEL_{algo.upper()}") or None
    return RLAgent(model, algo=algo, seed=ctx.seed, train_iters=ctx.train_iters)


def build(name: str, ctx: StrategyContext | None = None) -> Agent:
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}") from None
    return factory(ctx or StrategyContext())
