"""`trader strategies`: the names `trader backtest --strategy` accepts, one line each."""
from __future__ import annotations

from cluster.commands._common import EXIT_OK, new_parser

# one line per registered name; tests/unit/test_cli_voice.py fails when a registered strategy
# has no line here, so the list cannot silently fall behind strategies/registry.py
DESCRIPTIONS = {
    "technical": "trend filter + momentum + RSI + Bollinger mean reversion, long only, steps aside in "
                 "broad down-markets",
    "factor": "dynamic multi-factor model (value, growth, momentum, reversal, quality, profitability) "
              "weighted by recent rank IC, point-in-time fundamentals",
    "regime-factor": "the factor model with regime-conditional weights and exposure (HMM: bull / bear / "
                     "sideways)",
    "ensemble": "regime-weighted ensemble of regime-factor and equal-weight (+ RL champions) as a tilted "
                "equal-weight book (every name, leaning to the combined rank), per-name caps and a drawdown brake (the "
                "default, chosen on validation)",
    "ensemble-validated": "the ensemble whose member weights and construction are chosen on the two "
                          "years before each fit (strategies/selection.py)",
    "ensemble-combined": "the previous default: regime-factor, technical and equal-weight, their combined "
                         "weights sized by the full risk overlay (vol target, caps, drawdown brake)",
    "lgbm": "LightGBM forecaster: cross-sectional rank of the 20-bar forward return on Alpha158-style "
            "features, top 10 monthly, refit yearly",
    "lgbm-5d": "LightGBM forecaster on the 5-bar forward return, top 10 weekly",
    "gru": "GRU forecaster (PyTorch) on 20-bar windows of the lgbm features: 20-bar rank label, top 10 "
           "monthly, early-stopped on validation Rank IC, refit yearly",
    "transformer": "Transformer forecaster (PyTorch), same inputs, label and schedule as gru",
    "dqn": "RL agent (RLlib DQN): trains in fit() unless --model or a registered champion is given",
    "appo": "RL agent (RLlib APPO, the A3C family): trains in fit() unless --model is given",
    "equal-weight-hold": "baseline: an equal-weight basket bought once and held",
    "equal-weight-monthly": "baseline: equal weights over the tradable symbols, rebalanced monthly",
    "equal-weight": "the ensemble's equal-weight member (equal-weight-monthly under the name the ensemble uses)",
    "buy-hold-kodex200": "baseline: all-in KODEX 200 ETF (069500), bought once and held",
    "buy-hold-kospi200": "benchmark series: the KOSPI200 index scaled to the starting cash (not tradable)",
}


def register(subparsers) -> None:
    p = new_parser(subparsers, "strategies", help="list the strategy names with a line on each",
                   description="Every strategy in strategies/registry.py, plus benchmark series.",
                   example_lines=["trader strategies",
                                  "trader backtest --strategy factor ...   # use a name from the list"])
    p.set_defaults(func=_run)


def _run(args) -> int:
    from backtest.baselines import BENCHMARKS
    from strategies.registry import STRATEGIES

    names = sorted(STRATEGIES) + sorted(BENCHMARKS)
    width = max(len(n) for n in names)
    for name in names:
        print(f"{name:<{width}}  {DESCRIPTIONS.get(name, '(no description)')}")
    return EXIT_OK
