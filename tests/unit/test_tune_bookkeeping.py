"""What `training.tune` does around a Tune experiment so that an interrupted search resumes into one
complete search (no Ray): a partial experiment is refused, MLflow ends up with one ended run per
trial, a trial started again finds its run, a winner is registered once per search.
tests/integration/test_tune_resume.py kills and resumes a real search."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from training import registry as R
from training.tune import Interrupted, _existing_run, _finish

# every test builds an MLflow SQLite store (its migrations take seconds on 2 cores): slow
pytestmark = pytest.mark.slow


def _result(trial_id, run_id=None, *, done=True, iteration=1, error=None, sid="s1"):
    metrics = {"trial_id": trial_id, **({"run_id": run_id, "val_sharpe": 0.1, "training_iteration": iteration}
                                        if run_id else {})}
    if done:
        metrics["done"] = True
    return SimpleNamespace(metrics=metrics, error=error, config={"lr": 1e-3, "search_id": sid})


@pytest.fixture
def mlflow_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    fixed = {"tracking_uri": uri, "experiment": "rl-agents", "mlflow_dir": str(tmp_path), "max_iters": 3}
    exp_id = R.ensure_experiment(uri, "rl-agents", tmp_path)
    c = R.client(uri)

    def run(trial_id, sid="s1"):
        return c.create_run(exp_id, tags={"trial_id": trial_id, "search_id": sid}).info.run_id

    return SimpleNamespace(uri=uri, fixed=fixed, exp_id=exp_id, c=c, run=run)


def test_a_partial_experiment_is_refused(mlflow_store):
    m = mlflow_store
    a, b = m.run("a"), m.run("b")
    results = [_result("a", a), _result("b", b, done=False)]  # what Tune returns after Ctrl-C
    with pytest.raises(Interrupted, match="1 of 2 trials ended.*--resume"):
        _finish(results, 2, "/x", m.fixed)
    with pytest.raises(Interrupted, match="2 of 3"):  # the searcher had not created the third yet
        _finish([_result("a", a), _result("b", b)], 3, "/x", m.fixed)
    assert {m.c.get_run(r).info.status for r in (a, b)} == {"RUNNING"}  # MLflow left as it was
    # a restored trial that had run all its iterations has no `done` (Tune does not save it): ended
    _finish([_result("a", a), _result("b", b, done=False, iteration=3)], 2, "/x", m.fixed)


def test_mlflow_is_made_to_agree_with_tune(mlflow_store):
    m = mlflow_store
    ok, failed, lost, twice, twice_extra = m.run("ok"), m.run("failed"), m.run("lost"), m.run("twice"), m.run("twice")
    other = m.run("x", sid="another-search")
    results = [_result("ok", ok), _result("failed", failed, error=RuntimeError("boom")), _result("twice", twice),
               _result("silent", None, error=RuntimeError("died before reporting"))]
    _finish(results, 4, "/x", m.fixed)
    st = {r: m.c.get_run(r).info for r in (ok, failed, lost, twice, twice_extra, other)}
    assert st[ok].status == "FINISHED" and st[twice].status == "FINISHED" and st[failed].status == "FAILED"
    # a run whose trial Tune does not know (started, then killed before the driver saved it), and
    # a second run of one trial: deleted (restorable), with the reason
    assert st[lost].lifecycle_stage == st[twice_extra].lifecycle_stage == "deleted"
    assert "re-sampled" in m.c.get_run(lost).data.tags["deleted_reason"]
    assert st[other].status == "RUNNING" and st[other].lifecycle_stage == "active"  # not this search
    assert {r.data.tags["trial_id"] for r in m.c.search_runs([m.exp_id])} == {"ok", "failed", "twice", "x"}


def test_a_trial_started_again_finds_its_run(mlflow_store):
    m = mlflow_store
    mine = m.run("t1")
    m.run("t1", sid="another-search")
    assert _existing_run(m.c, m.exp_id, "s1", "t1") == mine
    assert _existing_run(m.c, m.exp_id, "s1", "t2") is None
    assert _existing_run(m.c, m.exp_id, None, "t1") is None  # an experiment from before search ids


def test_version_registered_for_a_search_is_found(mlflow_store, tmp_path):
    m = mlflow_store
    assert R.version_with_tag(m.uri, "dqn", "search_id", "s1") is None  # no model yet
    run = m.run("t1")
    agent = tmp_path / "agent"
    agent.mkdir()
    (agent / "meta.json").write_text("{}")
    m.c.log_artifacts(run, str(agent), R.AGENT_PATH)
    v1 = R.register(m.uri, "dqn", run, "first", tags={"search_id": "s1"})
    R.register(m.uri, "dqn", run, "another search's", tags={"search_id": "s2"})
    assert R.version_with_tag(m.uri, "dqn", "search_id", "s1") == v1 == "1"
    assert R.version_with_tag(m.uri, "dqn", "search_id", "s3") is None


def test_a_registered_model_is_loaded_only_as_registered(mlflow_store, tmp_path):
    m = mlflow_store
    run = m.run("t1")
    agent = tmp_path / "agent"
    (agent / "module").mkdir(parents=True)
    (agent / "module" / "weights.pkl").write_bytes(b"trained weights")
    (agent / "env_spec.json").write_text("{}")
    m.c.log_artifacts(run, str(agent), R.AGENT_PATH)
    v = R.register(m.uri, "dqn", run, "first")
    assert m.c.get_model_version("agent-dqn", v).tags[R.CHECKSUM_TAG] == R.folder_digest(agent)
    local = R.download_verified(m.uri, "agent-dqn", v)
    assert (local / "module" / "weights.pkl").read_bytes() == b"trained weights"
    # whoever can write to the store swaps the pickle: the load is refused before anything is unpickled
    stored = next(Path(m.c.get_run(run).info.artifact_uri.removeprefix("file://")).rglob("weights.pkl"))
    stored.write_bytes(b"import os; os.system('...')")
    with pytest.raises(R.ModelIntegrityError, match="differ from the ones registered"):
        R.download_verified(m.uri, "agent-dqn", v)
    # a version registered outside the project (no checksum) is refused too
    mv = m.c.create_model_version("agent-dqn", source=f"{m.c.get_run(run).info.artifact_uri}/agent", run_id=run)
    with pytest.raises(R.ModelIntegrityError, match="no krt.sha256 tag"):
        R.download_verified(m.uri, "agent-dqn", mv.version)
