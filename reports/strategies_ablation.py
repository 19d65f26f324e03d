"""Which part of the risk model costs the ensemble its return? One continuous backtest per variant.

    /work/main/.venv/bin/python -m reports.strategies_ablation [variant ...]

Variants of the registry's `ensemble` (regime-factor + technical + equal-weight, weekly):
  default  — RiskModel() as shipped (ERC, 3% daily CVaR99 budget, drawdown protection)
  noprot   — the protection thresholds moved out of reach (97% / 98% drawdown)
  nocvar   — as noprot and a CVaR budget of 50% (never binds): ERC + caps only
  none     — no risk model (the combined weights as they are)
2017-01-02..2023-12-28, same costs as reports/strategies_backtest.py. Prints one line per variant
with the realised metrics and the agent's own cost-free shadow equity.
"""
from __future__ import annotations

import sys

import training.strategies  # noqa: F401  (RL members join the ensemble when a champion exists)
from backtest.engine import BacktestConfig, run_backtest
from market.data import DataPaths, load_panel
from strategies.registry import build
from strategies.risk import DrawdownProtection, RiskModel


def variant(name: str):
    agent = build("ensemble")
    off = DrawdownProtection(reduce_at=0.97, halt_at=0.98, resume_below=0.5)
    if name == "noprot":
        agent.risk = RiskModel(protection=off)
    elif name == "nocvar":
        agent.risk = RiskModel(cvar_budget=0.5, protection=off)
    elif name == "none":
        agent.risk = None
    elif name != "default":
        raise SystemExit(f"unknown variant {name!r} (default | noprot | nocvar | none)")
    return agent


def main(argv=None):
    names = (argv if argv is not None else sys.argv[1:]) or ["default", "noprot", "nocvar", "none"]
    panel = load_panel(DataPaths())
    for name in names:
        agent = variant(name)
        res = run_backtest(agent, panel, "2017-01-02", "2023-12-28", BacktestConfig(min_trade_value=200_000))
        m = res.metrics()
        keys = ("annual_return", "annual_volatility", "sharpe", "max_drawdown", "turnover", "costs_pct_of_start")
        print(name, {k: round(m[k], 4) for k in keys}, "mean exposure", round(float(res.exposure.mean()), 3),
              "shadow equity (no costs)", round(agent._equity, 3), flush=True)


if __name__ == "__main__":
    main()
