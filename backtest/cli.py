"""What the `trader backtest`, `trader strategies` and `trader check-lookahead` commands do
(argument parsing lives in cluster/commands/; the work is here so scripts can call it too)."""
from __future__ import annotations

import datetime as dt
import difflib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from backtest.baselines import BENCHMARKS
from backtest.data import benchmark_levels, etf_levels, load_delisted, panel_for
from backtest.engine import BacktestConfig, run_backtest
from backtest.report import write_report
from backtest.summary import (
    RunSummary,
    SeriesRow,
    TradeStats,
    benchmark_rows,
    build_summary,
    trade_stats,
)
from backtest.walkforward import walk_forward, walk_forward_windows
from market.accounting import CostModel
from market.data import DataError, DataPaths, data_span, load_panel

REFIT_BARS = {"monthly": 21, "quarterly": 63, "yearly": 252}


class CommandError(ValueError):
    """Bad command input; the message names the problem."""


def parse_date(value: str, what: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except (TypeError, ValueError):
        raise CommandError(f"{what} must be a date YYYY-MM-DD, got {value!r}") from None


def data_paths(prices=None, index=None, fundamentals=None, market_caps=None, etf=None) -> DataPaths:
    """DataPaths with the given files (relative to the current directory) in place of the defaults."""
    files = {"prices": prices, "index": index, "fundamentals": fundamentals, "market_caps": market_caps, "etf": etf}
    for name, f in files.items():
        if f is not None and not Path(f).exists():
            raise CommandError(f"--{name.replace('_', '-')} file not found: {f}")
    return DataPaths().with_files(**{k: (None if v is None else Path(v).resolve()) for k, v in files.items()})


def strategy_names() -> list[str]:
    from strategies.registry import STRATEGIES

    return sorted(STRATEGIES) + sorted(BENCHMARKS)


def unknown_name(what: str, name: str, known: list[str]) -> str:
    """'unknown strategy 'tecnical'; did you mean technical? known: …' (difflib's closest names)."""
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    return f"unknown {what} {name!r}{hint} (known: {', '.join(known)})"


def check_strategy_name(name: str) -> None:
    if name not in strategy_names():
        raise CommandError(unknown_name("strategy", name, strategy_names()))


def build_strategy(name: str, paths: DataPaths, seed: int, model: str | None = None):
    """`model`: a registered model for RL strategies (models:/agent-dqn@champion or a folder)."""
    from strategies.registry import STRATEGIES, StrategyContext

    if name not in STRATEGIES:
        raise CommandError(unknown_name("strategy", name, strategy_names()))
    return STRATEGIES[name](StrategyContext(paths=paths, seed=seed, model=model))


def clip_to_data(start: dt.date | None, end: dt.date | None, prices: Path,
                 notes: list[str]) -> tuple[dt.date | None, dt.date | None]:
    """The one convention for spans: a --start/--end outside the price data is clipped to it,
    with a note naming the data's real span; a span with no day in the data is refused."""
    try:
        first, last = data_span(prices)
    except DataError as exc:
        raise CommandError(str(exc)) from None
    span = f"{prices} spans {first}..{last}"
    if start is not None and start > last:
        raise CommandError(f"--start {start} is after the price data: {span}")
    if end is not None and end < first:
        raise CommandError(f"--end {end} is before the price data: {span}")
    if end is not None and end > last:
        notes.append(f"data ends {last}; --end {end} clipped to {last}")
        end = last
    if start is not None and start < first:
        notes.append(f"data starts {first}; --start {start} clipped to {first}")
        start = first
    return start, end


@dataclass
class BacktestOutcome:
    """What `trader backtest` shows: metrics.json's numbers, the terminal summary, the notes."""

    metrics: dict
    summary: RunSummary
    notes: list[str] = field(default_factory=list)


def run_backtest_command(strategy: str, prices: str, index: str, start: str, end: str, out: str,
                         fundamentals: str | None = None, market_caps: str | None = None,
                         train_start: str | None = None, seed: int = 0, rebalance: str = "daily",
                         refit: str = "none", cash: int = 100_000_000, slippage_ticks: float = 0.0,
                         slippage_range_frac: float = 0.05, commission_rate: float = 0.00015,
                         min_trade_value: float = 0.0, progress: bool | None = None,
                         seeds: list[int] | None = None, model: str | None = None) -> BacktestOutcome:
    """The `trader backtest` contract: fit before `start`, trade `start..end`, write
    out/metrics.json, out/report.html, out/equity.csv and out/fills.csv. Returns the metrics
    with the terminal summary (the run beside KOSPI200 and the equal-weight basket).
    With `seeds`, the run is repeated per seed and metrics.json gains `seeds` (the list) and
    `seed_summary` ({metric: {mean, std}}); the report shows the `seed` run."""
    d_start, d_end = parse_date(start, "--start"), parse_date(end, "--end")
    if d_end <= d_start:
        raise CommandError(f"--end {end} must be after --start {start}")
    d_train = parse_date(train_start, "--train-start") if train_start else None
    if d_train is not None and d_train >= d_start:
        raise CommandError(f"--train-start {train_start} must be before --start {start}")
    if refit != "none" and refit not in REFIT_BARS:
        raise CommandError(f"--refit must be none, {', '.join(REFIT_BARS)}; got {refit!r}")
    check_strategy_name(strategy)  # before any data is read
    paths = data_paths(prices, index, fundamentals, market_caps)
    notes: list[str] = []
    clipped_start, clipped_end = clip_to_data(d_start, d_end, paths.path("prices"), notes)
    d_start, d_end = clipped_start or d_start, clipped_end or d_end   # both were given: both come back
    try:
        # nothing after --end is even loaded: no code path can see it
        panel = load_panel(paths, start=d_train, end=d_end)
    except DataError as exc:
        raise CommandError(str(exc)) from None
    if panel.index_of(d_start) < 0 or np.datetime64(d_start) > panel.dates[-1]:
        raise CommandError(f"--start {start} is outside the price data ({panel.dates[0]}..{panel.dates[-1]})")
    try:
        kospi200 = benchmark_levels(panel.dates, paths.path("index"), "KOSPI200")
    except DataError as exc:
        raise CommandError(f"--index: {exc}") from None
    costs = CostModel(commission_rate=commission_rate, slippage_ticks=slippage_ticks,
                      slippage_range_frac=slippage_range_frac)
    config = BacktestConfig(cash=int(cash), costs=costs, rebalance=int(rebalance) if str(rebalance).isdigit()
                            else rebalance, min_trade_value=min_trade_value,
                            progress=(len(panel.between(d_start, d_end)) > 500) if progress is None else progress)
    meta = {"strategy": strategy, "start": str(d_start), "end": str(d_end), "seed": seed,
            "train_start": str(panel.dates[0]), "rebalance": str(config.rebalance), "refit": refit,
            "cash": config.cash, "commission_rate": commission_rate, "slippage_ticks": slippage_ticks,
            "slippage_range_frac": slippage_range_frac, "prices": str(paths.path("prices")),
            "index": str(paths.path("index"))}

    stock_panel = panel  # the equal-weight benchmark holds the stocks, not an agent's extra instruments

    def one_run(sd: int):
        nonlocal panel, kospi200
        if strategy in BENCHMARKS:
            return BENCHMARKS[strategy](panel, paths, d_start, d_end, config)
        agent = build_strategy(strategy, paths, sd, model)
        if getattr(agent, "extra_prices", None):
            panel = panel_for(agent, panel)
            kospi200 = benchmark_levels(panel.dates, paths.path("index"), "KOSPI200")
        delisted = load_delisted(paths.path("delisted")) if paths.path("delisted").exists() else None
        if refit == "none":
            res = run_backtest(agent, panel, d_start, d_end, config, delisted=delisted, name=strategy)
            if getattr(agent, "all_members", None):  # an ensemble: who traded, who was left out and why
                meta["members"] = list(agent.members)
                if agent.notes:
                    meta["left_out"] = list(agent.notes)
            return res
        s = int(np.searchsorted(panel.dates, np.datetime64(d_start, "D")))
        windows = walk_forward_windows(len(panel), train=s, test=REFIT_BARS[refit], gap=0,
                                       expanding=True, first_test=s)
        wf = walk_forward(lambda x: build_strategy(strategy, paths, x, model), panel, windows, seeds=(sd,), config=config)
        meta["refits"] = len(windows)
        return wf.runs[sd]

    def scored(res):
        lo = int(np.searchsorted(panel.dates, res.dates[0]))
        b = kospi200[lo:lo + len(res.dates)]
        if np.isnan(b[0]):
            raise CommandError(f"--index has no KOSPI200 close on {res.dates[0]}, the first day of the run")
        return res.metrics(b), b

    result = one_run(seed)
    metrics, bench = scored(result)
    if seeds:
        per_seed = [metrics if sd == seed else scored(one_run(sd))[0] for sd in seeds]
        keys = [k for k, v in metrics.items() if isinstance(v, (int, float))]
        meta["seeds"] = list(seeds)
        meta["seed_summary"] = {k: {"mean": float(np.mean([m[k] for m in per_seed])),
                                    "std": float(np.std([m[k] for m in per_seed], ddof=1)) if len(per_seed) > 1
                                    else 0.0} for k in keys}
    benchmarks = {"KOSPI200": bench}
    if paths.path("etf").exists():
        benchmarks["KODEX 200 (total return)"] = etf_levels(result.dates, paths.path("etf"))
    outdir = Path(out)
    summary = run_summary(strategy, metrics, result, stock_panel, paths, d_start, d_end, config)
    write_report(result, outdir, metrics, benchmarks, title=f"{strategy}: {d_start} → {d_end}", meta=meta,
                 summary=summary)
    result.to_frame().write_csv(outdir / "equity.csv")
    result.fills.write_csv(outdir / "fills.csv")
    return BacktestOutcome(metrics, summary, notes)


def run_summary(strategy: str, metrics: dict, result, panel, paths: DataPaths, start: dt.date, end: dt.date,
                config: BacktestConfig) -> RunSummary:
    """The terminal summary of a finished run: its metrics beside the benchmarks' (same engine,
    same span), per-year and per-month returns, trades and P&L per symbol."""
    rows, equities, notes = benchmark_rows(panel, paths, start, end, config, result.dates)
    if strategy in BENCHMARKS:  # an index series: no trades, no symbols of its own
        trades = TradeStats(0, 0, None, 0, 0, ())
    else:
        trades = trade_stats(result.fills, result.dates, dict(zip(result.symbols, result.holdings[-1].tolist())),
                             dict(zip(result.symbols, np.nan_to_num(result.prices[-1]).tolist())), panel.names)
    return build_summary(f"{strategy} (backtest)", result.dates, result.equity,
                         [SeriesRow(strategy, metrics), *rows], [result.equity, *equities], trades, notes)




def run_lookahead_command(strategy: str, prices=None, index=None, fundamentals=None, market_caps=None,
                          start=None, end=None, points: int = 12, seed: int = 0, json_out=None,
                          notes: list[str] | None = None):
    """`notes` receives what was adjusted (a clipped --start/--end)."""
    from backtest.lookahead import check_lookahead

    if strategy in BENCHMARKS:
        raise CommandError(f"{strategy} is a benchmark series, not a strategy that decides anything")
    check_strategy_name(strategy)
    paths = data_paths(prices, index, fundamentals, market_caps)
    d_end = parse_date(end, "--end") if end else None
    d_start = parse_date(start, "--start") if start else None
    d_start, d_end = clip_to_data(d_start, d_end, paths.path("prices"), notes if notes is not None else [])
    try:
        panel = load_panel(paths, end=d_end)
    except DataError as exc:
        raise CommandError(str(exc)) from None
    # default span: the last two years of the data
    d_start = d_start or panel.date(max(len(panel) - 504, 1))
    probe = build_strategy(strategy, paths, seed)
    panel = panel_for(probe, panel)
    report = check_lookahead(lambda p: build_strategy(strategy, p, seed), panel, d_start, d_end, points=points,
                             paths=paths, progress=sys.stderr.isatty())
    if json_out:
        Path(json_out).write_text(json.dumps(report.__dict__, indent=2, default=str))
    return report
