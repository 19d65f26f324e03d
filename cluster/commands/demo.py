"""`trader demo`: the whole decision loop on an embedded local Ray over the shipped data."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXAMPLES = """examples:
  trader demo                              # last 250 trading days, 20 symbols, paper broker
  trader demo --out reports/demo --days 60
  trader demo --symbols 005930,000660,035420 --cash 50000000
  trader demo --broker sim                 # through the real KIS client against the local KIS server
  trader demo --no-rl-champions            # technical + factor only, even if MLflow has RL champions
"""


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the decision loop end to end on local Ray with shipped data",
                       description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("reports/demo"), help="report folder (default reports/demo)")
    p.add_argument("--days", type=int, default=250, help="trading days to replay (default 250)")
    p.add_argument("--symbols", help="comma-separated KRX codes (default: the 20 most traded before the replay)")
    p.add_argument("--n-symbols", type=int, default=20, help="universe size when --symbols is not given")
    p.add_argument("--cash", type=int, default=100_000_000, help="starting cash in KRW (default 100,000,000)")
    p.add_argument("--broker", choices=["paper", "sim"], default="paper", help="venue (default paper)")
    p.add_argument("--data-dir", type=Path, help="folder with the data files (default: the shipped data/)")
    p.add_argument("--end", help="last date of the replay (YYYY-MM-DD; default: the newest bar)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-rl-champions", action="store_true",
                   help="do not add the RL agents (dqn, appo) whose champion is in the MLflow registry")
    p.set_defaults(func=run)


def run(args) -> int:
    from cluster.demo import run_demo
    from cluster.trading_loop import ReplayConfig
    from market.data import DataError, DataPaths

    if args.days < 2:
        print("trader demo: --days must be at least 2", file=sys.stderr)
        return 2
    if args.cash <= 0:
        print("trader demo: --cash must be a positive number of KRW", file=sys.stderr)
        return 2
    config = ReplayConfig(
        out=args.out, days=args.days, n_symbols=args.n_symbols, cash=args.cash, venue=args.broker,
        symbols=[s.strip() for s in args.symbols.split(",")] if args.symbols else None,
        paths=DataPaths(root=args.data_dir) if args.data_dir else DataPaths(), end=args.end,
        progress=not args.no_progress, rl_champions=not args.no_rl_champions)
    try:
        metrics = run_demo(config)
    except (DataError, ValueError) as exc:
        print(f"trader demo: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    print(f"report: {args.out / 'equity.png'}, {args.out / 'metrics.json'}, journal {args.out / 'journal.sqlite'}")
    return 0
