"""Shared fixtures. Ray starts once per test session, local and isolated (never attaches to a
cluster recorded on the machine), and only for tests marked `ray`."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

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
def decide_url(ray_local):
    """The decision service (Serve app: technical + factor agents) on a free loopback port."""
    from cluster.demo import deploy_decision_service, free_port

    # only the listed agents: a champion in whatever MLflow store the environment names must not
    # change what the session-wide app serves
    return deploy_decision_service(["technical", "factor"], free_port(), rl_champions=False)
