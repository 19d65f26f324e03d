"""The LightGBM forecaster: purged labels, fit on the history only, deterministic per seed, valid
weights through the backtest engine, and no look-ahead (backtest.lookahead on truncated files)."""
from dataclasses import replace

import numpy as np
import pytest

from backtest.engine import BacktestConfig, run_backtest
from backtest.lookahead import check_lookahead
from market.data import DataPaths, load_index, load_panel
from strategies.base import check_weights
from strategies.factors import FactorEngine
from strategies.features import FeatureBuilder
from strategies.forecaster import (
    LGBMForecaster,
    daily_ic,
    forward_returns,
    label_rows,
    purged_split,
    rank_labels,
    top_k_equal_weights,
)
from strategies.fundamentals import Fundamentals, MarketCaps

SYMBOLS = ["000270", "000660", "005380", "005490", "005930", "006400", "012330", "017670", "028260",
           "030200", "035420", "051910", "055550", "066570", "096770", "105560", "034730", "003550"]
SMALL_GRID = ({"num_leaves": 7, "n_estimators": 30, "learning_rate": 0.1},
              {"num_leaves": 15, "n_estimators": 30, "learning_rate": 0.1})


def _features(paths: DataPaths) -> FeatureBuilder:
    idx = load_index(paths.path("index"), "KOSPI200")
    return FeatureBuilder(idx["date"].to_numpy().astype("datetime64[D]"), idx["close"].to_numpy(),
                          FactorEngine(Fundamentals.load(paths), MarketCaps.load(paths)))


@pytest.fixture(scope="module")
def world():
    paths = DataPaths()
    panel = load_panel(paths, start="2014-01-01", end="2018-03-30")
    panel = panel.select([s for s in SYMBOLS if s in panel.symbols])
    return paths, panel, _features(paths)


def _agent(features, seed=0, **kw):
    kw = {"grid": SMALL_GRID, "horizon": 5, "top_k": 5, "validation_bars": 120, "min_train_rows": 40, **kw}
    return LGBMForecaster(features, seed=seed, **kw)


def test_forward_returns_and_label_rows_stay_inside_the_history():
    close = np.arange(1.0, 31.0)[:, None] * np.array([[1.0, 2.0]])
    fwd = forward_returns(close, 5)
    # row t: close[t+6] / close[t+1] - 1; the last 6 rows have no complete label window
    np.testing.assert_allclose(fwd[0], close[6] / close[1] - 1.0)
    assert np.isnan(fwd[-6:]).all() and np.isfinite(fwd[:-6]).all()
    rows = label_rows(len(close), 5, first=3, every=4)
    assert rows[-1] + 1 + 5 == len(close) - 1  # the newest label ends on the history's last bar
    assert rows[0] >= 3 and np.all(np.diff(rows) == 4)
    assert np.isfinite(fwd[rows]).all()


def test_validation_split_purges_training_labels_that_reach_into_validation():
    rows = label_rows(600, 20, first=60, every=5)
    train, val = purged_split(rows, 20, validation_bars=100)
    assert len(train) and len(val) == 100
    assert val[-1] == rows[-1] and np.all(np.diff(val) == 1)
    # every training label window [t+1, t+21] ends before the first validation decision row
    assert np.all(train + 1 + 20 < val[0])
    assert rows[rows < val[0]].max() > train.max()  # rows were dropped: the purge did something


def test_fit_learns_from_the_history_only(world):
    _, panel, features = world
    hist_end = panel.index_of("2017-06-30")
    history = panel.rows(0, hist_end + 1)
    a = _agent(features)
    a.fit(history)
    # bars after the history, changed wildly, cannot change what was learned
    close = panel.close.copy()
    close[hist_end + 1:] *= np.random.default_rng(1).uniform(0.5, 1.5, size=close[hist_end + 1:].shape)
    b = _agent(features)
    b.fit(replace(panel, close=close).rows(0, hist_end + 1))
    probe = panel.rows(0, panel.index_of("2017-12-28") + 1)
    np.testing.assert_array_equal(a.scores(probe), b.scores(probe))
    assert a.chosen in [dict(g) for g in SMALL_GRID] and len(a.validation_rank_ic) == len(SMALL_GRID)


def test_same_seed_same_model_other_seed_other_model(world):
    _, panel, features = world
    history = panel.rows(0, panel.index_of("2017-06-30") + 1)
    probe = panel.rows(0, panel.index_of("2017-12-28") + 1)
    rows = np.arange(len(probe) - 60, len(probe))
    runs = []
    for seed in (0, 0, 1):
        agent = _agent(features, seed=seed, grid=SMALL_GRID[:1])
        agent.fit(history)
        runs.append(agent.scores(probe, rows))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2], equal_nan=True)  # bagging/feature sampling follow the seed


def test_top_k_equal_weights_picks_the_best_finite_scores():
    w = top_k_equal_weights(np.array([0.1, np.nan, 0.9, 0.5, 0.3]), 2)
    np.testing.assert_allclose(w, [0, 0, 0.5, 0.5, 0])
    np.testing.assert_allclose(top_k_equal_weights(np.array([np.nan, 0.2]), 3), [0, 1.0])
    assert top_k_equal_weights(np.full(3, np.nan), 2).sum() == 0


def test_rank_labels_and_ic():
    fwd = np.array([[0.01, -0.02, 0.03, np.nan]])
    np.testing.assert_allclose(rank_labels(fwd), [[2 / 3, 1 / 3, 1.0, np.nan]], equal_nan=True)
    s = np.tile(np.arange(12.0), (3, 1))
    ic, ric = daily_ic(s, s ** 3)
    assert np.all(ric == pytest.approx(1.0)) and np.all(ic < 1.0) and np.all(ic > 0.8)


def assert_trades_valid_top5_weights(agent, panel, name: str) -> None:
    """The engine fits the forecaster on the rows before the start and trades its monthly top 5."""
    res = run_backtest(agent, panel, "2017-07-03", "2018-03-30", BacktestConfig(min_trade_value=200_000))
    assert agent.chosen is not None  # the engine fitted it on the rows before the start
    decided = res.targets[np.isfinite(res.targets).all(axis=1)]
    assert len(decided) >= 8  # monthly decisions over nine months
    for w in decided:
        check_weights(w, len(panel.symbols), name)
        assert np.count_nonzero(w) == 5 and w.sum() == pytest.approx(1.0)
    assert len(res.fills) > 0 and res.exposure[-1] > 0.9
    assert (res.holdings >= 0).all() and res.holdings.dtype == np.int64


def test_agent_trades_valid_weights_through_the_backtest_engine(world):
    _, panel, features = world
    assert_trades_valid_top5_weights(_agent(features), panel, "lgbm")


@pytest.mark.slow  # refits LightGBM at every truncation point: ~5 s
def test_no_look_ahead_on_truncated_data_files(world):
    paths, panel, _ = world

    def make(p: DataPaths):
        return _agent(_features(p), rebalance="weekly")
    report = check_lookahead(make, panel, "2017-10-02", "2018-01-31", points=3, paths=paths, rebalance="weekly")
    assert report.ok, report.message()
    assert report.decisions_checked >= 10
