"""Tilted equal weight: the breadth of the equal-weight book plus the members' signal (issue 15).

    /work/main/.venv/bin/python -m reports.strategies_tilt [--only NAME ...] [--report-only]

Every candidate trades ONE continuous account 2015-01-02 → 2023-12-28 through the one accounting
(backtest.engine: next-bar fills, commission, dated sell tax, slippage, trades under 200k KRW
skipped), fitted on the rows before 2015 only — the protocol of reports/strategies_portfolio.py.
The tilted books are the default ensemble (regime-factor, technical, equal-weight; regime-weighted
online combination) with `TiltedEqualWeight` as its construction step (strategies/construction.py):
w_i ∝ max(0, 1 + tilt·(rank_i − mean)) over every tradable name, the account's cap per name; the grid is the
tilt × the rebalance rule (weekly decisions with a 0.5 % band, or monthly decisions) × the risk
layer: RiskOverlay with its steps switched on and off (volatility target 15 % with a 0.5 floor,
drawdown scaling to half exposure at −25 %, both, or neither: caps and the tail report only).

Choice on validation only: before each test year 2017 … 2023 the tilted candidates are ranked by
Sharpe on the two years before it (strategies/selection.py cuts every series at the test start),
within one risk layer and over all of them (the risk layer chosen too); the best trades that year,
the test years are stitched. The same validation windows decide the default: the joint choice
against the old default ensemble (combined weights + overlay), window by window, and the last
window's choice is what strategies/defaults.py holds. Daily returns are kept in
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
from strategies.defaults import ALL_MEMBERS, TILT_MAX_WEIGHT
from strategies.ensemble import EnsembleAgent
from strategies.factor_model import FactorAgent
from strategies.factors import FactorEngine
from strategies.fundamentals import Fundamentals, MarketCaps
from strategies.pipeline import COMBINED_OVERLAY, DecisionConfig
from strategies.regime import RegimeDetector, RegimeSource
from strategies.registry import ensemble_members
from strategies.selection import choose_on_validation, walk_forward_choice

ROOT = Path(__file__).resolve().parent
TILTS = (0.5, 1.0, 2.0, 4.0)
RULES = {"weekly, 0.5% band": (5, 0.005), "monthly": (21, 0.0)}
# the risk layer: DecisionConfig overrides of the overlay's two steps (the caps stay in every one)
RISKS = {
    "overlay": {"vol_target": 0.15, "drawdown_floor": 0.5},
    "vol target only": {"vol_target": 0.15, "drawdown_floor": 1.0},
    "drawdown only": {"vol_target": None, "drawdown_floor": 0.5},
    "caps only": {"vol_target": None, "drawdown_floor": 1.0},
}
ANY_RISK = "any risk layer"
# the member set: all of the ensemble's members, or without the technical one (a net loser alone)
MEMBER_SETS = {"": ALL_MEMBERS, " without technical": ("regime-factor", "equal-weight")}
ANY = "any risk layer and member set"
EW = "equal-weight-monthly"
FACTOR = "factor"
DEFAULT = "ensemble: old default (combined weights + overlay)"
NO_TILT = "tilted-EW tilt 0 (= equal weight through the pipeline), monthly, caps only"


def tilt_name(tilt: float, rule: str, risk: str, members: str = "") -> str:
    return f"tilted-EW{members} tilt {tilt:g}, {rule}, {risk}"


def candidates(engine, regime) -> dict:
    def members(names=ALL_MEMBERS):
        return ensemble_members(engine, regime, names)

    def tilted(tilt, every, band, risk, names=ALL_MEMBERS):
        construction = TiltedEqualWeight(tilt=tilt, band=band, max_weight=TILT_MAX_WEIGHT)
        config = DecisionConfig(rebalance_every=every, construction=construction, risk_layer="overlay",
                                **RISKS[risk])
        return lambda: EnsembleAgent(members(names), regime=regime, config=config)

    out = {
        EW: lambda: EqualWeightRebalanced(),
        FACTOR: lambda: FactorAgent(engine, name="factor"),
        DEFAULT: lambda: EnsembleAgent(members(), regime=regime, config=COMBINED_OVERLAY),
        NO_TILT: tilted(0.0, 21, 0.0, "caps only"),
    }
    for label, names in MEMBER_SETS.items():
        for risk in RISKS:
            for rule, (every, band) in RULES.items():
                for tilt in TILTS:
                    out[tilt_name(tilt, rule, risk, label)] = tilted(tilt, every, band, risk, names)
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
    """The walk-forward choice among the tilted candidates of one risk layer (all three members),
    of every risk layer (ANY_RISK), or of every risk layer and member set (ANY)."""
    sets = MEMBER_SETS if risk == ANY else {"": ALL_MEMBERS}
    names = [tilt_name(t, rule, r, label) for label in sets for r in (RISKS if risk in (ANY_RISK, ANY) else (risk,))
             for rule in RULES for t in TILTS]
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

    wf = {risk: choose(store, risk) for risk in (*RISKS, ANY_RISK, ANY)}
    rows: dict[str, dict] = {}
    for name in (EW, FACTOR, DEFAULT):
        rows[name] = row(arr(name, "returns"), arr(name, "turnover"), arr(name, "costs"))
    for risk in wf:
        wf_d, wf_r, choices = wf[risk]
        if not np.array_equal(wf_d, d_all[test]):
            raise ValueError("the stitched test days are not the benchmark's")
        starts = [np.datetime64(c["test_start"], "D") for c in choices] + [np.datetime64(END, "D") + 1]
        pick = {key: np.concatenate([np.array(store[c["chosen"]][key])[(d_all >= lo) & (d_all < hi)]
                                     for c, lo, hi in zip(choices, starts, starts[1:])])
                for key in ("turnover", "costs")}
        label = "any risk layer, with or without technical" if risk == ANY else risk
        rows[f"TILTED-EW, {label} (chosen on validation, walk-forward)"] = row(
            wf_r, pick["turnover"], pick["costs"])
    rows[NO_TILT] = row(arr(NO_TILT, "returns"), arr(NO_TILT, "turnover"), arr(NO_TILT, "costs"))
    rows["KOSPI200 buy-and-hold (index)"] = row(kr, None, None)
    grid = {k: row(arr(k, "returns"), arr(k, "turnover"), arr(k, "costs"))
            for k in store if k.startswith("tilted-EW") and k != NO_TILT}

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
              "ensemble's members (regime-factor, technical, equal-weight; or without technical) and their "
              "regime-weighted combination with `TiltedEqualWeight` as the construction: every tradable name, "
              "w ∝ max(0, 1 + tilt·(rank − mean)) of the combined weights' cross-sectional rank, capped per "
              f"name at {TILT_MAX_WEIGHT:.0%} (the account's cap); grid: the member set × tilt ∈ "
              "{" + ", ".join(f"{t:g}" for t in TILTS) + "} × "
              "{weekly decisions with a 0.5 % band, monthly decisions} × the risk layer: RiskOverlay with "
              "its volatility step (15 % target, 0.5 floor) and its drawdown step (half exposure at −25 %) on "
              "or off — {" + ", ".join(RISKS) + "}; the 20 % name cap is in every one. Before each test year "
              "the candidate with the best Sharpe on the two years before it trades that year: among the "
              "three-member candidates of each risk layer, of all risk layers (" + ANY_RISK + "), and of "
              "everything (" + ANY + "). Turnover one-way per year; costs = commission + sell tax per year, "
              "fraction of equity (slippage is in the fill prices)."), "",
             "### Test windows 2017–2023 (reported once)", "", *table(rows), "",
             "### Return per test year", "",
             "| strategy | " + " | ".join(str(y) for y in years) + " |", "|---|" + "---|" * len(years)]
    for name, m in rows.items():
        lines.append(f"| {name} | " + " | ".join(fmt(m["years"][y], True) for y in years) + " |")

    # the default: the joint choice (risk layer and member set too) against the old default
    lines += ["", "### Validation: the choice per test year and the default decision", "",
              "| test year | chosen (members, tilt, rule, risk layer) | its validation Sharpe | old default's | "
              + " | ".join(f"best {r}" for r in RISKS) + " | best without technical |",
              "|---|---|---|---|" + "---|" * (len(RISKS) + 1)]
    wins = 0
    for i, c in enumerate(wf[ANY][2]):
        start = c["test_start"]
        _, base = choose_on_validation({DEFAULT: series(store, DEFAULT)}, start)
        s_c = c["validation_sharpe"][c["chosen"]]
        wins += s_c > base[DEFAULT]
        best = [f"{wf[r][2][i]['validation_sharpe'][wf[r][2][i]['chosen']]:.2f}" for r in RISKS]
        no_tech = max(v for k, v in c["validation_sharpe"].items() if "without technical" in k)
        lines.append(f"| {start[:4]} | {c['chosen']} | {s_c:.2f} | {base[DEFAULT]:.2f} | " + " | ".join(best)
                     + f" | {no_tech:.2f} |")
    n_win = len(wf[ANY][2])
    last = wf[ANY][2][-1]
    lines += ["", (f"The tilted book with its risk layer and member set chosen on validation beat the old default "
                   f"on {wins} of {n_win} validation windows. The last window (the two years before "
                   f"{last['test_start'][:4]}, what a user deploying then would see) chose `{last['chosen']}`: "
                   "strategies/defaults.py (ENSEMBLE_MEMBERS and the decision settings) holds it.")]
    # each overlay step on validation: the best candidate with it against the best without it
    steps = {"volatility step": ("overlay", "vol target only"), "drawdown step": ("overlay", "drawdown only")}
    lines += ["", "Each overlay step on the validation windows (best validation Sharpe with the step vs without "
              "it; equal = the step never acted there):", ""]
    for step, with_it in steps.items():
        tally = {"helped": 0, "hurt": 0, "equal": 0}
        for c in wf[ANY][2]:
            v = c["validation_sharpe"]
            best = [max(s for k, s in v.items() if any(k.endswith(f", {r}") for r in RISKS if (r in with_it) == side))
                    for side in (True, False)]
            tally["equal" if abs(best[0] - best[1]) < 1e-9 else "helped" if best[0] > best[1] else "hurt"] += 1
        lines.append(f"* {step}: helped on {tally['helped']}, hurt on {tally['hurt']}, equal on {tally['equal']} "
                     f"of {n_win} windows")
    lines += ["", "### The whole grid on the test windows (for reading only: nothing was chosen here)", "",
              *table(grid)]
    # Sharpe of the grid on each validation window, so the choice can be checked by hand
    lines += ["", "### Validation Sharpe of every tilted candidate (two years before each test year)", "",
              "| candidate | " + " | ".join(c["test_start"][:4] for c in wf[ANY][2]) + " |",
              "|---|" + "---|" * n_win]
    for name in wf[ANY][2][0]["validation_sharpe"]:
        lines.append(f"| {name} | " + " | ".join(f"{c['validation_sharpe'][name]:.2f}" for c in wf[ANY][2]) + " |")
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
