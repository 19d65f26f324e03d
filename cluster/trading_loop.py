"""The trading loop on a running Ray: deploy the decision service, replay stored bars through the
MarketState and Execution actors, drive any loop to its end.

Used by `trader demo` (cluster/demo.py adds the embedded Ray and the report), `trader run` in
paper/sim mode, the real-time loop (cluster/live.py reuses `drive`) and `trader check-parity`.

The replay picks the most traded symbols (by traded value before the replay starts — nothing from
the replay period chooses the universe) unless symbols are given.
"""
from __future__ import annotations

import socket
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from broker.risk_engine import DEFAULT_PROTECTIONS
from market.data import DataPaths, Panel, index_close, load_index, load_panel
from strategies import defaults as D


@dataclass
class ReplayConfig:
    out: Path                       # the run's folder (the demo's report, `trader run`'s journal folder)
    days: int = 250
    n_symbols: int = 20
    symbols: list[str] | None = None
    cash: int = D.STARTING_CASH
    venue: str = "paper"
    agents: list[str] = field(default_factory=lambda: list(D.ENSEMBLE_MEMBERS))  # the default ensemble's
    rl_champions: bool = True  # add dqn/appo when the MLflow registry has a champion for them
    models: dict[str, str] = field(default_factory=dict)  # explicit RL model URIs (serve.models)
    lookback: int = D.MIN_LOOKBACK  # bars per snapshot; run_replay raises it to what the service needs
    max_position: float = D.MAX_POSITION
    max_gross: float = D.MAX_GROSS
    port: int | None = None
    paths: DataPaths = field(default_factory=DataPaths)
    end: str | None = None
    progress: bool = True
    verbose: bool = False      # the demo: Ray's and Serve's logs on the terminal instead of out/ray.log
    run_id: str | None = None  # default: a fresh one per replay
    protections: tuple[dict, ...] = DEFAULT_PROTECTIONS  # the risk engine's rules (settings risk_engine)
    alerts: Any = None    # settings alerts (cluster/settings.py AlertsSettings); None: no alerts
    by_reference: bool = True  # decisions by reference (the service reads the bars from the market state)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pick_universe(panel: Panel, start_row: int, n: int, history: int) -> list[str]:
    """The n symbols with the largest mean traded value over `history` bars before `start_row`,
    among those trading on every bar of the replay window's start (point in time)."""
    lo = max(start_row - history, 0)
    value = panel.close[lo:start_row] * panel.volume[lo:start_row]
    with warnings.catch_warnings():  # a symbol with no volume at all gives an empty mean: excluded below
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_value = np.nanmean(np.where(value > 0, value, np.nan), axis=0)
    complete = np.all(np.isfinite(panel.close[lo:start_row + 1]), axis=0)
    score = np.where(complete & np.isfinite(mean_value), mean_value, -np.inf)
    order = np.argsort(-score, kind="stable")
    chosen = [panel.symbols[i] for i in order[:n] if np.isfinite(score[i])]
    if len(chosen) < n:
        raise ValueError(f"only {len(chosen)} symbols have complete data before the replay; asked for {n}")
    return sorted(chosen)


def prepare(config: ReplayConfig) -> tuple[Panel, int, np.ndarray]:
    """The replay panel, the row of the first decision, and KOSPI200 closes on its dates."""
    full = load_panel(config.paths, end=config.end)
    start_row = len(full) - config.days - 1
    if start_row < config.lookback:
        raise ValueError(f"not enough history for {config.days} days plus a {config.lookback}-bar lookback")
    symbols = config.symbols or pick_universe(full, start_row, config.n_symbols, history=120)
    panel = full.select(symbols).rows(start_row - config.lookback + 1, len(full))
    bench = index_close(panel.dates, load_index(config.paths.path("index"), "KOSPI200"))
    return panel, config.lookback - 1, bench


def deploy_decision_service(agents: list[str], port: int, max_position: float = D.MAX_POSITION,
                            max_gross: float = D.MAX_GROSS, *, rl_champions: bool = True,
                            models: dict[str, str] | None = None, served=None, name: str = "trader",
                            route_prefix: str = "/", state_path: Path | str | None = None,
                            replicas: int = 1, config=None) -> str:
    """Start Serve on 127.0.0.1:port (on the running Ray) and deploy the app; returns /v1/decide's URL.

    The agents served are `served` (a serving.champions.ServedAgents), else planned here from
    `agents`, `rl_champions` and `models` (RL champions join when the registry has them).
    `config`: a strategies.pipeline.DecisionConfig (default: the project's, with these caps).
    If Serve already runs, its HTTP port stays what it is: pass that port."""
    from dataclasses import replace

    from ray import serve

    from serving.app import build_app
    from serving.auth import load_secret
    from serving.champions import plan
    from strategies.pipeline import DecisionConfig

    if served is None:
        served = plan(agents, rl_champions=rl_champions, models=models)
    config = config or replace(DecisionConfig(), max_position=max_position, max_gross=max_gross)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(served.agents, config, secret=load_secret(), models=served.models,
                        tracking_uri=served.tracking_uri, replicas=replicas, state_path=state_path),
              name=name, route_prefix=route_prefix)
    return f"http://127.0.0.1:{port}{route_prefix.rstrip('/')}/v1/decide"


def service_lookback(decide_url: str) -> int:
    import requests

    return int(requests.get(decide_url.replace("/v1/decide", "/healthz"), timeout=60).json()["lookback"])


def start_replay_actors(config: ReplayConfig, decide_url: str, journal: Path, panel_override: tuple | None = None):
    """The (ExecutionActor, MarketStateActor) pair of a replay on the running Ray, and its bar count.
    `panel_override`: (panel, first decision row, benchmark) instead of `prepare(config)`."""
    from actors import NAMESPACE
    from actors.execution import ExecutionActor, LoopConfig
    from actors.market_state import MarketStateActor, market_actor_name, new_market_name
    from serving.auth import load_secret, run_token

    config.lookback = max(config.lookback, service_lookback(decide_url))
    panel, first_row, bench = panel_override or prepare(config)
    run_id = config.run_id or f"replay{uuid.uuid4().hex[:8]}"
    # named, so that the decision service reads each decision's bars from it (decisions by reference)
    market_name = new_market_name() if config.by_reference else ""
    market = (MarketStateActor.options(name=market_actor_name(market_name), namespace=NAMESPACE)
              if market_name else MarketStateActor).remote(panel, first_row, bench)
    loop = ExecutionActor.remote(
        LoopConfig(decide_url=decide_url, journal_path=str(journal), run_id=run_id,
                   cash=config.cash, venue=config.venue, lookback=config.lookback,
                   decide_token=run_token(load_secret(), run_id), protections=tuple(config.protections),
                   alerts=config.alerts, market_name=market_name),
        market, panel.dates)
    return loop, market, len(panel) - 1 - first_row


def run_replay(config: ReplayConfig, decide_url: str, journal: Path, progress: bool = True,
               panel_override: tuple | None = None) -> dict:
    """Replay the panel through MarketState and Execution actors on the running Ray."""
    loop, market, total = start_replay_actors(config, decide_url, journal, panel_override)
    return drive(loop, market, total=total, desc=f"replay ({config.venue})", progress=progress)


def drive(loop, market, total: int | None, desc: str, progress: bool = True,
          step_timeout_s: float | None = None) -> dict:
    """Step the ExecutionActor until the market has no bar left; always close and kill both actors.
    `step_timeout_s`: a step taking longer raises GetTimeoutError (fast-time rehearsals only: in
    real time a step sleeps until the next session)."""
    import ray
    from tqdm import tqdm

    try:
        ray.get(loop.start.remote(), timeout=step_timeout_s)
        with tqdm(total=total, desc=desc, unit="bar", disable=not progress) as bar:
            while (result := ray.get(loop.step.remote(), timeout=step_timeout_s)) is not None:
                bar.set_postfix(date=result["date"], equity=f"{result['equity'] / 1e6:,.1f}M")
                bar.update(1)
        return ray.get(loop.summary.remote())
    finally:
        try:  # a step still sleeping until the next session (vts/live, Ctrl-C) would hold close() back
            ray.get(loop.close.remote(), timeout=30)
        except ray.exceptions.GetTimeoutError:
            pass  # killed below: SQLite keeps every committed journal row; an open write rolls back
        finally:
            ray.kill(loop)
            ray.kill(market)
