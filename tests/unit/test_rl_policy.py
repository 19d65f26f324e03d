"""RLAgent rebuilds the env's observation from a Panel window, bit for bit (no Ray needed)."""
from __future__ import annotations

import numpy as np
import pytest

from market.data import load_panel
from training.env import DEFAULT_UNIVERSE, EnvSpec, TradingEnv, action_templates

# every test needs an RLlib module built and saved (RLlib's import and build: seconds): slow
pytestmark = pytest.mark.slow


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


def test_serving_host_abstains_without_the_universe_and_plans_explicit_models(agent_dir, tmp_path, monkeypatch):
    """AgentHost (the AgentActor's class, here without Ray): a snapshot without the model's universe
    gets an abstention, not "all cash" and not an error; the deploy plan takes an explicit model."""
    from actors.agent import AgentHost, actor_name
    from serving.champions import plan
    from strategies.base import AgentAbstains
    from strategies.registry import StrategyContext

    path, _ = agent_dir
    host = AgentHost("dqn", StrategyContext(model=str(path)))
    full = load_panel(end="2019-06-28").tail(80)
    lacking = full.select([s for s in full.symbols if s != DEFAULT_UNIVERSE[-1]])
    answer = host.decide(lacking.to_dict())
    assert set(answer) == {"abstained"} and DEFAULT_UNIVERSE[-1] in answer["abstained"]
    with pytest.raises(AgentAbstains):
        host.act(lacking.to_dict())
    decided = host.decide(full.to_dict())["targets"]
    assert set(decided) == set(full.symbols) and sum(decided.values()) <= 1 + 1e-9
    assert host.describe() == {"strategy": "dqn", "model": str(path), "version": None,
                               "symbols": list(DEFAULT_UNIVERSE)}

    # deploy plan: no store anywhere → only the listed agents, and nothing is created by looking
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("KRT_MODEL_DQN", raising=False)
    monkeypatch.delenv("KRT_MODEL_APPO", raising=False)
    store = tmp_path / "mlflow"
    p = plan(["technical", "factor"], mlflow_dir=store)
    assert p.agents == ["technical", "factor"] and not p.models and p.tracking_uri is None
    assert any("dqn not served" in n for n in p.notes) and not store.exists()
    assert plan(["technical"], rl_champions=False, mlflow_dir=store).notes == []
    with pytest.raises(ValueError, match="dqn is in the served agents but has no model"):
        plan(["technical", "dqn"], mlflow_dir=store)
    # an explicit model (a folder here) is served without any registry; a models:/ URI needs one
    p = plan(["technical"], models={"dqn": str(path)}, mlflow_dir=store)
    assert p.agents == ["technical", "dqn"] and p.models == {"dqn": str(path)} and p.tracking_uri is None
    assert p.describe() == ["technical", f"dqn ({path})"]
    with pytest.raises(ValueError, match="needs an MLflow registry"):
        plan(["technical"], models={"dqn": "models:/agent-dqn/1"}, mlflow_dir=store)
    with pytest.raises(ValueError, match="only RL agents"):
        plan(["technical"], models={"technical": str(path)}, mlflow_dir=store)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'nowhere' / 'mlflow.db'}")
    assert plan(["technical"], mlflow_dir=store).models == {}
    assert not (tmp_path / "nowhere").exists() and not store.exists()
    # actors: one per strategy and configuration, never reused across models or stores
    ctx = StrategyContext(model="models:/agent-dqn@champion")
    names = {actor_name("technical"), actor_name("dqn", ctx, "sqlite:///a.db"), actor_name("dqn", ctx, "sqlite:///b.db"),
             actor_name("dqn", StrategyContext(model="models:/agent-dqn/3"), "sqlite:///a.db")}
    assert len(names) == 4 and actor_name("technical") == "agent:technical"
    assert actor_name("dqn", ctx, "sqlite:///a.db") == actor_name("dqn", ctx, "sqlite:///a.db")
