"""Forecast report (Qlib layout) for the learned forecasters of issue 15; writes reports/forecasts.md.

    PYTHONPATH=. /work/main/.venv/bin/python -m reports.forecasts [--seeds 0 1 2 3 4]

The same yearly walk-forward as reports/strategies_backtest.py: test years 2017..2023 (246 bars
each), expanding training history, a 5-bar gap before each test year. Per window and seed a fresh
forecaster (LGBMForecaster, or SequenceForecaster for gru / transformer) is fitted on the window's
train rows only; its hyper-parameters are chosen inside
`fit` on the last year of that history (validation Rank IC, purged), never on the test year.

Signal quality, per model and test year: daily IC (Pearson) and Rank IC (Spearman) between the
scores at t and the realised return from close t+1 to close t+1+h, their mean over days and ICIR =
mean / std over days. The test-year labels of the last h+1 bars of 2023 do not exist and are
skipped. Portfolio: the agent's top-k equal weights traded through backtest/engine.py, the test
years stitched into one account (backtest.walkforward.walk_forward), beside the factor model and the
equal-weight monthly book run the same way. Every random-training number is mean ± std over seeds. The grid is searched with the first seed
of each window (on its validation year); the other seeds refit that choice with their own seed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from backtest.engine import BacktestConfig
from backtest.metrics import compute
from backtest.walkforward import walk_forward, walk_forward_windows
from market.data import DataPaths, index_close, load_index, load_panel
from reports.strategies_backtest import write_keeping_analysis
from strategies.baselines import EqualWeightRebalanced
from strategies.factor_model import FactorAgent
from strategies.factors import FactorEngine
from strategies.features import FeatureBuilder
from strategies.forecaster import LGBMForecaster, daily_ic, forward_returns
from strategies.fundamentals import Fundamentals, MarketCaps
from strategies.neural import SequenceForecaster

ROOT = Path(__file__).resolve().parent
MODELS = {
    "lgbm (20-bar label, monthly top 10)": {"horizon": 20, "rebalance": "monthly", "top_k": 10},
    "lgbm-5d (5-bar label, weekly top 10)": {"horizon": 5, "rebalance": "weekly", "top_k": 10},
    # the PyTorch sequence models (strategies/neural.py): the same label, schedule and top k as lgbm
    "gru (20-bar windows, 20-bar label, monthly top 10)": {"horizon": 20, "rebalance": "monthly", "top_k": 10,
                                                          "arch": "gru"},
    "transformer (20-bar windows, 20-bar label, monthly top 10)": {"horizon": 20, "rebalance": "monthly",
                                                                  "top_k": 10, "arch": "transformer"},
}
PORTFOLIO_KEYS = (("annual_return", True), ("annual_volatility", True), ("sharpe", False), ("max_drawdown", True),
                  ("information_ratio", False), ("turnover", False), ("costs_pct_of_start", True))


def make_agent(features: FeatureBuilder, label: str, spec: dict, seed: int, grid: dict):
    """A fresh forecaster of the MODELS entry `label`: a sequence net when the spec names an arch."""
    cls = SequenceForecaster if "arch" in spec else LGBMForecaster
    return cls(features, seed=seed, name=label.split(" ")[0], **spec, **grid)


def ic_stats(ic: np.ndarray) -> dict[str, float]:
    ic = ic[np.isfinite(ic)]
    if len(ic) < 2:
        return {"mean": float("nan"), "ir": float("nan"), "days": len(ic)}
    return {"mean": float(ic.mean()), "ir": float(ic.mean() / ic.std(ddof=1)), "days": len(ic)}


def top_k_excess(scores: np.ndarray, fwd: np.ndarray, spec: dict) -> float:
    """Gross signal check before costs: mean over the model's decision days (every h-th test bar)
    of the top-k names' mean h-bar forward return minus the mean over all names."""
    out = []
    for t in range(0, len(scores), spec["horizon"]):
        ok = np.isfinite(scores[t]) & np.isfinite(fwd[t])
        if ok.sum() <= spec["top_k"]:
            continue
        s, f = scores[t, ok], fwd[t, ok]
        best = np.argsort(-s, kind="stable")[: spec["top_k"]]
        out.append(f[best].mean() - f.mean())
    return float(np.mean(out)) if out else float("nan")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--start", default="2017-01-02")
    ap.add_argument("--end", default="2023-12-28")
    ap.add_argument("--test-bars", type=int, default=246)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--models", nargs="*", help="subset of MODELS keys")
    ap.add_argument("--no-peers", action="store_true", help="skip the factor / equal-weight runs")
    ap.add_argument("--out", default=str(ROOT / "forecasts.md"))
    ap.add_argument("--peers-only", action="store_true", help="only the factor / equal-weight / index runs")
    ap.add_argument("--render", metavar="JSON", nargs="+",
                    help="only rewrite the .md (and its .json) from saved results files (several: parts run "
                         "side by side, e.g. one per model and one --peers-only, merged)")
    args = ap.parse_args(argv)
    if args.render:
        saved = merge_results([json.loads(Path(f).read_text()) for f in args.render])
        # the merged raw numbers beside the merged report (a superset of each part)
        Path(args.out).with_suffix(".json").write_text(json.dumps(saved, indent=1, default=float))
        args.__dict__.update({k: saved["args"][k] for k in ("start", "end", "test_bars", "seeds")})
        write_report(Path(args.out), args, saved["windows"], saved["symbols"], saved["ic_rows"], saved["chosen"],
                     saved["portfolio"], saved["peers"], saved["seconds"], saved["fit_seconds"])
        return

    t_start = time.time()
    paths = DataPaths()
    panel = load_panel(paths, end=args.end)
    engine = FactorEngine(Fundamentals.load(paths), MarketCaps.load(paths))
    idx = load_index(paths.path("index"), "KOSPI200")
    features = FeatureBuilder(idx["date"].to_numpy().astype("datetime64[D]"), idx["close"].cast(float).to_numpy(),
                              engine)
    kospi = index_close(panel.dates, idx)
    first = int(np.searchsorted(panel.dates, np.datetime64(args.start, "D")))
    windows = walk_forward_windows(len(panel), train=first - 5, test=args.test_bars, gap=5, first_test=first,
                                   expanding=True)
    config = BacktestConfig(min_trade_value=200_000)
    models = {} if args.peers_only else {k: v for k, v in MODELS.items() if not args.models or k in args.models}

    ic_rows: dict[str, dict[str, list[dict]]] = {label: {} for label in models}  # model -> year -> per seed
    chosen: dict[str, dict[str, list[str]]] = {label: {} for label in models}
    fitted: dict[tuple[str, int, int], LGBMForecaster | SequenceForecaster] = {}
    fit_seconds: dict[str, float] = {label: 0.0 for label in models}
    fwd_all = {label: forward_returns(panel.close, spec["horizon"]) for label, spec in models.items()}
    # window-outer: every model and seed of a window reuses the window's cached features
    for wi, w in enumerate(windows):
        year = str(panel.dates[w.test[0]])[:4]
        test_rows = np.arange(*w.test)
        history = panel.rows(*w.train)
        for label, spec in models.items():
            picked: tuple[dict, ...] | None = None
            for seed in args.seeds:
                t = time.time()
                # the first seed chooses the hyper-parameters on the validation year; the other
                # seeds reuse that choice (still validation-only) instead of repeating the grid
                grid = {} if picked is None else {"grid": picked}
                agent = make_agent(features, label, spec, seed, grid)
                agent.fit(history)
                fit_seconds[label] += time.time() - t
                picked = picked or (dict(agent.chosen),)
                fitted[(label, seed, wi)] = agent
                # scores at every test bar, from features of rows <= t (each row of the panel is causal)
                scores = agent.scores(panel, test_rows)
                fwd = fwd_all[label][test_rows]
                ic, ric = daily_ic(scores, fwd)
                ic_rows[label].setdefault(year, []).append(
                    {"ic": ic_stats(ic), "rank_ic": ic_stats(ric), "top_k_excess": top_k_excess(scores, fwd, spec)})
                chosen[label].setdefault(year, []).append(json.dumps(agent.chosen, sort_keys=True))
                print(f"{label} seed {seed} {year}: IC {np.nanmean(ic):+.4f} RankIC {np.nanmean(ric):+.4f} "
                      f"chosen {agent.chosen} val {agent.validation_rank_ic} ({time.time() - t:.0f}s)", flush=True)
    portfolio: dict[str, list[dict]] = {}
    for label in models:
        portfolio[label] = []
        for seed in args.seeds:
            per_window = iter([fitted[(label, seed, wi)] for wi in range(len(windows))])
            # walk_forward fits each agent on the same train rows again: fit() sees the same
            # history and keeps its model, so the portfolio is driven by the models scored above
            res = walk_forward(lambda s, it=per_window: next(it), panel, windows, seeds=(seed,), config=config,
                               benchmark=kospi)
            portfolio[label].append(res.metrics[seed])
            print(f"{label} seed {seed} portfolio: " + json.dumps(
                {k: round(res.metrics[seed][k], 4) for k, _ in PORTFOLIO_KEYS}), flush=True)

    peers: dict[str, dict] = {}
    if not args.no_peers:
        for label, factory in {"factor (IC-weighted factor model)": lambda s: FactorAgent(engine, name="factor"),
                               "equal-weight-monthly": lambda s: EqualWeightRebalanced()}.items():
            res = walk_forward(factory, panel, windows, seeds=(0,), config=config, benchmark=kospi)
            peers[label] = res.metrics[0]
            print(f"{label}: " + json.dumps({k: round(res.metrics[0][k], 4) for k, _ in PORTFOLIO_KEYS}), flush=True)
        d0 = panel.dates[windows[0].test[0] - 1]
        lo = int(np.searchsorted(panel.dates, d0))
        bench = kospi[lo:windows[-1].test[1]]
        peers["KOSPI200 buy-and-hold (index)"] = compute(bench / bench[0] * 1e8)
    seconds = time.time() - t_start
    # the raw numbers beside the report: `--render` rewrites the .md from them without rerunning
    saved = {"args": vars(args), "windows": len(windows), "symbols": len(panel.symbols), "ic_rows": ic_rows,
             "chosen": chosen, "portfolio": portfolio, "peers": peers, "seconds": seconds,
             "fit_seconds": fit_seconds}
    Path(args.out).with_suffix(".json").write_text(json.dumps(saved, indent=1, default=float))
    write_report(Path(args.out), args, len(windows), len(panel.symbols), ic_rows, chosen, portfolio, peers, seconds,
                 fit_seconds)


def merge_results(parts: list[dict]) -> dict:
    """One results dict from parts that ran different models (or only the peers) on the same
    windows and seeds; the wall time is the longest part's (they ran side by side)."""
    out = {"args": parts[0]["args"], "windows": parts[0]["windows"], "symbols": parts[0]["symbols"],
           "ic_rows": {}, "chosen": {}, "portfolio": {}, "peers": {}, "fit_seconds": {},
           "seconds": max(p["seconds"] for p in parts)}
    for p in parts:
        if (p["windows"], p["args"]["start"], p["args"]["end"]) != (out["windows"], out["args"]["start"],
                                                                    out["args"]["end"]):
            raise ValueError("parts ran on different walk-forward windows: they cannot be merged")
        for k in ("ic_rows", "chosen", "portfolio", "peers"):
            out[k].update(p[k])
        out["fit_seconds"].update(p.get("fit_seconds", {}))  # older results files lack it
        if p["ic_rows"]:
            out["args"] = {**out["args"], "seeds": p["args"]["seeds"]}
    return out


def _fmt(v: float, pct: bool) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    return f"{100 * v:.1f}%" if pct else f"{v:.2f}"


def _mean_std(values: list[float], pct: bool, digits: int | None = None) -> str:
    a = np.array([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(a) == 0:
        return "–"
    scale = 100.0 if pct else 1.0
    sd = a.std(ddof=1) * scale if len(a) > 1 else 0.0
    unit = "%" if pct else ""
    d = digits if digits is not None else (1 if pct else 3)
    return f"{a.mean() * scale:.{d}f}{unit} ± {sd:.{d}f}{unit}"


def write_report(out: Path, args, n_windows: int, n_symbols: int, ic_rows, chosen, portfolio, peers,
                 seconds: float, fit_seconds: dict[str, float] | None = None) -> None:
    seeds = " ".join(str(s) for s in args.seeds)
    cmd = (f"PYTHONPATH=. /work/main/.venv/bin/python -m reports.forecasts --start {args.start} --end {args.end} "
           f"--test-bars {args.test_bars} --seeds {seeds}")
    lines = [
        "# Forecasters: signal quality and the portfolio they drive (issue 15)", "",
        f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC in {seconds / 60:.1f} min by", "",
        "```", cmd, "```", "",
        (f"Walk-forward on the shipped panel ({n_symbols} large caps, survivors only — see data/README): "
        f"{n_windows} yearly test windows {args.start} → {args.end}, expanding training history, 5-bar gap; "
        "a fresh model per window and seed, fitted on the train rows only, its hyper-parameters chosen on the "
        "last year of that history by mean daily Rank IC (purged of the label horizon), never on a test year "
        "(searched with the first seed, reused by the others). "
        f"Seeds: {seeds} (LightGBM bagging and feature sampling, `deterministic=True`; the nets' initial weights, "
        "dropout and batch order; one thread). The nets (gru, transformer: strategies/neural.py) read the last 20 "
        "bars of the same features per stock and early-stop on the validation year's Rank IC; the epoch count "
        "the first seed stopped at is reused by the other seeds. "
        "Label: the h-bar return from close t+1 to close t+1+h. Features: strategies/features.py "
        "(cross-sectionally ranked Alpha158-style price/volume, point-in-time fundamentals, market state)."), "",
        "## Signal: IC, ICIR, Rank IC, Rank ICIR per test year (mean ± std over seeds)", "",
    ]
    for label, by_year in ic_rows.items():
        lines += [f"### {label}", "",
                  ("| test year | IC | ICIR | Rank IC | Rank ICIR | days | top-k excess per period (gross) "
                  "| chosen (seeds) |"),
                  "|---|---|---|---|---|---|---|---|"]
        all_stats = []
        for year, stats in by_year.items():
            all_stats += stats
            picks = sorted(set(chosen[label][year]))
            pick_txt = "; ".join(p.replace('"', "") for p in picks)
            lines.append(f"| {year} | {_mean_std([s['ic']['mean'] for s in stats], False)} | "
                         f"{_mean_std([s['ic']['ir'] for s in stats], False, 2)} | "
                         f"{_mean_std([s['rank_ic']['mean'] for s in stats], False)} | "
                         f"{_mean_std([s['rank_ic']['ir'] for s in stats], False, 2)} | "
                         f"{stats[0]['rank_ic']['days']} | {_mean_std([s['top_k_excess'] for s in stats], True, 2)} | "
                         f"{pick_txt} |")
        # all years: the mean of the yearly means per seed, then mean ± std across seeds
        n_seeds = len(args.seeds)
        per_seed = {k: [np.nanmean([all_stats[i][k]["mean"] for i in range(s, len(all_stats), n_seeds)])
                        for s in range(n_seeds)] for k in ("ic", "rank_ic")}
        lines += [(f"| all years (mean of years) | {_mean_std(per_seed['ic'], False)} | | "
                  f"{_mean_std(per_seed['rank_ic'], False)} | | | | |"), ""]
    lines += [("## Portfolio: stitched walk-forward account (100M KRW, next-bar fills, commission + dated sell tax "
              "+ slippage, trades under 200k KRW skipped)"), "",
              "| strategy | " + " | ".join(k for k, _ in PORTFOLIO_KEYS) + " |",
              "|---|" + "---|" * len(PORTFOLIO_KEYS)]
    for label, runs in portfolio.items():
        lines.append(f"| {label} (mean ± std, {len(runs)} seeds) | " +
                     " | ".join(_mean_std([r.get(k, np.nan) for r in runs], p, 2) for k, p in PORTFOLIO_KEYS) + " |")
    for label, m in peers.items():
        lines.append(f"| {label} | " + " | ".join(_fmt(m.get(k, np.nan), p) for k, p in PORTFOLIO_KEYS) + " |")
    lines += ["", ("IR is against the KOSPI200 price index on the same days; turnover is one-way per year; "
              "costs are commission + tax over the starting capital."), ""]
    if fit_seconds:
        lines += ["Training time (all windows and seeds, one thread on a shared 2-core machine): " +
                  "; ".join(f"{label.split(' ')[0]} {sec / 60:.1f} min" for label, sec in fit_seconds.items()) +
                  " (the fits only; a model not listed ran before the time was recorded).", ""]
    write_keeping_analysis(out, lines)

if __name__ == "__main__":
    main()
