"""Look-ahead check on every agent: cutting the data after t leaves every decision up to t unchanged.

Each agent runs twice over the same decision dates: once with the full panel and side data
(fundamentals, market caps, index for regimes), once with everything after the cut removed —
statements not yet filed, snapshots and index rows after the cut dropped from the files' frames.
"""
import datetime as dt
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from market.data import DataPaths, load_index, load_panel
from strategies.baselines import EqualWeightRebalanced
from strategies.ensemble import EnsembleAgent
from strategies.factor_model import FactorAgent
from strategies.factors import FactorEngine
from strategies.fundamentals import Fundamentals, MarketCaps
from strategies.pipeline import COMBINED_OVERLAY, DecisionConfig
from strategies.regime import RegimeDetector, RegimeSource
from strategies.technical import TechnicalAgent

CUT = dt.date(2021, 3, 31)
SYMBOLS = ["000270", "000660", "005380", "005490", "005930", "005935", "006400", "012330", "017670",
           "028260", "030200", "032830", "033780", "034730", "035420", "035720", "051910", "055550",
           "066570", "068270", "096770", "105560", "207940", "003550", "009150", "010950", "011170",
           "015760", "018260", "086790"]


def _world(cut: dt.date | None):
    paths = DataPaths()
    panel = load_panel(paths, start="2018-06-01", end=cut or "2021-06-30")
    panel = panel.select([s for s in SYMBOLS if s in panel.symbols])
    fund = pl.read_parquet(paths.path("fundamentals"))
    snap = pl.read_parquet(paths.path("market_caps"), columns=["date", "symbol", "close", "market_cap"])
    idx = load_index(paths.path("index"), "KOSPI200", start="2012-01-01", end=cut)
    if cut is not None:
        # only statements public by the cut (45 days after a quarter, 90 after a year end)
        lag = pl.when(pl.col("report").cast(pl.Utf8) == "FY").then(90).otherwise(45)
        fund = fund.filter((pl.col("period_end").dt.date() + pl.duration(days=lag)) <= cut)
        snap = snap.filter(pl.col("date").dt.date() <= cut)
    engine = FactorEngine(Fundamentals(fund), MarketCaps(snap))
    det = RegimeDetector(train_window=1000, min_train=500, refit_every=250, n_iter=10)
    regime = RegimeSource(idx["date"].to_numpy().astype("datetime64[D]"), idx["close"].to_numpy(), det)
    return panel, engine, regime


def _agents(engine, regime):
    return {
        "technical": TechnicalAgent(),
        "factor": FactorAgent(engine, rebalance_every=5, ic_lookback=4, name="factor"),
        "regime-factor": FactorAgent(engine, regime=regime, rebalance_every=5, ic_lookback=4),
        "ensemble": EnsembleAgent({"f": FactorAgent(engine, regime=regime, rebalance_every=5, ic_lookback=4),
                                   "t": TechnicalAgent(), "e": EqualWeightRebalanced()},
                                  regime=regime, config=DecisionConfig(rebalance_every=3)),
        # the previous default over the same members: combined weights, the full overlay
        "ensemble-combined": EnsembleAgent({"f": FactorAgent(engine, regime=regime, rebalance_every=5, ic_lookback=4),
                                            "t": TechnicalAgent(), "e": EqualWeightRebalanced()},
                                           regime=regime, config=replace(COMBINED_OVERLAY, rebalance_every=3)),
    }


@pytest.fixture(scope="module")
def decisions():
    out = {}
    for label, cut in (("full", None), ("cut", CUT)):
        panel, engine, regime = _world(cut)
        agents = _agents(engine, regime)
        last = panel.index_of(CUT)
        rows = range(last - 30, last + 1)
        out[label] = {name: np.vstack([a.target_weights(panel.rows(0, t + 1)) for t in rows])
                      for name, a in agents.items()}
        out[label + "_agents"] = agents
    return out


@pytest.mark.slow  # > 2 s on a busy 2-core machine: not in the quick loop (README)
@pytest.mark.parametrize("name", ["technical", "factor", "regime-factor", "ensemble", "ensemble-combined"])
def test_decisions_up_to_t_do_not_change_when_later_data_is_removed(decisions, name):
    full, cut = decisions["full"][name], decisions["cut"][name]
    np.testing.assert_array_equal(full, cut)
    assert np.all(full >= 0) and np.all(full.sum(axis=1) <= 1 + 1e-9)
    assert full.sum(axis=1).max() > 0.2  # it did invest: the check compares real decisions


@pytest.mark.slow  # > 2 s on a busy 2-core machine: not in the quick loop (README)
def test_ensemble_explains_its_decision(decisions):
    ex = decisions["full_agents"]["ensemble"].last_explanation
    assert set(ex["agent_weights"]) == {"f", "t", "e"}
    assert ex["agent_weights"] and sum(ex["agent_weights"].values()) == pytest.approx(1.0)
    assert ex["risk"]["state"] in ("ACTIVE", "REDUCING", "HALTED")
    assert ex["regime_probs"] is not None
