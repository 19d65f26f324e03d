"""Paper and sim venues give the same orders, fills, cash and positions on the same real bars.

The sim venue trades through the real KIS client (REST over a socket) against the local
KIS-protocol server; the paper venue fills locally. Both must agree to the won.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from broker.base import OrderRequest, OrderStatus
from broker.venue import PaperVenue, open_venue
from market import krx
from market.accounting import CostModel
from market.data import DataPaths, load_panel

SYMBOLS = ["005930", "000660", "035420", "051910"]


@pytest.fixture(scope="module")
def panel():
    return load_panel(DataPaths(), symbols=SYMBOLS, start="2023-03-02", end="2023-04-05")


def _bars(panel, i):
    return {s: (float(panel.open[i, j]), float(panel.high[i, j]), float(panel.low[i, j]), float(panel.close[i, j]))
            for j, s in enumerate(panel.symbols) if not np.isnan(panel.close[i, j])}


def _orders_for(day_index, panel, i, positions):
    """A deterministic script: market and limit buys, sells of what is held, an over-sized buy
    (cut by cash), a sell of more than held (refused), a limit off the tick grid (refused)."""
    d = panel.date(i)
    out = []
    for j, s in enumerate(panel.symbols):
        close = float(panel.close[i, j])
        if np.isnan(close):
            continue
        tag = f"{d:%Y%m%d}-{s}"
        k = (day_index + j) % 5
        if k == 0:
            out.append(OrderRequest(f"{tag}-mb", s, "buy", 3 + j))
        elif k == 1:
            px = int(krx.round_to_tick(close * 0.99, d, direction="down"))
            out.append(OrderRequest(f"{tag}-lb", s, "buy", 2, "limit", px))
        elif k == 2 and positions.get(s):
            out.append(OrderRequest(f"{tag}-ms", s, "sell", max(1, positions[s] // 2)))
        elif k == 3 and positions.get(s):
            px = int(krx.round_to_tick(close * 1.01, d, direction="up"))
            out.append(OrderRequest(f"{tag}-ls", s, "sell", positions[s], "limit", px))
        elif k == 4:
            out.append(OrderRequest(f"{tag}-big", s, "buy", 400))           # more than the cash: cut
            out.append(OrderRequest(f"{tag}-over", s, "sell", positions.get(s, 0) + 5))   # refused
            out.append(OrderRequest(f"{tag}-tick", s, "buy", 1, "limit", int(close) + 1 if close > 2000 else 2001))
    return out


def _strip(fill):
    return dataclasses.replace(fill, broker_order_id="", fill_id="")  # venue-specific identities


def test_sim_venue_matches_paper_venue_to_the_won(panel):
    costs = CostModel(slippage_ticks=1.0)
    cal = panel.calendar
    paper = PaperVenue(5_000_000, costs, cal)
    sim = open_venue("sim", 5_000_000, costs, cal)
    try:
        n = len(panel)
        assert n >= 20
        paper_fills, sim_fills, statuses = [], [], []
        for i in range(n):
            bars = _bars(panel, i)
            paper_fills += paper.advance(panel.date(i), bars)
            new = sim.advance(panel.date(i), bars)
            sim.broker.confirm_fills(new)  # what the loop does once the journal has them
            sim_fills += new
            assert paper.broker.cash() == sim.broker.cash(), panel.date(i)
            assert paper.broker.positions() == sim.broker.positions(), panel.date(i)
            if i == n - 1:
                break
            for req in _orders_for(i, panel, i, paper.broker.positions()):
                a, b = paper.broker.submit(req), sim.broker.submit(req)
                statuses.append((req.client_order_id, a.status, b.status))
        assert [s[1] for s in statuses] == [s[2] for s in statuses]
        assert any(s[1] is OrderStatus.REJECTED for s in statuses)
        assert len(paper_fills) > 20
        assert [_strip(f) for f in paper_fills] == [_strip(f) for f in sim_fills]
        assert any(f.tax > 0 for f in sim_fills) and any(f.side.value == "sell" for f in sim_fills)
        # final order states agree as well (filled / partial / expired), looked up by client id
        for cid, _, _ in statuses:
            a, b = paper.broker.find_order(cid), sim.broker.find_order(cid)
            assert (a.status, a.filled_qty) == (b.status, b.filled_qty), cid
        assert paper.broker.cash() == sim.broker.cash()
    finally:
        sim.close()
        paper.close()
