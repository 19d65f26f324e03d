"""`trader check-parity`: the backtester and the served loop trade one span; count the differences."""
from __future__ import annotations

import sys

EXAMPLES = ["trader check-parity --start 2023-01-02 --end 2023-03-31",
            "trader check-parity --start 2022-06-01 --end 2022-09-30 --strategy technical --symbols 005930,000660"]


def register(subparsers) -> None:
    from cluster.commands._common import new_parser

    p = new_parser(subparsers, "check-parity", help="prove the backtest trades what the service trades",
                   description="Run one span through the backtester and through the real served loop (local Ray, "
                               "Serve over HTTP, ExecutionActor, PaperBroker); compare every decision's targets "
                               "and every order. Ends with `differences: targets N, orders M`; exit 0 only when "
                               "both are 0.", example_lines=EXAMPLES)
    p.add_argument("--start", required=True, metavar="DATE", help="first traded bar (YYYY-MM-DD)")
    p.add_argument("--end", required=True, metavar="DATE", help="last traded bar (YYYY-MM-DD)")
    p.add_argument("--strategy", default="ensemble", help="strategies/registry.py name (default ensemble)")
    p.add_argument("--symbols", help="comma-separated KRX codes (default: the most traded before --start)")
    p.add_argument("--n-symbols", type=int, default=10, help="universe size without --symbols (default 10)")
    p.add_argument("--cash", type=int, default=None, help="starting cash in KRW (default: the project's)")
    p.add_argument("--progress", action="store_true", help="show the served loop's progress bar")
    p.set_defaults(func=main)


def main(args) -> int:
    from cluster.parity import ParityConfig, check_parity
    from market.data import DataError
    from strategies import defaults as D

    config = ParityConfig(start=args.start, end=args.end, strategy=args.strategy,
                          symbols=[s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else None,
                          n_symbols=args.n_symbols, cash=args.cash or D.STARTING_CASH, progress=args.progress)
    try:
        report = check_parity(config)
    except (DataError, ValueError) as exc:
        print(f"trader check-parity: {exc}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 0 if report.ok else 1
