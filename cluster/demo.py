"""The embedded demo: local Ray + Serve + actors replay the last year of shipped data.

Picks the most traded symbols (by traded value before the replay starts — nothing from the
replay period chooses the universe), deploys the decision service, runs the ExecutionActor bar
by bar against a venue (paper by default), then writes equity.png and metrics.json from the
journal. The service runs the configured agents plus the RL champions the MLflow registry holds
(serving/champions.py); the demo prints them (with model versions) and records them in
metrics.json. RL agents whose five-name universe is not in the replayed symbols abstain.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from backtest.engine import BacktestConfig, ffill_close
from backtest.metrics import summary
from backtest.summary import (
    RunSummary,
    SeriesRow,
    benchmark_rows,
    build_summary,
    day_of,
    rounded,
    trade_stats,
)
from cluster.fate import watch_driver
from market.accounting import CostModel
from market.data import DataPaths, Panel, index_close, load_index, load_panel


@dataclass
class DemoConfig:
    out: Path
    days: int = 250
    n_symbols: int = 20
    symbols: list[str] | None = None
    cash: int = 100_000_000
    venue: str = "paper"
    agents: list[str] = field(default_factory=lambda: ["technical", "factor"])
    rl_champions: bool = True  # add dqn/appo when the MLflow registry has a champion for them
    models: dict[str, str] = field(default_factory=dict)  # explicit RL model URIs (serve.models)
    lookback: int = 61  # bars per snapshot; run_loop raises it to what the service's agents need
    max_position: float = 0.2
    max_gross: float = 1.0
    port: int | None = None
    paths: DataPaths = field(default_factory=DataPaths)
    end: str | None = None
    progress: bool = True
    verbose: bool = False  # Ray's and Serve's logs on the terminal instead of out/ray.log


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


def prepare(config: DemoConfig) -> tuple[Panel, int, np.ndarray]:
    """The replay panel, the row of the first decision, and KOSPI200 closes on its dates."""
    full = load_panel(config.paths, end=config.end)
    start_row = len(full) - config.days - 1
    if start_row < config.lookback:
        raise ValueError(f"not enough history for {config.days} days plus a {config.lookback}-bar lookback")
    symbols = config.symbols or pick_universe(full, start_row, config.n_symbols, history=120)
    panel = full.select(symbols).rows(start_row - config.lookback + 1, len(full))
    bench = index_close(panel.dates, load_index(config.paths.path("index"), "KOSPI200"))
    return panel, config.lookback - 1, bench


def deploy_decision_service(agents: list[str], port: int, max_position: float = 0.2,
                            max_gross: float = 1.0, *, rl_champions: bool = True,
                            models: dict[str, str] | None = None, served=None, name: str = "trader",
                            route_prefix: str = "/") -> str:
    """Start Serve on 127.0.0.1:port (on the running Ray) and deploy the app; returns /v1/decide's URL.

    The agents served are `served` (a serving.champions.ServedAgents), else planned here from
    `agents`, `rl_champions` and `models` (RL champions join when the registry has them).
    If Serve already runs, its HTTP port stays what it is: pass that port."""
    from ray import serve

    from serving.app import build_app
    from serving.champions import plan

    if served is None:
        served = plan(agents, rl_champions=rl_champions, models=models)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(served.agents, max_position, max_gross, models=served.models,
                        tracking_uri=served.tracking_uri), name=name, route_prefix=route_prefix)
    return f"http://127.0.0.1:{port}{route_prefix.rstrip('/')}/v1/decide"


def run_loop(config: DemoConfig, decide_url: str, journal: Path, progress: bool = True) -> dict:
    """Replay the panel through MarketState and Execution actors on the running Ray."""
    import requests

    from actors.execution import ExecutionActor, LoopConfig
    from actors.market_state import MarketStateActor
    from serving.auth import decide_token

    need = requests.get(decide_url.replace("/v1/decide", "/healthz"), timeout=60).json()["lookback"]
    config.lookback = max(config.lookback, int(need))
    panel, first_row, bench = prepare(config)
    market = MarketStateActor.remote(panel, first_row, bench)
    loop = ExecutionActor.remote(
        LoopConfig(decide_url=decide_url, journal_path=str(journal), run_id=f"demo{uuid.uuid4().hex[:6]}",
                   cash=config.cash, venue=config.venue, lookback=config.lookback, decide_token=decide_token()),
        market, panel.dates)
    return drive(loop, market, total=len(panel) - 1 - first_row, desc=f"demo ({config.venue})", progress=progress)


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


@contextlib.contextmanager
def ray_output_to(log_path: Path | None):
    """Ray's and Serve's own output goes to `log_path` while the block runs (None: left as is).

    Three streams reach a driver's terminal: the `ray` and `ray.serve` Python loggers (Serve
    installs a stream handler when it is imported: "Started Serve …"), the driver's error-listener
    thread, which prints task-failure notices to sys.stdout ("(raylet) Task … failed"), and the
    native core worker, which writes straight to file descriptor 2 during start-up (the token-auth
    banner). The first two are rerouted at the Python level, the third by pointing fd 2 at the
    log while `ray.init` runs. Our own progress lines go to stderr (`progress_line`), which is
    left alone, so stdout holds only the result (the summary, or --json)."""
    if log_path is None:
        yield
        return
    import logging

    from ray import serve  # noqa: F401  (its import installs the handler rerouted below)

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", encoding="utf-8", buffering=1) as sink:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        saved = {}
        for name in ("ray", "ray.serve"):
            lg = logging.getLogger(name)
            saved[name] = (lg.handlers[:], lg.propagate, lg.level)
            lg.handlers = [handler]
            lg.propagate = False
            lg.setLevel(logging.INFO)
        try:
            with contextlib.redirect_stdout(sink):
                yield sink
        finally:
            for name, (handlers, propagate, level) in saved.items():
                lg = logging.getLogger(name)
                lg.handlers, lg.propagate = handlers, propagate
                lg.setLevel(level)


def progress_line(text: str) -> None:
    """A start-up step for the person at the terminal ("starting Ray…"): stderr, never the log."""
    print(text, file=sys.stderr, flush=True)


@contextlib.contextmanager
def native_stderr_to(sink):
    """Point file descriptor 2 at `sink` (a file) for the block: what Ray's native code writes
    during start-up lands in the log. None: unchanged."""
    if sink is None:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(sink.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def run_demo(config: DemoConfig) -> dict:
    """The embedded demo: start local Ray, serve, replay, shut everything down, write the report.
    Ray's and Serve's logs go to out/ray.log unless `config.verbose`."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "journal.sqlite"
    for stale in out.glob("journal.sqlite*"):
        stale.unlink()
    t0 = time.time()
    from serving.champions import plan

    prepare(config)  # bad dates, symbols or too little history are refused before Ray starts
    served = plan(config.agents, rl_champions=config.rl_champions, models=config.models)
    progress_line(served.summary())
    log = None if config.verbose else out / "ray.log"
    with ray_output_to(log) as sink:
        import ray
        from ray import serve

        timings: dict[str, float] = {}  # seconds per step, in metrics.json: where start-up time goes
        step_start = time.time()

        def step_done(name: str) -> None:
            nonlocal step_start
            timings[name] = round(time.time() - step_start, 1)
            step_start = time.time()

        progress_line("starting Ray (embedded, 2 CPUs)…" + (f"  logs: {log}" if log else ""))
        with native_stderr_to(sink):
            # embedded and private: never attach to a cluster that `ray start` recorded on this machine
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=bool(config.verbose),
                     configure_logging=False)
        watch_driver()  # a SIGKILLed demo takes its Ray processes with it
        step_done("ray_start")
        try:
            progress_line("deploying the decision service…")
            url = deploy_decision_service(config.agents, config.port or free_port(), config.max_position,
                                          config.max_gross, served=served)
            step_done("deploy")
            progress_line(f"replaying {config.days} trading days ({config.venue} broker)…")
            stats = run_loop(config, url, journal, progress=config.progress)
            step_done("replay")
        finally:
            progress_line("shutting down…")
            try:
                # Serve's controller ends its own graceful_shutdown task by killing itself, so the
                # driver is told that task failed "and will be retried": expected, logged, not shown
                serve.shutdown()
            finally:
                ray.shutdown()
            step_done("shutdown")
    metrics = write_report(journal, out, stats)
    metrics["agents"] = served.describe()
    metrics["seconds"] = round(time.time() - t0, 1)
    metrics["timings_s"] = timings
    (out / "metrics.json").write_text(json.dumps(rounded(metrics), indent=2, ensure_ascii=False))
    return metrics


def demo_summary(journal_path: Path, config: DemoConfig, metrics: dict) -> RunSummary:
    """The terminal summary of a finished demo, from its journal: the run (its metrics.json
    numbers) beside KOSPI200 and the equal-weight basket of the same symbols on the same days
    (through the backtest engine), per-year and per-month returns, trades, P&L per symbol."""
    from broker.journal import Journal

    journal = Journal(journal_path)
    try:
        accounts, fills = journal.accounts(), journal.fills()
    finally:
        journal.close()
    panel, _, _ = prepare(config)   # the replay's own bars (plain Python: Ray is down by now)
    days = np.array([r["day"] for r in accounts], dtype="datetime64[D]")
    equity = np.array([r["equity"] for r in accounts], dtype=float)
    last = panel.index_of(days[-1].item())
    close = ffill_close(panel.close)[last]
    final_close = {s: float(c) for s, c in zip(panel.symbols, np.nan_to_num(close))}
    holdings = {s: int(q) for s, q in json.loads(accounts[-1]["positions"]).items()}
    frame = pl.DataFrame(
        {"date": [day_of(f["filled_at"]) for f in fills], "symbol": [f["symbol"] for f in fills],
         "side": [f["side"] for f in fills], "qty": [int(f["qty"]) for f in fills],
         "price": [int(f["price"]) for f in fills], "commission": [int(f["commission"]) for f in fills],
         "tax": [int(f["tax"]) for f in fills]},
        schema={"date": pl.Date, "symbol": pl.Utf8, "side": pl.Utf8, "qty": pl.Int64, "price": pl.Int64,
                "commission": pl.Int64, "tax": pl.Int64})
    trades = trade_stats(frame, days, holdings, final_close, panel.names)
    backtest_config = BacktestConfig(cash=int(config.cash), costs=CostModel())
    rows, equities, notes = benchmark_rows(panel, config.paths, days[1].item(), days[-1].item(),
                                           backtest_config, days)
    return build_summary(f"demo ({config.venue}, {len(panel.symbols)} symbols)", days, equity,
                         [SeriesRow("demo", metrics), *rows], [equity, *equities], trades, notes)


def write_report(journal_path: Path, out: Path, stats: dict) -> dict:
    """metrics.json and equity.png (equity and drawdown against KOSPI200) from the journal."""
    from broker.journal import Journal

    journal = Journal(journal_path)
    try:
        rows = journal.accounts()   # the demo writes one run per journal (stale ones are removed first)
        traded = sum(f["qty"] * f["price"] for f in journal.fills())
        orders = len(journal.orders())
    finally:
        journal.close()
    days = np.array([r["day"] for r in rows], dtype="datetime64[D]")
    equity = np.array([r["equity"] for r in rows], dtype=float)
    bench = np.array([np.nan if r["benchmark"] is None else r["benchmark"] for r in rows], dtype=float)
    metrics = summary(equity, traded_value=float(traded), orders=int(orders))
    metrics.update(start=str(days[0]), end=str(days[-1]), final_equity=float(equity[-1]),
                   fills=int(stats.get("fills", 0)), rejected=int(stats.get("rejected", 0)))
    ok = np.isfinite(bench)
    if ok.sum() >= 2:
        b = bench[ok]
        metrics["benchmark_total_return"] = float(b[-1] / b[0] - 1)
    plot_equity(days, equity, bench, out / "equity.png")
    return metrics


def plot_equity(days: np.ndarray, equity: np.ndarray, bench: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=[3, 1])
    x = days.astype("datetime64[D]").astype(object)
    ax1.plot(x, equity / equity[0], label="strategy (net of costs)", color="tab:blue")
    ok = np.isfinite(bench)
    if ok.any():
        first = bench[ok][0]
        ax1.plot(np.array(x)[ok], bench[ok] / first, label="KOSPI200", color="tab:gray")
    ax1.set_ylabel("growth of 1 KRW")
    ax1.legend(loc="upper left")
    ax1.grid(alpha=0.3)
    ax1.set_title("kis-ray-trader demo: equity vs KOSPI200")
    dd = equity / np.maximum.accumulate(equity) - 1
    ax2.fill_between(x, dd * 100, 0, color="tab:red", alpha=0.4)
    ax2.set_ylabel("drawdown %")
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
