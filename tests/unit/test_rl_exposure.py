"""The exposure controller's features, environment and backtest strategy (training/exposure.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from market.data import index_close, load_index, load_panel
from training.exposure import FEATURES, LEVELS, ExposureControlled, ExposureEnv, market_state, observation, run_policy

FULL = len(LEVELS) - 1


def _market(T=400, N=6, seed=0):
    rng = np.random.default_rng(seed)
    idx = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, T)))
    idx[[50, 51, 300]] = np.nan  # days without an index value
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (T, N)), axis=0))
    close[:120, 0] = np.nan      # a name listed later
    close[200:210, 1] = np.nan   # a suspension
    probs = rng.dirichlet(np.ones(3), T)
    probs[:30] = np.nan          # before the HMM's first fit
    return idx, close, probs


def test_market_state_row_t_uses_rows_up_to_t_only():
    idx, close, probs = _market()
    full = market_state(idx, close, probs)
    assert full.shape == (len(idx), len(FEATURES))
    for t in (0, 49, 52, 130, 249, 250, 301, 399):
        cut = market_state(idx[:t + 1], close[:t + 1], probs[:t + 1])
        np.testing.assert_array_equal(cut, full[:t + 1], err_msg=f"rows <= {t} changed when data after it was cut")


def test_market_state_on_the_shipped_data_is_known_after_a_year():
    panel = load_panel(start="2007-01-01", end="2008-12-31")
    idx = index_close(panel.dates, _kospi())
    x = market_state(idx, panel.close, np.full((len(panel), 3), 1 / 3))
    assert np.isfinite(x[260:]).all()
    t = int(np.searchsorted(panel.dates.astype("datetime64[D]"), np.datetime64("2008-10-24")))
    # October 2008: KOSPI200 far below its 200-bar mean and its 250-bar high, few names above their 50-bar mean
    assert x[t, FEATURES.index("gap_ma200")] < -0.3
    assert x[t, FEATURES.index("drawdown_250")] < -0.4
    assert x[t, FEATURES.index("breadth_ma50")] < 0.1


def _kospi():
    from market.data import DataPaths
    return load_index(DataPaths().path("index"), "KOSPI200")


def _env_config(T=300, seed=1, **kw):
    rng = np.random.default_rng(seed)
    cfg = {"returns": rng.normal(0.0005, 0.01, T), "z": rng.normal(0, 1, (T, 3)).astype(np.float32),
           "window": (20, 280), "cost_rate": 0.004, "episode_steps": 10, "seed": 7}
    return cfg | kw


def test_a_step_is_the_book_scaled_from_the_bar_after_the_fill_with_its_costs():
    r = np.zeros(40)
    r[11:16] = [0.02, -0.03, -0.01, 0.01, -0.02]
    cfg = {"returns": r, "z": np.zeros((40, 2), np.float32), "window": (10, 40), "episode_steps": None,
           "step_bars": 5, "cost_rate": 0.004, "turnover_penalty": 0.01, "drawdown_penalty": 0.5}
    env = ExposureEnv(cfg, num_envs=1)
    env.reset()
    _, reward, _, _, _ = env.step(np.array([LEVELS.index(0.5)]))
    # bar 11 still fully in the book (the decision fills at the next open), then half of equity
    eq = 1.02
    traded = abs(0.5 * eq - eq)
    eq -= 0.004 * traded
    inv = 0.5 * 1.02
    cash = eq - inv
    path = [eq]
    for x in r[12:16]:
        inv *= 1 + x
        path.append(cash + inv)
    expected_eq = cash + inv
    assert env.equity[0] == pytest.approx(expected_eq, rel=1e-12)
    np.testing.assert_allclose(env.path[0], path, rtol=1e-12)
    dd = 1 - expected_eq / 1.0  # the peak is taken at decision bars: the episode's start
    assert dd > 0
    assert reward[0] == pytest.approx(math.log(expected_eq) - 0.01 * traded - 0.5 * dd, rel=1e-12)
    assert env.prev[0] == LEVELS.index(0.5) and env.t[0] == 15


def test_full_exposure_throughout_is_the_book_itself():
    cfg = _env_config(episode_steps=None)
    out = run_policy(cfg, lambda obs: np.array([FULL]))
    lo = cfg["window"][0]
    n = len(out["equity"]) - 1
    np.testing.assert_allclose(out["equity"], np.concatenate([[1.0], np.cumprod(1 + cfg["returns"][lo + 1:lo + 1 + n])]),
                               rtol=1e-12)
    assert out["traded"] == 0.0 and (out["levels"] == FULL).all()


def test_episodes_are_seeded_stay_inside_the_window_and_autoreset_on_the_next_step():
    cfg = _env_config()
    a, b = ExposureEnv(cfg, num_envs=4), ExposureEnv(cfg, num_envs=4)
    oa, _ = a.reset()
    ob, _ = b.reset()
    np.testing.assert_array_equal(oa, ob)
    rng = np.random.default_rng(0)
    lo, hi = cfg["window"]
    ends = 0
    for _ in range(60):
        act = rng.integers(0, len(LEVELS), 4)
        starts = a.t.copy()
        oa, ra, _, ta, _ = a.step(act)
        ob, rb, _, tb, _ = b.step(act)
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(ra, rb)
        assert (starts >= lo).all() and (a.t + 0 < hi).all()  # every bar a step books lies before hi
        if ta.any():
            ends += int(ta.sum())
            done = np.flatnonzero(ta)
            _, r_next, _, t_next, _ = a.step(np.zeros(4, dtype=int))
            b.step(np.zeros(4, dtype=int))
            assert (r_next[done] == 0).all() and not t_next[done].any()  # the reset step
            assert (a.prev[done] == FULL).all() and (a.equity[done] == 1.0).all()
    assert ends >= 4  # 10-step episodes: each sub-env finished some


def test_the_observation_is_features_drawdown_and_previous_level():
    obs = observation(np.ones((2, 3), np.float32), np.array([0.0, -0.1]), np.array([FULL, 0]))
    assert obs.shape == (2, 3 + 1 + len(LEVELS))
    np.testing.assert_allclose(obs[1, 3], -0.4)
    assert obs[0, 4 + FULL] == 1 and obs[1, 4] == 1 and obs[1, 4 + FULL] == 0


def test_normaliser_uses_its_training_rows_and_zeroes_unknowns():
    from training.env import Normaliser  # the RL env's, shared

    x = np.array([[1.0, np.nan], [3.0, 2.0], [100.0, 4.0]])
    norm = Normaliser.fit(x[:2])
    z = norm.apply(x)
    np.testing.assert_allclose(z[:2, 0], [-1, 1])
    assert z[2, 0] == 5.0      # clipped
    assert z[0, 1] == 0.0      # NaN = not yet known
    env = ExposureEnv(_env_config(z=z.repeat(100, axis=0)[:300]))
    assert env.z.dtype == np.float32 and env.reset()[0].dtype == np.float32  # what the policy is fed


@pytest.mark.parametrize("bad, msg", [({"window": (20, 40)}, "fewer than an episode"),
                                      ({"returns": np.full(300, np.nan)}, "finite"),
                                      ({"z": np.zeros((10, 3))}, "z must be")])
def test_bad_configs_are_refused_with_the_reason(bad, msg):
    with pytest.raises(ValueError, match=msg):
        ExposureEnv(_env_config() | bad)


def test_actions_outside_the_levels_are_refused():
    env = ExposureEnv(_env_config(), num_envs=2)
    env.reset()
    with pytest.raises(ValueError, match="actions must lie in"):
        env.step(np.array([0, len(LEVELS)]))


class _Book:
    """An inner strategy that always wants the same weights."""
    rebalance, lookback = 5, 10

    def fit(self, history):
        pass

    def target_weights(self, window, account=None):
        return np.full(len(window.symbols), 0.2)


def test_exposure_controlled_scales_the_inner_targets_from_its_first_active_bar():
    from strategies.pipeline import Account

    panel = load_panel(symbols=["005930", "000660"], start="2020-01-01", end="2020-03-31")
    dates = panel.dates.astype("datetime64[D]")
    z = np.arange(len(dates) * 2, dtype=np.float32).reshape(-1, 2)
    seen = []

    def act(obs):
        seen.append(obs.copy())
        return np.array([LEVELS.index(0.25)])

    agent = ExposureControlled(_Book(), dates, z, act, active_from="2020-02-03")
    cash = Account(100_000_000, {})
    before = agent.target_weights(panel.upto("2020-01-31"), cash)
    np.testing.assert_allclose(before, [0.2, 0.2])
    assert not seen
    after = agent.target_weights(panel.upto("2020-02-03"), cash)
    np.testing.assert_allclose(after, [0.05, 0.05])
    row = int(np.searchsorted(dates, np.datetime64("2020-02-03")))
    # what the env would show the policy on that bar: its features, no drawdown, fully in the book
    np.testing.assert_array_equal(seen[0], observation(z[row:row + 1], np.zeros(1), np.array([FULL])))
    assert agent.levels == [("2020-02-03", 0.25)]
    agent.target_weights(panel.upto("2020-02-10"), cash)
    assert seen[1][0, 3 + LEVELS.index(0.25)] == 1  # the previous level is the one it chose
