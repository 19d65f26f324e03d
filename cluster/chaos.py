"""A fault campaign (`trader chaos`): the real-time loop in fast time against the KIS-protocol
simulator, with faults injected into every KIS call kind and the loop's processes killed at
random, the driver included, then the journal, the client-order-id map and the venue compared
share for share.

Two kinds of process:

* the campaign (this process, `run_campaign`): the simulator posing as VTS (virtual session
  clock; the last `sessions` trading days of the shipped data replay as sessions) — the venue,
  so it outlives every kill —, the fault schedule and the driver kills;
* a driver (a child process, `python -m cluster.chaos driver …`, `driver_main`): its own
  embedded local Ray with the fate watchdog (cluster/fate.py), the Serve decision service, and
  the loop run as segments: each segment starts fresh ExecutionActor + LiveMarketStateActor (the
  same run id, journal, order-id map and decision-state file, as a restarted `trader run --mode
  vts` would) and runs until the sessions are done or something kills it.

What happens to them, each drawn from `seed` (one random stream per kind, so one kind's draws
never shift another's):

* faults, all the time (every `fault_every_s` on average): one of the simulator's REST faults
  (rate limit, expired token, HTTP 500 before/after processing, slow answer, dropped connection
  before/after processing, malformed body) armed on a random KIS path (orders, order lookups,
  balance, bars, quotes), after letting a random number of calls pass — unless a fault still
  waits on that path;
* actor kills, in the driver, every `kill_every_s` of its armed trading time on average (a wait
  a segment's end cuts short carries over to the next segment): `ray.kill` (SIGKILL) of the
  ExecutionActor, of the market actor, or of a Serve replica (Serve restarts it); a killed loop
  restarts as a new segment;
* driver kills, after `driver_kill_every` sessions of a driver's trading on average (a drawn
  fraction of a session's wall time into the session): SIGKILL of the driver process alone (never
  its group). The campaign then checks that every process the driver
  started — its Ray (GCS, raylet, agents, workers: what tests/e2e/test_driver_kill.py checks) —
  is gone, and starts a new driver on the same run id, journal, id map and decision-state file.
When each event lands inside the loop depends on wall time.

Once the sessions are done the driver stops the faults and runs one last segment of no session:
the ExecutionActor's start (TradingLoop.start), i.e. exactly the catch-up a restarted loop does
(fills the venue reports, open orders, orders whose fate is unknown). Then the campaign compares:
  lost        orders the order-id map says were sent that the venue does not have, plus orders
              the journal still cannot settle
  duplicated  orders at the venue that no client order id accounts for (a second send)
  fills lost  venue orders whose executed quantity differs from the journal's fills for them
  position diff / cash diff   |journal (rebuilt from its fills) − venue|, shares and KRW
"""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
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
GONE_S = 30.0     # a killed driver's processes must be gone this long after it (the watchdog polls every 0.5 s)
SETTLE_S = 1.0    # the campaign sees a driver's "settling" within its 0.2 s poll: no fault is armed after this
DRIVER_RETRIES = 3   # drivers in a row that end on their own without finishing: the campaign gives up


@dataclass
class ChaosConfig:
    out: Path
    sessions: int = 5
    seed: int = 0
    symbols: list[str] = field(default_factory=lambda: list(SYMBOLS))
    agents: list[str] = field(default_factory=lambda: ["technical"])
    cash: int = 30_000_000
    fault_every_s: float = 0.5         # mean wall-clock time between two armed faults
    kill_every_s: float = 4.0          # mean wall-clock time between two actor kills (0: no kills)
    driver_kill_every: float = 40.0    # mean sessions a driver trades before its SIGKILL (0: never)
    max_segments: int | None = None    # segments with faults and kills (default 8 per session); the rest runs calm
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
    sessions: int = 0
    segments: int = 0
    kills: Counter = field(default_factory=Counter)      # execution / market / serve / driver
    faults: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)   # why segments (and drivers) ended early
    details: dict = field(default_factory=dict)
    calm_segments: int = 0            # segments run without faults after the budget of segments was spent
    drivers: int = 0                  # driver processes started
    survivors: list[str] = field(default_factory=list)   # processes that outlived their killed driver

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.fills_lost or self.position_diff or self.cash_diff
                    or self.survivors)

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


# --- the campaign process ---------------------------------------------------------------------
def run_campaign(config: ChaosConfig) -> ChaosResult:
    from tqdm import tqdm

    from broker.sim.exchange import SimConfig
    from broker.sim.server import SimServer

    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob("journal.sqlite*"), *out.glob("decision_state.sqlite*"), *(out / "kis").glob("*"),
                  *(out / "drivers").glob("*")]:
        stale.unlink()
    history, replay, replay_dates = replay_frames(config)
    all_dates = sorted(set(replay["date"].to_list()))
    holidays = sorted(d for d in (replay_dates[0] + dt.timedelta(days=i)
                                  for i in range((replay_dates[-1] - replay_dates[0]).days + 1))
                      if d.weekday() < 5 and d not in all_dates)
    # fast-time limits: quotas and the token window are not what this campaign tests
    server = SimServer(SimConfig(virtual=True, rate_per_s=500.0, burst=50, token_throttle_s=1.0), history=history,
                       replay=replay).start()
    faults: Counter = Counter()
    driver_kills = 0
    survivors: list[str] = []
    statuses: list[dict] = []
    stop = threading.Event()
    current = _Current()
    arming = threading.Thread(target=_arm_faults, args=(config, server, current, stop, faults), daemon=True)
    proc: subprocess.Popen | None = None
    started: _DriverProcesses | None = None
    try:
        keys = server.add_account(config.cash)
        spec = {"out": str(out), "sessions": config.sessions, "seed": config.seed, "symbols": config.symbols,
                "agents": config.agents, "kill_every_s": config.kill_every_s,
                "segment_budget": config.max_segments or 8 * config.sessions,
                "rest_url": server.rest_url, "ws_url": server.ws_url, "admin_secret": server.admin_secret,
                "keys": keys, "holidays": [d.isoformat() for d in holidays],
                "replay_dates": [d.isoformat() for d in replay_dates]}
        (out / "drivers").mkdir(exist_ok=True)
        spec_path = out / "drivers" / "spec.json"
        fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)   # the account's keys
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f)
        live, session = _live_config(spec)
        driver_rng = np.random.default_rng([config.seed, 1])
        bar = tqdm(total=config.sessions, desc="chaos sessions", unit="session", disable=not config.progress)
        arming.start()
        shown = 0
        pace = _Pace()
        ended_alone = 0   # drivers in a row that ended without finishing and without being killed
        while True:
            number = len(statuses)
            segments_before = sum(s.get("segments", 0) for s in statuses)
            life = _DriverLife(float(driver_rng.exponential(config.driver_kill_every))) \
                if config.driver_kill_every > 0 else None
            status_path = out / "drivers" / f"{number}.json"
            with open(out / "drivers" / f"{number}.log", "wb") as log:
                proc = subprocess.Popen([sys.executable, "-m", "cluster.chaos", "driver", str(spec_path), str(number),
                                         str(segments_before)], stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
            current.set(status_path)
            started = _DriverProcesses(proc.pid)
            ready = False
            killed = False
            while proc.poll() is None:
                started.record()
                status = _read_status(status_path)
                left = sessions_left(live.clock.now(), replay_dates, session.bar_final)
                if config.sessions - left > shown:
                    bar.update(config.sessions - left - shown)
                    shown = config.sessions - left
                    pace.session_done()
                if status.get("phase") == "trading" and not ready:
                    ready = True
                    pace.restart()
                calm = (status.get("calm") or status.get("phase") != "trading"
                        or segments_before + status.get("segments", 0) >= spec["segment_budget"])
                if life is not None and ready and not calm and life.due(shown, pace.session_s()):
                    os.kill(proc.pid, signal.SIGKILL)   # the driver alone, not its group
                    proc.wait()
                    driver_kills += 1
                    killed = True
                    survivors += started.wait_gone(GONE_S)
                    break
                time.sleep(0.2)
            current.set(None)
            status = _read_status(status_path)
            statuses.append(status)
            if killed:
                ended_alone = 0
                continue
            if proc.returncode == 0 and status.get("phase") == "done":
                break
            if status.get("phase") == "failed":
                raise RuntimeError(f"driver {number}: {status.get('error')} (log: {out / 'drivers' / f'{number}.log'})")
            survivors += started.wait_gone(GONE_S)   # a driver that died on its own leaves nothing either
            ended_alone += 1
            if ended_alone >= DRIVER_RETRIES:
                raise RuntimeError(f"{ended_alone} drivers in a row ended with exit codes without finishing; the last: "
                                   f"{proc.returncode} (log: {out / 'drivers' / f'{number}.log'})")
        bar.update(config.sessions - shown)
        bar.close()
        stop.set()
        arming.join()
        server.faults.clear()
        result = compare(live, server, out / "journal.sqlite", config.cash)
    finally:
        stop.set()
        if proc is not None and started is not None and proc.poll() is None:
            # the campaign failed or was interrupted (Ctrl-C reaches this process group only):
            # the driver, in a session of its own, goes with it
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            started.wait_gone(GONE_S)
        server.stop()
    kills: Counter = Counter()
    failures: Counter = Counter()
    for status in statuses:
        kills.update(status.get("kills", {}))
        failures.update(status.get("failures", {}))
    if driver_kills:
        kills["driver"] = driver_kills
    result.sessions, result.drivers, result.survivors = config.sessions, len(statuses), survivors
    result.segments = sum(s.get("segments", 0) for s in statuses)
    result.calm_segments = sum(s.get("calm_segments", 0) for s in statuses)
    result.kills, result.faults, result.failures = kills, faults, failures
    return result


class _Pace:
    """Wall seconds a session takes in this campaign (the mean of the last ten, restarts left out)."""

    def __init__(self):
        self.last: float | None = None
        self.seconds: list[float] = []

    def restart(self) -> None:
        self.last = time.monotonic()

    def session_done(self) -> None:
        now = time.monotonic()
        if self.last is not None:
            self.seconds = [*self.seconds[-9:], now - self.last]
        self.last = now

    def session_s(self) -> float:
        return sum(self.seconds) / len(self.seconds) if self.seconds else 1.0


class _DriverLife:
    """When a driver gets its SIGKILL: after `sessions` (drawn, fractional) of trading from the
    moment it is ready, the fraction taken of a session's wall time, so the kill lands anywhere
    inside a session (deciding, sending, waiting for the bar, journaling) — and, counted in
    sessions, it lands inside the campaign on a fast machine as on a slow one."""

    def __init__(self, sessions: float):
        self.whole = int(sessions)
        self.fraction = sessions - self.whole
        self.first: int | None = None       # sessions done when the driver was first seen ready
        self.reached: float | None = None   # when `whole` sessions were done

    def due(self, done: int, session_s: float) -> bool:
        now = time.monotonic()
        if self.first is None:
            self.first = done
        if done - self.first < self.whole:
            return False
        if self.reached is None:
            self.reached = now
        return now - self.reached >= self.fraction * session_s


class _Current:
    """The status file of the driver running now (None between drivers), shared with the fault thread."""

    def __init__(self):
        self._path: Path | None = None
        self._lock = threading.Lock()

    def set(self, path: Path | None) -> None:
        with self._lock:
            self._path = path

    def status(self) -> dict:
        with self._lock:
            path = self._path
        return _read_status(path) if path is not None else {}


def _arm_faults(config: ChaosConfig, server, current: _Current, stop: threading.Event, faults: Counter) -> None:
    """Arm a fault at random moments while a driver's segment trades: from the moment its actors
    are up (their bars loaded) to the segment's end; not while a driver starts, runs calm or settles."""
    if config.fault_every_s <= 0:
        return
    rng = np.random.default_rng([config.seed, 2])
    while not stop.wait(float(rng.exponential(config.fault_every_s))):
        kind, path = str(rng.choice(FAULT_KINDS)), str(rng.choice(FAULT_PATHS))
        count, skip = int(rng.integers(1, 3)), int(rng.integers(0, 10))
        status = current.status()   # read right before arming: a driver's "settling" stops it at once
        if not status.get("armed") or status.get("phase") != "trading" or status.get("calm"):
            continue
        # one waiting fault per path: armed faster than the loop calls a path, they would pile up (each
        # call counts every waiting fault's skip down), until nearly every call fails and no segment
        # gets through a session (measured: 7 sessions in 3 min at --fault-every 0.5, 1 call in 5 failing)
        if any(f.path == path for f in server.faults.pending()):
            continue
        server.faults.inject(kind, count=count, path=path, delay=3.0, skip=skip)
        faults[kind] += 1


class _DriverProcesses:
    """Every process a driver started: its descendants (recorded while it runs: they are re-parented
    once it dies), its process group (it leads its own session) and every process of its Ray
    sessions (a worker spawned around its death is neither of the first two: cluster/fate.py)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.seen: dict[int, int] = {}
        self.sessions: set[str] = set()
        self._last = 0.0

    def record(self) -> None:
        from cluster.fate import descendants, ray_sessions

        if time.monotonic() - self._last >= 1.0:   # a /proc scan a second is enough: Ray starts everything early
            found = descendants(self.pid)
            self.sessions |= ray_sessions(pid for pid in found if pid not in self.seen)
            self.seen.update(found)
            self._last = time.monotonic()

    def alive(self) -> dict[int, str]:
        from cluster.fate import command_line, group_members, same_process, session_members

        left = {pid: command_line(pid) for pid, started in self.seen.items() if same_process(pid, started)}
        left.update({pid: command_line(pid) for pid in [*group_members(self.pid), *session_members(self.sessions)]})
        return left

    def wait_gone(self, timeout_s: float) -> list[str]:
        """Wait until none is left; returns those still alive after `timeout_s` (then killed, so the
        campaign can go on), as 'pid command line'."""
        deadline = time.monotonic() + timeout_s
        while (left := self.alive()) and time.monotonic() < deadline:
            time.sleep(0.5)
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return [f"{pid} {cmd}" for pid, cmd in sorted(left.items())]


def _read_status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _live_config(spec: dict):
    """The real-time loop's configuration, the same in the campaign and in every driver: one run id."""
    from broker.kis.config import Credentials, environment
    from broker.sim.clock import SimClock
    from cluster.live import LiveConfig
    from market.session import SessionTimes

    keys = spec["keys"]
    creds = Credentials(keys["KIS_APP_KEY"], keys["KIS_APP_SECRET"], keys["KIS_ACCOUNT"], keys["KIS_HTS_ID"])
    env = environment("vts", rest_url=spec["rest_url"], ws_url=spec["ws_url"], rate_per_s=500.0, burst=50,
                      token_throttle_s=1.0, unknown_check_delay_s=0.2, timeout_s=2.0, rate_limit_retries=2,
                      backoff_s=0.01)
    session = SessionTimes(holidays=frozenset(dt.date.fromisoformat(d) for d in spec["holidays"]))
    live = LiveConfig(mode="vts", environment=env, credentials=creds, symbols=spec["symbols"], session=session,
                      clock=SimClock(spec["rest_url"], spec["admin_secret"]), poll_s=60.0, days=spec["sessions"],
                      cache_dir=Path(spec["out"]) / "kis")
    return live, session


# --- a driver process -------------------------------------------------------------------------
class _Status:
    """What a driver tells the campaign, in a file replaced whole on every change (a SIGKILL never
    leaves half a file)."""

    def __init__(self, path: Path, number: int):
        self.path = path
        self.data: dict = {"driver": number, "pid": os.getpid(), "phase": "starting", "calm": False, "segments": 0,
                           "calm_segments": 0, "armed": False, "kills": {}, "failures": {}}
        self._lock = threading.Lock()
        self.update()

    def update(self, **changes) -> None:
        with self._lock:
            self.data.update(changes)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.data, sort_keys=True))
            os.replace(tmp, self.path)

    def count(self, key: str, name: str) -> None:
        with self._lock:
            counts = self.data[key]
            counts[name] = counts.get(name, 0) + 1
        self.update()


def driver_main(spec_path: Path, number: int, segments_before: int) -> int:
    """One driver of the campaign: embedded Ray, the decision service, segments of the loop until
    the sessions are done, then the closing catch-up. 0: done; 3: the loop cannot recover; 4: the
    catch-up failed."""
    import ray

    from cluster.fate import watch_driver
    from cluster.trading_loop import deploy_decision_service, free_port

    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    status = _Status(out / "drivers" / f"{number}.json", number)
    live, session = _live_config(spec)
    replay_dates = [dt.date.fromisoformat(d) for d in spec["replay_dates"]]
    journal = out / "journal.sqlite"
    budget = int(spec["segment_budget"])
    kill_clock = _KillClock(float(spec["kill_every_s"]), np.random.default_rng([int(spec["seed"]), 3, number]))
    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
    watch_driver()   # a SIGKILL of this process takes its Ray processes with it
    try:
        url = deploy_decision_service(spec["agents"], free_port(), rl_champions=False, name="chaos",
                                      state_path=out / "decision_state.sqlite")
        status.update(phase="trading")
        while (left := sessions_left(live.clock.now(), replay_dates, session.bar_final)) > 0:
            done = segments_before + status.data["segments"]
            if done >= budget + 3:
                status.update(phase="failed", error=f"{done} segments and still {left} sessions to go, the last 3 "
                                                    f"without any fault: the loop cannot recover (segments ended by "
                                                    f"{status.data['failures']})")
                return 3
            calm = done >= budget   # past the budget the rest runs without faults, so it can end
            _wait_healthy(url)      # a killed Serve replica is back before the loop starts again
            status.update(segments=status.data["segments"] + 1, calm=calm,
                          calm_segments=status.data["calm_segments"] + int(calm))
            if calm:   # after the status says so: the campaign arms nothing more
                _clear_faults(spec)
            live.days = left
            _segment(live, url, journal, status, None if calm else kill_clock)
        # the sessions are done: no more faults, then the catch-up of a restarted loop's start
        status.update(phase="settling")
        time.sleep(SETTLE_S)
        _clear_faults(spec)
        live.days = 0
        for _ in range(3):
            _wait_healthy(url)
            if _segment(live, url, journal, status, None):
                status.update(phase="done")
                return 0
        status.update(phase="failed", error=f"the closing catch-up failed 3 times ({status.data['failures']})")
        return 4
    finally:
        try:
            from ray import serve

            serve.shutdown()
        except Exception:
            pass
        ray.shutdown()


def _segment(live, url: str, journal: Path, status: _Status, kills: _KillClock | None) -> bool:
    """Start a fresh actor pair and drive it (TradingLoop.start first: the restart's catch-up);
    True if it ran to its end. `kills`: the driver's actor-kill clock, None: calm."""
    from cluster.live import start_live_actors
    from cluster.trading_loop import drive

    stop = threading.Event()
    monkey = None
    try:
        loop, market = start_live_actors(live, url, journal, load_timeout_s=STALL_S)
        if kills is not None:
            status.update(armed=True)   # faults from now on, until this segment ends
        if kills is not None and kills.mean_s > 0:
            monkey = threading.Thread(target=_kill_an_actor, args=(kills, loop, market, stop, status), daemon=True)
            monkey.start()
        drive(loop, market, total=live.days, desc="", progress=False, step_timeout_s=STALL_S)
        return True
    except Exception as exc:   # a kill or a fault the loop stops on: a restart follows
        status.count("failures", _reason(exc))
        # the driver's log (drivers/<n>.log) says what ended each segment, not just its kind
        cause = getattr(exc, "cause", None)   # a Ray task error's own text is the remote traceback
        print(f"segment {status.data['segments']} ended by {_reason(exc)}: "
              f"{str(cause if isinstance(cause, BaseException) else exc)[:600]}", file=sys.stderr, flush=True)
        return False
    finally:
        status.update(armed=False)
        stop.set()
        if monkey is not None:
            monkey.join()
        time.sleep(0.3)   # a killed actor's process is gone before the next one opens the journal


class _KillClock:
    """When the driver's next actor kill is due and what it hits. The wait runs over the driver's
    armed trading time, not per segment: a segment that a fault ends before its kill leaves the rest
    of the wait to the next one, so kills land at the drawn rate however often faults end segments
    (a per-segment draw made kills vanish on a slow machine, where faults end segments sooner)."""

    def __init__(self, mean_s: float, rng: np.random.Generator):
        self.mean_s, self.rng = mean_s, rng
        self.left_s, self.target = self._draw()

    def _draw(self) -> tuple[float, str]:
        return float(self.rng.exponential(self.mean_s)), str(self.rng.choice(KILL_TARGETS))

    def wait(self, stop: threading.Event) -> str | None:
        """Wait for the due kill inside this segment: its target, or None if the segment ended first
        (what was waited counts, the rest carries over)."""
        started = time.monotonic()
        if stop.wait(self.left_s):
            self.left_s = max(0.0, self.left_s - (time.monotonic() - started))
            return None
        target = self.target
        self.left_s, self.target = self._draw()
        return target


def _kill_an_actor(kills: _KillClock, loop, market, stop: threading.Event, status: _Status) -> None:
    """One SIGKILL (ray.kill) of the segment's ExecutionActor, market actor or a Serve replica when
    the driver's kill clock says so, unless the segment ends first."""
    import ray

    target = kills.wait(stop)
    if target is None:
        return
    if target == "execution":
        ray.kill(loop)
    elif target == "market":
        ray.kill(market)
    else:
        replicas = [a for a in ray.util.list_named_actors(all_namespaces=True)
                    if a["name"].startswith("SERVE_REPLICA::") and "Ensemble" in a["name"]]
        if not replicas:
            return
        ray.kill(ray.get_actor(replicas[0]["name"], namespace=replicas[0]["namespace"]), no_restart=False)
    status.count("kills", target)


def _clear_faults(spec: dict) -> None:
    import requests

    resp = requests.post(spec["rest_url"].rstrip("/") + "/admin/clear_faults", json={},
                         headers={"x-sim-admin": spec["admin_secret"]}, timeout=30)
    resp.raise_for_status()


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


# --- the comparison ---------------------------------------------------------------------------
def compare(live, server, journal_path: Path, starting_cash: int) -> ChaosResult:
    """Compare journal, order-id map and venue. Reads only: the catch-up is the last driver's,
    through the loop's own start (TradingLoop.start), not a copy of it here."""
    from broker.journal import Journal
    from broker.kis.broker import KisBroker
    from broker.kis.venue import KisVenue

    # no KIS call is made here (the id map is a local file); the drivers and their gateways are gone
    venue = KisVenue(live.environment, live.credentials, clock=live.clock, cache_dir=live.cache_dir)
    broker: KisBroker = venue.broker
    journal = Journal(journal_path, run_id=live.run_id())
    try:
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
                           details={"duplicated": duplicated, "missing": missing, "unsettled": unsettled,
                                    "fills_lost": fills_lost, "journal_states": dict(states),
                                    "venue_positions": venue_held, "journal_positions": held})
    finally:
        journal.close()
        venue.close()


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "driver":
        sys.exit("usage: python -m cluster.chaos driver SPEC.json NUMBER SEGMENTS_BEFORE (started by `trader chaos`)")
    # the module's own functions, not __main__'s copies (Ray pickles what the driver hands it by module)
    from cluster.chaos import driver_main as _driver_main

    sys.exit(_driver_main(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
