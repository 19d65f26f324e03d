"""AgentActor: one strategy, alive between decisions, answering `act(snapshot)`."""
from __future__ import annotations

import ray

from actors import NAMESPACE
from market.data import Panel
from strategies.base import check_weights
from strategies.registry import StrategyContext, build


class AgentHost:
    """Holds an Agent built from the strategy registry and turns snapshots into weights."""

    def __init__(self, strategy: str, context: StrategyContext | None = None):
        self.agent = build(strategy, context)
        self.name = strategy

    def act(self, snapshot: dict) -> dict[str, float]:
        window = Panel.from_dict(snapshot)
        weights = check_weights(self.agent.target_weights(window), len(window.symbols), self.name)
        return {s: float(w) for s, w in zip(window.symbols, weights)}

    def lookback(self) -> int:
        return int(self.agent.lookback)


AgentActor = ray.remote(num_cpus=0)(AgentHost)


def actor_name(strategy: str) -> str:
    return f"agent:{strategy}"


def get_or_create_agent(strategy: str, context: StrategyContext | None = None):
    """The named AgentActor for a strategy, created on first use and shared afterwards."""
    return AgentActor.options(name=actor_name(strategy), namespace=NAMESPACE, get_if_exists=True,
                              lifetime="detached").remote(strategy, context)
