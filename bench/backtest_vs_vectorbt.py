"""Benchmark: the backtest engine vs vectorbt on the same 10-year, 100-symbol daily weights.

Both get the same target weights (decided at the close of t, traded at the open of t+1), the
same commission on both sides, whole shares, and no sell tax (vectorbt cannot charge a
sell-side-only tax, so the engine's tax is switched off for the comparison). vectorbt gets
target-percent orders at the next open with cash sharing and sells first (`call_seq='auto'`).
The remaining differences in final equity come from what only the engine models: the KRX
tick grid, daily price limits (locked days), whole-won commission and its 1% cash buffer.

Run:  /work/main/.venv/bin/python bench/backtest_vs_vectorbt.py [--rebalance daily|weekly|monthly]
Prints both times (after a warm-up run of each, so numba compilation is not counted), their
ratio, and the difference in final equity. Needs the `bench` extra (`pip install -e ".[bench]"`).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from backtest.engine import BacktestConfig, rebalance_mask, run_backtest  # noqa: E402
from market.accounting import CostModel  # noqa: E402
from market.data import load_panel  # noqa: E402

COMMISSION = 0.00015
CASH = 1_000_000_000


def weights_for(panel, rebalance: str) -> np.ndarray:
    """A 12-1 month momentum, top-20 equal weight among symbols with a bar, decided on the
    rebalance bars; NaN rows elsewhere (no decision: both engines hold)."""
    c = panel.close
    mom = np.full_like(c, np.nan)
    mom[252:] = c[231:-21] / c[:-252] - 1.0
    mask = rebalance_mask(panel.dates, rebalance, 0)
    w = np.full_like(c, np.nan)
    for t in np.flatnonzero(mask):
        score = np.where(np.isfinite(mom[t]) & np.isfinite(c[t]), mom[t], -np.inf)
        top = np.argsort(-score)[:20]
        top = top[np.isfinite(score[top])]
        w[t] = 0.0
        if len(top):
            w[t, top] = 0.98 / len(top)
    return w


def run_vectorbt(panel, w):
    import pandas as pd
    import vectorbt as vbt

    idx = pd.DatetimeIndex(panel.dates.astype("datetime64[ns]"))
    close = pd.DataFrame(panel.close, index=idx).ffill()
    open_ = pd.DataFrame(panel.open, index=idx)
    # the decision at t is an order at t+1's open; NaN size = no order that bar
    size = pd.DataFrame(np.vstack([np.full((1, w.shape[1]), np.nan), w[:-1]]), index=idx)
    size = size.where(open_.notna() & size.notna().any(axis=1).values[:, None])
    pf = vbt.Portfolio.from_orders(close, size=size, size_type="targetpercent", price=open_.fillna(close),
                                   fees=COMMISSION, size_granularity=1.0, init_cash=CASH, cash_sharing=True,
                                   group_by=True, call_seq="auto", freq="1D")
    return float(pf.value().iloc[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rebalance", default="daily", choices=["daily", "weekly", "monthly"])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    t = time.perf_counter()
    panel = load_panel(start="2014-01-01", end="2023-12-31")
    # the 100 symbols with the most bars
    keep = np.argsort(-np.isfinite(panel.close).sum(axis=0), kind="stable")[:100]
    panel = panel.select([panel.symbols[j] for j in sorted(keep)])
    load_s = time.perf_counter() - t
    w = weights_for(panel, args.rebalance)
    cfg = BacktestConfig(cash=CASH, costs=CostModel(commission_rate=COMMISSION, slippage_range_frac=0.0),
                         sell_tax=False, rebalance=args.rebalance)
    w_engine = np.nan_to_num(w)  # the engine only reads the decision rows (same schedule)

    def ours():
        return run_backtest(w_engine, panel, config=cfg)

    try:
        import vectorbt  # noqa: F401
    except ImportError as exc:
        print(f"vectorbt is not importable ({exc}); install the bench extra", file=sys.stderr)
        return 1

    res = ours()
    vbt_eq = run_vectorbt(panel, w)  # warm-up: numba compiles here
    ours_t, vbt_t, ours_cpu, vbt_cpu = [], [], [], []
    for _ in range(args.repeat):
        t, c = time.perf_counter(), time.process_time()
        res = ours()
        ours_t.append(time.perf_counter() - t)
        ours_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        vbt_eq = run_vectorbt(panel, w)
        vbt_t.append(time.perf_counter() - t)
        vbt_cpu.append(time.process_time() - c)
    o, v = min(ours_t), min(vbt_t)
    print(f"data: {len(panel)} bars x {len(panel.symbols)} symbols "
          f"({panel.dates[0]}..{panel.dates[-1]}), loaded in {load_s:.2f}s; rebalance {args.rebalance}; "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"engine   : {o:.3f}s wall, {min(ours_cpu):.3f}s CPU (best of {args.repeat}), {len(res.fills)} fills, "
          f"final equity {res.equity[-1]:,.0f}")
    print(f"vectorbt : {v:.3f}s wall, {min(vbt_cpu):.3f}s CPU (best of {args.repeat}), final equity {vbt_eq:,.0f}")
    print(f"time ratio engine/vectorbt: {o / v:.2f}x wall, {min(ours_cpu) / min(vbt_cpu):.2f}x CPU")
    # what the KRX tick grid costs: adjusted opens are off the grid, buys round up, sells down
    f = res.fills
    t_idx = np.searchsorted(panel.dates, f["date"].to_numpy().astype("datetime64[D]"))
    col = {s: j for j, s in enumerate(panel.symbols)}
    j_idx = np.array([col[s] for s in f["symbol"].to_list()])
    opens = panel.open[t_idx, j_idx]
    sign = np.where(f["side"].to_numpy() == "buy", 1.0, -1.0)
    rounding = float(np.sum(sign * (f["price"].to_numpy() - opens) * f["qty"].to_numpy()))
    print(f"tick-grid rounding paid by the engine: {rounding:,.0f} KRW; traded value "
          f"{res.traded_value.sum():,.0f} KRW; limit-locked or no-bar orders skipped by the engine")
    print(f"final equity difference: {res.equity[-1] - vbt_eq:+,.0f} KRW "
          f"({(res.equity[-1] / vbt_eq - 1) * 100:+.3f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
