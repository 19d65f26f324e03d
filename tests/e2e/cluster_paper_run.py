"""A real paper-trading run that writes a journal for the dashboard tests: the technical agent
decides at each close, the PaperBroker fills at the next bar under the one accounting, and the
journal records intents, answers, fills, end-of-day accounts (with the KOSPI200 close) and
decisions (targets, agent weights, historical VaR/CVaR of the targets)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np

from broker.base import OrderRequest, OrderStatus, Side
from broker.journal import Journal
from broker.paper import PaperBroker
from market.accounting import BUY, orders_for_targets
from market.data import DataPaths, index_close, load_index, load_panel
from strategies.technical import TechnicalAgent

SYMBOLS = ["005930", "000660", "035420", "005380", "051910", "006400", "035720", "068270"]


def historical_var(window_close: np.ndarray, weights: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """One-day VaR and CVaR (fractions of equity) of `weights` over the window's daily returns."""
    rets = np.diff(window_close, axis=0) / window_close[:-1]
    port = np.nan_to_num(rets) @ weights
    if port.size == 0:
        return 0.0, 0.0
    cut = np.quantile(port, 1 - level)
    tail = port[port <= cut]
    return float(max(0.0, -cut)), float(max(0.0, -tail.mean())) if tail.size else 0.0


def paper_run(journal_path: Path, start: str = "2023-06-01", end: str = "2023-09-29",
              cash: int = 100_000_000) -> dict:
    panel = load_panel(symbols=SYMBOLS, start="2022-06-01", end=end)
    kospi200 = index_close(panel.dates, load_index(DataPaths().path("index"), "KOSPI200"))
    agent = TechnicalAgent(top_k=4)
    broker = PaperBroker(cash)
    journal = Journal(journal_path)
    first = panel.index_of(start)
    weights = np.zeros(len(panel.symbols))
    for t in range(first, len(panel)):
        day = panel.date(t)
        bars = {s: tuple(float(getattr(panel, f)[t, j]) for f in ("open", "high", "low", "close"))
                for j, s in enumerate(panel.symbols) if np.isfinite(panel.close[t, j])}
        for fill in broker.on_bar(day, bars):
            journal.record_fill(fill)
        for order in list(journal.query("SELECT client_order_id FROM orders WHERE state='open'")):
            journal.record_order(broker.find_order(order["client_order_id"]))
        window = panel.rows(t + 1 - agent.lookback, t + 1)   # only what is known at day's close
        weights = agent.target_weights(window)
        holdings = np.array([broker.positions().get(s, 0) for s in panel.symbols])
        idx, side, qty = orders_for_targets(weights, holdings, broker.cash(), panel.close[t])
        decided_at = dt.datetime.combine(day, dt.time(15, 30))
        for k, (i, sd, q) in enumerate(zip(idx, side, qty)):
            req = OrderRequest(f"{day:%Y%m%d}-{k:03d}", panel.symbols[i], Side.BUY if sd == BUY else Side.SELL,
                               int(q))
            journal.record_intent(req, decided_at)
            journal.record_order(broker.submit(req))
        var, cvar = historical_var(window.close, weights)
        journal.record_account(day, broker.cash(), broker.mark_to_market(), broker.positions(),
                               None if np.isnan(kospi200[t]) else float(kospi200[t]))
        journal.record_decision(day, {
            "targets": {s: float(w) for s, w in zip(panel.symbols, weights) if w > 0},
            "agent_weights": {agent.name: 1.0},
            "risk": {"var": var, "cvar": cvar, "budget": 0.02, "state": "ACTIVE"},
        })
    open_left = [o for o in broker.open_orders() if o.status is OrderStatus.OPEN]
    journal.close()
    return {"days": len(panel) - first, "open_orders": len(open_left), "equity": broker.mark_to_market(),
            "cash": broker.cash()}
