"""Loading the daily data (the shipped layout of ../shared/data) into a date × symbol panel.

Every path is configurable: `DataPaths` defaults to the project's data/ folder, `KRT_DATA_DIR`
moves the whole folder, and each loader also takes an explicit file. A newer file of the same
layout (more dates, more symbols) loads unchanged.
"""
from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from market.calendar import TradingCalendar

PROJECT_ROOT = Path(__file__).resolve().parent.parent
FIELDS = ("open", "high", "low", "close", "volume")


class DataError(ValueError):
    """A data file is missing, has the wrong layout, or holds no rows for the request."""


@dataclass(frozen=True)
class DataPaths:
    root: Path = field(default_factory=lambda: Path(os.environ.get("KRT_DATA_DIR", PROJECT_ROOT / "data")))
    prices: str = "kr_stocks_daily.parquet"
    index: str = "kr_index_daily.parquet"
    etf: str = "kr_etf_daily.parquet"
    fundamentals: str = "kr_fundamentals_quarterly.parquet"
    market_caps: str = "kr_market_snapshot_daily.parquet"
    symbols: str = "kr_stocks_symbols.csv"
    delisted: str = "kr_delisted.csv.gz"

    def path(self, name: str) -> Path:
        p = Path(getattr(self, name))
        return p if p.is_absolute() else Path(self.root) / p

    def with_files(self, **files: str | Path | None) -> "DataPaths":
        """Override single files (absolute or relative to root); None keeps the default."""
        return replace(self, **{k: str(v) for k, v in files.items() if v is not None})  # type: ignore[arg-type]


def _as_date(value) -> dt.date | None:
    if value is None or isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, dt.datetime):
        return value.date()
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise DataError(f"not a date (want YYYY-MM-DD): {value!r}") from exc


def _read(path: Path, required: tuple[str, ...]) -> pl.DataFrame:
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    try:
        if path.suffix == ".parquet":
            df = pl.read_parquet(path)
        else:
            df = pl.read_csv(path, schema_overrides={"symbol": pl.Utf8}, try_parse_dates=True)
    except Exception as exc:  # polars raises several types for corrupt files
        raise DataError(f"cannot read {path}: {exc}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path} lacks columns {missing}; it has {df.columns}")
    date_type = df.schema["date"]
    if isinstance(date_type, pl.Datetime):
        date = pl.col("date").dt.date()
    elif date_type == pl.Utf8:
        date = pl.col("date").str.to_date("%Y-%m-%d")
    else:
        date = pl.col("date").cast(pl.Date)
    df = df.with_columns(date.alias("date"))
    if "symbol" in df.columns:
        df = df.with_columns(pl.col("symbol").cast(pl.Utf8))
    return df


def _filter(df: pl.DataFrame, symbols, start, end) -> pl.DataFrame:
    start, end = _as_date(start), _as_date(end)
    if symbols is not None:
        df = df.filter(pl.col("symbol").is_in(list(symbols)))
    if start is not None:
        df = df.filter(pl.col("date") >= start)
    if end is not None:
        df = df.filter(pl.col("date") <= end)
    return df


def load_prices(path: Path | str, symbols=None, start=None, end=None) -> pl.DataFrame:
    """Long-format daily bars: date, symbol, open, high, low, close, volume (+ name if present)."""
    df = _read(Path(path), ("date", "symbol", *FIELDS))
    df = _filter(df, symbols, start, end)
    return df.sort(["date", "symbol"])


def load_index(path: Path | str, symbol: str = "KOSPI200", start=None, end=None) -> pl.DataFrame:
    """One index series (KOSPI, KOSDAQ or KOSPI200): date, open, high, low, close, volume."""
    df = _read(Path(path), ("date", "symbol", "close"))
    df = _filter(df, [symbol], start, end)
    if df.is_empty():
        raise DataError(f"index {symbol!r} has no rows in {path} for {start}..{end}")
    return df.sort("date")


@dataclass(frozen=True)
class Panel:
    """Daily bars as aligned (T, N) float arrays; NaN where a symbol has no bar that day.

    `dates` is the trading calendar of the panel. A Panel is what a decision may see: slice it
    with `upto(t)` and nothing after t is in it.
    """

    dates: np.ndarray  # datetime64[D], strictly increasing
    symbols: tuple[str, ...]
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    names: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        t, n = len(self.dates), len(self.symbols)
        for f in FIELDS:
            if getattr(self, f).shape != (t, n):
                raise DataError(f"panel field {f} has shape {getattr(self, f).shape}, want {(t, n)}")

    @property
    def calendar(self) -> TradingCalendar:
        return TradingCalendar(self.dates)

    def __len__(self) -> int:
        return len(self.dates)

    def date(self, i: int) -> dt.date:
        return self.dates[i].astype("datetime64[D]").item()

    def index_of(self, date) -> int:
        """Row of the last trading day on or before `date` (-1 if none)."""
        d = np.datetime64(_as_date(date), "D")
        return int(np.searchsorted(self.dates, d, side="right")) - 1

    def rows(self, start: int, stop: int) -> "Panel":
        s = slice(max(start, 0), stop)
        return replace(self, dates=self.dates[s], **{f: getattr(self, f)[s] for f in FIELDS})

    def upto(self, date) -> "Panel":
        """Everything known at the close of `date`: rows up to and including it."""
        return self.rows(0, self.index_of(date) + 1)

    def between(self, start=None, end=None) -> "Panel":
        lo = 0 if start is None else int(np.searchsorted(self.dates, np.datetime64(_as_date(start), "D")))
        hi = len(self.dates) if end is None else self.index_of(end) + 1
        return self.rows(lo, hi)

    def tail(self, n: int) -> "Panel":
        return self.rows(len(self.dates) - n, len(self.dates))

    def select(self, symbols) -> "Panel":
        symbols = tuple(symbols)
        unknown = [s for s in symbols if s not in self.symbols]
        if unknown:
            raise DataError(f"symbols not in the panel: {unknown}")
        cols = [self.symbols.index(s) for s in symbols]
        return replace(self, symbols=symbols, **{f: getattr(self, f)[:, cols] for f in FIELDS})

    def to_dict(self) -> dict:
        """JSON-friendly form (NaN as None) used in snapshots sent over HTTP."""
        def arr(a):
            return [[None if np.isnan(v) else float(v) for v in row] for row in a]
        return {
            "dates": [str(d) for d in self.dates.astype("datetime64[D]")],
            "symbols": list(self.symbols),
            **{f: arr(getattr(self, f)) for f in FIELDS},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Panel":
        def arr(rows):
            return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float).reshape(
                len(d["dates"]), len(d["symbols"]))
        return cls(
            dates=np.array(d["dates"], dtype="datetime64[D]"), symbols=tuple(d["symbols"]),
            **{f: arr(d[f]) for f in FIELDS},
        )

    @classmethod
    def from_frame(cls, df: pl.DataFrame, calendar: np.ndarray | None = None) -> "Panel":
        """Pivot long bars into a panel on `calendar` (default: every date present in df)."""
        if df.is_empty():
            raise DataError("no price rows to build a panel from (check symbols and dates)")
        symbols = tuple(sorted(df["symbol"].unique().to_list()))
        dates = np.unique(df["date"].to_numpy().astype("datetime64[D]")) if calendar is None else calendar
        t_idx = np.searchsorted(dates, df["date"].to_numpy().astype("datetime64[D]"))
        keep = (t_idx < len(dates)) & (dates[np.minimum(t_idx, len(dates) - 1)] ==
                                        df["date"].to_numpy().astype("datetime64[D]"))
        s_lookup = {s: i for i, s in enumerate(symbols)}
        s_idx = np.array([s_lookup[s] for s in df["symbol"].to_list()])
        arrays = {}
        for f in FIELDS:
            a = np.full((len(dates), len(symbols)), np.nan)
            a[t_idx[keep], s_idx[keep]] = df[f].cast(pl.Float64).to_numpy()[keep]
            arrays[f] = a
        names = {}
        if "name" in df.columns:
            names = dict(df.select("symbol", "name").unique("symbol", keep="last").iter_rows())
        return cls(dates=dates, symbols=symbols, names=names, **arrays)


def load_panel(paths: DataPaths | None = None, symbols=None, start=None, end=None,
               prices_file: Path | str | None = None) -> Panel:
    """The stock panel on the trading calendar (KOSPI index dates ∪ price dates)."""
    paths = paths or DataPaths()
    df = load_prices(prices_file or paths.path("prices"), symbols, start, end)
    if df.is_empty():
        raise DataError(f"no price rows for symbols={symbols} between {start} and {end}")
    if symbols is not None:
        absent = sorted(set(symbols) - set(df["symbol"].unique().to_list()))
        if absent:
            raise DataError(f"symbols have no rows in {start}..{end}: {absent}")
    calendar = TradingCalendar.from_dates(df["date"].to_numpy())
    return Panel.from_frame(df, calendar.dates)


def index_close(panel_dates: np.ndarray, index_df: pl.DataFrame) -> np.ndarray:
    """Index closes aligned to the panel's dates (NaN where the index has no value)."""
    idx_dates = index_df["date"].to_numpy().astype("datetime64[D]")
    closes = index_df["close"].cast(pl.Float64).to_numpy()
    pos = np.searchsorted(idx_dates, panel_dates)
    pos_c = np.minimum(pos, len(idx_dates) - 1)
    return np.where(idx_dates[pos_c] == panel_dates, closes[pos_c], np.nan)
