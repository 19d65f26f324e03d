"""The forecaster's features are causal: recomputed on data cut at t they are the same up to t.

The cut removes every bar after t from the price panel, the index rows after t, the market-cap
snapshots after t and every statement not yet public at t (45 days after a quarter, 90 after a
year end). A feature that read a later bar, a later index value or a later statement would differ.
"""
import datetime as dt

import numpy as np
import polars as pl
import pytest

from market.data import DataPaths, load_index, load_panel
from strategies.factors import FactorEngine
from strategies.features import (
    FUNDAMENTAL_FEATURES,
    MARKET_FEATURES,
    PRICE_FEATURES,
    FeatureBuilder,
    cross_sectional_rank,
    panel_key,
)
from strategies.fundamentals import Fundamentals, MarketCaps

CUT = dt.date(2021, 3, 31)
SYMBOLS = ["000270", "000660", "005380", "005490", "005930", "006400", "012330", "017670", "028260",
           "030200", "035420", "035720", "051910", "055550", "066570", "068270", "096770", "105560"]


def _builder(cut: dt.date | None) -> tuple:
    paths = DataPaths()
    panel = load_panel(paths, start="2019-06-01", end=cut or "2021-09-30")
    panel = panel.select([s for s in SYMBOLS if s in panel.symbols])
    fund = pl.read_parquet(paths.path("fundamentals"))
    snap = pl.read_parquet(paths.path("market_caps"), columns=["date", "symbol", "close", "market_cap"])
    idx = load_index(paths.path("index"), "KOSPI200", start="2019-01-01", end=cut)
    if cut is not None:
        lag = pl.when(pl.col("report").cast(pl.Utf8) == "FY").then(90).otherwise(45)
        fund = fund.filter((pl.col("period_end").dt.date() + pl.duration(days=lag)) <= cut)
        snap = snap.filter(pl.col("date").dt.date() <= cut)
    builder = FeatureBuilder(idx["date"].to_numpy().astype("datetime64[D]"), idx["close"].to_numpy(),
                             FactorEngine(Fundamentals(fund), MarketCaps(snap)))
    return panel, builder


@pytest.fixture(scope="module")
def worlds():
    return {label: _builder(cut) for label, cut in (("full", None), ("cut", CUT))}


def test_features_up_to_t_do_not_change_when_later_data_is_removed(worlds):
    full_panel, full_b = worlds["full"]
    cut_panel, cut_b = worlds["cut"]
    last = cut_panel.index_of(CUT)
    assert last == len(cut_panel) - 1 and full_panel.index_of(CUT) == last
    rows = np.arange(last - 40, last + 1)
    full = full_b.matrix(full_panel, rows)
    cut = cut_b.matrix(cut_panel, rows)
    assert full.shape == (len(rows), len(full_panel.symbols), len(full_b.names))
    np.testing.assert_allclose(cut, full, rtol=1e-9, atol=1e-12, equal_nan=True)
    # the comparison is of real values: most stock-by-feature cells are filled at the cut
    assert np.isfinite(full[-1]).mean() > 0.8
    names = full_b.names
    for group in (PRICE_FEATURES, FUNDAMENTAL_FEATURES[:2], MARKET_FEATURES):
        cols = [names.index(f) for f in group]
        assert np.isfinite(full[-1][:, cols]).any(), group
    # the full world does see later bars: its features after the cut exist and move
    later = full_b.matrix(full_panel, np.array([last + 20]))
    assert not np.allclose(later[0], full[-1], equal_nan=True)


def test_decision_features_from_the_tail_equal_those_of_the_whole_window(worlds):
    panel, builder = worlds["full"]
    window = panel.upto(CUT)
    np.testing.assert_allclose(builder.latest(window), builder.matrix(window, np.array([len(window) - 1])),
                               rtol=1e-9, atol=1e-12, equal_nan=True)


def test_a_change_on_bar_t_moves_features_at_t_but_not_before(worlds):
    panel, builder = worlds["full"]
    t = panel.index_of(CUT)
    j = panel.symbols.index("005930")
    close = panel.close.copy()
    close[t:, j] *= 1.10  # a 10% jump on bar t and after
    from dataclasses import replace
    bumped = replace(panel, close=close)
    rows = np.array([t - 1, t])
    a, b = builder.matrix(panel, rows), builder.matrix(bumped, rows)
    np.testing.assert_array_equal(a[0], b[0])
    ret5 = builder.names.index("ret_5")
    assert b[1, j, ret5] > a[1, j, ret5]  # its 5-bar return ranks higher after the jump


def test_cross_sectional_rank_is_a_percentile_per_date_with_nan_kept():
    x = np.array([[[3.0, 1.0], [1.0, np.nan], [2.0, 1.0], [np.nan, 5.0]]])  # (1 date, 4 symbols, 2)
    r = cross_sectional_rank(x)
    np.testing.assert_allclose(r[0, :, 0], [1.0, 1 / 3, 2 / 3, np.nan], equal_nan=True)
    np.testing.assert_allclose(r[0, :, 1], [0.5, np.nan, 0.5, 1.0], equal_nan=True)  # a tie shares ranks 1, 2


def test_price_features_are_cached_by_panel_content(worlds):
    panel, builder = worlds["full"]
    builder.matrix(panel, np.array([len(panel) - 1]))
    key = panel_key(panel, builder.index_for(panel))
    assert key in builder._cache
    cached = builder._cache[key]
    builder.matrix(panel, np.array([len(panel) - 2]))
    assert builder._cache[key] is cached  # no recomputation for the same panel
    from dataclasses import replace
    other = replace(panel, close=panel.close * 1.0001)
    assert panel_key(other, builder.index_for(other)) != key


def test_disk_cache_returns_the_same_features(tmp_path, worlds):
    panel, builder = worlds["cut"]
    disk = FeatureBuilder(builder.index_dates, builder.index_closes, builder.engine, cache_dir=tmp_path)
    rows = np.array([len(panel) - 1])
    first = disk.matrix(panel, rows)
    assert len(list(tmp_path.glob("features-*.npz"))) == 1
    again = FeatureBuilder(builder.index_dates, builder.index_closes, builder.engine, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.matrix(panel, rows), first)
