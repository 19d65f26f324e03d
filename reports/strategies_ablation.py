"""Does the risk layer earn its keep? One continuous backtest per variant of the risk step.

    /work/main/.venv/bin/python -m reports.strategies_ablation [--book combined|dropout] [variant ...]

The book: the registry's ensemble members (regime-factor, technical, equal-weight), weekly,
regime-weighted online combination (MetaEnsemble defaults); `--book dropout` adds the top-10
TopkDropout construction (score-weighted, 2 swaps, 1% band, 30% turnover budget). Only the risk
step changes between variants:
  none        — no risk layer (the book as constructed)
  caps        — RiskOverlay with caps only: 15% per name, 30% per KSIC industry
  caps+dd     — caps + drawdown scaling (−10% → half exposure at −25%, peak decaying 1%/decision)
  caps+vol    — caps + 15% volatility target, floor 0.5 gross
  caps+cvar   — caps + 3% daily CVaR99 budget, floor 0.5 gross
  overlay     — caps + vol target + drawdown scaling (the RiskOverlay the report uses)
  erc         — the old RiskModel: equal risk contribution over every held name, 3% CVaR99
                budget, hard drawdown stops (REDUCING at −10%, HALTED at −20%)
2017-01-02 → 2023-12-28, costs as in reports/strategies_backtest.py. Prints a markdown table:
each variant's return and drawdown, and against `none`: return given up and drawdown saved.
"""
from __future__ import annotations

import argparse

import numpy as np

import training.strategies  # noqa: F401  (RL members join the ensemble when a champion exists)
from backtest.engine import BacktestConfig, run_backtest
from market.data import DataPaths, load_panel
from strategies.baselines import EqualWeightRebalanced
from strategies.construction import TopkDropout
from strategies.ensemble import EnsembleAgent
from strategies.factor_model import FactorAgent
from strategies.factors import FactorEngine
from strategies.fundamentals import Fundamentals, MarketCaps
from strategies.pipeline import DecisionConfig
from strategies.regime import RegimeDetector, RegimeSource
from strategies.risk import RiskModel, RiskOverlay
from strategies.selection import sectors
from strategies.technical import TechnicalAgent

OFF = {"vol_target": None, "cvar_budget": None, "dd_start": 0.98, "dd_full": 0.99}


def risk_variants(sector_map: dict) -> dict:
    caps = {"max_position": 0.15, "sector_cap": 0.3, "sectors": sector_map, "floor": 0.5}
    return {
        "none": None,
        "caps": RiskOverlay(**{**caps, **OFF}),
        "caps+dd": RiskOverlay(**{**caps, **OFF, "dd_start": 0.10, "dd_full": 0.25}),
        "caps+vol": RiskOverlay(**{**caps, **OFF, "vol_target": 0.15}),
        "caps+cvar": RiskOverlay(**{**caps, **OFF, "cvar_budget": 0.03}),
        "overlay": RiskOverlay(**{**caps, "vol_target": 0.15}),
        "erc": RiskModel(),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--book", choices=("combined", "dropout"), default="combined")
    ap.add_argument("variants", nargs="*")
    args = ap.parse_args(argv)
    paths = DataPaths()
    panel = load_panel(paths, end="2023-12-28")
    engine = FactorEngine(Fundamentals.load(paths), MarketCaps.load(paths))
    regime = RegimeSource.load(paths, "KOSPI200", RegimeDetector(seed=0), end="2023-12-28")
    _ = regime.path
    variants = risk_variants(sectors(paths))
    names = args.variants or list(variants)
    construction = (TopkDropout(k=10, n_drop=2, weighting="score", band=0.01, max_turnover=0.3)
                    if args.book == "dropout" else None)
    rows = {}
    for name in names:
        members = {"regime-factor": FactorAgent(engine, regime=regime, name="regime-factor"),
                   "technical": TechnicalAgent(), "equal-weight": EqualWeightRebalanced(name="equal-weight")}
        agent = EnsembleAgent(members, regime=regime, config=DecisionConfig(construction=construction),
                              risk=variants[name])
        res = run_backtest(agent, panel, "2017-01-02", "2023-12-28", BacktestConfig(min_trade_value=200_000))
        m = res.metrics()
        m["mean_exposure"] = float(res.exposure.mean())
        rows[name] = m
        print(name, {k: round(m[k], 4) for k in ("annual_return", "sharpe", "max_drawdown")}, flush=True)
    base = rows.get("none")
    print(f"\nbook: {args.book}\n")
    print("| risk step | annual return | volatility | Sharpe | max drawdown | turnover | mean exposure "
          "| return given up | drawdown saved |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in rows.items():
        cost = saved = np.nan
        if base is not None:
            cost = base["annual_return"] - m["annual_return"]
            saved = m["max_drawdown"] - base["max_drawdown"]
        print(f"| {name} | {100 * m['annual_return']:.1f}% | {100 * m['annual_volatility']:.1f}% | "
              f"{m['sharpe']:.2f} | {100 * m['max_drawdown']:.1f}% | {m['turnover']:.2f} | "
              f"{m['mean_exposure']:.2f} | {100 * cost:.1f} pts/yr | {100 * saved:.1f} pts |")


if __name__ == "__main__":
    main()
