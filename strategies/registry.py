"""Strategies by name: what `trader backtest --strategy NAME` and the Serve ensemble can build.

A factory takes a `StrategyContext` (data files, seed) and returns a fresh `Agent`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from market.data import DataPaths
from strategies.base import Agent
from strategies.baselines import BuyHoldSymbol, EqualWeightHold, EqualWeightRebalanced
from strategies.technical import TechnicalAgent


@dataclass(frozen=True)
class StrategyContext:
    paths: DataPaths = DataPaths()
    seed: int = 0


STRATEGIES: dict[str, Callable[[StrategyContext], Agent]] = {
    "technical": lambda ctx: TechnicalAgent(),
    # baselines (strategies/baselines.py); the KOSPI200 index itself is a benchmark series
    # (backtest.baselines.BENCHMARKS), not a tradable agent
    "equal-weight-hold": lambda ctx: EqualWeightHold(),
    "equal-weight-monthly": lambda ctx: EqualWeightRebalanced(),
    "buy-hold-kodex200": lambda ctx: BuyHoldSymbol(price_file=ctx.paths.path("etf")),
}


def build(name: str, ctx: StrategyContext | None = None) -> Agent:
    try:
        factory = STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}") from None
    return factory(ctx or StrategyContext())
