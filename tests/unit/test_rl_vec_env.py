"""VecTradingEnv: sub-environment i is TradingEnv with seed + i, step for step, bit for bit."""
from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest

from market.data import load_panel
from training.env import DEFAULT_UNIVERSE, EnvSpec, TradingEnv
from training.vec_env import VecTradingEnv, make_trading_env

SPEC = EnvSpec(train_start="2010-01-01", train_end="2014-12-31", episode_len=40)


@pytest.fixture(scope="module")
def panel():
    return load_panel(symbols=list(DEFAULT_UNIVERSE), start="2009-01-01", end="2015-12-31")


def run_both(panel, spec: EnvSpec, num_envs: int, steps: int, seed: int, eval_window=None):
    """Step the vector env and num_envs TradingEnvs with the same random actions, emulating
    NEXT_STEP autoreset on the scalar side; assert equality at every step. Returns what was seen."""
    cfg = {"panel": panel, "spec": dataclasses.replace(spec), "eval_window": eval_window}
    vec = VecTradingEnv({**cfg, "seed": seed, "num_envs": num_envs})
    envs = [TradingEnv({**cfg, "spec": dataclasses.replace(spec), "seed": seed + i}) for i in range(num_envs)]
    obs, info = vec.reset(seed=seed)
    for i, env in enumerate(envs):
        o, inf = env.reset(seed=seed + i)
        assert np.array_equal(obs[i], o) and info["equity"][i] == inf["equity"]
    rng = np.random.default_rng(seed + 100)
    done = np.zeros(num_envs, dtype=bool)
    costs = traded = 0.0
    resets = 0
    for k in range(steps):
        actions = rng.integers(0, vec.n_actions, size=num_envs)
        obs, reward, term, trunc, info = vec.step(actions)
        for i, env in enumerate(envs):
            if done[i]:  # NEXT_STEP: this step's answer is the reset, its action is ignored
                o, _ = env.reset()
                r, te, tr = 0.0, False, False
                resets += 1
            else:
                o, r, te, tr, inf = env.step(int(actions[i]))
                assert info["traded"][i] == inf["traded"]
            assert np.array_equal(obs[i], o), f"obs differ: env {i}, step {k}"
            assert reward[i] == r, f"reward differs: env {i}, step {k}: {reward[i]!r} vs {r!r}"
            assert (term[i], trunc[i]) == (te, tr)
            assert vec.cash[i] == env.cash and np.array_equal(vec.holdings[i], env.holdings)
            assert info["equity"][i] == env.equity and vec.t[i] == env.t
            assert vec.costs_paid[i] == env.costs_paid
            done[i] = te or tr
            costs += env.costs_paid
            traded += info["traded"][i]
    return resets, costs, traded


def test_vector_env_equals_trading_envs_on_random_actions(panel):
    resets, costs, traded = run_both(panel, SPEC, num_envs=6, steps=130, seed=11)
    assert resets >= 12 and costs > 0 and traded > 0  # several episodes each, real trading


def test_vector_env_equals_with_penalties_slippage_and_no_band(panel):
    spec = dataclasses.replace(SPEC, turnover_penalty=0.01, drawdown_penalty=0.5, slippage_ticks=1.0,
                               min_trade_value=0.0, episode_len=25)
    resets, costs, _ = run_both(panel, spec, num_envs=4, steps=80, seed=5)
    assert resets >= 8 and costs > 0


def test_vector_env_in_eval_mode_runs_the_window(panel):
    resets, _, _ = run_both(panel, SPEC, num_envs=2, steps=70, seed=0, eval_window=("2015-01-01", "2015-03-31"))
    assert resets >= 2  # the quarter (about 60 decisions) ended and restarted


def test_vector_env_is_a_gymnasium_vector_env(panel):
    vec = make_trading_env({"panel": panel, "spec": SPEC, "seed": 0, "num_envs": 3})
    assert isinstance(vec, gym.vector.VectorEnv) and vec.num_envs == 3
    assert isinstance(make_trading_env({"panel": panel, "spec": SPEC}), TradingEnv)
    obs, _ = vec.reset(seed=1)
    assert obs.shape == (3, *vec.single_observation_space.shape) and vec.observation_space.contains(obs)
    assert vec.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    with pytest.raises(ValueError, match="outside"):
        vec.step(np.array([0, 1, vec.n_actions]))
    with pytest.raises(ValueError, match="3 actions"):
        vec.step(np.array([0, 1]))


@pytest.mark.slow  # builds an RLlib env runner: ~3 s
def test_rllib_env_runner_samples_the_vector_env(panel):
    """RLlib 2.60's SingleAgentEnvRunner, as build_config sets it up (VECTOR_ENTRY_POINT on the
    registered creator), steps one VecTradingEnv; every finished episode it returns replays
    in a TradingEnv to the same rewards."""
    import gymnasium as gym
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    from training.vec_env import VECTOR_ENV_ID, register_vector_env

    register_vector_env()
    config = (DQNConfig().environment(VECTOR_ENV_ID, env_config={"panel": panel, "spec": SPEC, "seed": 0})
              .env_runners(num_env_runners=0, num_envs_per_env_runner=4,
                           gym_env_vectorize_mode=gym.VectorizeMode.VECTOR_ENTRY_POINT)
              .debugging(seed=3))
    runner = SingleAgentEnvRunner(config=config)
    try:
        assert isinstance(runner.env.unwrapped, VecTradingEnv) and runner.env.unwrapped.num_envs == 4
        episodes = [e for e in runner.sample(num_timesteps=200, random_actions=True) if e.is_done]
    finally:
        runner.stop()
    assert len(episodes) >= 4
    env = TradingEnv({"panel": panel, "spec": SPEC})
    n_feat = env.zfeats.shape[1]
    for ep in episodes:
        obs, actions, rewards = ep.get_observations(), ep.get_actions(), ep.get_rewards()
        assert len(actions) == SPEC.episode_len
        start = np.flatnonzero((env.zfeats == obs[0][:n_feat]).all(axis=1))
        assert len(start) == 1  # the first observation names the episode's start bar
        env.reset()
        env.t, env.end = int(start[0]), int(start[0]) + SPEC.episode_len
        replay = [env.step(int(a))[1] for a in actions]
        assert np.array_equal(np.asarray(rewards), np.asarray(replay))
