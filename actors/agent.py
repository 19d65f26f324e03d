"""AgentActor: one strategy, alive between decisions, answering `act(snapshot)`.

Agents may keep state between decisions (held weights, turnover control, online IC). That state
belongs to one universe moving forward in time, so the host keeps one agent per universe, starts
a fresh one when time goes backwards (a new replay), and answers a repeated request for the same
bar from its cache instead of stepping the agent twice.

Agents that load a registered model (RL agents, `models:/agent-dqn@champion`) have `refresh()`:
the host calls it at most every `refresh_every_s` seconds, so a `trader promote` reaches the
running system without a restart.

An agent that cannot decide on a snapshot (an RL model whose fixed universe is not all in it)
raises `AgentAbstains` from `act`; `decide` turns that into an answer the ensemble can combine
around. Actors are named by strategy and model configuration (`actor_name`), so a redeploy with
another model or another MLflow store never reuses an actor built for the old one.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import asdict

import numpy as np
import ray

import training.strategies  # noqa: F401  (the RL agents join the registry this host builds from)
from actors import NAMESPACE
from market.data import Panel
from strategies.base import AgentAbstains, check_weights
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

    def act(self, snapshot: Panel | dict) -> dict[str, float]:
        """Target weights for the snapshot's symbols (a Panel, or its JSON form); AgentAbstains if
        the agent cannot decide."""
        if time.monotonic() - self._refreshed_at >= self.refresh_every_s:
            self.refresh()
        window = snapshot if isinstance(snapshot, Panel) else Panel.from_dict(snapshot)
        key, today = tuple(window.symbols), window.dates[-1]
        missing = [s for s in getattr(self.template, "required_symbols", ()) if s not in key]
        if missing:  # before building (an RL agent per universe loads its model): no decision here
            raise AgentAbstains(f"{self.name}: the snapshot lacks the model's symbols {missing}")
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

    def decide(self, snapshot: Panel | dict) -> dict:
        """`{"targets": {symbol: weight}}`, or `{"abstained": reason}` when the agent cannot decide."""
        try:
            return {"targets": self.act(snapshot)}
        except AgentAbstains as exc:
            return {"abstained": str(exc)}

    def lookback(self) -> int:
        return int(self.template.lookback)

    def describe(self) -> dict:
        """What this actor serves: strategy, model URI and the model version loaded now."""
        return {"strategy": self.name, "model": self.context.model if self.context else None,
                "version": getattr(self.template, "version", None),
                "symbols": list(getattr(self.template, "required_symbols", ())) or None}


AgentActor = ray.remote(num_cpus=0)(AgentHost)


def actor_name(strategy: str, context: StrategyContext | None = None, tracking_uri: str | None = None) -> str:
    """`agent:<strategy>` for the default configuration; otherwise suffixed with a digest of the
    context (model URI, data files, seed, …) and the MLflow store, so that different
    configurations never share (or silently reuse) one detached actor."""
    if context is None and tracking_uri is None:
        return f"agent:{strategy}"
    config = json.dumps({"context": asdict(context) if context is not None else None, "mlflow": tracking_uri},
                        sort_keys=True, default=str)
    label = f":{context.model}" if context is not None and context.model else ""
    return f"agent:{strategy}{label}:{hashlib.sha1(config.encode()).hexdigest()[:10]}"


def get_or_create_agent(strategy: str, context: StrategyContext | None = None, tracking_uri: str | None = None):
    """The named AgentActor for a strategy and configuration, created on first use and shared
    afterwards. `tracking_uri`: the MLflow store the caller resolved `context.model` in; it is part
    of the name, and the actor must see it as MLFLOW_TRACKING_URI (a Serve deployment passes it
    in its runtime env, which the actors it creates inherit)."""
    return AgentActor.options(name=actor_name(strategy, context, tracking_uri), namespace=NAMESPACE,
                              get_if_exists=True, lifetime="detached").remote(strategy, context)
