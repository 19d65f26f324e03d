"""The real-time loop (`trader run --mode vts|live`): KIS bars in, decisions from Serve, KIS orders out.

Same actors and loop as the replay (cluster/trading_loop.py), with two parts swapped: the market state is
LiveMarketStateActor (KIS daily bars; it sleeps until each session's order time and until each
bar is final) and the venue is KisVenue (orders through KisBroker, fills from KIS's execution
list). Both talk to KIS through the app key's one BrokerGateway actor (actors/gateway.py: one
token, one rate limiter for the whole application), which the loop ends when it ends. The run
id is stable per environment and account, so a loop restarted on the same day re-decides but
never re-sends an order (the broker's client-order-id map recognises it).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from broker.execution_algos import AlgoConfig
from broker.kis.config import Credentials, Environment, environment
from broker.risk_engine import DEFAULT_PROTECTIONS
from market.session import Clock, SessionTimes, WallClock
from strategies import defaults as D


@dataclass
class LiveConfig:
    mode: str                      # "vts" or "live"
    environment: Environment       # KIS endpoints and limits (broker/kis/config.py)
    credentials: Credentials = field(repr=False)
    symbols: list[str] = field(default_factory=list)
    session: SessionTimes = field(default_factory=SessionTimes)
    clock: Clock = field(default_factory=WallClock)
    poll_s: float = 60.0
    days: int | None = None        # stop after this many sessions (None: run until stopped)
    lookback: int = D.MIN_LOOKBACK  # raised to what the decision service's agents need
    cache_dir: Path | None = None  # KIS token cache and order-id map (default ~/.cache/kis-ray-trader)
    protections: tuple[dict, ...] = DEFAULT_PROTECTIONS  # the risk engine's rules (settings risk_engine)
    alerts: Any = None    # settings alerts (cluster/settings.py AlertsSettings); None: no alerts
    realtime: bool = False         # the market actor also watches the symbols on the KIS WebSocket
    feed_silence_s: float = 60.0   # ... and calls a symbol silent this long stale
    # intraday rules on live marks (settings risk_engine.intraday; needs `realtime`), checked every
    # `intraday_every_s` seconds of session time by the loop's session watch (actors/session_watch.py)
    intraday: tuple[dict, ...] = ()
    intraday_every_s: float = 30.0
    # settings `execution` (broker/execution_algos.py); twap / limit_touch need `realtime`
    execution: AlgoConfig = AlgoConfig()

    def __post_init__(self):
        if self.mode not in ("vts", "live"):
            raise ValueError(f"the real-time loop trades on 'vts' or 'live', not {self.mode!r}")
        if self.execution.sliced and not self.realtime:
            raise ValueError(f"execution.algo {self.execution.algo} works orders on the session's live quotes: "
                             "turn live.realtime on (or use execution.algo market_open)")
        if not self.symbols:
            raise ValueError(f"--mode {self.mode} needs the symbols to trade: set trading.symbols in the settings "
                             "file (or KRT_TRADING__SYMBOLS=005930,000660,...)")

    def run_id(self) -> str:
        digest = hashlib.sha256(f"{self.environment.name}|{self.credentials.account}".encode()).hexdigest()[:8]
        return f"{self.mode}{digest}"


def run_live_loop(config: LiveConfig, decide_url: str, journal: Path, progress: bool = True) -> dict:
    """Trade `config.days` sessions (or until stopped) on the running Ray; returns the loop's summary."""
    from actors.gateway import close_gateway
    from cluster.trading_loop import drive

    try:
        loop, market = start_live_actors(config, decide_url, journal)
        return drive(loop, market, total=config.days, desc=f"{config.mode} loop", progress=progress)
    finally:
        close_gateway(config.environment, config.credentials)


def start_live_actors(config: LiveConfig, decide_url: str, journal: Path, load_timeout_s: float | None = None):
    """The (ExecutionActor, LiveMarketStateActor) pair of a real-time loop, market bars loaded
    (within `load_timeout_s`, if given). Both reach KIS through the app key's BrokerGateway,
    started here if it does not run yet (a restarted pair finds the one it had)."""
    import ray

    from actors import NAMESPACE
    from actors.execution import ExecutionActor, LoopConfig
    from actors.gateway import GatewayQuotes, get_or_create_gateway
    from actors.live_market import KisDailyBars, LiveMarketStateActor
    from actors.market_state import market_actor_name, new_market_name
    from serving.auth import load_secret, run_token

    need = requests.get(decide_url.replace("/v1/decide", "/healthz"), timeout=60).json()["lookback"]
    lookback = max(config.lookback, int(need))
    get_or_create_gateway(config.environment, config.credentials, config.cache_dir)
    quotes = GatewayQuotes(config.environment, config.credentials, config.cache_dir) if config.realtime else None
    # named, so that the decision service reads each decision's bars from it (decisions by reference)
    market_name = new_market_name()
    market = LiveMarketStateActor.options(name=market_actor_name(market_name), namespace=NAMESPACE).remote(
        KisDailyBars(config.environment, config.credentials, config.cache_dir), config.symbols, lookback,
        config.clock, config.session, poll_s=config.poll_s, days=config.days, load=False, realtime=quotes,
        max_silence_s=config.feed_silence_s)
    try:
        ray.get(market.load.remote(), timeout=load_timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.kill(market)
        raise TimeoutError(f"the market state did not load its bars within {load_timeout_s} s") from None
    except ray.exceptions.RayTaskError as exc:
        ray.kill(market)
        raise ValueError(f"could not read the daily bars from KIS {config.environment.name} "
                         f"({config.environment.rest_url}): {type(exc.cause).__name__}: {exc.cause}") from None
    loop = ExecutionActor.remote(
        LoopConfig(decide_url=decide_url, journal_path=str(journal), run_id=config.run_id(), venue=config.mode,
                   decide_token=run_token(load_secret(), config.run_id()), protections=tuple(config.protections),
                   alerts=config.alerts, market_name=market_name,
                   intraday=tuple(config.intraday) if config.realtime else (),
                   intraday_every_s=config.intraday_every_s, session=config.session, execution=config.execution,
                   lookback=lookback, venue_options={"environment": config.environment,
                                                     "credentials": config.credentials, "clock": config.clock,
                                                     "cache_dir": config.cache_dir}),
        market)
    return loop, market


def kis_environment(mode: str, options: dict) -> Environment:
    """KIS's real or VTS environment with the `live.kis` options, typed like the defaults they
    replace (environment variables arrive as strings)."""
    base = environment("real" if mode == "live" else "vts")
    typed = {}
    for key, value in options.items():
        if key not in base.__dataclass_fields__ or key == "name":
            known = ", ".join(k for k in base.__dataclass_fields__ if k != "name")
            raise ValueError(f"live.kis.{key}: not a KIS environment option (known: {known})")
        typed[key] = _like(getattr(base, key), value, f"live.kis.{key}")
    return base.with_options(**typed)


def _like(default, value, what: str):
    if isinstance(value, str) and not isinstance(default, str):
        try:
            if isinstance(default, bool):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            if isinstance(default, tuple):
                return tuple(type(default[0])(v) for v in value.split(",") if v.strip())
            return type(default)(value)
        except ValueError:
            raise ValueError(f"{what}: {value!r} is not a {type(default).__name__}") from None
    return value
