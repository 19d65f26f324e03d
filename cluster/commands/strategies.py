"""`trader strategies`: the names `trader backtest --strategy` accepts."""
from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("strategies", help="list the strategy names",
                              description="Every strategy in strategies/registry.py, plus benchmark series.")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from backtest.baselines import BENCHMARKS
    from strategies.registry import STRATEGIES

    for name in sorted(STRATEGIES):
        print(name)
    for name in sorted(BENCHMARKS):
        print(f"{name}\t(benchmark series)")
    return 0
