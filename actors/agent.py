"""AgentActor: one strategy, alive between decisions, answering `act(snapshot)`.

Agents may keep state between decisions (held weights, turnover control, online IC). That state
belongs to one universe moving forward in time, so the host keeps one agent per universe, starts
a fresh one when time goes backwards (a new replay), and answers a repeated request for the same
bar from its cache instead of stepping the agent twice.

Agents that load a registered model (RL agents, `models:/agent-dqn@champion`) have `refresh()`:
the host calls it at most every `refresh_every_s` seconds, so a `trader promote` reaches the
running system without a restart.
"""
from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
import ray

from actors import NAMESPACE
from market.data import Panel
from strategies.base import check_weights
from strategies.registry import StrategyContext, build

MAX_UNIVERSES = 4


class AgentHost:
    """Holds Agents built from the strategy registry and turns snapshots into weights."""

    def __init__(self, strategy: str, context: StrategyContext | None = None, refresh_every_s: float = 60.0):
        self.name = strategy
        self.context = context
        self.template = build(strategy, context)  # fail at start-up, not at the first decision
        self._by_universe: OrderedDict[tuple, dict] = OrderedDict()
        self.refresh_every_s = refresh_every_s
        self._refreshed_at = time.monotonic()

    def refresh(self) -> int:
        """Ask every held agent to pick up a newly promoted model; returns how many swapped."""
        self._refreshed_at = time.monotonic()
        swapped = 0
        for agent in [self.template] + [slot["agent"] for slot in self._by_universe.values()]:
            refresh = getattr(agent, "refresh", None)
            if callable(refresh) and refresh():
                swapped += 1
        return swapped

    def act(self, snapshot: dict) -> dict[str, float]:
        if time.monotonic() - self._refreshed_at >= self.refresh_every_s:
            self.refresh()
        window = Panel.from_dict(snapshot)
        key, today = tuple(window.symbols), window.dates[-1]
        slot = self._by_universe.get(key)
        if slot is not None and slot["date"] == today:
            return slot["answer"]
        if slot is None or slot["date"] > today:
            slot = {"agent": build(self.name, self.context), "date": None, "answer": None}
        weights = check_weights(slot["agent"].target_weights(window), len(key), self.name)
        slot.update(date=today, answer={s: float(w) for s, w in zip(key, np.asarray(weights))})
        self._by_universe[key] = slot
        self._by_universe.move_to_end(key)
        while len(self._by_universe) > MAX_UNIVERSES:
            self._by_universe.popitem(last=False)
        return slot["answer"]

    def lookback(self) -> int:
        return int(self.template.lookback)


AgentActor = ray.remote(num_cpus=0)(AgentHost)


def actor_name(strategy: str) -> str:
    return f"agent:{strategy}"


def get_or_create_agent(strategy: str, context: StrategyContext | None = None):
    """The named AgentActor for a strategy, created on first use and shared afterwards."""
    return AgentActor.options(name=actor_name(strategy), namespace=NAMESPACE, get_if_exists=True,
                              lifetime="detached").remote(strategy, context)
