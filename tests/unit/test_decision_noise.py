"""The decision does not depend on floating-point noise far below anything money can see.

The same code and data on another machine give floats a few ulps apart: OpenBLAS picks other
kernels there, and the HMM's regime probabilities differ by ~1e-11 (2.1e-11 measured between its
Haswell and SkylakeX kernels, reports/strategies.md "Noise"). Before the core put its targets on a
grid, that noise reached the ensemble's targets (~1e-17), then an order (a share, or a threshold
crossed), and moved the default ensemble's 2017–2023 return by 0.3 points a year.
"""
import numpy as np
import pytest

from backtest.engine import BacktestConfig, run_backtest
from market.data import DataPaths, load_panel
from strategies.ensemble import EnsembleAgent
from strategies.factors import FactorEngine
from strategies.fundamentals import Fundamentals, MarketCaps
from strategies.pipeline import WEIGHT_GRID
from strategies.regime import RegimeDetector, RegimeSource
from strategies.registry import ensemble_members

START, END = "2015-01-02", "2016-12-29"


@pytest.fixture(scope="module")
def inputs():
    paths = DataPaths()
    panel = load_panel(paths, end=END)
    engine = FactorEngine(Fundamentals.load(paths), MarketCaps.load(paths))
    regime = RegimeSource.load(paths, "KOSPI200", RegimeDetector(seed=0), end=END)
    return panel, engine, regime


def noisy_regime(regime: RegimeSource, seed: int) -> RegimeSource:
    """The regime path as another BLAS kernel computes it: each probability ~1e-11 away."""
    rng = np.random.default_rng(seed)
    path = regime.path + 2e-11 * rng.uniform(-1, 1, regime.path.shape)
    other = RegimeSource(regime.dates, regime.close, regime.detector)
    other._path = path / path.sum(axis=1, keepdims=True)  # the cached path the source serves
    return other


class UlpNoise:
    """A member as another machine computes it: each of its weights one ulp up or down (the
    regime-factor member's targets differ by ~1e-16 between two OpenBLAS kernels)."""

    def __init__(self, member, seed: int):
        self.member, self.rng = member, np.random.default_rng(seed)

    def __getattr__(self, name):
        return getattr(self.member, name)

    def target_weights(self, window):
        w = np.asarray(self.member.target_weights(window), float)
        away = np.where(self.rng.random(w.shape) < 0.5, -np.inf, np.inf)
        return np.where(w > 0, np.nextafter(w, away), w)


def default_ensemble_run(panel, engine, regime, noise_seed: int | None = None):
    members = ensemble_members(engine, regime)
    if noise_seed is not None:
        members = {k: UlpNoise(m, noise_seed + i) for i, (k, m) in enumerate(members.items())}
    agent = EnsembleAgent(members, regime=regime)
    return run_backtest(agent, panel, START, END, BacktestConfig(min_trade_value=200_000))


def test_the_noise_of_another_machine_leaves_every_decision_and_order_unchanged(inputs):
    panel, engine, regime = inputs
    base = default_ensemble_run(panel, engine, regime)
    for seed in (0, 1):
        other = default_ensemble_run(panel, engine, noisy_regime(regime, seed), noise_seed=10 * seed)
        assert np.array_equal(other.targets, base.targets, equal_nan=True)
        assert np.array_equal(other.holdings, base.holdings) and np.array_equal(other.equity, base.equity)


def test_targets_sit_on_the_grid_and_the_grid_is_far_below_a_won(inputs):
    panel, engine, regime = inputs
    t = default_ensemble_run(panel, engine, regime).targets
    decided = t[np.isfinite(t)]
    assert decided.size and np.all(decided >= 0)
    steps = decided / WEIGHT_GRID
    assert np.all(np.abs(steps - np.round(steps)) < 1e-6)
    # one grid step of the default 100 M KRW account is a tenth of a won
    assert WEIGHT_GRID * 100_000_000 <= 0.1
