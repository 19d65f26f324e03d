"""Data a backtest needs beyond the stock panel: extra instruments an agent trades (the KODEX
200 ETF of the buy-and-hold baseline), benchmark series and the delisting list."""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from market.data import DataError, Panel, index_close, load_index, load_prices


def panel_for(agent: Any, panel: Panel) -> Panel:
    """`panel` plus the instruments in the agent's `extra_prices` files (shipped long layout),
    on the panel's own calendar. Agents without `extra_prices` get the panel unchanged."""
    files = tuple(getattr(agent, "extra_prices", ()) or ())
    if not files:
        return panel
    start, end = panel.date(0), panel.date(len(panel) - 1)
    frames = [load_prices(f, start=start, end=end) for f in files]
    extra = Panel.from_frame(pl.concat([f.select("date", "symbol", "open", "high", "low", "close", "volume")
                                        .with_columns(pl.col("volume").cast(pl.Float64)) for f in frames]),
                             panel.dates)
    new = [s for s in extra.symbols if s not in panel.symbols]
    if not new:
        return panel
    cols = [extra.symbols.index(s) for s in new]
    fields = {f: np.hstack([getattr(panel, f), getattr(extra, f)[:, cols]])
              for f in ("open", "high", "low", "close", "volume")}
    return Panel(dates=panel.dates, symbols=panel.symbols + tuple(new), names=dict(panel.names), **fields)


def benchmark_levels(dates: np.ndarray, index_file, symbol: str = "KOSPI200") -> np.ndarray:
    """Index closes on `dates` (NaN where the index has no value that day)."""
    return index_close(np.asarray(dates, dtype="datetime64[D]"), load_index(index_file, symbol))


def etf_levels(dates: np.ndarray, etf_file, adjusted: bool = True) -> np.ndarray:
    """KODEX 200 levels on `dates`: dividend-adjusted close (total return) by default."""
    df = load_prices(etf_file)
    col = "adj_close" if adjusted and "adj_close" in df.columns else "close"
    return index_close(np.asarray(dates, dtype="datetime64[D]"), df.select("date", pl.col(col).alias("close")))


def load_delisted(path) -> dict[str, dt.date]:
    """symbol -> delisting date from the KRX delisting list (kr_delisted.csv.gz layout)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"delisting list not found: {path}")
    df = pl.read_csv(path, infer_schema_length=0)
    if not {"symbol", "delisting_date"} <= set(df.columns):
        raise DataError(f"{path} lacks columns symbol, delisting_date; it has {df.columns}")
    df = (df.select("symbol", pl.col("delisting_date").str.slice(0, 10).str.to_date("%Y-%m-%d", strict=False))
          .drop_nulls().group_by("symbol").agg(pl.col("delisting_date").max()))
    return dict(df.iter_rows())

