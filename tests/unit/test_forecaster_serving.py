"""The deploy plan serves a forecaster champion like an RL champion: `models:/forecaster-lgbm@champion`
joins the served agents when the registry has one; a listed lgbm without one still decides (it
fits its own grid), unlike an RL agent, which could not."""
from __future__ import annotations

import pytest


@pytest.fixture()
def no_models(monkeypatch):
    for key in ("MLFLOW_TRACKING_URI", "KRT_MODEL_DQN", "KRT_MODEL_APPO", "KRT_MODEL_LGBM"):
        monkeypatch.delenv(key, raising=False)


def test_plan_adds_the_lgbm_champion_and_keeps_a_listed_lgbm_without_one(no_models, tmp_path):
    from serving.champions import plan
    from training import registry as R

    store = tmp_path / "mlflow"
    p = plan(["technical", "lgbm"], mlflow_dir=store)
    assert p.agents == ["technical", "lgbm"] and "lgbm" not in p.models
    assert any("lgbm served without a registered model" in n for n in p.notes) and not store.exists()
    with pytest.raises(ValueError, match="dqn is in the served agents but has no model"):
        plan(["technical", "dqn"], mlflow_dir=store)

    uri = R.tracking_uri(store)
    c = R.client(uri)
    c.create_registered_model("forecaster-lgbm")
    mv = c.create_model_version("forecaster-lgbm", source=str(tmp_path / "agent"))
    assert plan(["technical"], mlflow_dir=store).agents == ["technical"]  # a challenger is not served
    c.set_registered_model_alias("forecaster-lgbm", R.CHAMPION, mv.version)
    p = plan(["technical"], mlflow_dir=store)
    assert p.agents == ["technical", "lgbm"]
    assert p.models == {"lgbm": "models:/forecaster-lgbm@champion"} and p.versions["lgbm"] == "1"
    assert p.tracking_uri == uri
    assert plan(["technical"], rl_champions=False, mlflow_dir=store).agents == ["technical"]
