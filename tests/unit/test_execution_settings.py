"""Settings `execution` (cluster/settings.py ExecutionSettings): from YAML and the environment
into the loop's AlgoConfig; a bad algorithm named; twap / limit_touch refused without the live
session they work on."""
from __future__ import annotations

import pytest

from broker.execution_algos import AlgoConfig
from broker.kis.config import Credentials, environment
from cluster.live import LiveConfig
from cluster.settings import SettingsError, load_settings


def test_execution_settings_from_yaml_and_env_become_the_loops_algorithm(tmp_path):
    f = tmp_path / "trader.yaml"
    f.write_text("execution:\n  algo: twap\n  twap_window_min: 90\n")
    s = load_settings(f, environ={"KRT_EXECUTION__TWAP_CHILDREN": "9"}, dotenv=None)
    assert s.execution.algo_config() == AlgoConfig("twap", twap_window_min=90, twap_children=9)
    assert load_settings(None, environ={}, dotenv=None).execution.algo_config() == AlgoConfig("market_open")


def test_an_unknown_algorithm_is_named(tmp_path):
    f = tmp_path / "trader.yaml"
    f.write_text("execution:\n  algo: vwap\n")
    with pytest.raises(SettingsError, match="execution.algo"):
        load_settings(f, environ={}, dotenv=None)


def test_a_sliced_algorithm_needs_the_live_session():
    creds = Credentials("k", "s", "50123456-01", "id")
    with pytest.raises(ValueError, match="execution.algo twap works orders on the session's live quotes"):
        LiveConfig(mode="vts", environment=environment("vts"), credentials=creds, symbols=["005930"],
                   execution=AlgoConfig("twap"))
    LiveConfig(mode="vts", environment=environment("vts"), credentials=creds, symbols=["005930"], realtime=True,
               execution=AlgoConfig("limit_touch"))
