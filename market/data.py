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

    def with_files(self, **files: str | Path | None) -> DataPaths:
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


def _read(path: Path, required: tuple[str, ...], kind: str = "data") -> pl.DataFrame:
    """The file as a frame with `date` as a Date and `symbol` as text; a missing file, an
    unreadable one or one without the `required` columns is a DataError naming the file."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{kind} file not found: {path}")
    try:
        if path.suffix == ".parquet":
            df = pl.read_parquet(path)
        else:
            df = pl.read_csv(path, schema_overrides={"symbol": pl.Utf8}, try_parse_dates=True)
    except Exception as exc:  # polars raises several types for corrupt files
        raise DataError(f"cannot read {path}: {exc}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path} is not a {kind} file: missing columns {', '.join(missing)} "
                        f"(it has {', '.join(df.columns)})")
    date_type = df.schema["date"]
    if isinstance(date_type, pl.Datetime):
        date = pl.col("date").dt.date()
    elif date_type == pl.Utf8:
        date = pl.col("date").str.to_date("%Y-%m-%d", strict=False)
    elif date_type == pl.Date:
        date = pl.col("date")
    else:
        raise DataError(f"{path} is not a {kind} file: column date is {date_type}, want dates (YYYY-MM-DD)")
    df = df.with_columns(date.alias("date"))
    if df["date"].null_count():
        raise DataError(f"{path} is not a {kind} file: {df['date'].null_count()} dates are not YYYY-MM-DD")
    not_numeric = [c for c in required if c not in ("date", "symbol") and not df.schema[c].is_numeric()]
    if not_numeric:
        raise DataError(f"{path} is not a {kind} file: columns {', '.join(not_numeric)} are not numbers "
                        f"({', '.join(str(df.schema[c]) for c in not_numeric)})")
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
    df = _read(Path(path), ("date", "symbol", *FIELDS), kind="price")
    check_stock_symbols(df, Path(path))
    df = _filter(df, symbols, start, end)
    return df.sort(["date", "symbol"])


def check_stock_symbols(df: pl.DataFrame, path: Path) -> None:
    """Stock bars carry 6-character KRX codes (005930, 0126Z0); an index file has the same
    columns but names (KOSPI200) and would otherwise fail far away (a tax table before 1996)."""
    symbols = df["symbol"].unique().to_list()
    bad = sorted(s for s in symbols if s is None or len(s) != 6 or not s.isalnum())
    if bad:
        hint = " (is it an index file? pass it as --index)" if set(bad) & {"KOSPI", "KOSDAQ", "KOSPI200"} else ""
        raise DataError(f"{path} is not a price file: symbols {', '.join(map(str, bad[:5]))}"
                        f"{' …' if len(bad) > 5 else ''} are not 6-character KRX codes{hint}")


def data_span(path: Path | str) -> tuple[dt.date, dt.date]:
    """First and last date in a data file (reads only the date column of a parquet file)."""
    path = Path(path)
    if path.suffix == ".parquet" and path.exists():
        try:
            dates = pl.read_parquet(path, columns=["date"])
        except Exception as exc:  # a file without a date column or a corrupt one: _read names it
            raise DataError(f"cannot read the dates of {path}: {exc}") from exc
        dates = _read_dates(dates)
    else:
        dates = _read(path, ("date",)).select("date")
    if dates.is_empty():
        raise DataError(f"{path} has no rows")
    first, last = dates["date"].min(), dates["date"].max()
    assert isinstance(first, dt.date) and isinstance(last, dt.date)   # a date column (read above)
    return first, last


def stock_names(paths: DataPaths | None = None) -> dict[str, str]:
    """{KRX code: name} from the symbols file (kr_stocks_symbols.csv: symbol, name, …): what the
    dashboard shows beside a code (005930 삼성전자). Empty when the file is absent."""
    path = (paths or DataPaths()).path("symbols")
    if not path.is_file():
        return {}
    df = pl.read_csv(path, schema_overrides={"symbol": pl.Utf8, "name": pl.Utf8}, columns=["symbol", "name"])
    return {s: n for s, n in df.iter_rows() if s and n}


def _read_dates(df: pl.DataFrame) -> pl.DataFrame:
    t = df.schema["date"]
    if isinstance(t, pl.Datetime):
        return df.select(pl.col("date").dt.date())
    if t == pl.Utf8:
        return df.select(pl.col("date").str.to_date("%Y-%m-%d", strict=False)).drop_nulls()
    return df.select(pl.col("date").cast(pl.Date))


def load_index(path: Path | str, symbol: str = "KOSPI200", start=None, end=None) -> pl.DataFrame:
    """One index series (KOSPI, KOSDAQ or KOSPI200): date, open, high, low, close, volume."""
    df = _read(Path(path), ("date", "symbol", "close"), kind="index")
    if symbol not in set(df["symbol"].unique().to_list()):
        have = sorted(df["symbol"].unique().to_list())
        raise DataError(f"{path} is not an index file with {symbol}: its symbols are "
                        f"{', '.join(map(str, have[:5]))}{' …' if len(have) > 5 else ''}")
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

    def rows(self, start: int, stop: int) -> Panel:
        s = slice(max(start, 0), stop)
        return replace(self, dates=self.dates[s], **{f: getattr(self, f)[s] for f in FIELDS})

    def upto(self, date) -> Panel:
        """Everything known at the close of `date`: rows up to and including it."""
        return self.rows(0, self.index_of(date) + 1)

    def between(self, start=None, end=None) -> Panel:
        lo = 0 if start is None else int(np.searchsorted(self.dates, np.datetime64(_as_date(start), "D")))
        hi = len(self.dates) if end is None else self.index_of(end) + 1
        return self.rows(lo, hi)

    def tail(self, n: int) -> Panel:
        return self.rows(len(self.dates) - n, len(self.dates))

    def window(self, as_of, symbols, lookback: int, known_until) -> Panel:
        """What a decision at the close of `as_of` may see: the last `lookback` bars up to and
        including `as_of` (a bar date) for `symbols`. `known_until`: the last bar that has
        happened; a later `as_of` is refused, so no decision sees a bar after its decision time."""
        day, last = _as_date(as_of), _as_date(known_until)
        if day is None or last is None:
            raise DataError("a window needs both as_of and the market's last bar date")
        if day > last:
            raise DataError(f"as_of {day} is after the market's last bar {last}: "
                            "a decision sees no bar after its decision time")
        i = self.index_of(day)
        if i < 0 or self.date(i) != day:
            raise DataError(f"as_of {day} is not a bar date of the market state")
        if lookback < 1:
            raise DataError(f"lookback must be at least 1 bar, got {lookback}")
        return self.rows(i + 1 - lookback, i + 1).select(symbols)

    def select(self, symbols) -> Panel:
        symbols = tuple(symbols)
        unknown = [s for s in symbols if s not in self.symbols]
        if unknown:
            raise DataError(f"symbols not in the panel: {unknown}")
        cols = [self.symbols.index(s) for s in symbols]
        return replace(self, symbols=symbols, **{f: getattr(self, f)[:, cols] for f in FIELDS})

    def to_dict(self) -> dict:
        """JSON-friendly form (NaN as None) used in snapshots sent over HTTP."""
        def arr(a):
            return [[None if v != v else v for v in row] for row in a.astype(float).tolist()]  # v != v: NaN
        return {
            "dates": [str(d) for d in self.dates.astype("datetime64[D]")],
            "symbols": list(self.symbols),
            **{f: arr(getattr(self, f)) for f in FIELDS},
        }

    @classmethod
    def from_dict(cls, d: dict) -> Panel:
        def arr(rows):
            return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float).reshape(
                len(d["dates"]), len(d["symbols"]))
        return cls(
            dates=np.array(d["dates"], dtype="datetime64[D]"), symbols=tuple(d["symbols"]),
            **{f: arr(d[f]) for f in FIELDS},
        )

    @classmethod
    def from_frame(cls, df: pl.DataFrame, calendar: np.ndarray | None = None) -> Panel:
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
    file = prices_file or paths.path("prices")
    df = load_prices(file, symbols, start, end)
    if df.is_empty():
        first, last = data_span(file)
        which = "" if symbols is None else f" for {', '.join(symbols)}"
        raise DataError(f"no price rows{which} between {start or first} and {end or last}: "
                        f"{file} spans {first}..{last}")
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
