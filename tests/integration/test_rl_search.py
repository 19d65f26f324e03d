"""A tiny but complete search per algorithm: Tune + Optuna + ASHA → MLflow runs → registered
challenger → promotion → a Ray actor holding RLAgent loads the champion and decides."""
from __future__ import annotations

import os

import numpy as np
import pytest

from market.data import load_panel
from strategies.base import check_weights

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def searched(ray_local, tmp_path_factory):
    from dataclasses import replace

    from training.tune import SearchOptions, _ray_init, search

    base = tmp_path_factory.mktemp("rl-search")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri  # honoured over --mlflow-dir
    opts = SearchOptions.smoke(algos=("dqn", "appo"), num_samples=2, max_iters=1, seeds=2, finalists=1,
                               storage=str(base / "tune"), mlflow_dir=str(base / "unused"))
    _ray_init(None, None)  # already up (ray_local): reused
    # finalist seeds for DQN only: the code path is the same for APPO, and the suite stays short
    out = [search("dqn", opts), search("appo", replace(opts, seeds=1))]
    yield {"out": {o["algo"]: o for o in out}, "uri": uri, "opts": opts, "base": base}
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def test_every_trial_is_an_mlflow_run_with_params_metrics_window_version_and_agent(searched):
    from mlflow.tracking import MlflowClient

    assert not (searched["base"] / "unused" / "mlflow.db").exists()
    c = MlflowClient(searched["uri"])
    exp = c.get_experiment_by_name("rl-agents")
    runs = c.search_runs([exp.experiment_id])
    for algo in ("dqn", "appo"):
        mine = [r for r in runs if r.data.tags.get("algo") == algo]
        extra = 1 if algo == "dqn" else 0  # DQN's finalist re-trained with a second seed
        assert len(mine) == 2 + extra
        assert {r.data.tags["seed"] for r in mine} == ({"0", "1"} if extra else {"0"})
        for r in mine:
            assert {"lr", "gamma", "hidden", "turnover_penalty", "drawdown_penalty"} <= set(r.data.params)
            # the convention of every tracked run: input files with their sha256, costs, git sha, BLAS kernel
            assert len(r.data.params["data.prices.sha256"]) == 64 and "costs.commission_rate" in r.data.params
            assert r.data.params["git_sha"] == r.data.tags["code_version"]
            assert r.data.params["blas"].startswith("openblas ")  # numpy's wheel ships OpenBLAS
            assert "val_sharpe" in r.data.metrics and "timesteps" in r.data.metrics
            assert len(r.data.metrics) <= 8  # a chosen few, not RLlib's hundreds
            assert r.data.tags["train_window"] == "2008-01-01..2016-12-31"
            assert r.data.tags["val_window"] == "2017-01-01..2018-12-31"
            assert r.data.tags["code_version"] not in ("", "unknown")
            files = {f.path for f in c.list_artifacts(r.info.run_id, "agent")}
            assert {"agent/module", "agent/env_spec.json", "agent/meta.json"} <= files
        hist = c.get_metric_history(mine[0].info.run_id, "val_sharpe")
        assert 1 <= len(hist) <= 2


def test_best_version_registered_as_challenger(searched):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(searched["uri"], registry_uri=searched["uri"])
    for algo, o in searched["out"].items():
        mv = c.get_model_version_by_alias(f"agent-{algo}", "challenger")
        assert str(mv.version) == o["version"] == "1"
        assert "seeds" in mv.description and np.isfinite(float(mv.tags["val_sharpe_mean"]))
        assert mv.run_id == o["run_id"]


def test_actor_loads_champion_decides_and_picks_up_promotion(searched):
    import ray

    from training import registry as R
    from training.policy import RLAgent
    from training.promote import promote

    uri = searched["uri"]
    first = promote("dqn")
    assert first.promoted and first.champion_after == "1" and "no champion" in first.reason

    from actors.agent import AgentActor
    from strategies.registry import StrategyContext

    env = {"env_vars": {"MLFLOW_TRACKING_URI": uri}}
    window = load_panel(end="2019-06-28").tail(80)
    # the lead's AgentActor (holds any Agent from the strategy registry) with the registered model
    actor = AgentActor.options(runtime_env=env).remote("dqn", StrategyContext(model="models:/agent-dqn@champion"))
    answer = ray.get(actor.act.remote(window.to_dict()), timeout=180)
    w = np.array([answer[s] for s in window.symbols])
    check_weights(w, len(window.symbols), "dqn actor")
    outside = [i for i, s in enumerate(window.symbols) if s not in searched["opts"].symbols]
    assert np.all(w[outside] == 0)
    local = RLAgent("models:/agent-dqn@champion")
    np.testing.assert_allclose(w, local.target_weights(window))  # same model, same observation

    # the serving actor itself keeps its agents and picks up promotions through refresh()
    assert ray.get(actor.refresh.remote(), timeout=180) == 0

    # an identical challenger does not beat the champion out of sample: no promotion, reason recorded
    run_id = searched["out"]["dqn"]["run_id"]
    v2 = R.register(uri, "dqn", run_id, "same weights again")
    same = promote("dqn")
    assert not same.promoted and same.champion_after == "1" and "does not beat" in same.reason
    c = R.client(uri)
    assert c.get_model_version("agent-dqn", v2).tags["promotion_decision"] == "rejected"
    assert "does not beat" in c.get_model_version("agent-dqn", v2).description
    assert ray.get(actor.refresh.remote()) == 0

    # with a margin it may win; the live actor swaps to the new champion without a restart
    win = promote("dqn", min_improvement=-100.0)
    assert win.promoted and win.champion_after == v2
    assert "beats" in c.get_model_version("agent-dqn", v2).tags["promotion_reason"]
    assert ray.get(actor.refresh.remote(), timeout=120) >= 1  # swapped to v2 without a restart
    assert ray.get(actor.refresh.remote(), timeout=120) == 0


def test_appo_agent_in_actor_answers(searched):
    import ray

    from actors.agent import AgentActor
    from strategies.registry import StrategyContext

    window = load_panel(end="2020-03-31").tail(70)
    actor = AgentActor.options(runtime_env={"env_vars": {"MLFLOW_TRACKING_URI": searched["uri"]}}).remote(
        "appo", StrategyContext(model="models:/agent-appo@challenger"))
    answer = ray.get(actor.act.remote(window.to_dict()), timeout=180)
    check_weights(np.array([answer[s] for s in window.symbols]), len(window.symbols), "appo")
    assert ray.get(actor.lookback.remote()) == 61


def test_loaded_model_refuses_lookahead(searched):
    from training.policy import RLAgent

    agent = RLAgent("models:/agent-dqn@challenger")
    with pytest.raises(ValueError, match="look-ahead"):
        agent.fit(load_panel(end="2015-12-30"))  # the model saw 2017-2018
    agent.fit(load_panel(end="2019-01-31"))


def test_search_resumes_from_storage(searched):
    """`--resume` restores the stored Tune experiments (search and finalists) instead of re-running
    trials: no new MLflow run appears, the same best run is found again, and the version this search
    registered is reported instead of a second one (test_tune_resume.py kills a search mid-run)."""
    from dataclasses import replace

    from mlflow.tracking import MlflowClient

    from training.tune import search

    c = MlflowClient(searched["uri"])
    exp = c.get_experiment_by_name("rl-agents")
    before = len(c.search_runs([exp.experiment_id]))
    again = search("dqn", replace(searched["opts"], algos=("dqn",), resume=True))
    assert again["trials"] == 2 and again["run_id"] == searched["out"]["dqn"]["run_id"]
    assert len(c.search_runs([exp.experiment_id])) == before
    assert again["version"] == searched["out"]["dqn"]["version"] == "1"


def test_agent_without_model_trains_on_history_before_start(ray_local):
    """`trader backtest --strategy dqn` with no --model: fit() trains on the history it is given."""
    from training.policy import RLAgent

    history = load_panel(end="2016-12-30")
    agent = RLAgent(None, algo="dqn", train_iters=1, preset="smoke")
    agent.fit(history)
    assert agent.last_seen_date <= "2016-12-30" and agent.spec.train_end < "2016-12-30"
    window = load_panel(end="2017-02-28").tail(70)
    check_weights(agent.target_weights(window), len(window.symbols), "dqn trained in fit")


def test_backtest_trades_a_registered_model_after_its_data_end(searched, tmp_path):
    import json

    from cluster.cli import main as trader
    from training.promote import promote

    promote("dqn")  # champion if there is none yet (idempotent otherwise)
    out = tmp_path / "bt"
    code = trader(["backtest", "--strategy", "dqn", "--model", "models:/agent-dqn@champion",
                   "--prices", "data/kr_stocks_daily.parquet", "--index", "data/kr_index_daily.parquet",
                   "--start", "2019-01-02", "--end", "2019-06-28", "--out", str(out)])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["days"] > 100 and -1 < metrics["total_return"] < 1
    # a model that saw 2017-2018 (validation) must not trade a span inside it
    code = trader(["backtest", "--strategy", "dqn", "--model", "models:/agent-dqn@champion",
                   "--prices", "data/kr_stocks_daily.parquet", "--index", "data/kr_index_daily.parquet",
                   "--start", "2018-01-02", "--end", "2018-06-29", "--out", str(tmp_path / "leak")])
    assert code != 0
