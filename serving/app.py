"""The Serve application: Ensemble (HTTP ingress) → AgentActors in parallel → Risk → targets.

POST /v1/decide takes a market snapshot (serving/schema.py) and answers sized target weights,
each agent's own targets and weight, the regime probabilities and the risk report. An agent that
cannot decide on the snapshot (an RL model whose fixed universe is not all in it) abstains: the
ensemble combines the agents that decided, and the abstainer is listed with weight 0 and why.
GET /healthz names the agents, what each serves (strategy, model URI, the model version loaded
now) and the snapshot length (bars) they need.

RL agents get their model URIs from `build_app(models=...)`, resolved in the driver
(serving/champions.py); `tracking_uri` goes into the Ensemble's runtime env, which the
AgentActors it starts inherit, so they read the registry the driver resolved.

State between decisions lives in the replicas (one each by default): the meta-ensemble's online
performance scores in Ensemble, the drawdown protection's trading state in Risk.
"""
# no `from __future__ import annotations` here: FastAPI must see the real request types
import asyncio

import numpy as np
from fastapi import FastAPI, HTTPException
from ray import serve

from actors import metrics
from actors.agent import get_or_create_agent
from market.data import DataError, DataPaths
from serving.schema import AgentDecision, DecideRequest, DecideResponse
from strategies.ensemble import EnsembleState, MetaEnsemble
from strategies.regime import RegimeSource
from strategies.registry import StrategyContext
from strategies.risk import DrawdownProtection, RiskModel

api = FastAPI(title="kis-ray-trader decision service", version="1")
REGIME_HISTORY_ROWS = 15 * 252  # the HMM is refitted walk-forward on ~10 years; 15 give it burn-in


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Risk:
    """Sizes combined targets to a CVaR budget with risk parity, caps, and drawdown protection."""

    def __init__(self, max_position: float = 0.2, max_gross: float = 1.0, cvar_budget: float = 0.03):
        self.model = RiskModel(max_position=max_position, max_gross=max_gross, cvar_budget=cvar_budget)
        self.protection: dict | None = None  # ACTIVE / REDUCING / HALTED, carried between decisions

    def size(self, symbols: list[str], weights: list[float], closes: list[list[float]], equity: float | None,
             current: list[float], fresh: bool = False) -> dict:
        """`fresh`: a new account history (new universe or a replay from an earlier date)."""
        c = np.array(closes, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            returns = c[1:] / c[:-1] - 1.0
        if fresh or self.protection is None:
            self.protection = DrawdownProtection().to_dict()
        account = {"weights": np.array(current), "protection": self.protection}
        if equity:
            account["equity"] = equity
        sized, report = self.model.size(np.array(weights), returns, account)
        self.protection = report["protection"]
        contributions = report.pop("risk_contributions", {})
        report["risk_contributions"] = {symbols[i]: v for i, v in contributions.items()}
        return {"targets": dict(zip(symbols, map(float, sized))), "report": report}


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Ensemble:
    def __init__(self, risk, agents: list[str], regime_index: str = "KOSPI200", models: dict | None = None,
                 tracking_uri: str | None = None):
        if not agents:
            raise ValueError("the ensemble needs at least one agent")
        self.risk = risk
        self.agent_names = list(agents)
        models = dict(models or {})
        self.agents = {name: (get_or_create_agent(name, StrategyContext(model=models[name]), tracking_uri)
                              if name in models else get_or_create_agent(name))
                       for name in self.agent_names}
        self.meta = MetaEnsemble()
        self.state = EnsembleState()
        self.state_symbols: list[str] | None = None  # the universe the remembered targets belong to
        self.regime = self._regime_source(regime_index)

    @staticmethod
    def _regime_source(index: str) -> RegimeSource | None:
        try:
            full = RegimeSource.load(DataPaths(), index)
        except DataError:
            return None  # no index data: agents get their regime-neutral prior weights
        source = RegimeSource(full.dates[-REGIME_HISTORY_ROWS:], full.close[-REGIME_HISTORY_ROWS:], full.detector)
        source.path  # filter once at start-up, not inside the first decision
        return source

    @api.get("/healthz")
    async def healthz(self) -> dict:
        lookbacks = await asyncio.gather(*(a.lookback.remote() for a in self.agents.values()))
        served = await asyncio.gather(*(a.describe.remote() for a in self.agents.values()))
        need = max(max(lookbacks), RiskModel().min_history + 1)
        return {"status": "ok", "agents": self.agent_names, "served": dict(zip(self.agent_names, served)),
                "lookback": need}

    @api.post("/v1/decide", response_model=DecideResponse)
    async def decide(self, request: DecideRequest) -> DecideResponse:
        with metrics.timed_decision("serve"):
            return await self._decide(request)

    async def _decide(self, request: DecideRequest) -> DecideResponse:
        bars = request.bars
        symbols = bars.symbols
        snapshot = bars.model_dump(mode="json")
        answers = dict(zip(self.agent_names, await asyncio.gather(*(self.agents[n].decide.remote(snapshot)
                                                                    for n in self.agent_names))))
        decided = {n: a["targets"] for n, a in answers.items() if "targets" in a}
        if not decided:
            raise HTTPException(status_code=422, detail={"error": "no agent could decide on this snapshot",
                                                         "abstained": {n: a["abstained"] for n, a in answers.items()}})
        # only the agents that decided are combined (and remembered, to be scored next time)
        targets = {n: np.array([t[s] for s in symbols]) for n, t in decided.items()}
        closes = np.array([[np.nan if v is None else v for v in row] for row in bars.close], dtype=float)
        fresh = self.state_symbols != symbols or (
            self.state.last_date is not None and request.as_of.isoformat() < self.state.last_date)
        if fresh:  # another universe, or a replay that went back in time: start the history anew
            self.state, self.state_symbols = EnsembleState(), symbols
        self._score_previous_decision(bars.dates, closes, symbols)
        regime = self.regime.probs_at(request.as_of) if self.regime is not None else None
        combined, explanation = self.meta.combine(targets, regime, self.state, symbols)
        self.state = self.meta.remember(self.state, targets, request.as_of.isoformat())

        last = np.nan_to_num(closes[-1])
        equity, current = None, np.zeros(len(symbols))
        if request.portfolio is not None:
            held = np.array([request.portfolio.positions.get(s, 0) for s in symbols], dtype=float)
            equity = request.portfolio.cash + float(held @ last)
            current = held * last / equity if equity > 0 else current
        sized = await self.risk.size.remote(symbols, combined.tolist(), closes.tolist(), equity, current.tolist(),
                                            fresh)
        weights = explanation["agent_weights"]
        return DecideResponse(
            as_of=request.as_of,
            targets=sized["targets"],
            agents={n: (AgentDecision(weight=weights[n], targets=a["targets"]) if "targets" in a
                        else AgentDecision(weight=0.0, targets={}, abstained=a["abstained"]))
                    for n, a in answers.items()},
            regime=regime,
            risk={**sized["report"], "ensemble": {k: explanation[k] for k in ("prior", "performance_score")}},
        )

    def _score_previous_decision(self, dates, closes: np.ndarray, symbols: list[str]) -> None:
        """Online update: each agent's previous targets earn the returns since that decision."""
        if not self.state.last_targets or self.state.last_date is None:
            return
        iso = [d.isoformat() for d in dates]
        if self.state.last_date not in iso[:-1]:
            return
        then = closes[iso.index(self.state.last_date)]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where((then > 0) & np.isfinite(closes[-1]), closes[-1] / then - 1.0, 0.0)
        self.state = self.meta.update(self.state, r)


def build_app(agents: list[str], max_position: float = 0.2, max_gross: float = 1.0, cvar_budget: float = 0.03,
              *, models: dict[str, str] | None = None, tracking_uri: str | None = None, replicas: int = 1):
    """The application graph, ready for `serve.run` (or `serve deploy` through a config).

    `models`: agent → model URI for the RL agents (see serving/champions.py::plan);
    `tracking_uri`: the MLflow store those URIs live in, set as MLFLOW_TRACKING_URI in the
    Ensemble's runtime env (the AgentActors it creates inherit it)."""
    options: dict = {}
    if tracking_uri:
        options["ray_actor_options"] = {"num_cpus": 0,
                                        "runtime_env": {"env_vars": {"MLFLOW_TRACKING_URI": tracking_uri}}}
    if replicas > 1:
        options["num_replicas"] = replicas
    ensemble = Ensemble.options(**options) if options else Ensemble
    return ensemble.bind(Risk.bind(max_position=max_position, max_gross=max_gross, cvar_budget=cvar_budget),
                         agents, models=models or {}, tracking_uri=tracking_uri)
