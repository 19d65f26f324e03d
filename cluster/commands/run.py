"""`trader run`: the live decision loop, in one of the modes from safe to real.

paper (PaperBroker, no network, default) → sim (KIS client against the local KIS-protocol server)
→ vts (KIS's paper-trading server, needs keys) → live (real money: needs --live and the account
number typed back).
"""
from __future__ import annotations

from cluster.commands._common import CommandError, add_settings_arg, new_parser, reports_errors, settings_from
from cluster.settings import Mode


def register(subparsers) -> None:
    p = new_parser(
        subparsers, "run", help="run the live decision loop (paper, sim, vts or live)",
        description="Run the trading loop: market state → POST /v1/decide → orders → broker → journal. "
                    "`--mode live` trades real money and needs both --live and typing the account number "
                    "(KIS_ACCOUNT) at the prompt; vts and live need KIS_APP_KEY/KIS_APP_SECRET/KIS_ACCOUNT "
                    "in the environment or .env.",
        example_lines=["trader run                               # paper, the default",
                       "trader run --mode sim --days 20",
                       "KRT_TRADING__SYMBOLS=005930,000660 trader run --mode vts",
                       "trader run --mode live --live           # asks for the account number",
                       "trader run --verbose                     # Ray's and Serve's logs on the terminal"])
    p.add_argument("--mode", choices=[m.value for m in Mode], help="venue (default: settings mode, paper)")
    p.add_argument("--live", action="store_true", help="required for --mode live (real money)")
    p.add_argument("--days", type=int, default=None,
                   help="stop after this many trading days (paper/sim: replayed bars; vts/live: sessions, "
                        "default unlimited)")
    p.add_argument("--verbose", action="store_true",
                   help="Ray's and Serve's own logs on the terminal (default: ray.log beside the journal)")
    add_settings_arg(p)
    p.set_defaults(func=main)


def check_mode(mode: Mode, live_flag: bool, input_fn=input, out=print):
    """The safety gate in front of every venue. Returns the KIS credentials for vts/live, else None."""
    if live_flag and mode is not Mode.LIVE:
        raise CommandError(f"--live was given but the mode is {mode.value}: refusing an ambiguous command")
    if mode in (Mode.PAPER, Mode.SIM):
        return None
    if mode is Mode.LIVE and not live_flag:
        raise CommandError("--mode live trades real money: pass --live as well (and confirm the account)")
    try:
        from broker.kis.config import Credentials, confirm_live
        from broker.kis.errors import KisConfigError
    except ImportError:
        raise CommandError(f"--mode {mode.value} needs the KIS client (broker/kis), which is not installed "
                           "in this checkout") from None
    try:
        creds = Credentials.from_env()
        if mode is Mode.LIVE:
            confirm_live(creds, live_flag, input_fn=input_fn, out=out)
    except KisConfigError as exc:
        raise CommandError(str(exc)) from None
    return creds


@reports_errors
def main(args) -> int:
    settings = settings_from(args)
    mode = Mode(args.mode) if args.mode else settings.mode
    credentials = check_mode(mode, args.live)
    return start_loop(settings, mode, credentials, days=args.days, verbose=args.verbose)


def start_loop(settings, mode: Mode, credentials, days: int | None, verbose: bool = False) -> int:
    """Run the loop on the Ray cluster at cluster.address (else an embedded local Ray): the decision
    service is deployed (or updated) first, then MarketState and Execution actors trade into the
    journal at settings.journal — replaying stored bars (paper, sim) or in real time (vts, live).
    Quiet like the demo: Ray's and Serve's output goes to ray.log beside the journal unless
    `verbose`; the steps are announced on stderr, the result is printed on stdout."""
    from cluster.demo import ray_output_to

    if mode in (Mode.PAPER, Mode.SIM) and settings.execution.algo != "market_open":
        raise CommandError(f"execution.algo {settings.execution.algo} works orders over a live session: it needs "
                           "--mode vts|live with live.realtime on (a replay trades each bar once, at its open)")
    live = live_config(settings, mode, credentials, days) if mode in (Mode.VTS, Mode.LIVE) else None
    settings.journal.parent.mkdir(parents=True, exist_ok=True)
    log = None if verbose else settings.journal.parent / "ray.log"
    with ray_output_to(log) as sink:
        stats = _loop(settings, mode, live, days, sink, log)
    print(f"done: {stats['decisions']} decisions, {stats['orders']} orders, {stats['fills']} fills, "
          f"{stats['rejected']} rejected; cash {stats['cash']:,} KRW" + (f"  (Ray log {log})" if log else ""))
    return 0


def _loop(settings, mode: Mode, live, days: int | None, sink, log) -> dict:
    import ray
    from ray import serve

    from cluster.commands.serve import deploy
    from cluster.demo import native_stderr_to, progress_line
    from cluster.fate import watch_driver
    from cluster.live import run_live_loop
    from cluster.trading_loop import ReplayConfig, run_replay
    from market.data import DataError, DataPaths

    embedded = not settings.cluster.address
    progress_line(("starting Ray (embedded)…" if embedded else f"connecting to Ray at {settings.cluster.address}…")
                  + (f"  logs: {log}" if log else ""))
    with native_stderr_to(sink):
        if embedded:  # private local Ray: never attach to a cluster `ray start` recorded on this machine
            ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
            watch_driver()  # a SIGKILLed driver takes its Ray processes with it
        else:
            ray.init(address=settings.cluster.address, log_to_driver=False, configure_logging=False)
    try:
        progress_line("deploying the decision service…")
        url = deploy(settings) + "/v1/decide"
        progress_line(f"trading loop ({mode.value}): decisions from {url}, journal {settings.journal}")
        try:
            if live is not None:
                progress_line(f"KIS {live.environment.name} at {live.environment.rest_url}, {len(live.symbols)} "
                              f"symbols; orders at {live.session.order_time} KST of each session, bars final at "
                              f"{live.session.bar_final}; {days or 'unlimited'} sessions")
                stats = run_live_loop(live, url, settings.journal)
            else:
                config = ReplayConfig(out=settings.journal.parent, days=days or settings.trading.replay_days,
                                    symbols=settings.trading.symbols or None, cash=settings.trading.starting_cash,
                                    venue=mode.value, agents=settings.serve.agents,
                                    max_position=settings.trading.max_position, max_gross=settings.trading.max_gross,
                                    paths=DataPaths(root=settings.data_dir) if settings.data_dir else DataPaths(),
                                    protections=tuple(settings.risk_engine.protections), alerts=settings.alerts)
                stats = run_replay(config, url, settings.journal, progress=True)
        except ray.exceptions.RayTaskError as exc:  # the loop's actors failed: the cause, not Ray's wrapping
            raise CommandError(f"the trading loop stopped: {type(exc.cause).__name__}: {exc.cause}") from None
        except (DataError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        return stats
    finally:
        progress_line("shutting down…")
        try:
            if embedded:
                serve.shutdown()
        finally:
            ray.shutdown()


def live_config(settings, mode: Mode, credentials, days: int | None):
    """The real-time loop's configuration from the settings (checked before anything starts)."""
    import os

    from broker.sim.clock import SimClock
    from cluster.live import LiveConfig, kis_environment
    from market.session import SessionTimes, WallClock

    s = settings.live
    try:
        env = kis_environment(mode.value, s.kis)
        session = SessionTimes(s.order_time, s.order_cutoff, s.bar_final, frozenset(s.holidays))
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    clock = WallClock()
    if s.clock == "simulator":
        if mode is Mode.LIVE:
            raise CommandError("live.clock=simulator is for rehearsing vts against the local simulator; "
                               "live trading runs on the wall clock")
        secret = os.environ.get("KIS_SIM_ADMIN")
        if not secret:
            raise CommandError("live.clock=simulator needs KIS_SIM_ADMIN (written by `python -m broker.sim`)")
        clock = SimClock(env.rest_url, secret)
    try:
        return LiveConfig(mode=mode.value, environment=env, credentials=credentials,
                          symbols=settings.trading.symbols, session=session, clock=clock, poll_s=s.poll_s, days=days,
                          realtime=s.realtime, feed_silence_s=s.feed_silence_s,
                          protections=tuple(settings.risk_engine.protections), alerts=settings.alerts,
                          intraday=tuple(settings.risk_engine.intraday),
                          intraday_every_s=settings.risk_engine.intraday_every_s,
                          execution=settings.execution.algo_config())
    except ValueError as exc:
        raise CommandError(str(exc)) from None
