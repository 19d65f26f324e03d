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

POST /v1/decide needs the bearer token (serving/auth.py). State between decisions is kept per run
id (the request's `run_id`): one run's requests never touch another run's online agent scores (in
Ensemble) or drawdown state (in Risk). A run's state starts on its first decision; a request that
goes back in time within a run is refused, and a new universe starts the run's agent scores anew
but never its drawdown state (a HALTED book stays HALTED). The state lives in the replicas (one
each by default), so it is lost when a replica restarts.
"""
# no `from __future__ import annotations` here: FastAPI must see the real request types
import asyncio
from collections import OrderedDict

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve

from actors import metrics
from actors.agent import get_or_create_agent
from market.data import DataError, DataPaths
from serving.auth import authorized, decide_token
from serving.schema import MAX_BODY_BYTES, AgentDecision, DecideRequest, DecideResponse
from strategies.ensemble import EnsembleState, MetaEnsemble
from strategies.regime import RegimeSource
from strategies.registry import StrategyContext
from strategies.risk import DrawdownProtection, RiskModel

api = FastAPI(title="kis-ray-trader decision service", version="1")
REGIME_HISTORY_ROWS = 15 * 252  # the HMM is refitted walk-forward on ~10 years; 15 give it burn-in
MAX_RUNS = 256  # runs whose state a replica keeps (least recently used dropped first)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming the field and the problem, never echoing the input (NaN/Infinity in it cannot be
    written as JSON, and a 50 MB body would come back whole)."""
    detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()]
    return JSONResponse(status_code=422, content={"detail": detail})


@api.middleware("http")
async def _body_limit(request: Request, call_next):
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
        return JSONResponse(status_code=422, content={"detail": [{
            "loc": ["body"], "type": "too_large",
            "msg": f"request body of {length} bytes; at most {MAX_BODY_BYTES} bytes are accepted"}]})
    return await call_next(request)


def _lru(store: OrderedDict, key: str, make):
    if key not in store:
        store[key] = make()
        while len(store) > MAX_RUNS:
            store.popitem(last=False)
    store.move_to_end(key)
    return store[key]


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Risk:
    """Sizes combined targets to a CVaR budget with risk parity, caps, and drawdown protection."""

    def __init__(self, max_position: float = 0.2, max_gross: float = 1.0, cvar_budget: float = 0.03):
        self.model = RiskModel(max_position=max_position, max_gross=max_gross, cvar_budget=cvar_budget)
        # ACTIVE / REDUCING / HALTED per run id, carried between that run's decisions
        self.protection: OrderedDict[str, dict] = OrderedDict()

    def size(self, symbols: list[str], weights: list[float], closes: list[list[float]], equity: float | None,
             current: list[float], run_id: str = "default") -> dict:
        c = np.array(closes, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            returns = c[1:] / c[:-1] - 1.0
        protection = _lru(self.protection, run_id, lambda: DrawdownProtection().to_dict())
        account = {"weights": np.array(current), "protection": protection}
        if equity:
            account["equity"] = equity
        sized, report = self.model.size(np.array(weights), returns, account)
        self.protection[run_id] = report["protection"]
        contributions = report.pop("risk_contributions", {})
        report["risk_contributions"] = {symbols[i]: v for i, v in contributions.items()}
        return {"targets": dict(zip(symbols, map(float, sized))), "report": report}


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Ensemble:
    def __init__(self, risk, agents: list[str], regime_index: str = "KOSPI200", models: dict | None = None,
                 tracking_uri: str | None = None, auth_token: str = ""):
        if not agents:
            raise ValueError("the ensemble needs at least one agent")
        if not auth_token:
            raise ValueError("the decision service needs a bearer token (serving/auth.py)")
        self._token = auth_token
        self.risk = risk
        self.agent_names = list(agents)
        models = dict(models or {})
        self.agents = {name: (get_or_create_agent(name, StrategyContext(model=models[name]), tracking_uri)
                              if name in models else get_or_create_agent(name))
                       for name in self.agent_names}
        self.meta = MetaEnsemble()
        # per run id: (its online agent scores, the universe its remembered targets belong to)
        self.runs: OrderedDict[str, tuple[EnsembleState, list[str] | None]] = OrderedDict()
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
    async def decide(self, request: DecideRequest, http: Request) -> DecideResponse:
        if not authorized(http.headers.get("authorization"), self._token):
            raise HTTPException(status_code=401, detail="a valid bearer token is required (KRT_DECIDE_TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})
        with metrics.timed_decision("serve"):
            return await self._decide(request)

    async def _decide(self, request: DecideRequest) -> DecideResponse:
        state, state_symbols = _lru(self.runs, request.run_id, lambda: (EnsembleState(), None))
        if state.last_date is not None and request.as_of.isoformat() < state.last_date:
            raise HTTPException(status_code=422, detail={
                "error": f"as_of {request.as_of} is before run {request.run_id!r}'s last decision ({state.last_date}): "
                         "a run's decisions go forward in time (use another run_id for a replay)"})
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
        if state_symbols != symbols:  # another universe: its remembered targets cannot be scored
            state = EnsembleState()
        state = self._score_previous_decision(state, bars.dates, closes)
        regime = self.regime.probs_at(request.as_of) if self.regime is not None else None
        combined, explanation = self.meta.combine(targets, regime, state, symbols)
        self.runs[request.run_id] = (self.meta.remember(state, targets, request.as_of.isoformat()), symbols)

        last = np.nan_to_num(closes[-1])
        equity, current = None, np.zeros(len(symbols))
        if request.portfolio is not None:
            held = np.array([request.portfolio.positions.get(s, 0) for s in symbols], dtype=float)
            equity = request.portfolio.cash + float(held @ last)
            current = held * last / equity if equity > 0 else current
        sized = await self.risk.size.remote(symbols, combined.tolist(), closes.tolist(), equity, current.tolist(),
                                            request.run_id)
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

    def _score_previous_decision(self, state: EnsembleState, dates, closes: np.ndarray) -> EnsembleState:
        """Online update: each agent's previous targets earn the returns since that decision."""
        if not state.last_targets or state.last_date is None:
            return state
        iso = [d.isoformat() for d in dates]
        if state.last_date not in iso[:-1]:
            return state
        then = closes[iso.index(state.last_date)]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where((then > 0) & np.isfinite(closes[-1]), closes[-1] / then - 1.0, 0.0)
        return self.meta.update(state, r)


def build_app(agents: list[str], max_position: float = 0.2, max_gross: float = 1.0, cvar_budget: float = 0.03,
              *, models: dict[str, str] | None = None, tracking_uri: str | None = None, replicas: int = 1,
              auth_token: str | None = None):
    """The application graph, ready for `serve.run` (or `serve deploy` through a config).

    `models`: agent → model URI for the RL agents (see serving/champions.py::plan);
    `tracking_uri`: the MLflow store those URIs live in, set as MLFLOW_TRACKING_URI in the
    Ensemble's runtime env (the AgentActors it creates inherit it); `auth_token`: the bearer token
    /v1/decide requires (default: serving.auth.decide_token())."""
    options: dict = {}
    if tracking_uri:
        options["ray_actor_options"] = {"num_cpus": 0,
                                        "runtime_env": {"env_vars": {"MLFLOW_TRACKING_URI": tracking_uri}}}
    if replicas > 1:
        options["num_replicas"] = replicas
    ensemble = Ensemble.options(**options) if options else Ensemble
    return ensemble.bind(Risk.bind(max_position=max_position, max_gross=max_gross, cvar_budget=cvar_budget),
                         agents, models=models or {}, tracking_uri=tracking_uri,
                         auth_token=auth_token or decide_token())
