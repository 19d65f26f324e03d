"""Portfolio construction, the risk layer and the ensemble chosen on validation (issue 15, items 4–6).

    /work/main/.venv/bin/python -m reports.strategies_portfolio [--only NAME ...] [--report-only]

Each candidate (the members alone, and ensembles of the registry's members — regime-factor,
technical, equal-weight — with other construction / risk / scoring steps) trades ONE continuous
account 2015-01-02 → 2023-12-28 through the one accounting (backtest.engine: next-bar fills,
commission, dated sell tax, slippage, trades under 200k KRW skipped), fitted on the rows before
2015 only. Daily returns are kept in reports/strategies_portfolio.json (`--only` re-runs some and
keeps the others; `--report-only` rewrites the report from it).

The walk-forward choice: before each test year 2017 … 2023 the ensemble candidates are ranked by
Sharpe on the two years before it (strategies/selection.py cuts every series at the test start),
the best trades that year; the test years are stitched. Every table reports 2017-01-02 → 2023-12-28
only (returns of the continuous runs, rebased), beside KOSPI200 buy-and-hold.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from backtest.engine import BacktestConfig, run_backtest
from backtest.metrics import compute
from market.data import DataPaths, index_close, load_index, load_panel
from strategies.baselines import EqualWeightRebalanced
from strategies.construction import TopkDropout
from strategies.defaults import ALL_MEMBERS
from strategies.ensemble import EnsembleAgent, MetaEnsemble
from strategies.factor_model import FactorAgent
from strategies.factors import FactorEngine
from strategies.fundamentals import Fundamentals, MarketCaps
from strategies.pipeline import DecisionConfig
from strategies.regime import RegimeDetector, RegimeSource
from strategies.registry import ensemble_members
from strategies.risk import RiskModel, RiskOverlay
from strategies.selection import default_variants as validated_variants
from strategies.selection import sectors, walk_forward_choice
from strategies.technical import TechnicalAgent

ROOT = Path(__file__).resolve().parent
START, TEST_START, END = "2015-01-02", "2017-01-02", "2023-12-28"
TEST_YEARS = [f"{y}-01-01" for y in range(2017, 2024)]
MEMBERS = ("technical", "factor", "regime-factor", "equal-weight-monthly")
# not "ens:": the walk-forward choice below ranks the "ens:" candidates, and this row came after it was made
DEFAULT_ENSEMBLE = "the default ensemble (strategies/defaults.py: its members and decision defaults)"


def candidates(engine, regime, sector_map) -> dict:
    def members():
        return ensemble_members(engine, regime, ALL_MEMBERS)

    # "combined weights": the combination as it is, whatever construction the project defaults to
    COMBINED = DecisionConfig(construction=None)

    def ens(config=None, risk=None, meta=None):
        return lambda: EnsembleAgent(members(), regime=regime, config=config or COMBINED, risk=risk,
                                     meta=meta or MetaEnsemble())

    topk_eq = TopkDropout(k=10, n_drop=10, weighting="equal", band=0.0)     # plain top-k, no hysteresis
    topk_score = TopkDropout(k=10, n_drop=10, weighting="score", band=0.0)
    dropout = TopkDropout(k=10, n_drop=2, weighting="equal", band=0.01, max_turnover=0.3)
    dropout_score = TopkDropout(k=10, n_drop=2, weighting="score", band=0.01, max_turnover=0.3)
    fast = MetaEnsemble(eta=50.0)
    overlay = RiskOverlay(vol_target=0.15, floor=0.5, max_position=0.15, sector_cap=0.3, sectors=sector_map)
    return {
        "technical": lambda: TechnicalAgent(),
        "factor": lambda: FactorAgent(engine, name="factor"),
        "regime-factor": lambda: FactorAgent(engine, regime=regime, name="regime-factor"),
        "equal-weight-monthly": lambda: EqualWeightRebalanced(),
        "ens: shipped (ERC + CVaR + hard stops)": ens(risk=RiskModel()),
        "ens: the default pipeline (DecisionConfig defaults)": ens(DecisionConfig(), risk="default"),
        # what `trader serve` and the demo run: the default members (ENSEMBLE_MEMBERS), defaults throughout
        DEFAULT_ENSEMBLE: lambda: EnsembleAgent(ensemble_members(engine, regime), regime=regime),
        "ens: combined weights, no risk": ens(risk=None),
        "ens: top-10 equal, no risk": ens(DecisionConfig(construction=topk_eq), None),
        "ens: top-10 score-weighted, no risk": ens(DecisionConfig(construction=topk_score), None),
        "ens: top-10 dropout-2, no risk": ens(DecisionConfig(construction=dropout), None),
        "ens: dropout + overlay": ens(DecisionConfig(construction=dropout), overlay),
        "ens: dropout + overlay, no drawdown step": ens(DecisionConfig(construction=dropout),
                                                        RiskOverlay(**{**overlay.__dict__, "dd_start": 0.98,
                                                                       "dd_full": 0.99})),
        "ens: dropout + overlay (vol 12%, CVaR 3%)": ens(DecisionConfig(construction=dropout),
                                                         RiskOverlay(**{**overlay.__dict__, "vol_target": 0.12,
                                                                        "cvar_budget": 0.03})),
        "ens: rank score, dropout + overlay": ens(DecisionConfig(construction=dropout, score="rank"), overlay),
        "ens: top-10 dropout-2 score-weighted, no risk": ens(DecisionConfig(construction=dropout_score), None),
        "ens: combined weights + overlay": ens(risk=overlay),
        # sharper online member weights (Hedge learning rate 50 instead of 5): the losing member fades
        "ens: eta 50, combined weights, no risk": ens(risk=None, meta=fast),
        "ens: eta 50, combined weights + overlay": ens(risk=overlay, meta=fast),
        "ens: eta 50, dropout-2 score-weighted, no risk": ens(DecisionConfig(construction=dropout_score), None,
                                                             fast),
        "ens: eta 50, dropout-2 score-weighted + overlay": ens(DecisionConfig(construction=dropout_score),
                                                              overlay, fast),
    }


VALIDATED = "ENSEMBLE: validated (member weights + steps chosen on the 2 years before each test year)"


def run_validated(store: dict, paths: DataPaths) -> None:
    """The validated ensemble, refitted before each yearly test window (backtest.walkforward: the
    account and every switching cost carry from one window into the next)."""
    from backtest.walkforward import walk_forward, walk_forward_windows
    from strategies.selection import ValidatedEnsemble

    panel = load_panel(paths, end=END)
    engine = FactorEngine(Fundamentals.load(paths), MarketCaps.load(paths))
    regime = RegimeSource.load(paths, "KOSPI200", RegimeDetector(seed=0), end=END)
    _ = regime.path
    variants = validated_variants(regime, sectors(paths))

    def members():
        return ensemble_members(engine, regime, ALL_MEMBERS)
    first = int(np.searchsorted(panel.dates, np.datetime64(TEST_START, "D")))
    windows = walk_forward_windows(len(panel), train=first - 5, test=246, gap=5, first_test=first, expanding=True)
    agents: list = []

    def factory(seed):
        agents.append(ValidatedEnsemble(members, variants, backtest_config=BacktestConfig(min_trade_value=200_000)))
        return agents[-1]
    t = time.time()
    res = walk_forward(factory, panel, windows, config=BacktestConfig(min_trade_value=200_000))
    run = res.runs[0]
    store[VALIDATED] = {
        "dates": [str(d) for d in run.dates[1:]], "returns": [round(float(x), 10) for x in run.returns],
        "exposure": [round(float(x), 4) for x in run.exposure[1:]],
        "turnover": [round(float(x), 6) for x in run.turnover[1:]],
        "choices": [a.chosen for a in agents],
        "agent_weights": [row for a in agents for row in a.agent_weights_log],
        "seconds": time.time() - t,
    }
    print(f"{VALIDATED}: {time.time() - t:.0f}s", flush=True)
    for c in store[VALIDATED]["choices"]:
        print(c, flush=True)


def run_all(names, store: dict, paths: DataPaths) -> None:
    panel = load_panel(paths, end=END)
    engine = FactorEngine(Fundamentals.load(paths), MarketCaps.load(paths))
    regime = RegimeSource.load(paths, "KOSPI200", RegimeDetector(seed=0), end=END)
    _ = regime.path  # fit the walk-forward HMM once (causal: row t uses index data <= t only)
    facs = candidates(engine, regime, sectors(paths))
    config = BacktestConfig(min_trade_value=200_000)
    for name in names:
        t = time.time()
        agent = facs[name]()
        res = run_backtest(agent, panel, START, END, config)
        store[name] = {
            "dates": [str(d) for d in res.dates[1:]],
            "returns": [round(float(x), 10) for x in res.returns],
            "exposure": [round(float(x), 4) for x in res.exposure[1:]],
            "turnover": [round(float(x), 6) for x in res.turnover[1:]],
            "agent_weights": getattr(agent, "agent_weights_log", []),
            "seconds": time.time() - t,
        }
        print(f"{name}: {time.time() - t:.0f}s", flush=True)


def test_span(entry) -> tuple[np.ndarray, np.ndarray]:
    d = np.array(entry["dates"], dtype="datetime64[D]")
    keep = d >= np.datetime64(TEST_START, "D")
    return d[keep], np.array(entry["returns"])[keep]


def metrics_of(returns, bench_close, turnover=None) -> dict:
    """`bench_close`: the benchmark's closes on the equity rows (row 0 = the close before day 1)."""
    eq = np.concatenate([[1e8], 1e8 * np.cumprod(1 + returns)])
    m = compute(eq, benchmark=bench_close)
    if turnover is not None:
        m["turnover"] = float(np.sum(turnover)) / (len(returns) / 252)
    return m


def write(store: dict, paths: DataPaths, out: Path, seconds: float) -> None:
    idx = load_index(paths.path("index"), "KOSPI200")
    any_entry = next(iter(store.values()))
    d_all = np.array(any_entry["dates"], dtype="datetime64[D]")
    kospi = index_close(d_all, idx)
    keep = d_all >= np.datetime64(TEST_START, "D")
    k_test = kospi[keep]
    k_prev = kospi[np.flatnonzero(keep)[0] - 1]
    kospi_rows = np.concatenate([[k_prev], k_test])

    def row(name, dates, r, turnover=None):
        if len(r) != len(k_test) or not np.array_equal(dates, d_all[keep]):
            raise ValueError(f"{name}: its test days are not the benchmark's")
        m = metrics_of(r, kospi_rows, turnover)
        eq = np.cumprod(1 + r)
        m["mdd"] = float(np.min(eq / np.maximum.accumulate(eq) - 1))
        return m

    rows = {}
    for name, e in store.items():
        d, r = test_span(e)
        to = np.array(e["turnover"])[np.array(e["dates"], dtype="datetime64[D]") >= np.datetime64(TEST_START, "D")]
        rows[name] = row(name, d, r, to)
    ens = {k: (np.array(v["dates"], dtype="datetime64[D]"), np.array(v["returns"])) for k, v in store.items()
           if k.startswith("ens:")}
    wf_d, wf_r, choices = walk_forward_choice(ens, TEST_YEARS, END)
    # the chosen candidates' turnover on their test days (same calendar for all)
    starts = [np.datetime64(c["test_start"], "D") for c in choices] + [np.datetime64(END, "D") + 1]
    wf_to = np.concatenate([np.array(store[c["chosen"]]["turnover"])[(d_all >= lo) & (d_all < hi)]
                            for c, lo, hi in zip(choices, starts, starts[1:])])
    rows["ENSEMBLE (chosen on validation, walk-forward)"] = row("wf", wf_d, wf_r, wf_to)
    kr = k_test / np.concatenate([[k_prev], k_test[:-1]]) - 1
    rows["KOSPI200 buy-and-hold (index)"] = row("kospi", d_all[keep], kr)

    keys = [("annual_return", True), ("annual_volatility", True), ("sharpe", False), ("mdd", True),
            ("turnover", False), ("information_ratio", False), ("beta", False)]

    def fmt(v, pct):
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return "–"
        return f"{100 * v:.1f}%" if pct else f"{v:.2f}"

    lines = ["## Portfolio construction, risk layer, ensemble chosen on validation (issue 15)", "",
             f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC ({seconds / 60:.1f} min of runs) by",
             "", "```", "/work/main/.venv/bin/python -m reports.strategies_portfolio", "```", "",
             (f"One continuous account per candidate {START} → {END} (fitted on the rows before {START}), "
             f"metrics on {TEST_START} → {END} only. Ensembles: the registry's members (regime-factor, "
             "technical, equal-weight), weekly decisions. Top-k rows: k = 10; `dropout-2` = TopkDropout "
             "(at most 2 swaps a decision, 1% rebalance band, 30% one-way turnover budget). Overlay = "
             "RiskOverlay (15% vol target, floor 0.5 gross, 15% name cap, 30% KSIC-industry cap, drawdown "
             "scaling from −10% to half exposure at −25%). Turnover = one-way per year."), "",
             "| strategy | " + " | ".join(k for k, _ in keys) + " |", "|---|" + "---|" * len(keys)]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(fmt(m.get(k), p) for k, p in keys) + " |")
    lines += ["", "### The walk-forward choice (Sharpe on the 2 years before each test year)", "",
              "| test year | chosen | its validation Sharpe | runner-up |", "|---|---|---|---|"]
    for c in choices:
        s = sorted(c["validation_sharpe"].items(), key=lambda kv: -kv[1])
        runner = f"{s[1][0]} ({s[1][1]:.2f})" if len(s) > 1 else "–"
        lines.append(f"| {c['test_start'][:4]} | {c['chosen']} | {s[0][1]:.2f} | {runner} |")
    lines += ["", "### Member weights over time (mean per test year, the chosen candidate's)", "",
              "| year | candidate | regime-factor | technical | equal-weight |",
              "|---|---|---|---|---|"]
    for c in choices:
        year = c["test_start"][:4]
        log = [w for d, w in store[c["chosen"]]["agent_weights"] if d.startswith(year)]
        if log:
            means = [np.mean([w.get(a, 0.0) for w in log]) for a in ("regime-factor", "technical", "equal-weight")]
            lines.append(f"| {year} | {c['chosen']} | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    if VALIDATED in store:
        lines += ["", "### The validated ensemble: member weights and steps fitted before each test year", "",
                  ("| test year | validation span from | regime-factor | technical | equal-weight | blend Sharpe "
                  "| variant chosen | its validation Sharpe |"), "|---|---|---|---|---|---|---|---|"]
        for c in store[VALIDATED]["choices"]:
            w = c["member_weights"]
            lines.append(f"| {int(c['as_of'][:4]) + 1} | {c['validation_start']} | {w['regime-factor']:.1f} | "
                         f"{w['technical']:.1f} | {w['equal-weight']:.1f} | {c['blend_sharpe']:.2f} | {c['variant']} | "
                         f"{c['variant_sharpe'][c['variant']]:.2f} |")
    section = "\n".join(lines) + "\n"
    write_section(out, "portfolio (reports/strategies_portfolio.py)", "portfolio", section)
    print(section)


def write_section(out: Path, begin: str, end: str, section: str) -> None:
    """Put `section` between the markers `<!-- begin -->` and `<!-- /end -->` of `out`, replacing
    what was there; a file without them gets the block at its end (below the hand-written
    marker, so reports.strategies_backtest keeps it too)."""
    text = out.read_text() if out.exists() else ""
    first, last = f"<!-- {begin} -->", f"<!-- /{end} -->"
    block = f"{first}\n{section}{last}"
    if first in text:
        head, rest = text.split(first, 1)
        text = head + block + rest.split(last, 1)[1]
    else:
        text = text + "\n" + block + "\n"
    out.write_text(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--store", default=str(ROOT / "strategies_portfolio.json"))
    ap.add_argument("--out", default=str(ROOT / "strategies.md"))
    args = ap.parse_args(argv)
    paths = DataPaths()
    store_path = Path(args.store)
    store = json.loads(store_path.read_text()) if store_path.exists() else {}
    t0 = time.time()
    if not args.report_only:
        names = args.only or [*candidates(None, None, {}), VALIDATED]
        run_all([k for k in names if k != VALIDATED], store, paths)
        if VALIDATED in names:
            run_validated(store, paths)
        store_path.write_text(json.dumps(store))
    write(store, paths, Path(args.out), sum(v.get("seconds", 0) for v in store.values()) or time.time() - t0)


if __name__ == "__main__":
    main()
