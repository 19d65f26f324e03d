"""Look-ahead check: a decision at time t must not change when data after t is added.

The strategy is built (from its factory) and run twice over the same decision bars: once on the
full data, and once per truncation point k on data cut off at bar k — the price panel *and*
every side file its context names (prices, index, ETF, market caps by `date`; fundamentals by
the day a report became public, `period_end` + 45 days for quarters / 90 for the annual
report). Every decision at t <= k made on the truncated data must equal the one made on the
full data. A leak shows up as the first (date, symbol) whose target weight differs.

This catches leaks through the window (vectorised `weights_matrix` strategies that shift data
backwards or normalise over the whole sample), through side files read without an as-of filter,
and through `fit` (both runs fit on the rows before the start only).
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from backtest.engine import _date, rebalance_mask, strategy_name
from market.data import DataPaths, Panel
from strategies.base import check_weights

# when a fundamentals row became public (the data has period ends, not filing dates)
REPORT_LAG_DAYS = {"FY": 90}
DEFAULT_REPORT_LAG_DAYS = 45
DATED_FILES = ("prices", "index", "etf", "market_caps", "fundamentals")


@dataclass
class LookaheadReport:
    strategy: str
    ok: bool
    points: list[str]             # truncation dates checked
    decisions_checked: int
    leak_date: str | None = None
    leak_symbol: str | None = None
    full_weight: float | None = None
    truncated_weight: float | None = None
    truncated_at: str | None = None

    def message(self) -> str:
        if self.ok:
            return (f"{self.strategy}: no look-ahead found ({self.decisions_checked} decisions compared "
                    f"at {len(self.points)} truncation points {self.points[0]}..{self.points[-1]})")
        return (f"{self.strategy}: LOOK-AHEAD: the decision on {self.leak_date} for {self.leak_symbol} is "
                f"{self.full_weight:.6f} with the full data but {self.truncated_weight:.6f} with data cut "
                f"at {self.truncated_at}: it uses information from after {self.leak_date}")


def _decisions(agent: Any, panel: Panel, bars: np.ndarray, fit_rows: int) -> dict[int, np.ndarray]:
    if hasattr(agent, "fit") and fit_rows > 0:
        agent.fit(panel.rows(0, fit_rows))
    n, label = len(panel.symbols), strategy_name(agent)
    if hasattr(agent, "weights_matrix"):
        matrix = np.asarray(agent.weights_matrix(panel), dtype=float)
        return {int(t): check_weights(matrix[t], n, label) for t in bars}
    if hasattr(agent, "target_weights"):
        return {int(t): check_weights(agent.target_weights(panel.rows(0, t + 1)), n, label) for t in bars}
    if callable(agent):
        return {int(t): check_weights(agent(panel.rows(0, t + 1)), n, label) for t in bars}
    raise TypeError(f"not a strategy: {agent!r}")


def truncate_paths(paths: DataPaths, cutoff: dt.date, folder: Path) -> DataPaths:
    """Copies of the dated files in `paths`, holding only what was known at the close of `cutoff`."""
    files = {}
    for name in DATED_FILES:
        src = paths.path(name)
        if not src.exists():
            continue
        df = pl.read_parquet(src) if src.suffix == ".parquet" else pl.read_csv(src, infer_schema_length=0)
        if name == "fundamentals" and "period_end" in df.columns:
            end = _as_date_col(df, "period_end")
            lag = pl.when(pl.col("report") == "FY").then(REPORT_LAG_DAYS["FY"]).otherwise(DEFAULT_REPORT_LAG_DAYS) \
                if "report" in df.columns else pl.lit(DEFAULT_REPORT_LAG_DAYS)
            known = end + pl.duration(days=lag)
            df = df.filter(known <= pl.lit(cutoff))
        elif "date" in df.columns:
            df = df.filter(_as_date_col(df, "date") <= pl.lit(cutoff))
        else:
            continue
        dst = folder / f"{name}.parquet"
        df.write_parquet(dst)
        files[name] = str(dst)
    return dataclasses.replace(paths, **files)  # type: ignore[arg-type]


def _as_date_col(df: pl.DataFrame, col: str) -> pl.Expr:
    kind = df.schema[col]
    if kind == pl.Utf8:
        return pl.col(col).str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False)
    if isinstance(kind, pl.Datetime):
        return pl.col(col).dt.date()
    return pl.col(col).cast(pl.Date)


def check_lookahead(make: Callable[[DataPaths], Any], panel: Panel, start=None, end=None, points: int = 12,
                    paths: DataPaths | None = None, rebalance: str | int | None = None,
                    tolerance: float = 1e-9, progress: bool = False) -> LookaheadReport:
    """Compare decisions on full vs truncated data. `make(paths)` builds a fresh strategy reading
    its side data from `paths` (truncated copies are passed for the truncated runs)."""
    paths = paths or DataPaths()
    T = len(panel)
    s = 0 if start is None else int(np.searchsorted(panel.dates, np.datetime64(_date(start), "D")))
    e = T - 1 if end is None else panel.index_of(_date(end))
    t0 = max(s - 1, 0)
    if e <= t0:
        raise ValueError(f"the span {start}..{end} holds no decision bar")
    full_agent = make(paths)
    # every bar by default, even for agents that trade rarely: more decisions to compare
    rule = rebalance or "daily"
    bars = np.flatnonzero(rebalance_mask(panel.dates, rule, t0)[: e + 1])
    full = _decisions(full_agent, panel, bars, s)
    label = strategy_name(full_agent)
    # truncation points: spread over the decision bars, always including the first and last
    ks = np.unique(bars[np.linspace(0, len(bars) - 1, min(points, len(bars))).round().astype(int)])
    checked = 0
    iterator = ks
    if progress:
        from tqdm import tqdm

        iterator = tqdm(ks, desc=f"look-ahead {label}", unit="cut", leave=False)
    with tempfile.TemporaryDirectory(prefix="krt-lookahead-") as tmp:
        for k in iterator:
            cut = panel.date(int(k))
            folder = Path(tmp) / str(cut)
            folder.mkdir()
            cut_paths = truncate_paths(paths, cut, folder)
            sub = panel.rows(0, int(k) + 1)
            mine = bars[bars <= k]
            part = _decisions(make(cut_paths), sub, mine, min(s, len(sub)))
            for t in mine:
                checked += 1
                diff = np.abs(part[int(t)] - full[int(t)])
                if np.any(diff > tolerance):
                    j = int(np.argmax(diff > tolerance))
                    return LookaheadReport(label, False, [str(panel.dates[x]) for x in ks], checked,
                                           leak_date=str(panel.dates[t]), leak_symbol=panel.symbols[j],
                                           full_weight=float(full[int(t)][j]),
                                           truncated_weight=float(part[int(t)][j]), truncated_at=str(cut))
    return LookaheadReport(label, True, [str(panel.dates[x]) for x in ks], checked)
