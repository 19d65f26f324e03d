"""`trader backtest`: one strategy over history under the shared accounting → report + metrics.json."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from cluster.commands._common import EXIT_OK, new_parser, note_line, reports_errors


def register(subparsers) -> None:
    p = new_parser(
        subparsers, "backtest", help="backtest a strategy: terminal summary, HTML report, metrics.json",
        description="Fit STRATEGY on data before --start only, trade --start..--end (decide at each close, "
                    "fill at the next bar: tick grid, price limits, commission, dated sell tax, slippage), "
                    "print the run beside KOSPI200 and the equal-weight basket, and write DIR/metrics.json, "
                    "DIR/report.html, DIR/equity.csv, DIR/fills.csv. A span past the data is clipped to it "
                    "(with a note); a span with no data is refused.",
        example_lines=[
            ("trader backtest --strategy factor --prices data/kr_stocks_daily.parquet "
             "--index data/kr_index_daily.parquet --start 2022-01-03 --end 2023-12-28 --out reports/factor"),
            ("trader backtest --strategy technical --prices data/kr_stocks_daily.parquet "
             "--index data/kr_index_daily.parquet --start 2023-01-02 --end 2023-12-28 --out reports/t --json"),
            "trader strategies                        # the names --strategy accepts"])
    p.add_argument("--strategy", required=True, metavar="NAME", help="a name from `trader strategies`")
    p.add_argument("--prices", required=True, metavar="FILE", help="daily stock bars (kr_stocks_daily layout)")
    p.add_argument("--index", required=True, metavar="FILE", help="index file with KOSPI200 (kr_index_daily layout)")
    p.add_argument("--fundamentals", metavar="FILE", help="quarterly fundamentals (kr_fundamentals_quarterly layout)")
    p.add_argument("--market-caps", metavar="FILE", help="market caps (kr_market_snapshot_daily layout)")
    p.add_argument("--start", required=True, metavar="DATE", help="first trading day (YYYY-MM-DD)")
    p.add_argument("--end", required=True, metavar="DATE", help="last day (YYYY-MM-DD; clipped to the data)")
    p.add_argument("--train-start", metavar="DATE", help="first day of data used (fit on --train-start..--start)")
    p.add_argument("--seed", type=int, default=0, metavar="N")
    p.add_argument("--model", metavar="URI", help="RL strategies: load this model instead of training "
                   "(models:/agent-dqn@champion, or an agent folder)")
    p.add_argument("--seeds", metavar="N,N,...", help="also run these seeds; metrics.json gets seed_summary (mean, std)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--rebalance", default="daily",
                   help="daily, weekly, monthly, quarterly, once, or every N bars (default daily)")
    p.add_argument("--refit", default="none", choices=["none", "monthly", "quarterly", "yearly"],
                   help="walk-forward inside the test span: refit on all data before each period (default none)")
    p.add_argument("--cash", type=int, default=100_000_000, help="starting cash in KRW (default 100,000,000)")
    p.add_argument("--slippage-ticks", type=float, default=0.0)
    p.add_argument("--slippage-range-frac", type=float, default=0.05,
                   help="slippage as a fraction of the day's high-low range (default 0.05)")
    p.add_argument("--commission-rate", type=float, default=0.00015)
    p.add_argument("--min-trade-value", type=float, default=0.0, help="skip order deltas below this many KRW")
    p.add_argument("--json", action="store_true", help="print the metrics and the summary as JSON (rounded)")
    p.set_defaults(func=_run)


def _seeds(text):
    if not text:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {text!r}") from None


@reports_errors
def _run(args) -> int:
    from backtest.cli import run_backtest_command
    from backtest.summary import render, rounded

    outcome = run_backtest_command(
        args.strategy, args.prices, args.index, args.start, args.end, args.out,
        fundamentals=args.fundamentals, market_caps=args.market_caps, train_start=args.train_start,
        seed=args.seed, rebalance=args.rebalance, refit=args.refit, cash=args.cash,
        slippage_ticks=args.slippage_ticks, slippage_range_frac=args.slippage_range_frac,
        commission_rate=args.commission_rate, min_trade_value=args.min_trade_value,
        seeds=_seeds(args.seeds), model=args.model)
    for note in outcome.notes:
        print(note_line("backtest", note), file=sys.stderr)
    out = Path(args.out)
    files = {"report": str(out / "report.html"), "metrics": str(out / "metrics.json"),
             "equity": str(out / "equity.csv"), "fills": str(out / "fills.csv")}
    if args.json:
        print(json.dumps({"metrics": rounded(outcome.metrics), "summary": outcome.summary.to_dict(),
                          "notes": outcome.notes, "files": files}, indent=2, ensure_ascii=False))
    else:
        print(render(outcome.summary))
        print(f"\nreport {files['report']}  ·  metrics {files['metrics']}")
    return EXIT_OK
