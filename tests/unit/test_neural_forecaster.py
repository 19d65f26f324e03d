"""The PyTorch sequence forecasters (`gru`, `transformer`): windows of causal features, fit on the
history only, the purged early-stopping split, seed determinism, valid weights through the
backtest engine, and no look-ahead on truncated data files. Tiny nets and few epochs: these test
the behaviour, not the model's skill (reports/forecasts.md measures that)."""
from dataclasses import replace

import numpy as np
import pytest
from test_forecaster import SYMBOLS, _features, assert_trades_valid_top5_weights

from backtest.lookahead import check_lookahead
from market.data import DataPaths, load_panel
from strategies.features import MARKET_FEATURES
from strategies.neural import SequenceForecaster

pytestmark = pytest.mark.slow  # each test trains small nets: 19–33 s for the file on 2 cores

TINY = {"gru": ({"hidden": 8, "lr": 3e-3},),
        "transformer": ({"d_model": 8, "heads": 2, "layers": 1, "dropout": 0.1, "lr": 3e-3},)}


@pytest.fixture(scope="module")
def world():
    paths = DataPaths()
    panel = load_panel(paths, start="2014-01-01", end="2018-03-30")
    panel = panel.select([s for s in SYMBOLS if s in panel.symbols])
    return paths, panel, _features(paths)


def _agent(features, arch="gru", seed=0, **kw):
    kw = {"grid": TINY[arch], "horizon": 5, "top_k": 5, "validation_bars": 120, "min_train_rows": 40,
          "window": 10, "max_epochs": 3, "patience": 1, "max_train_dates": 150, "sample_every": 5, **kw}
    return SequenceForecaster(features, arch=arch, name=arch, seed=seed, **kw)


def test_a_window_is_the_last_t_feature_rows_and_the_decision_reads_the_same(world):
    _, panel, features = world
    agent = _agent(features)
    window = panel.rows(0, panel.index_of("2017-09-29") + 1)
    last = len(window) - 1
    X = agent._features_at(window, np.array([last - 3, last]))
    rows = features.matrix(window, np.arange(last - 3 - 9, last + 1))
    got = X.gather(np.array([1, 1]), np.array([0, 4]))  # decision row `last`, stocks 0 and 4
    expect = rows[-10:][:, [0, 4]].transpose(1, 0, 2).astype(np.float32)
    expect[..., :-len(MARKET_FEATURES)] -= 0.5  # ranked stock features centred; market features raw
    np.testing.assert_allclose(got, np.nan_to_num(expect, nan=0.0), rtol=1e-6, atol=1e-6)
    assert X.alive[1].tolist() == np.isfinite(window.close[last]).tolist()
    # the decision path (last lookback + T bars only) gives the scoring path's inputs
    latest = agent._latest_features(window)
    np.testing.assert_allclose(latest.gather(np.zeros(len(panel.symbols), int), np.arange(len(panel.symbols))),
                               X.gather(np.ones(len(panel.symbols), int), np.arange(len(panel.symbols))),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_fit_learns_from_the_history_only_and_one_seed_gives_one_model(world, arch):
    _, panel, features = world
    hist_end = panel.index_of("2017-06-30")
    probe = panel.rows(0, panel.index_of("2017-12-28") + 1)
    rows = np.arange(len(probe) - 40, len(probe))
    a = _agent(features, arch)
    a.fit(panel.rows(0, hist_end + 1))
    # bars after the history, changed wildly, cannot change what was learned
    close = panel.close.copy()
    close[hist_end + 1:] *= np.random.default_rng(1).uniform(0.5, 1.5, size=close[hist_end + 1:].shape)
    b = _agent(features, arch)
    b.fit(replace(panel, close=close).rows(0, hist_end + 1))
    np.testing.assert_array_equal(a.scores(probe, rows), b.scores(probe, rows))
    other = _agent(features, arch, seed=1)
    other.fit(panel.rows(0, hist_end + 1))
    assert not np.allclose(a.scores(probe, rows), other.scores(probe, rows), equal_nan=True)
    assert 1 <= a.chosen["epochs"] <= 3 and len(a.validation_rank_ic) == 1


def test_early_stopping_trains_before_the_purged_validation_span_and_refits_on_every_row(world):
    _, panel, features = world
    seen = []

    class Recording(SequenceForecaster):
        def _train(self, params, X, y, validation=None):
            seen.append((params, X.ends.copy(), None if validation is None else validation[0].ends.copy()))
            return super()._train(params, X, y, validation)

    agent = Recording(features, **{**dict(horizon=5, validation_bars=120, min_train_rows=40, window=10,
                                          max_epochs=2, patience=1, max_train_dates=80, sample_every=5), "grid": TINY["gru"]})
    history = panel.rows(0, panel.index_of("2017-06-30") + 1)
    agent.fit(history)
    (p_sel, train_ends, val_ends), (p_fit, all_ends, no_val) = seen
    assert "epochs" not in p_sel and p_fit["epochs"] == agent.chosen["epochs"] and no_val is None
    # `ends` are rows of one feature block shared by both calls, so differences are bars
    assert len(val_ends) == 120 and np.all(np.diff(val_ends) == 1)
    assert np.all(train_ends + 1 + 5 < val_ends[0])  # purge: no training label reaches validation
    assert len(train_ends) < len(all_ends) == 80  # the refit: every sampled row of the newest 80
    assert all_ends[-1] == val_ends[-1]  # ... up to the history's newest label row

def test_agent_trades_valid_weights_through_the_backtest_engine(world):
    _, panel, features = world
    assert_trades_valid_top5_weights(_agent(features, "transformer"), panel, "transformer")


def test_no_look_ahead_on_truncated_data_files(world):
    paths, panel, _ = world

    def make(p: DataPaths):
        return _agent(_features(p), rebalance="weekly")
    report = check_lookahead(make, panel, "2017-10-02", "2018-01-31", points=3, paths=paths, rebalance="weekly")
    assert report.ok, report.message()
    assert report.decisions_checked >= 10


def test_registry_builds_both_with_a_refit_every_year():
    from strategies.registry import build

    for name in ("gru", "transformer"):
        agent = build(name)
        assert isinstance(agent, SequenceForecaster) and agent.arch == name and agent.name == name
        assert agent.refit_every == 252 and agent.horizon == 20 and agent.rebalance == "monthly"
