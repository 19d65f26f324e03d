"""The RL champions in the running system: a champion registered in an MLflow store (a real sqlite
registry in a temp folder) joins the Serve ensemble at deploy time (real Ray, real Serve over
HTTP), decides on snapshots that hold its universe, abstains on those that do not, follows a
promotion without a redeploy, and joins `trader backtest --strategy ensemble` only when it did
not see the backtest period.

The model is an untrained DQN RLModule (seeded, built in a second): what is tested is how a
registered model reaches the decisions, not what it learned; training is test_rl_search.py's job.
"""
from __future__ import annotations

import json
import os
from urllib.parse import urlparse

import numpy as np
import pytest
import requests

from market.data import load_panel
from serving.auth import auth_headers
from strategies.defaults import ENSEMBLE_MEMBERS
from training.env import DEFAULT_UNIVERSE

pytestmark = [pytest.mark.ray, pytest.mark.slow]

DATA_END = "2016-12-29"  # the last bar the registered model "saw" (2016's last KRX session)
CHAMPION = "models:/agent-dqn@champion"


def _agent_folder(base):
    import torch
    from ray.rllib.algorithms.dqn import DQNConfig

    from training.env import EnvSpec, TradingEnv
    from training.registry import write_agent_dir

    torch.manual_seed(0)
    panel = load_panel(symbols=list(DEFAULT_UNIVERSE), end=DATA_END)
    env = TradingEnv({"panel": panel, "spec": EnvSpec(train_start="2008-01-01", train_end="2015-12-30")})
    cfg = DQNConfig().environment(observation_space=env.observation_space, action_space=env.action_space)
    module = cfg.get_default_rl_module_spec()
    module.observation_space, module.action_space = env.observation_space, env.action_space
    module.model_config = {**cfg.model_config, "fcnet_hiddens": [16]}
    module.build().save_to_path(str(base / "module_tmp"))
    meta = {"algo": "dqn", "seed": 0, "data_end": DATA_END,
            "windows": {"train_start": "2008-01-01", "train_end": "2015-12-30", "val_end": DATA_END}}
    return write_agent_dir(base / "agent", base / "module_tmp", env.spec_.to_dict(), meta)


@pytest.fixture(scope="module")
def registry(ray_local, tmp_path_factory):
    """A temp sqlite MLflow store with agent-dqn v1 as champion; MLFLOW_TRACKING_URI names it in this
    process only (the session's Ray workers were started without it)."""
    from training import registry as R

    base = tmp_path_factory.mktemp("rl-champions")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    c = R.client(uri)
    exp = c.create_experiment(R.EXPERIMENT, artifact_location=(base / "artifacts").as_uri())
    run = c.create_run(exp)
    c.log_artifacts(run.info.run_id, str(_agent_folder(base / "model")), R.AGENT_PATH)
    c.set_terminated(run.info.run_id)
    version = R.register(uri, "dqn", run.info.run_id, "untrained test module", alias=R.CHAMPION)
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield {"uri": uri, "run_id": run.info.run_id, "version": version, "base": base}
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def _deploy(decide_url, served, name):
    """Deploy a second app next to the session's `trader` app, on the Serve HTTP port it runs."""
    from cluster.trading_loop import deploy_decision_service

    port = urlparse(decide_url).port
    url = deploy_decision_service(served.agents, port, served=served, name=name, route_prefix=f"/{name}")
    return url, url.replace("/v1/decide", "/healthz")


def _cleanup(name, *served):
    import ray
    from ray import serve

    from actors import NAMESPACE
    from actors.agent import actor_name
    from strategies.registry import StrategyContext

    serve.delete(name)
    for plan in served:
        for agent, model in plan.models.items():  # the detached RL actors this app created
            try:
                ray.kill(ray.get_actor(actor_name(agent, StrategyContext(model=model), plan.tracking_uri),
                                       namespace=NAMESPACE))
            except ValueError:
                pass


def _post(url, window):
    d = window.to_dict()
    resp = requests.post(url, json={"as_of": d["dates"][-1], "bars": d},   # stateless: the service secret
                         headers=auth_headers(), timeout=180)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_served_ensemble_includes_the_champion_abstains_and_follows_a_promotion(registry, decide_url):
    import ray

    from actors import NAMESPACE
    from actors.agent import actor_name
    from serving.champions import plan
    from strategies.registry import StrategyContext
    from training import registry as R
    from training.policy import RLAgent

    served = plan(["technical", "factor"])  # what `trader serve` / `trader demo` do at deploy time
    assert served.agents == ["technical", "factor", "dqn"] and served.models == {"dqn": CHAMPION}
    assert served.versions["dqn"] == registry["version"] and served.tracking_uri == registry["uri"]
    assert any("appo not served: no 'champion' version of agent-appo" in n for n in served.notes)
    assert f"dqn ({CHAMPION}, v{registry['version']})" in served.summary()
    pinned = plan(["technical", "factor"], models={"dqn": "models:/agent-dqn/1"})
    url, health_url = _deploy(decide_url, served, "champions")
    try:
        health = requests.get(health_url, timeout=120).json()
        assert health["agents"] == ["technical", "factor", "dqn"]
        assert health["served"]["dqn"]["model"] == CHAMPION
        assert health["served"]["dqn"]["version"] == registry["version"]  # loaded from the temp store
        assert health["served"]["technical"]["model"] is None

        # (1) a snapshot holding the model's universe: dqn decides like the same model run locally
        symbols = list(DEFAULT_UNIVERSE) + ["035420", "051910"]
        panel = load_panel(symbols=symbols, start="2018-01-01", end="2019-06-28")
        window = panel.tail(health["lookback"])
        answer = _post(url, window)
        dqn = answer["agents"]["dqn"]
        assert dqn["abstained"] is None and dqn["weight"] > 0
        w = np.array([dqn["targets"][s] for s in window.symbols])
        np.testing.assert_allclose(w, RLAgent(CHAMPION).target_weights(window))
        assert w.sum() > 0 and np.all(w[[window.symbols.index(s) for s in ("035420", "051910")]] == 0)
        assert sum(a["weight"] for a in answer["agents"].values()) == pytest.approx(1.0)

        # (2) a snapshot without 055550: dqn abstains, the others decide, the request succeeds
        lacking = panel.select([s for s in symbols if s != "055550"]).tail(health["lookback"])
        answer = _post(url, lacking)
        dqn = answer["agents"]["dqn"]
        assert dqn["weight"] == 0 and dqn["targets"] == {} and "055550" in dqn["abstained"]
        assert {"technical", "factor"} <= set(answer["agents"])
        assert sum(a["weight"] for a in answer["agents"].values()) == pytest.approx(1.0)
        assert set(answer["risk"]["ensemble"]["prior"]) == {"technical", "factor"}

        # a promotion reaches the served actor without a redeploy (the actor refreshes each minute;
        # here we ask it now)
        v2 = R.register(registry["uri"], "dqn", registry["run_id"], "promoted copy", alias=R.CHAMPION)
        actor = ray.get_actor(actor_name("dqn", StrategyContext(model=CHAMPION), registry["uri"]), namespace=NAMESPACE)
        assert ray.get(actor.refresh.remote(), timeout=120) >= 1
        assert requests.get(health_url, timeout=60).json()["served"]["dqn"]["version"] == v2

        # a redeploy with another model configuration gets its own actor (no stale reuse)
        _deploy(decide_url, pinned, "champions")
        health = requests.get(health_url, timeout=120).json()
        assert health["served"]["dqn"] == {"strategy": "dqn", "model": "models:/agent-dqn/1", "version": "1",
                                           "symbols": list(DEFAULT_UNIVERSE)}
    finally:
        _cleanup("champions", served, pinned)


def test_without_a_champion_only_the_configured_agents_are_served_and_no_store_is_made(
        decide_url, tmp_path, monkeypatch, capsys):
    from cluster.commands.serve import deploy
    from cluster.settings import load_settings
    from serving.champions import plan
    from training import registry as R

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("KRT_MODEL_DQN", raising=False)
    monkeypatch.delenv("KRT_MODEL_APPO", raising=False)
    monkeypatch.setattr(R, "DEFAULT_DIR", tmp_path / "mlflow")  # the embedded default, not there
    assert plan(["technical", "factor"]).agents == ["technical", "factor"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty' / 'mlflow.db'}")  # named, absent
    # `trader serve`'s deploy, with the default settings (rl_champions on) on the session's Serve port
    settings = load_settings(environ={"KRT_SERVE__APP_NAME": "no-champions", "KRT_SERVE__ROUTE_PREFIX": "/no-champions",
                                      "KRT_SERVE__PORT": str(urlparse(decide_url).port)}, dotenv=None)
    assert settings.serve.rl_champions
    base = deploy(settings)
    try:
        # serve.agents' default: the default ensemble's members
        assert capsys.readouterr().out.startswith(f"decision service agents: {', '.join(ENSEMBLE_MEMBERS)}\n"
                                                  "  note: dqn not served")
        assert requests.get(base + "/healthz", timeout=120).json()["agents"] == list(ENSEMBLE_MEMBERS)
    finally:
        _cleanup("no-champions")
    assert not (tmp_path / "mlflow").exists() and not (tmp_path / "empty").exists()


def test_backtest_ensemble_adds_the_champion_only_when_it_predates_the_span(registry, tmp_path, capsys):
    from cluster.cli import main as trader

    common = ["--prices", "data/kr_stocks_daily.parquet", "--index", "data/kr_index_daily.parquet",
              "--train-start", "2014-01-02", "--rebalance", "monthly"]
    # the model saw data up to 2016-12-29: a 2017 span is out of sample for it
    assert trader(["backtest", "--strategy", "ensemble", *common, "--start", "2017-01-02", "--end", "2017-02-28",
                   "--out", str(tmp_path / "after")]) == 0
    metrics = json.loads((tmp_path / "after" / "metrics.json").read_text())
    assert "dqn" in metrics["members"] and "left_out" not in metrics
    # a 2016 span lies inside what the model saw: the ensemble trades without it and says why
    assert trader(["backtest", "--strategy", "ensemble", *common, "--start", "2016-09-01", "--end", "2016-10-31",
                   "--out", str(tmp_path / "inside")]) == 0
    metrics = json.loads((tmp_path / "inside" / "metrics.json").read_text())
    assert "dqn" not in metrics["members"] and set(ENSEMBLE_MEMBERS) <= set(metrics["members"])
    assert "left out dqn" in metrics["left_out"][0] and "look-ahead" in metrics["left_out"][0]
    assert "left out dqn" in capsys.readouterr().err
    # alone, the same model still refuses that span
    assert trader(["backtest", "--strategy", "dqn", "--model", CHAMPION, *common, "--start", "2016-09-01",
                   "--end", "2016-10-31", "--out", str(tmp_path / "alone")]) != 0
