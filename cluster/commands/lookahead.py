"""`trader check-lookahead STRATEGY`: fail if a decision changes when later data is added."""
from __future__ import annotations

from cluster.commands._common import new_parser, note_line, reports_errors


def register(subparsers) -> None:
    p = new_parser(
        subparsers, "check-lookahead", help="check a strategy for look-ahead bias",
        description="Run STRATEGY on data truncated at many points and on the full data; exit 1 naming "
                    "the first date and symbol whose decision changes when data after that date is added.",
        example_lines=["trader check-lookahead factor",
                       "trader check-lookahead technical --start 2023-01-02 --points 6 --json lookahead.json"])
    p.add_argument("strategy", metavar="STRATEGY")
    p.add_argument("--prices", metavar="FILE")
    p.add_argument("--index", metavar="FILE")
    p.add_argument("--fundamentals", metavar="FILE")
    p.add_argument("--market-caps", metavar="FILE")
    p.add_argument("--start", metavar="DATE", help="first decision day (default: two years before the end)")
    p.add_argument("--end", metavar="DATE", help="last day of data (default: the end of the file; clipped to it)")
    p.add_argument("--points", type=int, default=12, help="truncation points (default 12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    p.set_defaults(func=_run)


@reports_errors
def _run(args) -> int:
    import sys

    from backtest.cli import run_lookahead_command

    notes: list[str] = []
    report = run_lookahead_command(args.strategy, args.prices, args.index, args.fundamentals,
                                   args.market_caps, args.start, args.end, args.points, args.seed, args.json,
                                   notes=notes)
    for note in notes:
        print(note_line("check-lookahead", note), file=sys.stderr)
    print(report.message(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1
