"""Settings: one YAML file plus KRT_* environment variables; secrets only from env/.env, never shown."""
from __future__ import annotations

import pytest

from cluster.settings import Mode, SettingsError, load_settings


def test_yaml_then_env_override(tmp_path):
    f = tmp_path / "trader.yaml"
    f.write_text("mode: sim\nserve:\n  port: 8123\n  replicas: 2\njournal: /x/j.sqlite\n")
    s = load_settings(f, environ={"KRT_SERVE__PORT": "9001", "KRT_TRADING__SYMBOLS": "005930, 000660"}, dotenv=None)
    assert s.mode is Mode.SIM
    assert s.serve.port == 9001 and s.serve.replicas == 2
    assert s.trading.symbols == ["005930", "000660"]
    assert str(s.journal) == "/x/j.sqlite"


def test_config_file_from_env_and_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("dashboard:\n  port: 8600\n")
    s = load_settings(environ={"KRT_CONFIG": str(f)}, dotenv=None)
    assert s.dashboard.port == 8600 and s.mode is Mode.PAPER and s.serve.host == "127.0.0.1"


def test_secrets_from_env_and_dotenv_never_printed(tmp_path):
    env = tmp_path / ".env"
    env.write_text("# keys\nexport KIS_APP_KEY='key-123'\nKIS_APP_SECRET=sec-456\n")
    s = load_settings(None, environ={"KIS_ACCOUNT": "5012345601"}, dotenv=env)
    assert s.kis_app_key.get_secret_value() == "key-123"
    assert s.kis_account.get_secret_value() == "5012345601"
    shown = repr(s) + str(s.public_dict())
    for secret in ("key-123", "sec-456", "5012345601"):
        assert secret not in shown
    assert s.public_dict()["secrets"] == {"KIS_APP_KEY": True, "KIS_APP_SECRET": True, "KIS_ACCOUNT": True}


def test_secret_in_yaml_is_refused(tmp_path):
    f = tmp_path / "trader.yaml"
    f.write_text("kis_app_key: oops\n")
    with pytest.raises(SettingsError, match="secret"):
        load_settings(f, environ={}, dotenv=None)


@pytest.mark.parametrize("text,env,needle", [
    ("serve:\n  port: 0\n", {}, "serve.port"),
    ("mode: yolo\n", {}, "mode"),
    ("nonsense: 1\n", {}, "nonsense"),
    ("", {"KRT_SERVE__REPLICAS": "many"}, "serve.replicas"),
    ("[1, 2]\n", {}, "mapping"),
])
def test_bad_settings_name_the_problem(tmp_path, text, env, needle):
    f = tmp_path / "trader.yaml"
    f.write_text(text)
    with pytest.raises(SettingsError, match=needle):
        load_settings(f, environ=env, dotenv=None)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(SettingsError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={}, dotenv=None)


def test_other_modules_krt_variables_are_not_settings_and_serve_models_from_env():
    s = load_settings(environ={"KRT_MODEL_DQN": "models:/agent-dqn@champion", "KRT_MLFLOW_DIR": "/x",
                               "KRT_CODE_VERSION": "abc", "KRT_SERVE__RL_CHAMPIONS": "false",
                               "KRT_SERVE__MODELS__APPO": "models:/agent-appo/2"}, dotenv=None)
    assert s.serve.rl_champions is False and s.serve.models == {"appo": "models:/agent-appo/2"}
    assert load_settings(environ={}, dotenv=None).serve.rl_champions is True
    with pytest.raises(SettingsError, match="serve.nonsense"):  # a typo in a settings name still fails
        load_settings(environ={"KRT_SERVE__NONSENSE": "1"}, dotenv=None)
