"""Walk-forward evidence for the strategies of issue 5; writes reports/strategies.md.

    /work/main/.venv/bin/python -m reports.strategies_backtest [--start 2017-01-02] [--end 2023-12-28]

Each strategy trades the shipped panel through the one accounting (backtest.engine, next-bar
fills, commission, dated sell tax, slippage) in yearly walk-forward test windows stitched into one
continuous account: a fresh agent per window, `fit` on the rows before it only. The agents learn
walk-forward inside (HMM refits, rank-IC history), so the fresh agent per year changes little.
Side data shared across windows (fundamentals, market caps, the regime path) is point in time by
construction (tests/unit/test_factors.py, test_regime.py), so sharing it leaks nothing.
Benchmark: KOSPI200 index buy-and-hold (price index: no dividends, no costs).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from backtest.engine import BacktestConfig
from backtest.walkforward import walk_forward, walk_forward_windows
from market.data import DataPaths, index_close, load_index, load_panel
from strategies.baselines import EqualWeightRebalanced
from strategies.defaults import ALL_MEMBERS
from strategies.ensemble import EnsembleAgent
from strategies.factor_model import FactorAgent
from strategies.factors import FactorEngine
from strategies.fundamentals import Fundamentals, MarketCaps
from strategies.pipeline import COMBINED_OVERLAY, DecisionConfig
from strategies.regime import RegimeDetector, RegimeSource
from strategies.registry import ensemble_members
from strategies.risk import RiskModel, var_backtest
from strategies.selection import ValidatedEnsemble, sectors
from strategies.selection import default_variants as validated_variants
from strategies.technical import TechnicalAgent

ROOT = Path(__file__).resolve().parent
# strategies/defaults.py's ensemble (chosen on validation windows: the tilt section of strategies.md)
DEFAULT_ROW = "ensemble (the default: regime-factor + equal-weight as a tilted equal-weight book, caps + drawdown step)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--start", default="2017-01-02")
    ap.add_argument("--end", default="2023-12-28")
    ap.add_argument("--test-bars", type=int, default=246, help="bars per walk-forward test window (~1 year)")
    ap.add_argument("--out", default=str(ROOT / "strategies.md"))
    ap.add_argument("--only", nargs="*", help="subset of strategies to run")
    ap.add_argument("--no-track", action="store_true", help="do not log the runs to MLflow (experiment walk-forward)")
    args = ap.parse_args(argv)

    paths = DataPaths()
    t0 = time.time()
    panel = load_panel(paths, end=args.end)
    engine = FactorEngine(Fundamentals.load(paths), MarketCaps.load(paths))
    regime = RegimeSource.load(paths, "KOSPI200", RegimeDetector(seed=0), end=args.end)
    _ = regime.path  # fit the walk-forward HMM once (causal: row t uses index data <= t only)
    kospi = index_close(panel.dates, load_index(paths.path("index"), "KOSPI200"))

    def members():
        return ensemble_members(engine, regime, ALL_MEMBERS)

    combined = DecisionConfig(construction=None)  # the combination as it is
    factories = {
        "technical": lambda seed: TechnicalAgent(),
        "factor": lambda seed: FactorAgent(engine, name="factor"),
        "regime-factor": lambda seed: FactorAgent(engine, regime=regime, name="regime-factor"),
        "equal-weight-monthly": lambda seed: EqualWeightRebalanced(),
        "ensemble (ERC risk model, as shipped before issue 15)": lambda seed: EnsembleAgent(
            members(), regime=regime, config=combined, risk=RiskModel()),
        "ensemble (combined weights + overlay, the default before the tilted book)": lambda seed: EnsembleAgent(
            members(), regime=regime, config=COMBINED_OVERLAY),
        "ensemble (combined weights, no risk model)": lambda seed: EnsembleAgent(
            members(), regime=regime, config=combined, risk=None),
        DEFAULT_ROW: lambda seed: EnsembleAgent(ensemble_members(engine, regime), regime=regime),
        # member weights and pipeline steps chosen in each window's fit on the 2 years before its test
        "ensemble (validated, reports/strategies_portfolio.py)": lambda seed: ValidatedEnsemble(
            members, validated_variants(regime, sectors(paths)),
            backtest_config=BacktestConfig(min_trade_value=200_000)),
    }
    if args.only:
        factories = {k: v for k, v in factories.items() if k in args.only}

    first = int(np.searchsorted(panel.dates, np.datetime64(args.start, "D")))
    windows = walk_forward_windows(len(panel), train=first - 5, test=args.test_bars, gap=5, first_test=first,
                                   expanding=True)
    config = BacktestConfig(min_trade_value=200_000)
    rows, curves = {}, {}
    for name, fac in factories.items():
        t = time.time()
        res = walk_forward(fac, panel, windows, seeds=(0,), config=config, benchmark=kospi)
        run = res.runs[0]
        m = res.metrics[0]
        m["seconds"] = time.time() - t
        rows[name] = m
        curves[name] = run
        print(f"{name}: {json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()})}",
              flush=True)
    # the benchmark on the same days
    d0 = next(iter(curves.values())).dates
    lo = int(np.searchsorted(panel.dates, d0[0]))
    bench = kospi[lo:lo + len(d0)]
    bench_eq = bench / bench[0]
    from backtest.metrics import compute
    rows["KOSPI200 buy-and-hold (index)"] = compute(bench_eq * 1e8)
    # VaR backtest (Kupiec) on the risk-sized ensemble's realised daily returns
    var_rows = {}
    for name in (DEFAULT_ROW, "ensemble (ERC risk model, as shipped before issue 15)",
                 "regime-factor"):
        if name in curves:
            r = curves[name].returns
            var_rows[name] = {meth: var_backtest(r, 250, 0.95, meth) for meth in ("historical", "cornish-fisher")}
    write_report(Path(args.out), args, rows, var_rows, windows, panel, time.time() - t0)
    if not args.no_track:
        track(args, paths, config, windows, rows, curves)


def track(args, paths, config, windows, rows, curves) -> None:
    """One MLflow run per strategy in experiment 'walk-forward' (training/tracking.py): the span,
    windows, inputs with their sha256, costs, git sha, its metrics, the report and its stitched
    equity curve. A store that cannot be written is a warning; the report is already written."""
    import tempfile

    from training import tracking as T

    for name, run in curves.items():
        with tempfile.TemporaryDirectory(prefix="krt-wf-") as tmp:
            equity = Path(tmp) / "equity.csv"
            run.to_frame().write_csv(equity)
            settings = {"strategy": name, "script": "reports.strategies_backtest", "start": args.start,
                        "end": args.end, "span": f"{run.dates[1]}..{run.dates[-1]}", "test_bars": args.test_bars,
                        "windows": len(windows), "seed": 0, "cash": config.cash,
                        "min_trade_value": config.min_trade_value, "rebalance": str(config.rebalance)}
            rec = T.record(T.WALK_FORWARD, f"{name} {args.start}..{args.end}", settings=settings, metrics=rows[name],
                           input_files=T.data_paths_files(paths), costs=config.costs,
                           artifacts=[Path(args.out), equity], tags={"strategy": name})
            run_id = T.track_run(rec)
            if run_id:
                print(f"MLflow run {run_id} (experiment walk-forward): {name}")


def _fmt(v, pct=False):
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "–"
    return f"{100 * v:.1f}%" if pct else f"{v:.2f}"


def write_report(out: Path, args, rows, var_rows, windows, panel, seconds):
    keys = [("total_return", True), ("annual_return", True), ("annual_volatility", True), ("sharpe", False),
            ("max_drawdown", True), ("turnover", False), ("information_ratio", False), ("beta", False)]
    lines = [
        "# Strategies: walk-forward backtest (issue 5)",
        "",
        f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC in {seconds / 60:.1f} min by",
        "",
        "```",
        "/work/main/.venv/bin/python -m reports.strategies_backtest "
        f"--start {args.start} --end {args.end} --test-bars {args.test_bars}",
        "```",
        "",
        "Single strategies can also be run (one continuous span, no yearly re-creation) with the "
        "backtest CLI, e.g.",
        "",
        "```",
        "/work/main/.venv/bin/python -m cluster.cli backtest --strategy ensemble "
        "--prices data/kr_stocks_daily.parquet --index data/kr_index_daily.parquet "
        "--fundamentals data/kr_fundamentals_quarterly.parquet "
        "--market-caps data/kr_market_snapshot_daily.parquet "
        f"--start {args.start} --end {args.end} --min-trade-value 200000 --out /tmp/bt_ensemble",
        "```",
        "",
        f"Out of sample {args.start} → {args.end} on the shipped panel ({len(panel.symbols)} large caps, "
        "survivors only — see data/README), "
        f"{len(windows)} yearly walk-forward test windows stitched into one account (100M KRW start), "
        "next-bar fills through `market/accounting.py`, commission + dated sell tax + slippage included, "
        "trades under 200k KRW skipped. Benchmark: KOSPI200 price index, buy-and-hold, no costs "
        "(no dividends either, for neither side: the panel is not dividend-adjusted).",
        "",
        "| strategy | " + " | ".join(k for k, _ in keys) + " |",
        "|---|" + "---|" * len(keys),
    ]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(_fmt(m.get(k), p) for k, p in keys) + " |")
    lines += ["", "## VaR backtest (one-day 95% VaR from the previous 250 daily returns, Kupiec POF test)", "",
              "| strategy | method | breaches / days | rate | LR | p-value |", "|---|---|---|---|---|---|"]
    for name, by in var_rows.items():
        for meth, v in by.items():
            lines.append(f"| {name} | {meth} | {v['breaches']} / {v['n']} | {100 * v['rate']:.2f}% | "
                         f"{v['lr']:.2f} | {v['p_value']:.3f} |")
    lines += ["", "## Notes", "", NOTES]
    write_keeping_analysis(out, lines)


MARKER = "<!-- analysis (hand-written, kept when the tables are regenerated) -->"


def write_keeping_analysis(out: Path, lines: list[str]) -> None:
    """Write the generated lines; a hand-written analysis below MARKER survives regeneration."""
    kept = ""
    if out.exists() and MARKER in out.read_text():
        kept = out.read_text().split(MARKER, 1)[1]
    out.write_text("\n".join(lines) + "\n" + MARKER + kept)
    print(f"wrote {out}")

NOTES = """* Value factors (book-to-price, earnings-to-price) need a point-in-time market cap, which the
  shipped snapshot has only from January 2021: before that they are missing and the composite uses
  the other groups (missing counts as neutral). Statements are used 45 days (quarters) / 90 days (FY)
  after period end. Financial-sector names have almost no statements, so they rank on momentum and
  reversal only.
* The universe is today's large caps (survivorship bias): every long-only strategy here, and the
  equal-weight baseline, is flattered relative to the index by it.
* The regime labels come from the HMM's state statistics (highest-volatility state = bear). On
  KOSPI200 the high-volatility state also holds the sharp rebounds, so "bear" means "turbulent".
"""

if __name__ == "__main__":
    main()
