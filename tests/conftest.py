"""Shared fixtures. Ray starts once per test session, local and isolated (never attaches to a
cluster recorded on the machine), and only for tests marked `ray`."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

# every `trader backtest` / `trader demo` a test runs is tracked in MLflow: into a store of the
# test session (set before training.registry reads it), never the developer's runs/mlflow
if "KRT_MLFLOW_DIR" not in os.environ:
    os.environ["KRT_MLFLOW_DIR"] = tempfile.mkdtemp(prefix="krt-test-mlflow-")
    atexit.register(shutil.rmtree, os.environ["KRT_MLFLOW_DIR"], True)

import training.strategies  # noqa: F401  (the RL agents in the registry, as the trader command line has them)

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# the decision service's secret for the whole session (serving/auth.py): the deployed app and the
# loops and tests that call it agree on it, and no token file is written under the home folder
os.environ.setdefault("KRT_DECIDE_TOKEN", "test-secret-" + os.urandom(12).hex())

# fixtures that start a local Ray (directly or through the Serve app built on it)
RAY_FIXTURES = {"ray_local", "decide_url"}


def pytest_collection_modifyitems(config, items):
    """A test that starts Ray is slow: `ray`-marked tests and tests using a Ray fixture are also
    marked `slow`, so the quick loop (`pytest -m "not slow"`, README) never pays Ray's start-up."""
    for item in items:
        starts_ray = item.get_closest_marker("ray") or RAY_FIXTURES & set(getattr(item, "fixturenames", ()))
        if starts_ray and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _ray_auth_env_stays(monkeypatch):
    """`trader` commands export Ray's auth settings into their process (apply_ray_env); one run
    in a test must not leave them for a Ray started later in the session (its driver and GCS
    would disagree on token auth)."""
    for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_USAGE_STATS_ENABLED"):
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])   # restored to this value afterwards
        else:
            monkeypatch.setenv(key, "")                # removed again afterwards
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def ray_local():
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield ray
    try:
        from ray import serve
        serve.shutdown()
    except Exception:
        pass
    ray.shutdown()


@pytest.fixture(scope="session")
def decide_url(ray_local, tmp_path_factory):
    """The decision service (Serve app: technical + factor agents) on a free loopback port."""
    from cluster.trading_loop import deploy_decision_service, free_port

    # only the listed agents: a champion in whatever MLflow store the environment names must not
    # change what the session-wide app serves
    return deploy_decision_service(["technical", "factor"], free_port(), rl_champions=False,
                                   state_path=tmp_path_factory.mktemp("decision-state") / "state.sqlite")


@pytest.fixture(scope="session")
def combined_decide_url(decide_url, tmp_path_factory):
    """A second app on the same Serve: technical + factor with the previous default decision
    (combined weights + the full overlay, pipeline.COMBINED_OVERLAY). For the loop tests that need
    a book which re-trades names of varied size on most decisions; the default tilted book holds
    still inside its band on the few names a short rehearsal trades."""
    from urllib.parse import urlparse

    from cluster.trading_loop import deploy_decision_service
    from serving.champions import ServedAgents
    from strategies.pipeline import COMBINED_OVERLAY

    return deploy_decision_service(["technical", "factor"], urlparse(decide_url).port,
                                   served=ServedAgents(["technical", "factor"]), name="combined",
                                   route_prefix="/combined", config=COMBINED_OVERLAY,
                                   state_path=tmp_path_factory.mktemp("combined-state") / "state.sqlite")


@pytest.fixture(scope="session")
def auth():
    """Authorization headers: `auth()` the service secret (stateless), `auth(run_id)` a run's token."""
    from serving.auth import auth_headers, load_secret, run_token

    def headers(run_id: str | None = None) -> dict:
        return auth_headers(None if run_id is None else run_token(load_secret(create=False), run_id))
    return headers
