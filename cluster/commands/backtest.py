"""`trader backtest`: one strategy over history under the shared accounting → report + metrics.json,
tracked as an MLflow run. Options come from flags or a YAML file (`--config run.yaml`; flags win)."""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import textwrap
from pathlib import Path

from cluster.commands._common import EXIT_OK, CommandError, new_parser, note_line, reports_errors

# options without which a backtest cannot run: a flag or a key of the --config file
REQUIRED = ("strategy", "prices", "index", "start", "end", "out")
# defaults applied after the file (argparse's own defaults are None, so "not given" is visible)
DEFAULTS = {"seed": 0, "rebalance": "daily", "refit": "none", "cash": 100_000_000, "slippage_ticks": 0.0,
            "slippage_range_frac": 0.05, "commission_rate": 0.00015, "min_trade_value": 0.0,
            "json": False, "no_track": False}
EXAMPLE_CONFIG = """\
  # run.yaml: the same options as the flags (dashes or underscores); flags given too override it
  strategy: factor
  prices: data/kr_stocks_daily.parquet
  index: data/kr_index_daily.parquet
  fundamentals: data/kr_fundamentals_quarterly.parquet
  market-caps: data/kr_market_snapshot_daily.parquet
  start: 2022-01-03
  end: 2023-12-28
  rebalance: monthly
  seeds: [0, 1, 2]
  out: reports/factor"""
NOT_IN_FILE = ("config", "func", "command_name", "command")


def register(subparsers) -> None:
    p = new_parser(
        subparsers, "backtest", help="backtest a strategy: terminal summary, HTML report, metrics.json, MLflow run",
        description=textwrap.fill("Fit STRATEGY on data before --start only, trade --start..--end (decide at each close, "
                    "fill at the next bar: tick grid, price limits, commission, dated sell tax, slippage), "
                    "print the run beside KOSPI200 and the equal-weight basket, and write DIR/metrics.json, "
                    "DIR/report.html, DIR/equity.csv, DIR/fills.csv. A span past the data is clipped to it "
                    "(with a note); a span with no data is refused. Every run is logged to the project's "
                    "MLflow store (experiment 'backtests': settings, input files with sha256, costs, seed, "
                    "git sha, metrics, report and equity curve) unless --no-track. Options can come from a "
                    "YAML file (--config), flags override it:", 100) + "\n\n" + EXAMPLE_CONFIG,
        example_lines=[
            ("trader backtest --strategy factor --prices data/kr_stocks_daily.parquet "
             "--index data/kr_index_daily.parquet --start 2022-01-03 --end 2023-12-28 --out reports/factor"),
            ("trader backtest --strategy technical --prices data/kr_stocks_daily.parquet "
             "--index data/kr_index_daily.parquet --start 2023-01-02 --end 2023-12-28 --out reports/t --json"),
            "trader backtest --config run.yaml                 # every option from the file",
            "trader backtest --config run.yaml --seed 3 --out reports/factor-s3   # flags override the file",
            "trader strategies                        # the names --strategy accepts"])
    p.add_argument("--config", metavar="FILE", help="YAML file with any of these options (keys as the flag "
                   "names); flags given as well override it. Its content and sha256 are logged to the MLflow run")
    p.add_argument("--strategy", metavar="NAME", help="a name from `trader strategies` (required, flag or file)")
    p.add_argument("--prices", metavar="FILE", help="daily stock bars (kr_stocks_daily layout; required)")
    p.add_argument("--index", metavar="FILE", help="index file with KOSPI200 (kr_index_daily layout; required)")
    p.add_argument("--fundamentals", metavar="FILE", help="quarterly fundamentals (kr_fundamentals_quarterly layout)")
    p.add_argument("--market-caps", metavar="FILE", help="market caps (kr_market_snapshot_daily layout)")
    p.add_argument("--start", metavar="DATE", help="first trading day (YYYY-MM-DD; required)")
    p.add_argument("--end", metavar="DATE", help="last day (YYYY-MM-DD; clipped to the data; required)")
    p.add_argument("--train-start", metavar="DATE", help="first day of data used (fit on --train-start..--start)")
    p.add_argument("--seed", type=int, metavar="N", help="default 0")
    p.add_argument("--model", metavar="URI", help="RL strategies: load this model instead of training "
                   "(models:/agent-dqn@champion, or an agent folder)")
    p.add_argument("--seeds", metavar="N,N,...", help="also run these seeds; metrics.json gets seed_summary (mean, std)")
    p.add_argument("--out", metavar="DIR", help="report folder (required)")
    p.add_argument("--rebalance", help="daily, weekly, monthly, quarterly, once, or every N bars (default daily)")
    p.add_argument("--refit", choices=["none", "monthly", "quarterly", "yearly"],
                   help="walk-forward inside the test span: refit on all data before each period (default none)")
    p.add_argument("--cash", type=int, help="starting cash in KRW (default 100,000,000)")
    p.add_argument("--slippage-ticks", type=float, help="default 0")
    p.add_argument("--slippage-range-frac", type=float,
                   help="slippage as a fraction of the day's high-low range (default 0.05)")
    p.add_argument("--commission-rate", type=float, help="default 0.00015")
    p.add_argument("--min-trade-value", type=float, help="skip order deltas below this many KRW (default 0)")
    p.add_argument("--json", action="store_true", default=None,
                   help="print the metrics and the summary as JSON (rounded)")
    p.add_argument("--no-track", action="store_true", default=None, help="do not log the run to MLflow")
    p.set_defaults(func=_run, parser=p)


def _seeds(value):
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    try:
        return [int(x) for x in str(value).split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--seeds must be comma-separated integers, got {value!r}") from None


def read_config(path: str, parser: argparse.ArgumentParser) -> tuple[dict, str]:
    """The options of a --config YAML file, converted like the flags (an unknown key, a wrong
    type or a bad choice is refused naming the key), and the file's text."""
    import yaml

    from backtest.cli import unknown_name

    file = Path(path)
    if not file.is_file():
        raise CommandError(f"--config file not found: {path}")
    text = file.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CommandError(f"--config {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise CommandError(f"--config {path} must be a mapping of option: value, got {type(raw).__name__}")
    actions = {a.dest: a for a in parser._actions if a.dest not in NOT_IN_FILE and a.dest != "help"}
    known = sorted(d.replace("_", "-") for d in actions)
    options = {}
    for key, value in raw.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            raise CommandError(f"--config {path}: {unknown_name('option', str(key), known)}")
        action = actions[dest]
        where = f"--config {path}: {key}"
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise CommandError(f"{where} must be true or false, got {value!r}")
        elif dest == "seeds":
            value = _seeds(value)
        else:
            if isinstance(value, (dict, list)):
                raise CommandError(f"{where} must be a single value, got {value!r}")
            convert = action.type if callable(action.type) else str
            try:
                value = convert(str(value))   # a YAML date → ISO text, as the flag would give it
            except ValueError:
                raise CommandError(f"{where} must be {getattr(action.type, '__name__', 'text')}, "
                                   f"got {value!r}") from None
            if action.choices and value not in action.choices:
                raise CommandError(f"{where} must be one of {', '.join(action.choices)}, got {value!r}")
        options[dest] = value
    return options, text


def resolved_options(args: argparse.Namespace) -> tuple[dict, dict | None]:
    """Flags over the --config file over the defaults; (options, {"path", "text", "sha256"} or None)."""
    given = {k: v for k, v in vars(args).items() if k not in NOT_IN_FILE and k != "parser" and v is not None}
    config = None
    from_file: dict = {}
    if args.config:
        from_file, text = read_config(args.config, args.parser)
        config = {"path": str(Path(args.config).resolve()), "text": text,
                  "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    options = {**DEFAULTS, **from_file, **given}
    if "seeds" in options and not isinstance(options["seeds"], list):
        options["seeds"] = _seeds(options["seeds"])
    missing = [k for k in REQUIRED if options.get(k) in (None, "")]
    if missing:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in missing)
        raise CommandError(f"missing {flags} (give {'it' if len(missing) == 1 else 'them'} as flags "
                           "or as keys of a --config file)")
    return options, config


@reports_errors
def _run(args) -> int:
    from backtest.cli import run_backtest_command
    from backtest.summary import render, rounded

    o, config = resolved_options(args)
    outcome = run_backtest_command(
        o["strategy"], o["prices"], o["index"], o["start"], o["end"], o["out"],
        fundamentals=o.get("fundamentals"), market_caps=o.get("market_caps"), train_start=o.get("train_start"),
        seed=o["seed"], rebalance=o["rebalance"], refit=o["refit"], cash=o["cash"],
        slippage_ticks=o["slippage_ticks"], slippage_range_frac=o["slippage_range_frac"],
        commission_rate=o["commission_rate"], min_trade_value=o["min_trade_value"],
        seeds=o.get("seeds"), model=o.get("model"))
    for note in outcome.notes:
        print(note_line("backtest", note), file=sys.stderr)
    out = Path(o["out"])
    files = {"report": str(out / "report.html"), "metrics": str(out / "metrics.json"),
             "equity": str(out / "equity.csv"), "fills": str(out / "fills.csv")}
    run_id = None if o["no_track"] else track(o, config, outcome, out)
    if o["json"]:
        print(json.dumps({"metrics": rounded(outcome.metrics), "summary": outcome.summary.to_dict(),
                          "notes": outcome.notes, "files": files, "mlflow_run_id": run_id},
                         indent=2, ensure_ascii=False))
    else:
        print(render(outcome.summary))
        print(f"\nreport {files['report']}  ·  metrics {files['metrics']}"
              + (f"  ·  MLflow run {run_id} (experiment backtests)" if run_id else ""))
    return EXIT_OK


def track(options: dict, config: dict | None, outcome, out: Path) -> str | None:
    """The finished backtest as an MLflow run in experiment 'backtests'; None when it could not
    be logged (a warning says why; the run's files are already written)."""
    from backtest.cli import data_paths
    from backtest.summary import render
    from market.accounting import CostModel
    from training import tracking as T

    paths = data_paths(options["prices"], options["index"], options.get("fundamentals"), options.get("market_caps"))
    settings = {k: v for k, v in options.items() if k not in ("json", "no_track")}
    if config:
        settings["config"] = config["path"]
        settings["config_sha256"] = config["sha256"]
    texts = {"summary.txt": render(outcome.summary)}
    if config:
        texts["run.yaml"] = config["text"]
    s = outcome.summary
    settings["span"] = f"{s.start}..{s.end}"   # the days traded (after clipping to the data)
    rec = T.record(
        T.BACKTEST, f"{options['strategy']} {s.start}..{s.end}",
        settings=settings, metrics={**outcome.metrics, **T.summary_metrics(outcome.summary)},
        input_files=T.data_paths_files(paths),
        costs=CostModel(commission_rate=options["commission_rate"], slippage_ticks=options["slippage_ticks"],
                        slippage_range_frac=options["slippage_range_frac"]),
        artifacts=[out / "report.html", out / "metrics.json", out / "equity.csv", out / "fills.csv"],
        texts=texts, tags={"strategy": str(options["strategy"])})
    return T.track_run(rec, warn=lambda m: print(note_line("backtest", m), file=sys.stderr))
