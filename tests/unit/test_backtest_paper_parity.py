"""One accounting: the backtester and the PaperBroker, given the same targets on the same bars,
produce the same fills, fees, tax and cash, day by day."""
import numpy as np

from backtest.engine import BacktestConfig, ffill_close, run_backtest
from broker.base import OrderRequest, Side
from broker.paper import PaperBroker
from market.accounting import BUY, CostModel, orders_for_targets
from market.calendar import TradingCalendar
from market.data import load_panel


def test_engine_and_paper_broker_agree_fill_for_fill():
    # 2018 covers the Samsung split suspension (2018-04-30..05-03: missing bars), a symbol that
    # starts mid-span history (068270 from 2018-02-09) and the pre-2023 tick table
    panel = load_panel(symbols=["005930", "000660", "035420", "051910", "068270"], start="2018-03-01",
                       end="2018-07-31")
    rng = np.random.default_rng(7)
    w = rng.dirichlet(np.ones(5), len(panel)) * 0.95
    w[rng.random(len(panel)) < 0.3] = 0.0  # some days flat: full exits and re-entries
    costs = CostModel(slippage_ticks=1.0, slippage_range_frac=0.05)
    cash0 = 300_000_000
    res = run_backtest(w, panel, config=BacktestConfig(cash=cash0, costs=costs))

    broker = PaperBroker(cash0, costs, TradingCalendar(panel.dates))
    close_ff = ffill_close(panel.close)
    sym = panel.symbols
    paper_fills, paper_cash = [], []
    for t in range(len(panel)):
        day = panel.date(t)
        bars = {s: (panel.open[t, j], panel.high[t, j], panel.low[t, j], panel.close[t, j])
                for j, s in enumerate(sym) if np.isfinite(panel.close[t, j])}
        for f in broker.on_bar(day, bars):
            paper_fills.append((day, f.symbol, "buy" if f.side is Side.BUY else "sell", f.qty, f.price,
                                f.commission, f.tax))
        paper_cash.append(broker.cash())
        if t < len(panel) - 1:
            held = np.array([broker.positions().get(s, 0) for s in sym])
            idx, side, qty = orders_for_targets(w[t], held, broker.cash(), close_ff[t])
            for k, (j, sd, q) in enumerate(zip(idx, side, qty)):
                broker.submit(OrderRequest(f"{t}-{k}", sym[j], Side.BUY if sd == BUY else Side.SELL, int(q)))

    engine_fills = res.fills.rows()
    assert len(engine_fills) > 100
    assert engine_fills == paper_fills
    assert res.cash.tolist() == paper_cash
    assert res.holdings[-1].tolist() == [broker.positions().get(s, 0) for s in sym]
