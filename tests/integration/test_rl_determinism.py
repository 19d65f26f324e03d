"""Two trainings with the same seed give the same policy, decision for decision.

This is what `trader check-lookahead dqn|appo` relies on: its full and truncated runs each train
the agent on the same rows before the first decision, and any difference between them reads as a
leak. RLlib's replay buffers drew DQN's minibatches from unseeded generators (training/replay.py);
RLlib's APPO learner updated on a background thread and handed the env runner whatever weights
that thread had published by then (training/appo_learner.py). This test trains each agent twice on
a tiny budget, through the same `RLAgent.fit` the check uses, and compares weights and greedy
decisions.
"""
from __future__ import annotations

import numpy as np
import pytest

from market.data import load_panel
from training.env import DEFAULT_UNIVERSE
from training.policy import RLAgent

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _trained(panel, algo: str, seed: int) -> RLAgent:
    # DQN: smoke preset, 2 iterations (400 env steps, replay sampling and gradient steps after step
    # 100); APPO: the 2core preset people train with, 5 iterations (5,000 env steps, an update and a
    # weight sync each)
    agent = RLAgent(algo=algo, seed=seed, train_iters=2 if algo == "dqn" else 5,
                    preset="smoke" if algo == "dqn" else "2core")
    agent.fit(panel)
    return agent


def _decisions(agent: RLAgent, panel, bars: range) -> list[int]:
    agent.prev_action = 0
    return [int(np.argmax(agent.target_weights(panel.rows(0, t + 1)))) for t in bars]


@pytest.mark.parametrize("algo", ["dqn", "appo"])
def test_same_seed_same_policy(ray_local, algo):
    import torch

    panel = load_panel(symbols=list(DEFAULT_UNIVERSE), start="2012-01-01", end="2016-12-31")
    first, second = _trained(panel, algo, seed=0), _trained(panel, algo, seed=0)
    a, b = first._loaded.module.state_dict(), second._loaded.module.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{algo}: {key} differs between two trainings with seed 0"
    bars = range(len(panel) - 150, len(panel))
    assert _decisions(first, panel, bars) == _decisions(second, panel, bars)


def test_vector_env_trains_the_same_policy_as_rllibs_sync_vector_env(ray_local):
    """build_config's VecTradingEnv and RLlib's SyncVectorEnv of TradingEnvs, same seed: the
    same episodes, fills and rewards, hence bit-identical DQN weights after training."""
    import torch

    from training import algos as A
    from training.env import EnvSpec, TradingEnv

    panel = load_panel(symbols=list(DEFAULT_UNIVERSE), start="2012-01-01", end="2016-12-31")
    spec = TradingEnv({"panel": panel, "spec": EnvSpec(train_start="2012-01-01", train_end="2015-12-31")}
                      ).spec_.to_dict()
    weights = []
    for vector_env in (False, True):
        algo = A.build_config("dqn", {"panel": panel, "spec": spec, "seed": 0}, preset="smoke", seed=0,
                              vector_env=vector_env).build_algo()
        try:
            for _ in range(2):
                algo.train()
            weights.append({k: v.clone() for k, v in A.learner_module(algo).state_dict().items()})
        finally:
            algo.stop()
    sync, vec = weights
    for key in sync:
        assert torch.equal(sync[key], vec[key]), key


def test_appo_policy_does_not_depend_on_how_fast_its_learner_is(ray_local, monkeypatch):
    """The timing a loaded machine brings, made certain: every gradient step of the second training
    waits 50 ms. RLlib's threaded APPO learner then returns before it has learned and the env
    runner samples with older weights; the synchronous learner gives the same policy."""
    import time

    import torch
    from ray.rllib.core.learner.torch.torch_learner import TorchLearner

    panel = load_panel(symbols=list(DEFAULT_UNIVERSE), start="2012-01-01", end="2016-12-31")
    normal = _trained(panel, "appo", seed=0)._loaded.module.state_dict()
    step = TorchLearner._update

    def slow_step(self, *args, **kwargs):
        time.sleep(0.05)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(TorchLearner, "_update", slow_step)
    slowed = _trained(panel, "appo", seed=0)._loaded.module.state_dict()
    for key in normal:
        assert torch.equal(normal[key], slowed[key]), f"appo: {key} depends on the learner's speed"


@pytest.mark.parametrize("algo", ["dqn", "appo"])
def test_exposure_controller_same_seed_same_policy_and_it_learns_the_obvious(ray_local, algo):
    """The exposure controller (training/exposure.py) on RLlib: two trainings with one seed give
    one policy; and on a book whose next weeks are told by the first feature (4-week runs up while
    it is positive, down while negative), 40 iterations (40k env steps) teach both algorithms to be
    in when it is up and (much) less in when it is down."""
    import torch

    from training import algos as A
    from training.exposure import EXPOSURE_ENV_ID, LEVELS, register_exposure_env, run_policy

    rng = np.random.default_rng(0)
    T, step = 2000, 5
    sign = np.repeat(rng.choice([-1.0, 1.0], T // 20), 20)
    returns = np.zeros(T)
    returns[1:] = 0.02 * sign[:-1]  # the bars after the decision bar t0 = k·step follow sign[t0]
    z = np.zeros((T, 2), np.float32)
    z[:, 0] = sign  # known at the decision bar
    cfg = {"returns": returns, "z": z, "window": (0, 1500), "cost_rate": 0.001, "episode_steps": 20, "seed": 3}
    register_exposure_env()

    def train():
        algo_ = A.build_config(algo, cfg, preset="2core", seed=0, env_id=EXPOSURE_ENV_ID).build_algo()
        try:
            for _ in range(40):
                algo_.train()
            module = A.learner_module(algo_)
            return {k: v.clone() for k, v in module.state_dict().items()}, A.greedy_actions(module)
        finally:
            algo_.stop()

    (a, act), (b, _) = train(), train()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{algo}: {key} differs between two trainings with seed 0"
    out = run_policy({**cfg, "window": (1500, T)}, act)
    levels = np.array(LEVELS)[out["levels"]]
    up = sign[1500:T - 1:step][:len(levels)] > 0
    # in when up, and at least half the range less in when down
    assert levels[up].mean() > 0.75 and levels[up].mean() - levels[~up].mean() > 0.5, (levels[up].mean(),
                                                                                        levels[~up].mean())
