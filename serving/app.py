"""The Serve application: Ensemble (HTTP ingress) → AgentActors in parallel → Risk → targets.

POST /v1/decide takes a market snapshot (serving/schema.py) and answers sized target weights,
each agent's own targets and weight, and the risk report. GET /healthz says which agents are up.
"""
# no `from __future__ import annotations` here: FastAPI must see the real request types
import asyncio

import numpy as np
from fastapi import FastAPI
from ray import serve

from actors import metrics
from actors.agent import get_or_create_agent
from serving.schema import AgentDecision, DecideRequest, DecideResponse
from strategies.caps import apply_caps

api = FastAPI(title="kis-ray-trader decision service", version="1")


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Risk:
    """Sizes combined targets: per-position cap and gross-exposure cap."""

    def __init__(self, max_position: float = 0.2, max_gross: float = 1.0):
        self.max_position = max_position
        self.max_gross = max_gross

    def size(self, symbols: list[str], weights: list[float]) -> dict:
        capped = apply_caps(np.asarray(weights), self.max_position, self.max_gross)
        return {
            "targets": dict(zip(symbols, map(float, capped))),
            "report": {"max_position": self.max_position, "max_gross": self.max_gross,
                       "gross_before": float(np.sum(weights)), "gross_after": float(capped.sum())},
        }


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Ensemble:
    def __init__(self, risk, agents: list[str]):
        if not agents:
            raise ValueError("the ensemble needs at least one agent")
        self.risk = risk
        self.agent_names = list(agents)
        self.agents = {name: get_or_create_agent(name) for name in self.agent_names}

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "agents": self.agent_names}

    @api.post("/v1/decide", response_model=DecideResponse)
    async def decide(self, request: DecideRequest) -> DecideResponse:
        with metrics.timed_decision("serve"):
            return await self._decide(request)

    async def _decide(self, request: DecideRequest) -> DecideResponse:
        snapshot = request.bars.model_dump(mode="json")
        symbols = request.bars.symbols
        answers = await asyncio.gather(*(self.agents[n].act.remote(snapshot) for n in self.agent_names))
        agent_weight = 1.0 / len(self.agent_names)  # equal until the regime-weighted ensemble lands
        combined = np.zeros(len(symbols))
        for targets in answers:
            combined += agent_weight * np.array([targets[s] for s in symbols])
        sized = await self.risk.size.remote(symbols, combined.tolist())
        return DecideResponse(
            as_of=request.as_of,
            targets=sized["targets"],
            agents={n: AgentDecision(weight=agent_weight, targets=t) for n, t in zip(self.agent_names, answers)},
            risk=sized["report"],
        )


def build_app(agents: list[str], max_position: float = 0.2, max_gross: float = 1.0):
    """The application graph, ready for `serve.run` (or `serve deploy` through a config)."""
    return Ensemble.bind(Risk.bind(max_position=max_position, max_gross=max_gross), agents)
