"""The Serve application: Ensemble (HTTP ingress) → AgentActors in parallel → Risk → targets.

A thin adapter over the one decision core (strategies/pipeline.py) and the request handling in
serving/service.py: the Ensemble deployment asks each member's AgentActor for its targets and
runs the core's combination; the Risk deployment runs the core's sizing and protections. Neither
keeps state: the decision state of each run (member scores, ACTIVE / REDUCING / HALTED) lives in
the DecisionStateActor, checkpointed to SQLite (serving/state.py), keyed by run id — a restarted
replica, a redeployed app and a second replica all continue the same run the same way.

POST /v1/decide (bearer token, serving/auth.py) takes a market snapshot (serving/schema.py)
and answers sized target weights, each agent's own targets and weight, the regime probabilities
and the risk report; between decisions (`rebalance_every`) it answers `rebalance: false` and the
current weights. An agent that cannot decide on the snapshot (an RL model whose fixed universe
is not all in it) abstains: the others are combined, the abstainer is listed with weight 0 and
why. GET /healthz names the agents, what each serves and the snapshot length (bars) they need.

RL agents get their model URIs from `build_app(models=...)`, resolved in the driver
(serving/champions.py); `tracking_uri` goes into the Ensemble's runtime env, which the
AgentActors it starts inherit, so they read the registry the driver resolved.
"""
# no `from __future__ import annotations` here: FastAPI must see the real request types
import asyncio
import datetime as dt
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import ray
from fastapi import Request, Response
from ray import serve

from actors import NAMESPACE, metrics
from actors.agent import get_or_create_agent
from actors.market_state import MAX_SHARED_WINDOWS, market_actor_name
from market.data import Panel
from serving.auth import Secret, Unauthorized, principal
from serving.http import ServiceError, make_api, request_principal
from serving.schema import DecideRequest, DecideResponse
from serving.service import DecisionService, UnknownMarket
from serving.state import default_state_path, get_or_create_state_actor
from strategies.pipeline import DecisionConfig, DecisionPipeline
from strategies.registry import StrategyContext, regime_source

MAX_MARKETS = 64   # market state handles a replica keeps (a name not kept is looked up again)
_SECRET: dict = {}  # this replica's service secret, set by Ensemble.__init__ (the middleware reads it)
api = make_api(lambda: _SECRET["secret"])


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Risk:
    """The core's sizing step: CVaR budget with risk parity, caps, drawdown protection. Stateless:
    the protection state comes in with the request's DecisionState and goes back out in it."""

    def __init__(self, config: dict | None = None):
        self.pipeline = DecisionPipeline(DecisionConfig(**(config or {})))

    def size(self, snap, account, combined, state):
        return self.pipeline.size(snap, account, combined, state)


@serve.deployment(ray_actor_options={"num_cpus": 0})
@serve.ingress(api)
class Ensemble:
    def __init__(self, risk, agents: list[str], secret: Secret, regime_index: str = "KOSPI200",
                 models: dict | None = None, tracking_uri: str | None = None, config: dict | None = None,
                 state_path: str | None = None):
        if not agents:
            raise ValueError("the ensemble needs at least one agent")
        _SECRET["secret"] = secret
        self.risk = risk
        self.agent_names = list(agents)
        models = dict(models or {})
        self.agents = {name: (get_or_create_agent(name, StrategyContext(model=models[name]), tracking_uri)
                              if name in models else get_or_create_agent(name))
                       for name in self.agent_names}
        # the same regime source the backtester's ensemble uses (strategies/registry.py): the
        # whole index history, so both see the very same filtered probabilities
        regime = regime_source(StrategyContext(regime_index=regime_index), missing_ok=True)
        self.pipeline = DecisionPipeline(DecisionConfig(**(config or {})), regime=regime)
        self.store = get_or_create_state_actor(state_path or default_state_path())
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.service = DecisionService(self.pipeline, self.agent_names, self._ask_members, self._size,
                                       self._store_get, self._store_put, self._resolve)
        self.markets: dict[str, Any] = {}   # market state name → actor handle
        # the members' answers per shared window (a market state puts each bar's window in the
        # store once: the same reference is the same bars); every AgentActor caches the same way,
        # this saves the hops to them for a bar already answered
        self.answers: OrderedDict[str | None, dict] = OrderedDict()
        self._lookback: int | None = None

    async def _ask_members(self, window: Panel | ray.ObjectRef) -> dict:
        key = window.hex() if isinstance(window, ray.ObjectRef) else None
        if key in self.answers:
            return self.answers[key]
        # once in the object store (a market state's window already is), read by every member
        # without a copy (numpy arrays are mapped from the store)
        ref = window if isinstance(window, ray.ObjectRef) else ray.put(window)
        answers = dict(zip(self.agent_names, await asyncio.gather(
            *(self.agents[n].decide.remote(ref) for n in self.agent_names))))
        if key is not None:
            self.answers[key] = answers
            while len(self.answers) > MAX_SHARED_WINDOWS:
                self.answers.popitem(last=False)
        return answers

    async def _members_lookback(self) -> int:
        if self._lookback is None:
            lookbacks = await asyncio.gather(*(a.lookback.remote() for a in self.agents.values()))
            self._lookback = self.pipeline.lookback(lookbacks)
        return self._lookback

    async def _resolve(self, market: str, as_of: dt.date, universe: tuple[str, ...]) -> tuple[Panel, ray.ObjectRef]:
        """A request by reference's window, read from the named market state in Ray, and its
        object reference (the members read it from the object store; the market state keeps
        each bar's window there once, actors/market_state.py shared_window)."""
        lookback = await self._members_lookback()
        for attempt in (0, 1):   # a restarted market state has a new handle under the same name
            actor = self.markets.get(market)
            if actor is None:
                try:
                    actor = self.markets[market] = ray.get_actor(market_actor_name(market), namespace=NAMESPACE)
                except ValueError:
                    raise UnknownMarket(f"no market state named {market!r} is running") from None
                if len(self.markets) > MAX_MARKETS:   # every replay's market state has its own name
                    self.markets.pop(next(iter(self.markets)))
            try:
                ref = await actor.window_ref.remote(as_of, universe, lookback)
                return await ref, ref
            except ray.exceptions.RayTaskError as exc:
                raise exc.cause from None   # the market state's DataError: the service answers 422
            except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError):  # died, or its window went
                self.markets.pop(market, None)
                if attempt:
                    raise ServiceError(503, f"market: the market state {market!r} is not reachable",
                                       field="market") from None
        raise AssertionError("unreachable")

    async def _size(self, snap, account, combined, state):
        return await self.risk.size.remote(self.pipeline.sizing_window(snap), account, combined, state)

    async def _store_get(self, run_id):
        return await self.store.get.remote(run_id)

    async def _store_put(self, run_id, version, state, answer):
        return await self.store.put.remote(run_id, version, state, answer)

    @api.get("/healthz")
    async def healthz(self) -> dict:
        served = await asyncio.gather(*(a.describe.remote() for a in self.agents.values()))
        return {"status": "ok", "agents": self.agent_names, "served": dict(zip(self.agent_names, served)),
                "lookback": await self._members_lookback(),
                "rebalance_every": self.pipeline.config.rebalance_every}

    @api.post("/v1/decide", response_model=DecideResponse)
    async def decide(self, body: DecideRequest, request: Request, response: Response) -> DecideResponse:
        # which replica answered (not a secret): lets a client (and the tests) see that the
        # answer does not depend on it
        response.headers["X-Replica"] = self.replica
        with metrics.timed_decision("serve"):
            return await self.service.decide(body, request_principal(request))

    async def decide_from_handle(self, body: dict, authorization: str | None) -> dict:
        """/v1/decide for callers inside the cluster (a DeploymentHandle, no HTTP): the same
        token check and validation; errors raise ServiceError (status, message, field)."""
        try:
            who = principal(_SECRET["secret"], authorization)
        except Unauthorized as exc:
            raise ServiceError(401, str(exc)) from None
        request = DecideRequest.model_validate(body)
        with metrics.timed_decision("serve"):
            return (await self.service.decide(request, who)).model_dump(mode="json")


def build_app(agents: list[str], config: DecisionConfig | None = None, *, secret: Secret,
              models: dict[str, str] | None = None, tracking_uri: str | None = None, replicas: int = 1,
              state_path: Path | str | None = None):
    """The application graph, ready for `serve.run` (or `serve deploy` through a config).

    `config`: the decision core's settings (caps, budget, cadence; default the project's);
    `secret`: the service secret (serving/auth.py); `state_path`: the SQLite file of the
    decision state (default ~/.cache/kis-ray-trader/decision_state.sqlite);
    `models`: agent → model URI for the RL agents (see serving/champions.py::plan);
    `tracking_uri`: the MLflow store those URIs live in, set as MLFLOW_TRACKING_URI in the
    Ensemble's runtime env (the AgentActors it creates inherit it)."""
    cfg = asdict(config or DecisionConfig())
    options: dict = {}
    if tracking_uri:
        options["ray_actor_options"] = {"num_cpus": 0,
                                        "runtime_env": {"env_vars": {"MLFLOW_TRACKING_URI": tracking_uri}}}
    if replicas > 1:
        options["num_replicas"] = replicas
    # serve.deployment turns the classes into Deployments (mypy sees the undecorated classes)
    ensemble: Any = Ensemble.options(**options) if options else Ensemble  # type: ignore[attr-defined]
    risk: Any = Risk
    return ensemble.bind(risk.bind(cfg), agents, secret, models=models or {}, tracking_uri=tracking_uri,
                         config=cfg, state_path=str(state_path) if state_path else None)
