"""Point-in-time fundamentals and market caps: what an investor could know on a given date.

Statements: the DART file gives `period_end`, not the filing date, so a statement becomes usable
only `quarter_lag_days` (Q1/H1/Q3, default 45) or `annual_lag_days` (FY, default 90) after its
period end — the statutory filing deadlines. `as_of(date)` never returns a row that was not yet
public on that date.

Market caps: the snapshot file holds real KRX market caps only for the first weeks of some years.
On a snapshot day we use the published value. On any other day we carry the *last* snapshot
forward, scaled by the symbol's adjusted-price move since then:
    cap(t) = cap(s) * adj_close(t) / adj_close(s)        (s = last snapshot day <= t)
which equals "shares at s × price at t" and stays right across splits (the adjusted series
absorbs them). Bias, stated: share issuance, buybacks and conversions after s are ignored, so
caps drift by the change in share count over up to ~11 months. Before the first snapshot a cap is
unknown (NaN): using the first snapshot's shares backwards would use information from the
future, so value factors are simply missing before 2021 in the shipped data.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from market.data import DataError, DataPaths, _as_date

FLOW_ITEMS = ("revenue", "operating_income", "net_income", "net_income_owners")
STOCK_ITEMS = ("total_equity", "equity_owners", "total_assets", "total_liabilities")


@dataclass(frozen=True)
class ReportingLag:
    quarter_lag_days: int = 45
    annual_lag_days: int = 90

    def __post_init__(self):
        if self.quarter_lag_days < 0 or self.annual_lag_days < 0:
            raise ValueError(f"reporting lags must be >= 0 days, got {self}")


def _to_date_col(df: pl.DataFrame, col: str) -> pl.DataFrame:
    t = df.schema[col]
    if isinstance(t, pl.Datetime):
        return df.with_columns(pl.col(col).dt.date())
    if t == pl.Utf8:
        return df.with_columns(pl.col(col).str.to_date("%Y-%m-%d"))
    return df.with_columns(pl.col(col).cast(pl.Date))


def _ttm(values: np.ndarray, period_end: np.ndarray) -> np.ndarray:
    """Trailing-twelve-month sums of 3-month values, only where 4 consecutive quarters exist."""
    out = np.full(len(values), np.nan)
    for i in range(3, len(values)):
        span = (period_end[i] - period_end[i - 3]).astype(int)
        if 250 <= span <= 300:  # four consecutive quarter ends are ~273 days apart
            out[i] = np.sum(values[i - 3:i + 1])  # NaN if any quarter is missing
    return out


def _year_ago(values: np.ndarray, period_end: np.ndarray) -> np.ndarray:
    """The same item for the period ending ~one year earlier (NaN when that row is absent)."""
    out = np.full(len(values), np.nan)
    for i in range(len(values)):
        target = period_end[i] - np.timedelta64(365, "D")
        j = np.searchsorted(period_end, target - np.timedelta64(10, "D"))
        if j < i and abs((period_end[j] - target).astype(int)) <= 10:
            out[i] = values[j]
    return out


class Fundamentals:
    """Statements indexed by the day they became public. Load once; query `as_of(date)`."""

    def __init__(self, frame: pl.DataFrame, lag: ReportingLag = ReportingLag()):
        need = ("symbol", "period_end", "report", *(f"{k}_q" for k in FLOW_ITEMS), "total_equity")
        missing = [c for c in need if c not in frame.columns]
        if missing:
            raise DataError(f"fundamentals lack columns {missing}")
        self.lag = lag
        df = _to_date_col(frame.with_columns(pl.col("symbol").cast(pl.Utf8), pl.col("report").cast(pl.Utf8)),
                          "period_end")
        for c in STOCK_ITEMS:
            if c not in df.columns:
                df = df.with_columns(pl.lit(None, dtype=pl.Float64).alias(c))
        bad = df.filter(~pl.col("report").is_in(["Q1", "H1", "Q3", "FY"]))
        if not bad.is_empty():
            raise DataError(f"unknown report types in fundamentals: {bad['report'].unique().to_list()}")
        df = df.with_columns(
            (pl.col("period_end") + pl.duration(days=pl.when(pl.col("report") == "FY")
                                                .then(lag.annual_lag_days).otherwise(lag.quarter_lag_days)))
            .alias("available"))
        df = df.sort(["symbol", "period_end"]).unique(["symbol", "period_end"], keep="last", maintain_order=True)
        # Derived per-row items, each computed from that row and older rows only (all of which
        # were public no later than the row itself, since lags do not shrink with time).
        parts = []
        for _sym, g in df.group_by("symbol", maintain_order=True):
            pe = g["period_end"].to_numpy().astype("datetime64[D]")
            cols = {}
            for k in FLOW_ITEMS:
                q = g[f"{k}_q"].cast(pl.Float64).fill_null(np.nan).to_numpy()
                cols[f"{k}_ttm"] = _ttm(q, pe)
                cols[f"{k}_q_1y"] = _year_ago(q, pe)
            ni = g["net_income_q"].cast(pl.Float64).fill_null(np.nan).to_numpy()
            stab = np.full(len(ni), np.nan)
            for i in range(7, len(ni)):  # 8 consecutive quarters of net income
                w = ni[i - 7:i + 1]
                if 600 <= (pe[i] - pe[i - 7]).astype(int) <= 660 and np.all(np.isfinite(w)) and np.mean(np.abs(w)) > 0:
                    stab[i] = -np.std(w) / np.mean(np.abs(w))  # higher = steadier earnings
            cols["earnings_stability"] = stab
            # Balance sheets are missing for many periods (no Q4 sheets 2016-2020): carry the
            # last published sheet forward for up to a year, using older rows only.
            for c in ("equity_owners", "total_assets", "total_liabilities"):
                cols[c] = g[c].cast(pl.Float64).forward_fill(limit=4).fill_null(np.nan).to_numpy()
            parts.append(g.with_columns(**{k: pl.Series(v) for k, v in cols.items()}))
        self.frame = pl.concat(parts) if parts else df
        self.symbols = tuple(sorted(self.frame["symbol"].unique().to_list()))
        # Per-symbol arrays for fast as-of lookups.
        self._by_symbol: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = {}
        value_cols = [c for c in self.frame.columns if c not in
                      ("symbol", "company", "market", "industry", "period_end", "report", "scope", "available")]
        for sym, g in self.frame.group_by("symbol", maintain_order=True):
            g = g.sort(["available", "period_end"])
            avail = g["available"].to_numpy().astype("datetime64[D]")
            arrays = {c: g[c].cast(pl.Float64).fill_null(np.nan).to_numpy() for c in value_cols}
            arrays["period_end"] = g["period_end"].to_numpy().astype("datetime64[D]")
            self._by_symbol[sym[0] if isinstance(sym, tuple) else sym] = (avail, arrays)

    @classmethod
    def load(cls, paths: DataPaths | None = None, lag: ReportingLag = ReportingLag()) -> "Fundamentals":
        path = (paths or DataPaths()).path("fundamentals")
        if not path.exists():
            raise DataError(f"fundamentals file not found: {path}")
        return cls(pl.read_parquet(path), lag)

    def as_of(self, date, symbols, items) -> dict[str, np.ndarray]:
        """Latest public value of each item for each symbol on `date` (NaN = nothing public yet).

        Only rows with `available <= date` count; among them the one with the latest period end.
        """
        d = np.datetime64(_as_date(date), "D")
        out = {k: np.full(len(symbols), np.nan) for k in items}
        for j, s in enumerate(symbols):
            entry = self._by_symbol.get(s)
            if entry is None:
                continue
            avail, arrays = entry
            n = int(np.searchsorted(avail, d, side="right"))
            if n == 0:
                continue
            # latest period among public rows (a late FY can be published after the next Q1)
            i = int(np.argmax(arrays["period_end"][:n]))
            for k in items:
                out[k][j] = arrays[k][i]
        return out

    def available_date(self, symbol: str, period_end) -> dt.date:
        pe = np.datetime64(_as_date(period_end), "D")
        avail, arrays = self._by_symbol[symbol]
        hit = np.flatnonzero(arrays["period_end"] == pe)
        if len(hit) == 0:
            raise DataError(f"no statement for {symbol} ending {period_end}")
        return avail[hit[0]].astype("datetime64[D]").item()


class MarketCaps:
    """Point-in-time market caps from the snapshot file, carried forward by adjusted price."""

    def __init__(self, frame: pl.DataFrame):
        for c in ("date", "symbol", "market_cap", "close"):
            if c not in frame.columns:
                raise DataError(f"market snapshot lacks column {c!r}")
        df = _to_date_col(frame.with_columns(pl.col("symbol").cast(pl.Utf8)), "date")
        df = df.filter(pl.col("market_cap").is_not_null() & (pl.col("market_cap") > 0)).sort(["symbol", "date"])
        self._by_symbol: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for sym, g in df.group_by("symbol", maintain_order=True):
            self._by_symbol[sym[0] if isinstance(sym, tuple) else sym] = (
                g["date"].to_numpy().astype("datetime64[D]"), g["market_cap"].cast(pl.Float64).to_numpy())

    @classmethod
    def load(cls, paths: DataPaths | None = None) -> "MarketCaps":
        path = (paths or DataPaths()).path("market_caps")
        if not path.exists():
            raise DataError(f"market snapshot file not found: {path}")
        return cls(pl.read_parquet(path, columns=["date", "symbol", "close", "market_cap"]))

    def as_of(self, row: int, dates: np.ndarray, symbols, adj_close: np.ndarray) -> np.ndarray:
        """Caps on `dates[row]` for `symbols`, using adj_close (T, N) rows <= row only.

        Returns NaN where no snapshot exists on or before the date, or the price at the snapshot
        day or today is missing.
        """
        d = dates[row]
        out = np.full(len(symbols), np.nan)
        for j, s in enumerate(symbols):
            entry = self._by_symbol.get(s)
            if entry is None:
                continue
            snap_dates, caps = entry
            k = int(np.searchsorted(snap_dates, d, side="right")) - 1
            if k < 0:
                continue
            if snap_dates[k] == d:
                out[j] = caps[k]
                continue
            srow = int(np.searchsorted(dates, snap_dates[k], side="left"))
            if srow > row or srow >= len(dates) or dates[srow] != snap_dates[k]:
                continue  # snapshot day not in the panel calendar: cannot scale it safely
            p0, p1 = adj_close[srow, j], adj_close[row, j]
            if np.isfinite(p0) and np.isfinite(p1) and p0 > 0:
                out[j] = caps[k] * p1 / p0
        return out
