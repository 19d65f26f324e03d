"""A fault campaign (`trader chaos`): the real-time loop in fast time against the KIS-protocol
simulator, with faults injected into every KIS call kind and the loop's processes killed at
random, then the journal, the client-order-id map and the venue compared share for share.

One campaign = one simulator posing as VTS (virtual session clock; the last `sessions` trading
days of the shipped data replay as sessions), one embedded Ray with the Serve decision service,
and the loop run as segments: each segment starts fresh ExecutionActor + LiveMarketStateActor
(the same run id, journal and order-id map, as a restarted `trader run --mode vts` would) and
runs until the sessions are done or something kills it:

* faults: all the time (every `fault_every_s` on average), one of the simulator's REST faults
  (rate limit, expired token, HTTP 500 before/after processing, slow answer, dropped connection
  before/after processing, malformed body) armed on a random KIS path (orders, order lookups,
  balance, bars, quotes), after letting a random number of calls pass;
* kills: every `kill_every_s` on average (exponential waits), `ray.kill` (SIGKILL) of the
  ExecutionActor, of the market actor, or of a Serve replica of the decision service (Serve
  restarts it); a killed loop is restarted as a new segment.
The schedule is drawn from `seed`; when each event lands inside the loop depends on wall time.

At the end the faults are cleared and the journal catches up the way a restarted loop does on
start (fills the venue reports, orders whose fate is unknown); then the comparison:
  lost        orders the order-id map says were sent that the venue does not have, plus orders
              the journal still cannot settle
  duplicated  orders at the venue that no client order id accounts for (a second send)
  fills lost  venue orders whose executed quantity differs from the journal's fills for them
  position diff / cash diff   |journal (rebuilt from its fills) − venue|, shares and KRW
"""
from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from market.data import DataPaths, load_prices

FAULT_KINDS = ("rate_limit", "expired_token", "http_500", "http_500_after", "slow", "drop", "drop_before",
               "malformed")
FAULT_PATHS = ("order-cash", "inquire-daily-ccld", "inquire-balance", "inquire-daily-itemchartprice",
               "inquire-price")
KILL_TARGETS = ("execution", "market", "serve")
SYMBOLS = ["000660", "005380", "005490", "005930", "035420"]
STALL_S = 120.0   # a fast-time step or bar load that takes longer is stuck: the segment is restarted


@dataclass
class ChaosConfig:
    out: Path
    sessions: int = 5
    seed: int = 0
    symbols: list[str] = field(default_factory=lambda: list(SYMBOLS))
    agents: list[str] = field(default_factory=lambda: ["technical"])
    cash: int = 30_000_000
    fault_every_s: float = 0.5       # mean wall-clock time between two armed faults
    kill_every_s: float = 4.0        # mean wall-clock time between two kills (0: no kills)
    max_segments: int | None = None  # segments with faults and kills (default 8 per session); the rest runs calm
    paths: DataPaths = field(default_factory=DataPaths)
    progress: bool = True


@dataclass
class ChaosResult:
    orders: int
    lost: int
    duplicated: int
    fills_lost: int
    position_diff: int
    cash_diff: int
    sessions: int
    segments: int
    kills: Counter
    faults: Counter
    failures: Counter                 # why segments ended early (exception types)
    details: dict = field(default_factory=dict)
    calm_segments: int = 0            # segments run without faults after the budget of segments was spent

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.fills_lost or self.position_diff or self.cash_diff)

    def line(self) -> str:
        return (f"orders {self.orders}, lost {self.lost}, duplicated {self.duplicated}, fills lost {self.fills_lost}, "
                f"position diff {self.position_diff}, cash diff {self.cash_diff}")


def replay_frames(config: ChaosConfig) -> tuple[pl.DataFrame, pl.DataFrame, list[dt.date]]:
    """History before the campaign and the last `sessions` trading days of the data as its replay."""
    prices = load_prices(config.paths.path("prices"), config.symbols)
    dates = sorted(set(prices["date"].to_list()))
    if config.sessions < 1 or config.sessions > len(dates) - 300:
        raise ValueError(f"--sessions must be between 1 and {len(dates) - 300} for the data in {config.paths.root} "
                         f"({dates[0]} to {dates[-1]}: 300 days stay history)")
    replay_dates = dates[-config.sessions:]
    return (prices.filter(pl.col("date") < replay_dates[0]), prices.filter(pl.col("date") >= replay_dates[0]),
            replay_dates)


def sessions_left(now: dt.datetime, replay_dates: list[dt.date], bar_final: dt.time) -> int:
    """Sessions whose bar is not final yet at `now` (a session cut before its close runs again)."""
    from market.calendar import SEOUL

    return sum(1 for d in replay_dates if dt.datetime.combine(d, bar_final, SEOUL) > now)


def run_campaign(config: ChaosConfig) -> ChaosResult:
    import ray
    from tqdm import tqdm

    from broker.kis.config import Credentials, environment
    from broker.sim.clock import SimClock
    from broker.sim.exchange import SimConfig
    from broker.sim.server import SimServer
    from cluster.fate import watch_driver
    from cluster.live import LiveConfig, start_live_actors
    from cluster.trading_loop import deploy_decision_service, drive, free_port
    from market.session import SessionTimes

    rng = np.random.default_rng(config.seed)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("journal.sqlite*"), *out.glob("decision_state.sqlite*"), *(out / "kis").glob("*")]:
        stale.unlink()
    history, replay, replay_dates = replay_frames(config)
    all_dates = sorted(set(replay["date"].to_list()))
    holidays = frozenset(d for d in (replay_dates[0] + dt.timedelta(days=i)
                                     for i in range((replay_dates[-1] - replay_dates[0]).days + 1))
                         if d.weekday() < 5 and d not in all_dates)
    # fast-time limits: quotas and the token window are not what this campaign tests
    server = SimServer(SimConfig(virtual=True, rate_per_s=500.0, burst=50, token_throttle_s=1.0), history=history,
                       replay=replay).start()
    kills: Counter = Counter()
    faults: Counter = Counter()
    failures: Counter = Counter()
    segments = calm_segments = 0
    try:
        keys = server.add_account(config.cash)
        creds = Credentials(keys["KIS_APP_KEY"], keys["KIS_APP_SECRET"], keys["KIS_ACCOUNT"], keys["KIS_HTS_ID"])
        env = environment("vts", rest_url=server.rest_url, ws_url=server.ws_url, rate_per_s=500.0, burst=50,
                          token_throttle_s=1.0, unknown_check_delay_s=0.2, timeout_s=2.0, rate_limit_retries=2,
                          backoff_s=0.01)
        clock = SimClock(server.rest_url, server.admin_secret)
        session = SessionTimes(holidays=holidays)
        live = LiveConfig(mode="vts", environment=env, credentials=creds, symbols=config.symbols, session=session,
                          clock=clock, poll_s=60.0, days=config.sessions, cache_dir=out / "kis")
        journal = out / "journal.sqlite"
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
        watch_driver()
        url = deploy_decision_service(config.agents, free_port(), rl_champions=False, name="chaos",
                                      state_path=out / "decision_state.sqlite")
        limit = config.max_segments or 8 * config.sessions
        bar = tqdm(total=config.sessions, desc="chaos sessions", unit="session", disable=not config.progress)
        done = 0
        while (left := sessions_left(clock.now(), replay_dates, session.bar_final)) > 0:
            bar.update(config.sessions - left - done)
            done = config.sessions - left
            calm = segments >= limit   # past the budget the rest runs without faults, so it can end
            if segments >= limit + 3:
                raise RuntimeError(f"{segments} segments and still {left} sessions to go, the last 3 without any "
                                   f"fault: the loop cannot recover (segments ended by {dict(failures)})")
            _wait_healthy(url)   # a killed Serve replica is back before the loop starts again
            segments += 1
            if calm:
                server.faults.clear()
                calm_segments += 1
            live.days = left
            stop = threading.Event()
            monkey = None
            try:
                loop, market = start_live_actors(live, url, journal, load_timeout_s=STALL_S)
                if not calm:
                    monkey = threading.Thread(target=_monkey, args=(config, rng, server, loop, market, stop, kills,
                                                                    faults), daemon=True)
                    monkey.start()
                drive(loop, market, total=left, desc="", progress=False, step_timeout_s=STALL_S)
            except Exception as exc:   # a kill or a fault the loop stops on: a restart follows
                failures[_reason(exc)] += 1
            finally:
                stop.set()
                if monkey is not None:
                    monkey.join()
            time.sleep(0.3)   # a killed actor's process is gone before the next one opens the journal
        bar.update(config.sessions - done)
        bar.close()
        server.faults.clear()
        result = compare(live, server, journal, config.cash)
    finally:
        try:
            from ray import serve

            serve.shutdown()
        except Exception:
            pass
        ray.shutdown()
        server.stop()
    result.sessions, result.segments, result.calm_segments = config.sessions, segments, calm_segments
    result.kills, result.faults, result.failures = kills, faults, failures
    return result


def _monkey(config: ChaosConfig, rng: np.random.Generator, server, loop, market, stop: threading.Event,
            kills: Counter, faults: Counter) -> None:
    """Arm faults and kill actors at random moments until `stop` (the segment ended) or a kill."""
    import ray

    fault_rate = 1.0 / config.fault_every_s if config.fault_every_s > 0 else 0.0
    kill_rate = 1.0 / config.kill_every_s if config.kill_every_s > 0 else 0.0
    while (total := fault_rate + kill_rate) > 0 and not stop.wait(float(rng.exponential(1.0 / total))):
        if rng.random() < fault_rate / total:
            kind, path = str(rng.choice(FAULT_KINDS)), str(rng.choice(FAULT_PATHS))
            server.faults.inject(kind, count=int(rng.integers(1, 3)), path=path, delay=3.0,
                                 skip=int(rng.integers(0, 10)))
            faults[kind] += 1
            continue
        target = str(rng.choice(KILL_TARGETS))
        if target == "execution":
            ray.kill(loop)
        elif target == "market":
            ray.kill(market)
        else:
            replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                        if a["name"].startswith("SERVE_REPLICA::") and "Ensemble" in a["name"]]
            if not replicas:
                continue
            ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=False)
        kills[target] += 1
        if target != "serve":
            return   # the segment's loop is dead: the next segment gets a monkey of its own
        kill_rate = 0.0   # one kill a segment; faults go on while Serve brings the replica back


def _wait_healthy(url: str, timeout_s: float = STALL_S) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(url.replace("/v1/decide", "/healthz"), timeout=10).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the decision service at {url} stayed unhealthy for {timeout_s:.0f} s")
        time.sleep(0.5)


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    return type(cause if isinstance(cause, BaseException) else exc).__name__


def compare(live, server, journal_path: Path, starting_cash: int) -> ChaosResult:
    """Catch the journal up as a restarted loop would, then compare it with the venue."""
    from actors.gateway import GatewayRest
    from broker.journal import Journal
    from broker.kis.broker import KisBroker
    from broker.kis.venue import KisVenue

    # through the loop's KIS session (its gateway still runs): one token, one rate limiter
    venue = KisVenue(live.environment, live.credentials, clock=live.clock, cache_dir=live.cache_dir,
                     rest=GatewayRest(live.environment, live.credentials, live.cache_dir))
    broker: KisBroker = venue.broker
    journal = Journal(journal_path, run_id=live.run_id())
    try:
        fills = broker.sync()
        with journal.transaction():
            for fill in fills:
                journal.record_fill(fill)
        broker.confirm_fills(fills)
        for row in journal.unsettled() + journal.orders(state="open"):
            order = broker.find_order(row["client_order_id"])
            if order is not None:
                journal.record_order(order)
        acct = server.exchange.accounts[live.credentials.app_key]
        book = acct.book
        at_venue = {so.odno: book._orders[so.paper_id] for so in acct.orders.values() if so.paper_id}
        mine = {r["odno"]: r for r in broker.ids.all() if r["odno"]}
        duplicated = sorted(odno for odno in at_venue if odno not in mine)
        missing = sorted(odno for odno in mine if odno not in at_venue)
        unsettled = [r["client_order_id"] for r in journal.unsettled()]
        journaled: Counter = Counter()
        for f in journal.fills():
            journaled[f["client_order_id"]] += f["qty"]
        fills_lost = sorted(odno for odno, o in at_venue.items()
                            if odno in mine and o.filled_qty != journaled[mine[odno]["client_order_id"]])
        held = journal.positions_from_fills()
        venue_held = book.positions()
        position_diff = sum(abs(held.get(s, 0) - venue_held.get(s, 0)) for s in set(held) | set(venue_held))
        cash_diff = abs(journal.cash_from_fills(starting_cash) - book.cash())
        states = Counter(r["state"] for r in journal.orders())
        return ChaosResult(orders=len(at_venue), lost=len(missing) + len(unsettled), duplicated=len(duplicated),
                           fills_lost=len(fills_lost), position_diff=position_diff, cash_diff=int(cash_diff),
                           sessions=0, segments=0, kills=Counter(), faults=Counter(), failures=Counter(),
                           details={"duplicated": duplicated, "missing": missing, "unsettled": unsettled,
                                    "fills_lost": fills_lost, "journal_states": dict(states),
                                    "venue_positions": venue_held, "journal_positions": held})
    finally:
        journal.close()
        venue.close()
