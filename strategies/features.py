"""Causal features for the learned forecasters: Alpha158-style price/volume, point-in-time
fundamentals and market state, one (N, F) cross-section per decision row.

Every value at row t is computed from bars <= t (backward rolling windows, a shift of past bars,
a cross-section of the same date) and from side data as of t's date (statements public by then,
`strategies.factors.FactorEngine.raw`). tests/unit/test_features.py recomputes the features on
data cut at t and compares them.

Groups (windows W = 5, 10, 20, 30, 60 bars):
* price: ret_w (close / close w bars ago - 1), ma_w (mean close / close - 1), std_w (daily return
  volatility), beta_w and resid_w (regression of daily returns on the index's, residual volatility),
  max_w / min_w (highest high, lowest low over close), qtlu_w / qtld_w (80% / 20% quantile of close
  over close), rsv_w (where the close sits in the w-bar range), cntp_w (share of up days), sump_w
  (gains over total absolute moves), plus the day's candle: kmid, klen, kup, klow.
* volume: vma_w (mean volume / today's), vstd_w (volume dispersion / mean). The panel's volume is
  raw shares, not split-adjusted, and missing (NaN) on many pre-2018 rows: only ratios within a
  short window are used (a split inside the window distorts one window, a level never appears), and
  a missing volume stays missing (LightGBM routes NaN itself).
* fundamentals: the factor model's raw ratios (book/earnings to price, growth, stability, leverage,
  ROE, margin, 12-1 momentum, 1-month reversal).
* market (the same for every symbol on a date): the index's 5/20/60-bar return and 20-bar
  volatility, breadth (share of symbols above their 20-bar mean), cross-sectional dispersion of
  the 20-bar return.

Stock features go to the model as cross-sectional percentile ranks per date (Qlib's CSRankNorm):
scale-free, robust to the price-level and volume-convention drift of a 20-year panel. Market
features stay raw (a rank across identical values says nothing).

Price features are computed once per panel and cached in memory, keyed by a hash of the panel's
content and the index series (and, with `cache_dir`, on disk as .npz).
"""
from __future__ import annotations

import hashlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from market.data import FIELDS, Panel, index_close
from strategies.factors import FactorEngine

WINDOWS: tuple[int, ...] = (5, 10, 20, 30, 60)
MAX_WINDOW = max(WINDOWS)
_CANDLE = ("kmid", "klen", "kup", "klow")
_PER_WINDOW = ("ret", "ma", "std", "beta", "resid", "max", "min", "qtlu", "qtld", "rsv", "cntp", "sump",
               "vma", "vstd")
PRICE_FEATURES: tuple[str, ...] = _CANDLE + tuple(f"{k}_{w}" for k in _PER_WINDOW for w in WINDOWS)
FUNDAMENTAL_FEATURES: tuple[str, ...] = (
    "book_to_price", "earnings_to_price", "revenue_growth", "earnings_growth", "earnings_stability",
    "low_leverage", "roe", "operating_margin", "mom_12_1", "reversal")
MARKET_FEATURES: tuple[str, ...] = ("mkt_ret_5", "mkt_ret_20", "mkt_ret_60", "mkt_std_20", "breadth_20",
                                    "dispersion_20")
_EPS = 1e-12


def panel_key(panel: Panel, index: np.ndarray | None = None) -> str:
    """Content hash of a panel (dates, symbols, bars) and an aligned index series."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(panel.dates).tobytes())
    h.update("\x00".join(panel.symbols).encode())
    for f in FIELDS:
        h.update(np.ascontiguousarray(getattr(panel, f)).tobytes())
    if index is not None:
        h.update(np.ascontiguousarray(index, dtype=float).tobytes())
    return h.hexdigest()


def _long_frame(panel: Panel, index: np.ndarray) -> pl.DataFrame:
    T, N = panel.close.shape
    cols = {f: getattr(panel, f).T.reshape(-1) for f in FIELDS}  # symbol-major: rows of one symbol together
    return pl.DataFrame({
        "s": np.repeat(np.arange(N, dtype=np.int32), T), "t": np.tile(np.arange(T, dtype=np.int32), N),
        "mkt": np.tile(np.asarray(index, dtype=float), N), **cols,
    }).with_columns([pl.col(c).fill_nan(None) for c in (*FIELDS, "mkt")])


def _min_bars(w: int) -> int:
    # a window may miss a few bars (a suspension) and still count; fewer than 80% present: missing
    return max(2, int(np.ceil(0.8 * w)))


def price_features(panel: Panel, index: np.ndarray) -> np.ndarray:
    """(T, N, len(PRICE_FEATURES)) raw price/volume features; row t uses bars <= t only."""
    df = _long_frame(panel, index)
    c, o, h, lo, v = (pl.col(x) for x in ("close", "open", "high", "low", "volume"))
    by = "s"
    ret1 = (c / c.shift(1) - 1.0).over(by)
    mret1 = (pl.col("mkt") / pl.col("mkt").shift(1) - 1.0).over(by)
    df = df.with_columns(ret1.alias("r"), mret1.alias("m"))
    r, m = pl.col("r"), pl.col("m")
    # ratios of the same bar: no window, no shift
    exprs = [((c - o) / o).alias("kmid"), ((h - lo) / o).alias("klen"),
             ((h - pl.max_horizontal(o, c)) / o).alias("kup"), ((pl.min_horizontal(o, c) - lo) / o).alias("klow")]
    per: dict[str, list[pl.Expr]] = {k: [] for k in _PER_WINDOW}
    for w in WINDOWS:
        ms = _min_bars(w)

        def roll_mean(e: pl.Expr, w: int = w, ms: int = ms) -> pl.Expr:
            return e.rolling_mean(w, min_samples=ms).over(by)
        hi_w = h.rolling_max(w, min_samples=ms).over(by)
        lo_w = lo.rolling_min(w, min_samples=ms).over(by)
        mean_r, mean_m = roll_mean(r), roll_mean(m)
        var_m = roll_mean(m * m) - mean_m * mean_m
        var_r = roll_mean(r * r) - mean_r * mean_r
        cov = roll_mean(r * m) - mean_r * mean_m
        beta = cov / (var_m + _EPS)
        per["ret"].append((c / c.shift(w).over(by) - 1.0).alias(f"ret_{w}"))
        per["ma"].append((roll_mean(c) / c - 1.0).alias(f"ma_{w}"))
        per["std"].append(r.rolling_std(w, min_samples=ms).over(by).alias(f"std_{w}"))
        per["beta"].append(beta.alias(f"beta_{w}"))
        per["resid"].append((var_r - beta * cov).clip(lower_bound=0.0).sqrt().alias(f"resid_{w}"))
        per["max"].append((hi_w / c).alias(f"max_{w}"))
        per["min"].append((lo_w / c).alias(f"min_{w}"))
        per["qtlu"].append((c.rolling_quantile(0.8, window_size=w, min_samples=ms).over(by) / c).alias(f"qtlu_{w}"))
        per["qtld"].append((c.rolling_quantile(0.2, window_size=w, min_samples=ms).over(by) / c).alias(f"qtld_{w}"))
        per["rsv"].append(((c - lo_w) / (hi_w - lo_w + _EPS * c)).alias(f"rsv_{w}"))
        per["cntp"].append(roll_mean((r > 0).cast(pl.Float64)).alias(f"cntp_{w}"))
        gains = r.clip(lower_bound=0.0).rolling_sum(w, min_samples=ms).over(by)
        moves = r.abs().rolling_sum(w, min_samples=ms).over(by)
        per["sump"].append((gains / (moves + _EPS)).alias(f"sump_{w}"))
        vmean = v.rolling_mean(w, min_samples=ms).over(by)
        per["vma"].append((vmean / v).alias(f"vma_{w}"))
        per["vstd"].append((v.rolling_std(w, min_samples=ms).over(by) / vmean).alias(f"vstd_{w}"))
    exprs += [e for k in _PER_WINDOW for e in per[k]]
    out = df.select(exprs)
    T, N = panel.close.shape
    arr = out.select(PRICE_FEATURES).to_numpy().astype(np.float64)  # (N*T, F), symbol-major
    arr = arr.reshape(N, T, len(PRICE_FEATURES)).transpose(1, 0, 2)
    arr[~np.isfinite(arr)] = np.nan
    # no bar today: no features (the symbol is not tradable on this row)
    arr[~np.isfinite(panel.close)] = np.nan
    return arr


def market_features(panel: Panel, index: np.ndarray) -> np.ndarray:
    """(T, len(MARKET_FEATURES)) index trend/volatility, breadth and dispersion; row t uses rows <= t."""
    idx = pl.Series(np.asarray(index, dtype=float)).fill_nan(None)
    mret = idx / idx.shift(1) - 1.0
    close = pl.DataFrame(panel.close).with_columns(pl.all().fill_nan(None))
    above = close.select([(pl.col(col) > pl.col(col).rolling_mean(20, min_samples=16)).cast(pl.Float64)
                          for col in close.columns]).to_numpy()
    ret20 = close.select([pl.col(col) / pl.col(col).shift(20) - 1.0 for col in close.columns]).to_numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a date where no symbol has a value: NaN
        breadth = np.nanmean(np.where(np.isfinite(above), above, np.nan), axis=1)
        dispersion = np.nanstd(np.where(np.isfinite(ret20), ret20, np.nan), axis=1)
    cols = [
        (idx / idx.shift(5) - 1.0), (idx / idx.shift(20) - 1.0), (idx / idx.shift(60) - 1.0),
        mret.rolling_std(20, min_samples=16),
    ]
    arr = np.column_stack([s.cast(pl.Float64).fill_null(np.nan).to_numpy() for s in cols] + [breadth, dispersion])
    arr[~np.isfinite(arr)] = np.nan
    return arr


def cross_sectional_rank(x: np.ndarray) -> np.ndarray:
    """Percentile rank in (0, 1] of each feature across the symbols (axis -2) of one date;
    NaN stays NaN. Ties share their average rank."""
    from scipy.stats import rankdata

    x = np.where(np.isfinite(x), x, np.nan)
    ranks = rankdata(x, axis=-2, nan_policy="omit")
    count = np.isfinite(x).sum(axis=-2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(np.isfinite(x), ranks / np.maximum(count, 1), np.nan)


@dataclass
class FeatureBuilder:
    """Builds the model's feature matrix for chosen rows of a panel.

    `index_dates`/`index_closes`: the benchmark index (KOSPI200) series; it is aligned to a
    panel's own dates, so a panel cut at t sees index values <= t only. `engine`: the factor
    model's point-in-time fundamentals (None: those columns are missing).
    """

    index_dates: np.ndarray
    index_closes: np.ndarray
    engine: FactorEngine | None = None
    cache_dir: Path | None = None
    cache_size: int = 8  # entries: price blocks and row matrices of recent panels
    _cache: OrderedDict = field(default_factory=OrderedDict, repr=False)

    @property
    def names(self) -> tuple[str, ...]:
        return PRICE_FEATURES + FUNDAMENTAL_FEATURES + MARKET_FEATURES

    @property
    def lookback(self) -> int:
        """Bars a decision row needs behind it (the 12-1 momentum's year, plus the first return)."""
        eng = self.engine or FactorEngine()
        return max(MAX_WINDOW + 1, eng.lookback)

    def index_for(self, panel: Panel) -> np.ndarray:
        frame = pl.DataFrame({"date": self.index_dates.astype("datetime64[D]"), "close": self.index_closes})
        return index_close(panel.dates, frame)

    def _cached(self, key: str, make):
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        value = make()
        self._cache[key] = value
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return value

    def _price_block(self, panel: Panel, index: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
        def make():
            disk = None if self.cache_dir is None else Path(self.cache_dir) / f"features-{key}.npz"
            if disk is not None and disk.exists():
                with np.load(disk) as z:
                    return z["price"], z["market"]
            block = (price_features(panel, index), market_features(panel, index))
            if disk is not None:
                disk.parent.mkdir(parents=True, exist_ok=True)
                np.savez(disk, price=block[0], market=block[1])
            return block
        return self._cached(key, make)

    def matrix(self, panel: Panel, rows: np.ndarray) -> np.ndarray:
        """(len(rows), N, F) model inputs at `rows` of `panel`: ranked stock features + raw market
        features. Row t uses panel rows <= t and side data as of panel.date(t). Cached by panel
        content and rows (several models and seeds fit on the same history): treat as read-only."""
        rows = np.asarray(rows, dtype=np.int64)
        index = self.index_for(panel)
        key = panel_key(panel, index)
        rows_key = f"{key}-rows-{hashlib.blake2b(rows.tobytes(), digest_size=12).hexdigest()}"

        def make():
            price, market = self._price_block(panel, index, key)
            return self._assemble(panel, rows, price[rows], market[rows])
        return self._cached(rows_key, make)

    def latest(self, window: Panel, steps: int = 1) -> np.ndarray:
        """(steps, N, F) inputs at the window's last `steps` rows, equal to `matrix(window, those
        rows)`, but the price features come from the last `lookback + steps` bars only (a decision
        does not recompute the whole history). The fundamentals read the whole window: a market
        cap is carried from its snapshot day by the price ratio, and that day may lie further back."""
        last = len(window) - 1
        rows = np.arange(max(last - steps + 1, 0), last + 1)
        tail = window.tail(min(len(window), self.lookback + len(rows)))
        index = self.index_for(tail)
        price = price_features(tail, index)[-len(rows):]
        market = market_features(tail, index)[-len(rows):]
        return self._assemble(window, rows, price, market)

    def _assemble(self, panel: Panel, rows: np.ndarray, price: np.ndarray, market: np.ndarray) -> np.ndarray:
        stock = np.concatenate([price, self._fundamentals(panel, rows)], axis=2)
        ranked = cross_sectional_rank(stock)
        alive = np.isfinite(panel.close[rows])[:, :, None]
        ranked = np.where(alive, ranked, np.nan)
        mkt = np.broadcast_to(market[:, None, :], (len(rows), len(panel.symbols), market.shape[1]))
        return np.concatenate([ranked, np.where(alive, mkt, np.nan)], axis=2)

    def _fundamentals(self, panel: Panel, rows: np.ndarray) -> np.ndarray:
        out = np.full((len(rows), len(panel.symbols), len(FUNDAMENTAL_FEATURES)), np.nan)
        eng = self.engine or FactorEngine()
        for i, t in enumerate(rows):
            # the panel cut at t: a factor read can never reach past the decision row
            raw = eng.raw(panel.rows(0, int(t) + 1), -1)
            out[i] = np.column_stack([raw[k] for k in FUNDAMENTAL_FEATURES])
        return out
