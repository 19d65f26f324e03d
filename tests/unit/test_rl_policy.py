"""RLAgent rebuilds the env's observation from a Panel window, bit for bit (no Ray needed)."""
from __future__ import annotations

import numpy as np
import pytest

from market.data import load_panel
from training.env import DEFAULT_UNIVERSE, EnvSpec, TradingEnv, action_templates


@pytest.fixture(scope="module")
def agent_dir(tmp_path_factory):
    from ray.rllib.algorithms.dqn import DQNConfig

    from training.registry import write_agent_dir

    panel = load_panel(symbols=list(DEFAULT_UNIVERSE), end="2018-12-31")
    env = TradingEnv({"panel": panel, "spec": EnvSpec()})
    cfg = DQNConfig().environment(observation_space=env.observation_space, action_space=env.action_space)
    module = cfg.get_default_rl_module_spec()
    module.observation_space, module.action_space = env.observation_space, env.action_space
    module.model_config = {**cfg.model_config, "fcnet_hiddens": [16]}
    built = module.build()
    d = tmp_path_factory.mktemp("agent")
    built.save_to_path(str(d / "module_tmp"))
    meta = {"algo": "dqn", "windows": {"train_end": "2016-12-31", "val_end": "2018-12-31"}}
    return write_agent_dir(d / "agent", d / "module_tmp", env.spec_.to_dict(), meta), env


def test_agent_observation_equals_env_observation(agent_dir):
    from training.policy import RLAgent

    path, env = agent_dir
    agent = RLAgent(str(path))
    full = load_panel(end="2019-12-30")  # more symbols and more dates than the env had
    for day in ("2017-03-02", "2018-11-30"):
        t = env.panel.index_of(day)
        for prev in (0, 5):
            agent.prev_action = prev
            np.testing.assert_array_equal(agent.observe(full.upto(day)), env.observation_at(t, prev))


def test_agent_weights_follow_templates_and_symbols(agent_dir):
    from strategies.base import check_weights
    from training.policy import RLAgent

    path, _ = agent_dir
    agent = RLAgent(str(path))
    window = load_panel(end="2019-06-28").tail(100)
    w = check_weights(agent.target_weights(window), len(window.symbols), "rl")
    mine = [window.symbols.index(s) for s in DEFAULT_UNIVERSE]
    assert any(np.allclose(w[mine], row) for row in action_templates(len(DEFAULT_UNIVERSE)))
    assert w.sum() == pytest.approx(w[mine].sum())
    assert np.all(agent.target_weights(window.tail(30)) == 0)  # too little history: stay in cash
    with pytest.raises(ValueError, match="look-ahead"):
        agent.fit(load_panel(end="2017-06-30"))
    with pytest.raises(ValueError, match="lacks the model's symbols"):
        agent.observe(window.select(window.symbols[:3]))
    with pytest.raises(FileNotFoundError, match="not an agent folder"):
        RLAgent(str(path.parent / "module_tmp"))  # a bare module, without env spec
