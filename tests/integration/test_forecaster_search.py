"""The lgbm forecaster's search end to end on a tiny panel: Ray Tune + Optuna trials scored on the
purged validation Rank IC → one MLflow run per trial → the best refitted and registered as
forecaster-lgbm@challenger with its sha256 → promoted → an AgentActor building `lgbm` from
models:/forecaster-lgbm@champion decides exactly as the registered booster predicts; a tampered
model file is refused."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from market.data import load_panel
from strategies.base import LookAheadError
from strategies.forecaster import top_k_equal_weights

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SYMBOLS = ("000270", "000660", "005380", "005490", "005930", "006400", "012330", "017670", "028260",
           "030200", "035420", "051910", "055550", "066570", "096770", "105560", "034730", "003550")


@pytest.fixture(scope="module")
def searched(ray_local, tmp_path_factory):
    from ray import tune

    from training.forecasters import ForecastSearchOptions, search

    base = tmp_path_factory.mktemp("lgbm-search")
    uri = f"sqlite:///{base / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    opts = ForecastSearchOptions(fit_date="2018-01-01", start="2014-01-01", symbols=SYMBOLS, trials=2, horizon=5,
                                 top_k=5, validation_bars=120, min_train_rows=40, storage=str(base / "tune"),
                                 mlflow_dir=str(base / "unused"),
                                 # the real space, with few trees: a short test
                                 search_space={"num_leaves": tune.randint(7, 32), "learning_rate": tune.uniform(0.05, 0.2),
                                               "n_estimators": tune.randint(10, 31),
                                               "min_data_in_leaf": tune.randint(50, 200),
                                               "feature_fraction": tune.uniform(0.5, 1.0),
                                               "lambda_l2": tune.loguniform(1e-3, 10.0)})
    out = search(opts)
    yield {"out": out, "uri": uri, "opts": opts, "base": base}
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


def test_every_trial_is_an_mlflow_run_and_the_best_is_registered_with_its_checksum(searched):
    from training import registry as R

    c = R.client(searched["uri"])
    exp = c.get_experiment_by_name("forecasters")
    runs = c.search_runs([exp.experiment_id], filter_string=f"tags.search_id = '{searched['out']['search_id']}'")
    trials = [r for r in runs if "trial_id" in r.data.tags]
    assert len(trials) == 2 and len({r.data.tags["trial_id"] for r in trials}) == 2
    for r in trials:
        assert {"params.num_leaves", "params.learning_rate", "params.n_estimators", "params.min_data_in_leaf",
                "params.feature_fraction", "params.lambda_l2"} <= set(r.data.params)
        assert np.isfinite(r.data.metrics["val_rank_ic"])
        assert len(r.data.params["data.prices.sha256"]) == 64 and r.data.params["git_sha"] not in ("", "unknown")
        assert r.data.params["fit_date"] == "2018-01-01"
    best = max(trials, key=lambda r: r.data.metrics["val_rank_ic"])

    mv = c.get_model_version_by_alias("forecaster-lgbm", "challenger")
    assert str(mv.version) == searched["out"]["version"] == "1"
    assert mv.run_id == searched["out"]["run_id"]
    assert float(mv.tags["val_rank_ic"]) == pytest.approx(best.data.metrics["val_rank_ic"], abs=1e-6)
    local = R.download_verified(searched["uri"], "forecaster-lgbm", "1")
    folder = local / R.AGENT_PATH if (local / R.AGENT_PATH).is_dir() else local
    assert mv.tags[R.CHECKSUM_TAG] == R.folder_digest(folder)
    meta = json.loads((folder / "meta.json").read_text())
    # the refit: the best trial's parameters, every bar before the fit date and none after
    assert meta["params"] == {k.removeprefix("params."): _num(v) for k, v in best.data.params.items()
                              if k.startswith("params.")}
    assert meta["data_end"] == "2017-12-28" and meta["trial_run_id"] == best.info.run_id


def _num(text: str):
    return int(text) if text.lstrip("-").isdigit() else float(text)


def test_promoted_champion_decides_in_an_agent_actor_as_the_registered_booster_predicts(searched):
    import lightgbm as lgb
    import ray

    from actors.agent import AgentActor
    from strategies.forecaster import LGBMForecaster
    from strategies.registry import StrategyContext, _forecast_features, build
    from training import registry as R
    from training.forecasters import RegisteredLGBM
    from training.promote import promote

    first = promote("lgbm")
    assert first.promoted and first.champion_after == "1" and "no champion" in first.reason
    assert type(build("lgbm", StrategyContext())) is LGBMForecaster  # without a model: as before

    window = load_panel(symbols=list(SYMBOLS), start="2016-06-01", end="2018-03-30")
    env = {"env_vars": {"MLFLOW_TRACKING_URI": searched["uri"]}}
    actor = AgentActor.options(runtime_env=env).remote("lgbm", StrategyContext(model="models:/forecaster-lgbm@champion"))
    answer = ray.get(actor.act.remote(window.to_dict()), timeout=300)
    got = np.array([answer[s] for s in window.symbols])

    # the registered model file itself, read by LightGBM here, on the decision bar's features
    local = R.download_verified(searched["uri"], "forecaster-lgbm", "1")
    folder = local / R.AGENT_PATH if (local / R.AGENT_PATH).is_dir() else local
    booster = lgb.Booster(model_file=str(folder / "model.txt"))
    x = _forecast_features(StrategyContext()).latest(window)[0]
    scores = np.full(len(window.symbols), np.nan)
    ok = np.isfinite(x).any(axis=1)
    scores[ok] = booster.predict(x[ok])
    scores[~(np.isfinite(window.close[-1]) & (window.close[-1] > 0))] = np.nan  # no price, no pick
    expected = top_k_equal_weights(scores, 5)
    assert expected.sum() == pytest.approx(1.0) and (expected > 0).sum() == 5
    np.testing.assert_allclose(got, expected)
    assert ray.get(actor.describe.remote())["version"] == "1"

    # a decision before the model's last training bar would be look-ahead
    agent = RegisteredLGBM.load(_forecast_features(StrategyContext()), "models:/forecaster-lgbm@champion")
    with pytest.raises(LookAheadError):
        agent.target_weights(load_panel(symbols=list(SYMBOLS), start="2016-01-01", end="2017-10-31"))

    # the same model registered again does not beat the champion out of sample (Rank IC)
    v2 = R.register(searched["uri"], "lgbm", searched["out"]["run_id"], "same model again")
    same = promote("lgbm", end="2018-06-29")
    assert not same.promoted and same.metric == "rank_ic" and "does not beat" in same.reason
    assert np.isfinite(same.challenger_sharpe) and same.challenger_sharpe == same.champion_sharpe
    assert R.client(searched["uri"]).get_model_version("forecaster-lgbm", v2).tags["promotion_decision"] == "rejected"


def test_a_tampered_model_file_is_refused(searched):
    from strategies.registry import StrategyContext, _forecast_features
    from training import registry as R
    from training.forecasters import RegisteredLGBM

    c = R.client(searched["uri"])
    run = c.get_run(searched["out"]["run_id"])
    stored = Path(run.info.artifact_uri.removeprefix("file://")) / R.AGENT_PATH / "model.txt"
    stored.write_text(stored.read_text().replace("num_leaves=", "num_leaves=9", 1))
    with pytest.raises(R.ModelIntegrityError):
        RegisteredLGBM.load(_forecast_features(StrategyContext()), "models:/forecaster-lgbm/1")
