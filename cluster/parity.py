"""`trader check-parity`: what is backtested is what is served, order for order.

The same span, the same universe and the same starting account go through
* the backtester: `run_backtest` of the strategy's `EnsembleAgent` (strategies/pipeline.py in
  process), next-bar fills by the one accounting, the loop's rebalance band; and
* the real served loop: the Serve app over HTTP (Ensemble → AgentActors → Risk, the decision state
  in its actor), the MarketState and Execution actors, the PaperBroker, the SQLite journal.
Then every decision day's sized targets and every order (decision day, symbol, side, shares) are
compared. The report ends with `differences: targets N, orders M`; 0 and 0 is parity.

What is compared: targets within 1e-9 on each decision day (a day decided on one side only counts
as a difference), orders exactly. A single strategy (not an ensemble) is compared as the core runs
it in the service: an ensemble of one, risk-sized.
RL members are left out on both sides (they need a model registry; the parity of the core does
not depend on which members it combines).
"""
from __future__ import annotations

import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from market.data import DataPaths, index_close, load_index, load_panel
from strategies import defaults as D

TOLERANCE = 1e-9


@dataclass
class ParityConfig:
    start: str
    end: str
    strategy: str = "ensemble"
    symbols: list[str] | None = None
    n_symbols: int = 10
    cash: int = D.STARTING_CASH
    paths: DataPaths = field(default_factory=DataPaths)
    progress: bool = False


@dataclass
class ParityReport:
    bars: int
    symbols: list[str]
    backtest_decisions: int
    served_decisions: int
    backtest_orders: int
    served_orders: int
    target_differences: list[str]
    order_differences: list[str]
    backtest_cash: int
    served_cash: int

    @property
    def ok(self) -> bool:
        return not self.target_differences and not self.order_differences

    def lines(self, limit: int = 10) -> list[str]:
        out = [f"{self.bars} bars, {len(self.symbols)} symbols ({', '.join(self.symbols)})",
               f"backtest: {self.backtest_decisions} decisions, {self.backtest_orders} orders, "
               f"final cash {self.backtest_cash:,} KRW",
               f"served:   {self.served_decisions} decisions, {self.served_orders} orders, "
               f"final cash {self.served_cash:,} KRW"]
        out += [f"  target difference: {d}" for d in self.target_differences[:limit]]
        out += [f"  order difference: {d}" for d in self.order_differences[:limit]]
        out.append(f"differences: targets {len(self.target_differences)}, orders {len(self.order_differences)}")
        return out


def _members(strategy: str, ctx):
    from strategies.ensemble import EnsembleAgent
    from strategies.registry import build, members_of, regime_source

    if strategy == "ensemble":
        return build("ensemble", ctx), members_of(strategy)
    return EnsembleAgent({strategy: build(strategy, ctx)}, regime=regime_source(ctx, missing_ok=True)), (strategy,)


def span_panel(config: ParityConfig, lookback: int):
    """(panel, first decision row, benchmark): `lookback` bars before the first decision, through end."""
    from cluster.trading_loop import pick_universe

    full = load_panel(config.paths, end=config.end)
    s = int(np.searchsorted(full.dates, np.datetime64(config.start, "D")))
    if s < 1 or s >= len(full):
        raise ValueError(f"--start {config.start} is outside the data ({full.date(0)}..{full.date(len(full) - 1)})")
    first = s - 1  # the decision at the close before the first traded bar
    if first + 1 < lookback:
        raise ValueError(f"--start {config.start} leaves fewer than the {lookback} bars of history a decision needs")
    symbols = config.symbols or pick_universe(full, first, config.n_symbols, history=120)
    panel = full.select(symbols).rows(first - lookback + 1, len(full))
    bench = index_close(panel.dates, load_index(config.paths.path("index"), "KOSPI200"))
    return panel, lookback - 1, bench


def run_parity(config: ParityConfig, decide_url: str, workdir: Path) -> ParityReport:
    """Both sides on the running Ray; `decide_url` serves `members_of(config.strategy)`."""
    from backtest.engine import BacktestConfig, run_backtest
    from broker.journal import Journal
    from cluster.trading_loop import ReplayConfig, run_replay, service_lookback
    from strategies.registry import StrategyContext

    ctx = StrategyContext(paths=config.paths, rl_members=False)
    agent, _ = _members(config.strategy, ctx)
    lookback = service_lookback(decide_url)
    if agent.lookback != lookback:
        raise ValueError(f"the service asks for {lookback} bars, the backtested strategy for {agent.lookback}: "
                         "they do not serve the same members")
    panel, first_row, bench = span_panel(config, lookback)

    # the backtest: fitted on the rows before the first traded bar, as run_backtest always does
    bt = run_backtest(agent, panel, start=panel.date(first_row + 1), end=panel.date(len(panel) - 1),
                      config=BacktestConfig(cash=config.cash, rebalance_band=D.REBALANCE_BAND))

    # the served loop over the same panel
    run_id = f"parity{uuid.uuid4().hex[:8]}"
    journal_path = workdir / f"{run_id}.sqlite"
    replay = ReplayConfig(out=workdir, cash=config.cash, venue="paper", lookback=lookback, run_id=run_id,
                          paths=config.paths, progress=config.progress)
    stats = run_replay(replay, decide_url, journal_path, progress=config.progress,
                       panel_override=(panel, first_row, bench))
    journal = Journal(journal_path)
    try:
        decisions = journal.query("SELECT day, payload FROM decisions ORDER BY day")
        orders = journal.query("SELECT client_order_id, symbol, side, qty FROM orders")
    finally:
        journal.close()

    import json

    symbols = list(panel.symbols)
    served_targets = {}
    for row in decisions:
        payload = json.loads(row["payload"])
        if payload.get("rebalance", True):
            served_targets[row["day"]] = np.array([payload["targets"].get(s, 0.0) for s in symbols])
    bt_targets = {str(d): bt.targets[i] for i, d in enumerate(bt.dates.astype("datetime64[D]"))
                  if np.isfinite(bt.targets[i]).all()}
    target_diffs = []
    for day in sorted(set(served_targets) | set(bt_targets)):
        a, b = bt_targets.get(day), served_targets.get(day)
        if a is None or b is None:
            target_diffs.append(f"{day}: decided by the {'served loop' if a is None else 'backtest'} only")
            continue
        worst = int(np.argmax(np.abs(a - b)))
        if abs(a[worst] - b[worst]) > TOLERANCE:
            target_diffs.append(f"{day}: {symbols[worst]} backtest {a[worst]:.6f}, served {b[worst]:.6f}")

    def key(day: str, symbol: str, side: str, qty: int) -> tuple:
        return (day, symbol, side, int(qty))
    assert bt.orders is not None  # run_backtest always records them
    bt_orders = Counter(key(str(d), s, sd, q) for d, s, sd, q in
                        bt.orders.select("date", "symbol", "side", "qty").iter_rows())
    served_orders: Counter[tuple] = Counter()
    for o in orders:
        stamp = o["client_order_id"][len(run_id) + 1:].split("-")[0]  # <run>-<YYYYMMDD>-<symbol>-<B|S>
        day = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:]}"
        served_orders[key(day, o["symbol"], o["side"], o["qty"])] += 1
    order_diffs = [f"{k[0]} {k[2]} {k[3]} {k[1]}: backtest {bt_orders[k]}×, served {served_orders[k]}×"
                   for k in sorted(set(bt_orders) | set(served_orders)) if bt_orders[k] != served_orders[k]]
    return ParityReport(bars=len(panel) - 1 - first_row, symbols=symbols,
                        backtest_decisions=len(bt_targets), served_decisions=len(served_targets),
                        backtest_orders=sum(bt_orders.values()), served_orders=sum(served_orders.values()),
                        target_differences=target_diffs, order_differences=order_diffs,
                        backtest_cash=int(bt.cash[-1]), served_cash=int(stats["cash"]))


def check_parity(config: ParityConfig) -> ParityReport:
    """The whole check on an embedded local Ray (the served side deploys its own app)."""
    import ray
    from ray import serve

    from cluster.trading_loop import deploy_decision_service, free_port
    from serving.champions import ServedAgents
    from strategies.registry import members_of

    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            members = list(members_of(config.strategy))
            url = deploy_decision_service(members, free_port(), served=ServedAgents(agents=members),
                                          state_path=Path(tmp) / "decision_state.sqlite", name="parity")
            return run_parity(config, url, Path(tmp))
        finally:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()
