"""The look-ahead check catches leaky strategies (through the window, through a side file,
through full-sample normalisation) and passes the real ones."""
import numpy as np
import polars as pl
import pytest

from backtest.lookahead import check_lookahead, truncate_paths
from market.data import DataPaths, load_index, load_panel
from strategies.registry import STRATEGIES, StrategyContext


@pytest.fixture(scope="module")
def panel():
    return load_panel(start="2021-01-01", end="2023-12-28")


class PeeksAtTomorrowsIndex:
    """Leaky: buys the market when tomorrow's KOSPI200 (read from the index file) is up."""

    name, lookback = "leaky-index", 1

    def __init__(self, paths):
        idx = load_index(paths.path("index"), "KOSPI200")
        self.next_ret = dict(zip(idx["date"].to_list(), (idx["close"].shift(-1) / idx["close"] - 1).to_list()))

    def fit(self, history):
        pass

    def target_weights(self, window):
        r = self.next_ret.get(window.date(len(window) - 1))
        live = np.isfinite(window.close[-1])
        return live / live.sum() * 0.9 if r is not None and r == r and r > 0 else np.zeros(len(window.symbols))


class ShiftedSignal:
    """Leaky, vectorised: tomorrow's return as today's signal (shift the wrong way)."""

    name, lookback = "leaky-shift", 1

    def weights_matrix(self, panel):
        c = panel.close
        fwd = np.vstack([c[1:] / c[:-1] - 1.0, np.full((1, c.shape[1]), np.nan)])
        w = np.where(np.nan_to_num(fwd) > 0, 1.0, 0.0)
        return w / np.maximum(w.sum(axis=1, keepdims=True), 1) * 0.9


class FullSampleZScore:
    """Leaky, subtle: momentum z-scored with the mean of the *whole* sample."""

    name, lookback = "leaky-zscore", 1

    def weights_matrix(self, panel):
        c = panel.close
        mom = np.vstack([np.full((20, c.shape[1]), np.nan), c[20:] / c[:-20] - 1.0])
        z = (mom - np.nanmean(mom)) / np.nanstd(mom)
        w = np.where(np.nan_to_num(z) > 0.5, 1.0, 0.0)
        return w / np.maximum(w.sum(axis=1, keepdims=True), 1) * 0.9


class HonestVectorised(FullSampleZScore):
    name = "honest-vectorised"

    def weights_matrix(self, panel):
        c = panel.close
        mom = np.vstack([np.full((20, c.shape[1]), np.nan), c[20:] / c[:-20] - 1.0])
        w = np.where(np.nan_to_num(mom) > 0.05, 1.0, 0.0)  # a fixed threshold: row t uses rows <= t
        return w / np.maximum(w.sum(axis=1, keepdims=True), 1) * 0.9


@pytest.mark.parametrize("make", [PeeksAtTomorrowsIndex, lambda p: ShiftedSignal(), lambda p: FullSampleZScore()])
def test_leaky_strategies_are_caught_with_date_and_symbol(panel, make):
    rep = check_lookahead(make, panel, start="2022-06-01", end="2023-12-28", points=6)
    assert not rep.ok
    assert rep.leak_date is not None and rep.leak_symbol is not None
    assert rep.full_weight != rep.truncated_weight
    assert rep.leak_date <= rep.truncated_at
    assert "LOOK-AHEAD" in rep.message() and rep.leak_date in rep.message()


@pytest.mark.slow  # > 2 s on a busy 2-core machine: not in the quick loop (README)
@pytest.mark.parametrize("name", ["technical", "equal-weight-hold", "equal-weight-monthly", "buy-hold-kodex200"])
def test_real_strategies_pass(panel, name):
    from backtest.data import panel_for

    factory = STRATEGIES[name]
    full = panel_for(factory(StrategyContext()), panel)  # the ETF column for buy-hold-kodex200
    rep = check_lookahead(lambda paths: factory(StrategyContext(paths=paths)), full,
                          start="2023-01-02", end="2023-12-28", points=5)
    assert rep.ok, rep.message()
    assert rep.decisions_checked >= 5


def test_honest_vectorised_strategy_passes(panel):
    rep = check_lookahead(lambda p: HonestVectorised(), panel, start="2022-06-01", points=6)
    assert rep.ok, rep.message()


def test_truncated_side_files_hold_only_what_was_public(tmp_path):
    import datetime as dt

    cut = dt.date(2022, 3, 31)
    paths = truncate_paths(DataPaths(), cut, tmp_path)
    idx = pl.read_parquet(paths.path("index"))
    assert idx["date"].max().date() <= cut
    f = pl.read_parquet(paths.path("fundamentals"))
    # 2021 annual reports (period end 2021-12-31) became public ~90 days later, on 2022-03-31
    fy = f.filter(pl.col("report") == "FY")
    assert fy["period_end"].cast(pl.Date).max() <= dt.date(2021, 12, 31)
    q = f.filter(pl.col("report") != "FY")
    assert q["period_end"].cast(pl.Date).max() <= dt.date(2021, 9, 30)
