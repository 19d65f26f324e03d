"""The embedded demo: local Ray + Serve + actors replay the last year of shipped data.

Starts an embedded local Ray, deploys the decision service and replays the bars through the
trading loop (cluster/trading_loop.py) against a venue (paper by default), then writes
equity.png and metrics.json from the journal. The service runs the configured agents plus the RL champions the MLflow registry holds
(serving/champions.py); the demo prints them (with model versions) and records them in
metrics.json. RL agents whose five-name universe is not in the replayed symbols abstain.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from backtest.metrics import summary
from cluster.fate import watch_driver
from cluster.trading_loop import ReplayConfig, deploy_decision_service, free_port, run_replay


def run_demo(config: ReplayConfig) -> dict:
    """The embedded demo: start local Ray, serve, replay, shut everything down, write the report."""
    import ray
    from ray import serve

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    journal = out / "journal.sqlite"
    for stale in [*out.glob("journal.sqlite*"), *out.glob("decision_state.sqlite*")]:
        stale.unlink()
    t0 = time.time()
    # embedded and private: never attach to a cluster that `ray start` recorded on this machine
    from serving.champions import plan

    served = plan(config.agents, rl_champions=config.rl_champions, models=config.models)
    print(served.summary(), flush=True)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    watch_driver()  # a SIGKILLed demo takes its Ray processes with it
    try:
        url = deploy_decision_service(config.agents, config.port or free_port(), config.max_position,
                                      config.max_gross, served=served, state_path=out / "decision_state.sqlite")
        stats = run_replay(config, url, journal, progress=config.progress)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
    metrics = write_report(journal, out, stats)
    metrics["agents"] = served.describe()
    metrics["seconds"] = round(time.time() - t0, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


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
