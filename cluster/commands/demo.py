"""`trader demo`: the whole decision loop on an embedded local Ray over the shipped data."""
from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

from cluster.commands._common import (
    EXIT_OK,
    CommandError,
    new_parser,
    note_line,
    reports_errors,
)


def register(sub) -> None:
    p = new_parser(
        sub, "demo", help="run the decision loop end to end on local Ray with shipped data",
        description="Start an embedded Ray, deploy the decision service (Ray Serve), replay the last --days "
                    "trading days bar by bar through the market-state and execution actors against a paper "
                    "(or simulated KIS) broker, then print the run beside KOSPI200 and the equal-weight basket. "
                    "Ray's and Serve's own logs go to OUT/ray.log unless --verbose. An --end past the data is "
                    "clipped to the data's last day (with a note). The run is logged to the project's MLflow "
                    "store (experiment 'demos': settings, input files with sha256, costs, git sha, metrics, "
                    "equity.png, equity.csv, the journal) unless --no-track.",
        example_lines=[
            "trader demo                              # last 250 trading days, 20 symbols, paper broker",
            "trader demo --out reports/demo --days 60",
            "trader demo --symbols 005930,000660,035420 --cash 50000000",
            "trader demo --broker sim                 # through the real KIS client against the local KIS server",
            "trader demo --no-rl-champions            # technical + factor only, even if MLflow has RL champions",
            "trader demo --days 20 --json             # the metrics and the summary as JSON",
            "trader demo --no-track                   # not logged as an MLflow run"])
    p.add_argument("--out", type=Path, default=Path("reports/demo"), help="report folder (default reports/demo)")
    p.add_argument("--days", type=int, default=250, help="trading days to replay (default 250)")
    p.add_argument("--symbols", help="comma-separated KRX codes (default: the 20 most traded before the replay)")
    p.add_argument("--n-symbols", type=int, default=20, help="universe size when --symbols is not given")
    p.add_argument("--cash", type=int, default=100_000_000, help="starting cash in KRW (default 100,000,000)")
    p.add_argument("--broker", choices=["paper", "sim"], default="paper", help="venue (default paper)")
    p.add_argument("--data-dir", type=Path, help="folder with the data files (default: the shipped data/)")
    p.add_argument("--end", help="last date of the replay (YYYY-MM-DD; default: the newest bar; clipped to the data)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-rl-champions", action="store_true",
                   help="do not add the RL agents (dqn, appo) whose champion is in the MLflow registry")
    p.add_argument("--verbose", action="store_true", help="Ray's and Serve's logs on the terminal (not OUT/ray.log)")
    p.add_argument("--json", action="store_true", help="print the metrics and the summary as JSON (rounded)")
    p.add_argument("--no-track", action="store_true",
                   help="do not log the run to MLflow (default: experiment 'demos' in the project's store)")
    p.set_defaults(func=run)


def checked_end(end: str | None, prices: Path) -> tuple[str | None, list[str]]:
    """--end under the convention of every command: past the data → clipped (noted)."""
    from backtest.cli import clip_to_data, parse_date

    if end is None:
        return None, []
    notes: list[str] = []
    _, clipped = clip_to_data(None, parse_date(end, "--end"), prices, notes)
    return str(clipped), notes


@reports_errors
def run(args) -> int:
    from backtest.summary import render, rounded
    from cluster.demo import demo_summary, run_demo
    from cluster.trading_loop import ReplayConfig
    from market.data import DataPaths

    if args.days < 2:
        raise CommandError("--days must be at least 2")
    if args.cash <= 0:
        raise CommandError("--cash must be a positive number of KRW")
    if args.n_symbols < 1:
        raise CommandError("--n-symbols must be at least 1")
    paths = DataPaths(root=args.data_dir) if args.data_dir else DataPaths()
    end, notes = checked_end(args.end, paths.path("prices"))
    for note in notes:
        print(note_line("demo", note), file=sys.stderr)
    config = ReplayConfig(
        out=args.out, days=args.days, n_symbols=args.n_symbols, cash=args.cash, venue=args.broker,
        symbols=[s.strip() for s in args.symbols.split(",")] if args.symbols else None,
        paths=paths, end=end, progress=not args.no_progress and not args.json,
        rl_champions=not args.no_rl_champions, verbose=args.verbose)
    started = dt.datetime.now()
    metrics = run_demo(config)
    summary = demo_summary(args.out / "journal.sqlite", config, metrics)
    files = {"chart": str(args.out / "equity.png"), "metrics": str(args.out / "metrics.json"),
             "journal": str(args.out / "journal.sqlite")}
    if not args.verbose:
        files["ray_log"] = str(args.out / "ray.log")
    run_id = None if args.no_track else track(config, metrics, summary)
    if args.json:
        print(json.dumps({"metrics": rounded(metrics), "summary": summary.to_dict(), "notes": notes,
                          "files": files, "mlflow_run_id": run_id}, indent=2, ensure_ascii=False))
    else:
        print()
        print(render(summary))
        print(f"\nchart {files['chart']}  ·  metrics {files['metrics']}  ·  journal {files['journal']}"
              + (f"  ·  Ray log {files['ray_log']}" if "ray_log" in files else "")
              + f"  ({(dt.datetime.now() - started).total_seconds():.0f} s)")
        if run_id:
            print(f"MLflow run {run_id} (experiment demos)")
    return EXIT_OK


def track(config, metrics: dict, summary) -> str | None:
    """The finished demo as an MLflow run in experiment 'demos' (settings, input files with
    sha256, costs, git sha, metrics, chart, equity curve, journal); None when it could not be
    logged (a warning says why; the demo's files are already written)."""
    from dataclasses import fields

    from backtest.summary import render
    from market.accounting import CostModel
    from training import tracking as T

    out = Path(config.out)
    # alerts may carry webhook addresses: not logged; the data files are logged with their hashes
    settings = {f.name: getattr(config, f.name) for f in fields(config) if f.name not in ("alerts", "paths", "port")}
    settings["strategy"] = "+".join(config.agents)   # the decision service's agents (RL champions in served_agents)
    settings["span"] = f"{summary.start}..{summary.end}"
    settings["served_agents"] = metrics.get("agents", [])   # with RL model URIs and versions
    from broker.journal import Journal

    journal = Journal(out / "journal.sqlite", readonly=True)
    try:
        journal_run = journal.latest_run() or ""   # the dashboard finds this MLflow run by it
    finally:
        journal.close()
    rec = T.record(T.DEMO, f"demo {config.venue} {summary.start}..{summary.end}", settings=settings,
                   metrics={**metrics, **T.summary_metrics(summary)}, input_files=T.data_paths_files(config.paths),
                   costs=CostModel(),  # the paper broker's and the simulator's default fees
                   artifacts=[out / "equity.png", out / "metrics.json", out / "equity.csv", out / "journal.sqlite"],
                   texts={"summary.txt": render(summary)},
                   tags={"venue": str(config.venue), "journal_run_id": journal_run})
    return T.track_run(rec, warn=lambda m: print(note_line("demo", m), file=sys.stderr))
