"""Tilted equal weight: the breadth of the equal-weight book plus the members' signal (issue 15).

    /work/main/.venv/bin/python -m reports.strategies_tilt [--only NAME ...] [--report-only]

Every candidate trades ONE continuous account 2015-01-02 → 2023-12-28 through the one accounting
(backtest.engine: next-bar fills, commission, dated sell tax, slippage, trades under 200k KRW
skipped), fitted on the rows before 2015 only — the protocol of reports/strategies_portfolio.py.
The tilted books are the default ensemble (regime-factor, technical, equal-weight; regime-weighted
online combination) with `TiltedEqualWeight` as its construction step (strategies/construction.py):
w_i ∝ max(0, 1 + tilt·(rank_i − mean)) over every tradable name, 5 % cap per name; the grid is the
tilt × the rebalance rule (weekly decisions with a 0.5 % band, or monthly decisions) × the risk
layer (the default RiskOverlay, or none).

Choice on validation only: before each test year 2017 … 2023 the tilted candidates of one risk
layer are ranked by Sharpe on the two years before it (strategies/selection.py cuts every series at
the test start); the best trades that year, the test years are stitched. The same validation
windows decide the default: the chosen tilted book with the overlay against the current default
ensemble (combined weights + overlay), window by window. Daily returns are kept in
reports/strategies_tilt.json, not committed (the whole run takes ≈ 2 min; `--only` re-runs some,
`--report-only` rewrites the section from it).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np

from backtest.engine import BacktestConfig, run_backtest
from backtest.metrics import information_ratio
from market.data import DataPaths, index_close, load_index, load_panel
from reports.strategies_portfolio import END, START, TEST_START, TEST_YEARS, metrics_of, write_section
from strategies.baselines import EqualWeightRebalanced
from strategies.construction import TiltedEqualWeight
from strategies.ensemble import EnsembleAgent
from strategies.factor_model import FactorAgent
from strategies.factors import FactorEngine
from strategies.fundamentals import Fundamentals, MarketCaps
from strategies.pipeline import DecisionConfig
from strategies.regime import RegimeDetector, RegimeSource
from strategies.registry import ensemble_members
from strategies.selection import choose_on_validation, walk_forward_choice

ROOT = Path(__file__).resolve().parent
TILTS = (0.5, 1.0, 2.0, 4.0)
RULES = {"weekly, 0.5% band": (5, 0.005), "monthly": (21, 0.0)}
RISKS = ("overlay", "no risk")
EW = "equal-weight-monthly"
FACTOR = "factor"
DEFAULT = "ensemble: current default (combined weights + overlay)"
NO_TILT = "tilted-EW tilt 0 (= equal weight through the pipeline), monthly, no risk"


def tilt_name(tilt: float, rule: str, risk: str) -> str:
    return f"tilted-EW tilt {tilt:g}, {rule}, {risk}"


def candidates(engine, regime) -> dict:
    def members():
        return ensemble_members(engine, regime)

    def tilted(tilt, every, band, risk):
        config = DecisionConfig(rebalance_every=every, construction=TiltedEqualWeight(tilt=tilt, band=band))
        return lambda: EnsembleAgent(members(), regime=regime, config=config,
                                     risk="default" if risk == "overlay" else None)

    out = {
        EW: lambda: EqualWeightRebalanced(),
        FACTOR: lambda: FactorAgent(engine, name="factor"),
        DEFAULT: lambda: EnsembleAgent(members(), regime=regime, config=DecisionConfig(construction=None)),
        NO_TILT: tilted(0.0, 21, 0.0, "no risk"),
    }
    for risk in RISKS:
        for rule, (every, band) in RULES.items():
            for tilt in TILTS:
                out[tilt_name(tilt, rule, risk)] = tilted(tilt, every, band, risk)
    return out


def run_all(names, store: dict, paths: DataPaths) -> None:
    panel = load_panel(paths, end=END)
    engine = FactorEngine(Fundamentals.load(paths), MarketCaps.load(paths))
    regime = RegimeSource.load(paths, "KOSPI200", RegimeDetector(seed=0), end=END)
    _ = regime.path  # fit the walk-forward HMM once (causal: row t uses index data <= t only)
    facs = candidates(engine, regime)
    config = BacktestConfig(min_trade_value=200_000)
    for name in names:
        t = time.time()
        res = run_backtest(facs[name](), panel, START, END, config)
        store[name] = {
            "dates": [str(d) for d in res.dates[1:]],
            "returns": [round(float(x), 10) for x in res.returns],
            "turnover": [round(float(x), 6) for x in res.turnover[1:]],
            "costs": [round(float(x), 8) for x in res.costs[1:] / res.equity[:-1]],  # of equity
            "seconds": time.time() - t,
        }
        print(f"{name}: {time.time() - t:.0f}s", flush=True)


def series(store, name):
    e = store[name]
    return np.array(e["dates"], dtype="datetime64[D]"), np.array(e["returns"])


def choose(store, risk: str) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    names = [tilt_name(t, rule, risk) for rule in RULES for t in TILTS]
    return walk_forward_choice({k: series(store, k) for k in names}, TEST_YEARS, END)


def write(store: dict, paths: DataPaths, out: Path, seconds: float) -> None:
    d_all, _ = series(store, EW)
    idx = load_index(paths.path("index"), "KOSPI200")
    kospi = index_close(d_all, idx)
    test = d_all >= np.datetime64(TEST_START, "D")
    first = int(np.flatnonzero(test)[0])
    kospi_rows = kospi[first - 1:]
    kr = kospi_rows[1:] / kospi_rows[:-1] - 1
    ew_r = series(store, EW)[1][test]

    def row(r, turnover, costs) -> dict:
        m = metrics_of(r, kospi_rows, turnover)
        eq = np.cumprod(1 + r)
        m["mdd"] = float(np.min(eq / np.maximum.accumulate(eq) - 1))
        m["ir_vs_ew"] = information_ratio(r, ew_r)
        m["costs_per_year"] = float(np.sum(costs)) / (len(r) / 252) if costs is not None else 0.0
        years = d_all[test].astype("datetime64[Y]").astype(int) + 1970
        m["years"] = {int(y): float(np.prod(1 + r[years == y]) - 1) for y in np.unique(years)}
        return m

    def arr(name, key):
        return np.array(store[name][key])[test]

    wf = {risk: choose(store, risk) for risk in RISKS}
    rows: dict[str, dict] = {}
    for name in (EW, FACTOR, DEFAULT):
        rows[name] = row(arr(name, "returns"), arr(name, "turnover"), arr(name, "costs"))
    for risk in RISKS:
        wf_d, wf_r, choices = wf[risk]
        if not np.array_equal(wf_d, d_all[test]):
            raise ValueError("the stitched test days are not the benchmark's")
        starts = [np.datetime64(c["test_start"], "D") for c in choices] + [np.datetime64(END, "D") + 1]
        pick = {key: np.concatenate([np.array(store[c["chosen"]][key])[(d_all >= lo) & (d_all < hi)]
                                     for c, lo, hi in zip(choices, starts, starts[1:])])
                for key in ("turnover", "costs")}
        rows[f"TILTED-EW, {risk} (tilt + rule chosen on validation, walk-forward)"] = row(
            wf_r, pick["turnover"], pick["costs"])
    rows[NO_TILT] = row(arr(NO_TILT, "returns"), arr(NO_TILT, "turnover"), arr(NO_TILT, "costs"))
    rows["KOSPI200 buy-and-hold (index)"] = row(kr, None, None)
    grid = {k: row(arr(k, "returns"), arr(k, "turnover"), arr(k, "costs"))
            for k in store if k.startswith("tilted-EW tilt") and k != NO_TILT}

    keys = [("annual_return", True), ("annual_volatility", True), ("sharpe", False), ("mdd", True),
            ("information_ratio", False), ("ir_vs_ew", False), ("turnover", False), ("costs_per_year", True)]
    head = ["annual return", "volatility", "Sharpe", "MDD", "IR vs KOSPI200", "IR vs EW", "turnover",
            "costs / year"]

    def fmt(v, pct):
        if v is None or (isinstance(v, float) and not np.isfinite(v)):
            return "–"
        return f"{100 * v:.1f}%" if pct else f"{v:.2f}"

    def table(rs):
        out = ["| strategy | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
        for name, m in rs.items():
            ir_ew = "–" if name == EW else fmt(m.get("ir_vs_ew"), False)
            cells = [ir_ew if k == "ir_vs_ew" else fmt(m.get(k), p) for k, p in keys]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        return out

    years = sorted(next(iter(rows.values()))["years"])
    lines = ["## Tilted equal weight: breadth plus the members' signal (issue 15)", "",
             f"Generated {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC ({seconds / 60:.1f} min of runs) by",
             "", "```", "/work/main/.venv/bin/python -m reports.strategies_tilt", "```", "",
             (f"One continuous account per candidate {START} → {END} (fitted on the rows before {START}), "
              f"metrics on {TEST_START} → {END} only (the protocol of the portfolio section). Tilted-EW = the "
              "default ensemble's members and combination with `TiltedEqualWeight` as the construction: every "
              "tradable name, w ∝ max(0, 1 + tilt·(rank − mean)) of the combined weights' cross-sectional rank, "
              "5 % cap per name; grid: tilt ∈ {" + ", ".join(f"{t:g}" for t in TILTS) + "} × "
              "{weekly decisions with a 0.5 % band, monthly decisions} × {the default RiskOverlay, no risk "
              "layer}. Before each test year the tilt and the rule are chosen by Sharpe on the two years "
              "before it, separately for each risk layer. Turnover one-way per year; costs = commission + "
              "sell tax per year, fraction of equity (slippage is in the fill prices)."), "",
             "### Test windows 2017–2023 (reported once)", "", *table(rows), "",
             "### Return per test year", "",
             "| strategy | " + " | ".join(str(y) for y in years) + " |", "|---|" + "---|" * len(years)]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(fmt(m["years"][y], True) for y in years) + " |")

    # the default: the chosen tilted book with the overlay against the current default, per window
    lines += ["", "### Validation: the choice per test year and the default decision", "",
              "| test year | chosen (overlay) | its validation Sharpe | current default's | chosen (no risk) "
              "| its validation Sharpe |", "|---|---|---|---|---|---|"]
    wins = 0
    for c_ov, c_no in zip(wf["overlay"][2], wf["no risk"][2]):
        start = c_ov["test_start"]
        _, base = choose_on_validation({DEFAULT: series(store, DEFAULT)}, start)
        s_ov = c_ov["validation_sharpe"][c_ov["chosen"]]
        wins += s_ov > base[DEFAULT]
        lines.append(f"| {start[:4]} | {c_ov['chosen']} | {s_ov:.2f} | {base[DEFAULT]:.2f} | {c_no['chosen']} | "
                     f"{c_no['validation_sharpe'][c_no['chosen']]:.2f} |")
    n_win = len(wf["overlay"][2])
    last = wf["overlay"][2][-1]
    lines += ["", (f"Tilted-EW with the overlay beat the current default on {wins} of {n_win} validation "
                   f"windows. The last window (the two years before {last['test_start'][:4]}, what a user "
                   f"deploying then would see) chose `{last['chosen']}`.")]
    lines += ["", "### The whole grid on the test windows (for reading only: nothing was chosen here)", "",
              *table(grid)]
    # Sharpe of the grid on each validation window, so the choice can be checked by hand
    lines += ["", "### Validation Sharpe of every tilted candidate (two years before each test year)", "",
              "| candidate | " + " | ".join(c["test_start"][:4] for c in wf["overlay"][2]) + " |",
              "|---|" + "---|" * n_win]
    for risk in RISKS:
        for name in wf[risk][2][0]["validation_sharpe"]:
            lines.append(f"| {name} | " + " | ".join(f"{c['validation_sharpe'][name]:.2f}" for c in wf[risk][2])
                         + " |")
    section = "\n".join(lines) + "\n"
    write_section(out, "tilt (reports/strategies_tilt.py)", "tilt", section)
    print(section)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--store", default=str(ROOT / "strategies_tilt.json"))
    ap.add_argument("--out", default=str(ROOT / "strategies.md"))
    args = ap.parse_args(argv)
    paths = DataPaths()
    store_path = Path(args.store)
    store = json.loads(store_path.read_text()) if store_path.exists() else {}
    t0 = time.time()
    if not args.report_only:
        names = args.only or list(candidates(None, None))
        for i in range(0, len(names), 4):  # keep what has run: a long run stopped early loses little
            run_all(names[i:i + 4], store, paths)
            store_path.write_text(json.dumps(store))
    write(store, paths, Path(args.out), sum(v.get("seconds", 0) for v in store.values()) or time.time() - t0)


if __name__ == "__main__":
    main()
