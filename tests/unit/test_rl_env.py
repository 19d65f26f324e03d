"""The RL trading environment: same accounting as everyone else, no look-ahead, seeded episodes."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from market import krx
from market.accounting import Bar, execute, orders_for_targets
from market.data import load_panel
from training.env import DEFAULT_UNIVERSE, LOOKBACK, MAX_GROSS, EnvSpec, TradingEnv, action_templates, features, run_greedy

SPEC = EnvSpec(train_start="2010-01-01", train_end="2013-12-31", episode_len=40)


@pytest.fixture(scope="module")
def panel():
    # in the env's symbol order, so hand-computed accounting lines up column by column
    return load_panel(symbols=list(DEFAULT_UNIVERSE), start="2009-01-01", end="2015-12-31").select(DEFAULT_UNIVERSE)


def test_templates_are_long_only_and_unlevered():
    t = action_templates(5)
    assert t.shape == (8, 5)
    assert np.all(t >= 0) and np.all(t.sum(axis=1) <= 1.0)
    assert t[0].sum() == 0 and abs(t[2].sum() - MAX_GROSS) < 1e-12
    assert np.argmax(t[3 + 2]) == 2  # tilt template i overweights symbol i


def test_env_accounting_equals_market_accounting(panel):
    """A fixed action sequence through the env gives the same cash, holdings and equity as calling
    orders_for_targets at close t and execute on bar t+1 by hand (the backtester's rule)."""
    env = TradingEnv({"panel": panel, "spec": SPEC, "eval_window": ("2014-01-01", "2014-06-30")})
    rng = np.random.default_rng(7)
    actions = rng.integers(0, env.n_actions, size=200)
    env.reset()
    t0 = env.t
    cash, hold = SPEC.initial_cash, np.zeros(5, dtype=np.int64)
    cal = panel.calendar
    templates = action_templates(5)
    done, k = False, 0
    while not done:
        t = t0 + k
        _, reward, term, trunc, info = env.step(actions[k])
        idx, side, qty = orders_for_targets(templates[actions[k]], hold, cash, panel.close[t],
                                            min_trade_value=SPEC.min_trade_value)
        if len(idx):
            day = panel.date(t + 1)
            ex = execute(idx, side, qty, np.full(len(idx), np.nan),
                         Bar(panel.open[t + 1, idx], panel.high[t + 1, idx], panel.low[t + 1, idx], panel.close[t, idx]),
                         day, krx.sell_tax_rate(cal.settlement_date(day)), cash, hold)
            cash, hold = ex.cash, ex.holdings
        equity = cash + float(np.dot(hold, panel.close[t + 1]))
        assert env.cash == cash and np.array_equal(env.holdings, hold)
        assert info["equity"] == pytest.approx(equity, rel=0, abs=1e-6)
        done = term or trunc
        k += 1
    assert k > 100 and env.costs_paid > 0


def test_reward_is_net_of_cost_log_return(panel):
    env = TradingEnv({"panel": panel, "spec": SPEC, "eval_window": ("2014-01-01", "2014-03-31")})
    env.reset()
    _, r_cash, *_ = env.step(0)
    assert r_cash == 0.0  # all cash, nothing traded: no return, no cost
    e0 = env.equity
    _, r_buy, _, _, info = env.step(2)
    assert r_buy == pytest.approx(np.log(info["equity"] / e0))
    assert env.costs_paid > 0  # commission paid on the buys (the reward already includes it)


def test_penalties_reduce_reward(panel):
    base = TradingEnv({"panel": panel, "spec": SPEC, "eval_window": ("2014-01-01", "2014-03-31")})
    pen = TradingEnv({"panel": panel, "spec": EnvSpec(**{**SPEC.to_dict(), "symbols": SPEC.symbols,
                                                          "turnover_penalty": 0.01, "drawdown_penalty": 1.0}),
                      "eval_window": ("2014-01-01", "2014-03-31")})
    rb = rp = 0.0
    for e in (base, pen):
        e.reset()
    for a in [2, 0, 2, 0, 2, 2, 2, 2]:
        rb += base.step(a)[1]
        rp += pen.step(a)[1]
    assert base.equity == pen.equity  # penalties shape the reward, never the account
    assert rp < rb - 0.01 * 3 * 0.9  # at least the turnover penalty on three ~full rebalances


def test_observation_uses_no_future_data(panel):
    """Truncating the data after t leaves the observation at t unchanged."""
    env = TradingEnv({"panel": panel, "spec": SPEC})
    spec = env.spec_.to_dict()  # with the normaliser fitted on the training window
    for day in ("2012-03-15", "2013-12-30", "2015-06-01"):
        t = panel.index_of(day)
        short = TradingEnv({"panel": panel.rows(0, t + 1), "spec": spec,
                            "eval_window": ("2009-01-01", day)})
        for prev in (0, 4):
            assert np.array_equal(env.observation_at(t, prev), short.observation_at(t, prev))


def test_features_row_depends_only_on_past(panel):
    full = features(panel)
    t = panel.index_of("2012-06-01")
    cut = features(panel.rows(0, t + 1))
    np.testing.assert_array_equal(full[: t + 1], cut)


def test_normaliser_is_fitted_on_training_window_only(panel):
    a = TradingEnv({"panel": panel, "spec": SPEC})
    cut = panel.rows(0, panel.index_of(SPEC.train_end) + 1)
    b = TradingEnv({"panel": cut, "spec": EnvSpec(**{**SPEC.to_dict(), "symbols": SPEC.symbols})})
    np.testing.assert_array_equal(a.norm.mean, b.norm.mean)
    np.testing.assert_array_equal(a.norm.std, b.norm.std)
    changed = dataclasses.replace(panel, close=panel.close.copy())
    changed.close[panel.index_of("2015-01-05"):] *= 3.0  # rewrite the future
    c = TradingEnv({"panel": changed, "spec": EnvSpec(**{**SPEC.to_dict(), "symbols": SPEC.symbols})})
    np.testing.assert_array_equal(a.norm.mean, c.norm.mean)


def test_episodes_stay_inside_training_window_and_are_seeded(panel):
    env = TradingEnv({"panel": panel, "spec": SPEC})
    lo = np.datetime64(SPEC.train_start)
    hi = np.datetime64(SPEC.train_end)
    starts = []
    for ep in range(30):
        _, info = env.reset(seed=ep)
        starts.append(env.t)
        assert env.t >= LOOKBACK - 1
        done = False
        while not done:
            _, _, term, trunc, info = env.step(ep % env.n_actions)
            done = term or trunc
        assert lo <= panel.dates[starts[-1]] and panel.dates[env.t] <= hi  # last fill inside the window
    assert len(set(starts)) > 20
    again = TradingEnv({"panel": panel, "spec": SPEC})
    assert [again.reset(seed=ep) and again.t for ep in range(30)] == starts


def test_run_greedy_covers_the_window(panel):
    env = TradingEnv({"panel": panel, "spec": SPEC, "eval_window": ("2014-01-01", "2014-12-31")})
    res = run_greedy(env, lambda obs: 1)
    assert str(res["dates"][0]) >= "2014-01-01" and str(res["dates"][-1]) <= "2014-12-31"
    assert len(res["equity"]) == len(res["dates"]) and res["equity"][0] == SPEC.initial_cash


def test_bad_inputs_are_named(panel):
    env = TradingEnv({"panel": panel, "spec": SPEC, "eval_window": ("2014-01-01", "2014-03-31")})
    env.reset()
    with pytest.raises(ValueError, match="action 99"):
        env.step(99)
    with pytest.raises(ValueError, match="training window"):
        TradingEnv({"panel": panel, "spec": EnvSpec(train_start="2030-01-01", train_end="2031-01-01")})
    with pytest.raises(ValueError, match="panel"):
        TradingEnv({})
    with pytest.raises(ValueError, match="too few bars"):
        TradingEnv({"panel": panel, "spec": EnvSpec(train_start="2013-01-01", train_end="2013-03-01")})
