"""How much do the headline rows move with the regime detector's seed? (the only random part)

    /work/main/.venv/bin/python -m reports.strategies_seeds [--seeds 0 1 2 3 4] [--only NAME ...]

For each seed of the HMM regime detector (RegimeDetector(seed=s): its EM restarts), the rows of
reports/strategies_portfolio.py that depend on the regime are re-run — one continuous account
2015-01-02 → 2023-12-28, metrics on 2017-01-02 → 2023-12-28 — and printed as mean ± std over
the seeds (a markdown table). The technical and equal-weight books do not use the regime.
"""
from __future__ import annotations

import argparse

import numpy as np

from backtest.engine import BacktestConfig, run_backtest
from market.data import DataPaths, index_close, load_index, load_panel
from reports.strategies_portfolio import DEFAULT_ENSEMBLE, END, START, TEST_START, candidates, metrics_of
from strategies.factors import FactorEngine
from strategies.fundamentals import Fundamentals, MarketCaps
from strategies.regime import RegimeDetector, RegimeSource
from strategies.selection import sectors

DEFAULT_ROWS = (DEFAULT_ENSEMBLE, "factor", "regime-factor", "ens: shipped (ERC + CVaR + hard stops)",
                "ens: the default pipeline (DecisionConfig defaults)", "ens: combined weights, no risk",
                "ens: top-10 dropout-2 score-weighted, no risk", "ens: eta 50, dropout-2 score-weighted + overlay")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args(argv)
    names = args.only or list(DEFAULT_ROWS)
    paths = DataPaths()
    panel = load_panel(paths, end=END)
    engine = FactorEngine(Fundamentals.load(paths), MarketCaps.load(paths))
    sector_map = sectors(paths)
    kospi_all = index_close(panel.dates, load_index(paths.path("index"), "KOSPI200"))
    results: dict[str, list[dict]] = {n: [] for n in names}
    for seed in args.seeds:
        regime = RegimeSource.load(paths, "KOSPI200", RegimeDetector(seed=seed), end=END)
        _ = regime.path
        facs = candidates(engine, regime, sector_map)
        for name in names:
            res = run_backtest(facs[name](), panel, START, END, BacktestConfig(min_trade_value=200_000))
            d = res.dates.astype("datetime64[D]")
            keep = d[1:] >= np.datetime64(TEST_START, "D")
            first = int(np.flatnonzero(keep)[0])
            lo = int(np.searchsorted(panel.dates, d[1 + first])) - 1
            bench = kospi_all[lo:lo + keep.sum() + 1]
            m = metrics_of(res.returns[keep], bench)
            results[name].append(m)
            print(seed, name, {k: round(m[k], 4) for k in ("annual_return", "sharpe", "max_drawdown")}, flush=True)
    print(f"\nHMM seeds {args.seeds}: mean ± std over seeds, test span {TEST_START} → {END}\n")
    print("| strategy | annual return | Sharpe | max drawdown | IR vs KOSPI200 |")
    print("|---|---|---|---|---|")
    for name, ms in results.items():
        print(f"| {name} | {mean_std(ms, 'annual_return', True)} | {mean_std(ms, 'sharpe', False)} | "
              f"{mean_std(ms, 'max_drawdown', True)} | {mean_std(ms, 'information_ratio', False)} |")


def mean_std(runs: list[dict], key: str, pct: bool) -> str:
    v = np.array([m[key] for m in runs])
    sd = v.std(ddof=1) if len(v) > 1 else float("nan")
    return f"{100 * v.mean():.1f}% ± {100 * sd:.1f}" if pct else f"{v.mean():.2f} ± {sd:.2f}"


if __name__ == "__main__":
    main()
