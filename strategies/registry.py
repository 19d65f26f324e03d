"""Strategies by name: what `trader backtest --strategy NAME` and the Serve ensemble can build.

A factory takes a `StrategyContext` (data files, seed) and returns a fresh `Agent`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from market.data import DataPaths
from strategies.base import Agent
from strategies.technical import TechnicalAgent


@dataclass(frozen=True)
class StrategyContext:
    paths: DataPaths = DataPaths()
    seed: int = 0
    model: str | None = None  # RL agents: models:/agent-dqn@champion or an agent folder; None = train
    train_iters: int = 10     # RL agents trained in fit() (no model): RLlib iterations


STRATEGIES: dict[str, Callable[[StrategyContext], Agent]] = {
    "technical": lambda ctx: TechnicalAgent(),
    "dqn": lambda ctx: _rl_agent(ctx, "dqn"),
    "appo": lambda ctx: _rl_agent(ctx, "appo"),
}


def _rl_agent(ctx: StrategyContext, algo: str) -> Agent:
    """RL agents live in training/ (they need RLlib); imported only when asked for."""
    from training.policy import RLAgent

    return RLAgent(ctx.model, algo=algo, seed=ctx.seed, train_iters=ctx.train_iters)


def build(name: str, ctx: StrategyContext | None = None) -> Agent:
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}") from None
    return factory(ctx or StrategyContext())
