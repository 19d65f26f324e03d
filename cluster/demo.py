"""The embedded demo: local Ray + Serve + actors replay the last year of shipped data.

Starts an embedded local Ray, deploys the decision service and replays the bars through the
trading loop (cluster/trading_loop.py) against a venue (paper by default), then writes
equity.png and metrics.json from the journal. The service runs the configured agents plus the RL champions the MLflow registry holds
(serving/champions.py); the demo prints them (with model versions) and records them in
metrics.json. RL agents whose five-name universe is not in the replayed symbols abstain.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from backtest.engine import BacktestConfig, ffill_close
from backtest.metrics import summary
from backtest.summary import RunSummary, SeriesRow, benchmark_rows, build_summary, day_of, rounded, trade_stats
from cluster.fate import watch_driver
from cluster.trading_loop import ReplayConfig, deploy_decision_service, free_port, prepare, run_replay
from market.accounting import CostModel


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


def run_demo(config: ReplayConfig) -> dict:
    """The embedded demo: start local Ray, serve, replay, shut everything down, write the report.
    Ray's and Serve's logs go to out/ray.log unless `config.verbose`."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "journal.sqlite"
    for stale in [*out.glob("journal.sqlite*"), *out.glob("decision_state.sqlite*")]:
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
                                          config.max_gross, served=served, state_path=out / "decision_state.sqlite")
            step_done("deploy")
            progress_line(f"replaying {config.days} trading days ({config.venue} broker)…")
            stats = run_replay(config, url, journal, progress=config.progress)
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


def demo_summary(journal_path: Path, config: ReplayConfig, metrics: dict) -> RunSummary:
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
    plot_equity(days, equity, bench, out / "equity.png", metrics)
    pl.DataFrame({"date": days.astype("datetime64[D]"), "equity": equity, "benchmark": bench}).write_csv(
        out / "equity.csv")
    return metrics


def plot_equity(days: np.ndarray, equity: np.ndarray, bench: np.ndarray, path: Path,
                metrics: dict | None = None) -> None:
    """Cumulative return against KOSPI200 (the run's headline metrics in the title), drawdown below."""
    import matplotlib
    from matplotlib.figure import Figure

    from backtest.report import chart_style, date_axis, headline, percent_axis

    with matplotlib.rc_context(chart_style()):
        fig = Figure(figsize=(12, 6.5), layout="constrained")
        ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        x = days.astype("datetime64[D]").astype(object)
        ax1.plot(x, (equity / equity[0] - 1) * 100, label="strategy (net of costs)", color="#1f4e99", lw=1.8,
                 zorder=3)
        ok = np.isfinite(bench)
        if ok.any():
            first = bench[ok][0]
            ax1.plot(np.array(x)[ok], (bench[ok] / first - 1) * 100, label="KOSPI200", color="#e67e22", lw=1.2)
        ax1.axhline(0, color="black", lw=0.5)
        ax1.set_ylabel("cumulative return")
        percent_axis(ax1)
        ax1.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, frameon=False)  # above the plot
        ax1.grid(alpha=0.3)
        title = "kis-ray-trader demo: equity vs KOSPI200"
        if metrics:
            title += f"\n{headline(metrics)}  ·  final ₩{metrics.get('final_equity', equity[-1]):,.0f}"
        ax1.set_title(title, fontsize=11, pad=24)
        dd = equity / np.maximum.accumulate(equity) - 1
        ax2.fill_between(x, dd * 100, 0, color="#c0392b", alpha=0.45)
        ax2.set_ylabel("drawdown")
        percent_axis(ax2)
        date_axis(ax2)
        ax2.grid(alpha=0.3)
        fig.savefig(path, dpi=110)
