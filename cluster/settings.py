"""One settings model for every `trader` command: a YAML file plus environment variables.

Precedence (later wins): defaults → YAML file → `KRT_*` environment variables. The YAML file is
`--config PATH`, else `$KRT_CONFIG`, else `./trader.yaml` when it exists. Nested fields use a
double underscore in the environment: `KRT_SERVE__PORT=8100` sets `serve.port`.

Secrets (KIS_APP_KEY, KIS_APP_SECRET, KIS_ACCOUNT) come only from the environment or an untracked
`.env` file — never from the YAML file (a YAML that holds one is refused, so a key cannot end up
in git) — and they are `SecretStr`, so printing or logging the settings never shows them. The
same holds for alert bot tokens and webhook URLs (`alerts.notifiers[].secret_env` names the
variable; defaults in ALERT_SECRET_ENV).
"""
from __future__ import annotations

import datetime as dt
import os
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from broker.execution_algos import ALGOS, AlgoConfig
from broker.risk_engine import DEFAULT_PROTECTIONS, build_intraday_rules, build_protections
from strategies import defaults as D

ENV_PREFIX = "KRT_"
SECRET_ENV = {"kis_app_key": "KIS_APP_KEY", "kis_app_secret": "KIS_APP_SECRET", "kis_account": "KIS_ACCOUNT"}
DEFAULT_FILE = "trader.yaml"


class SettingsError(ValueError):
    """The settings file or an environment variable is invalid; the message names which."""


class Mode(str, Enum):
    PAPER = "paper"
    SIM = "sim"
    VTS = "vts"
    LIVE = "live"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClusterSettings(_Section):
    config: Path = Path("ray-cluster.yaml")        # the `ray up` file `trader up/down` use
    address: str | None = None                      # Ray address for jobs/serve/status ("auto" on the head)
    dashboard_url: str = "http://127.0.0.1:8265"   # via `ray dashboard <yaml>` port-forwarding
    auth_token_file: Path | None = None             # Ray auth token (default ~/.ray/auth_token)


class ServeSettings(_Section):
    app_name: str = "trader"
    route_prefix: str = "/"
    host: str = "127.0.0.1"                         # never 0.0.0.0: reach it through SSH forwarding
    port: int = Field(8000, ge=1, le=65535)
    replicas: int = Field(1, ge=1)
    # strategies/registry.py names; default: the default ensemble's members (strategies/defaults.py)
    agents: list[str] = Field(default_factory=lambda: list(D.ENSEMBLE_MEMBERS))
    # RL agents (dqn, appo) and the lgbm forecaster join `agents` whenever a model exists for
    # them: `models[algo]`, else
    # KRT_MODEL_<ALGO>, else the MLflow registry's `champion` (serving/champions.py). false: only
    # the listed agents are served.
    rl_champions: bool = True
    models: dict[str, str] = Field(default_factory=dict)  # e.g. {dqn: "models:/agent-dqn/3"}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.route_prefix.rstrip('/')}"


class MlflowSettings(_Section):
    # None: MLFLOW_TRACKING_URI, else the embedded store `trader train` writes (runs/mlflow/mlflow.db)
    tracking_uri: str | None = None
    ui_url: str = "http://127.0.0.1:5000"


class DashboardSettings(_Section):
    port: int = Field(8501, ge=1, le=65535)
    refresh_s: float = Field(10.0, gt=0)


class TradingSettings(_Section):
    # defaults: strategies/defaults.py, the one place the backtester and the service read them
    starting_cash: int = Field(D.STARTING_CASH, gt=0)   # KRW
    symbols: list[str] = Field(default_factory=list)  # empty: the shipped universe
    cvar_budget: float = Field(D.CVAR_BUDGET, gt=0, lt=1)    # one-day 99% CVaR budget, fraction of equity
    max_position: float = Field(D.MAX_POSITION, gt=0, le=1)  # cap per symbol, fraction of equity
    max_gross: float = Field(D.MAX_GROSS, gt=0, le=1)        # cap on the sum of weights (no leverage)
    replay_days: int = Field(250, ge=2)             # paper/sim: stored bars replayed by `trader run`
    benchmark: str = "KOSPI200"


class LiveSettings(_Section):
    """`trader run --mode vts|live`: session timing (KST), the KRX holiday list, KIS endpoints."""
    order_time: dt.time = dt.time(9, 0, 30)         # orders go out once continuous trading runs
    order_cutoff: dt.time = dt.time(15, 15)         # never later: the closing auction starts at 15:20
    bar_final: dt.time = dt.time(15, 45)            # a day's daily bar is complete from here on
    holidays: list[dt.date] = Field(default_factory=list)  # weekday KRX holidays (no KIS TR for it on VTS)
    poll_s: float = Field(60.0, gt=0)               # re-read bars this often while a final bar is late
    clock: Literal["wall", "simulator"] = "wall"    # simulator: rehearse vts against `python -m broker.sim`
    # intraday: the market actor also watches the symbols on the KIS WebSocket (one session per
    # app key, in the BrokerGateway): live_quote / stale; decisions still use final daily bars
    realtime: bool = False
    feed_silence_s: float = Field(60.0, gt=0)       # a symbol silent this long counts as a stalled feed
    # KIS environment options (broker/kis/config.py Environment: rest_url, ws_url, rate_per_s,
    # token_throttle_s, ... — the items KIS_API.md marks unsure)
    kis: dict[str, Any] = Field(default_factory=dict)


class RiskEngineSettings(_Section):
    """The order-level rules every order passes before it is sent (broker/risk_engine.py). Each
    entry names a protection and its parameters, e.g. {name: max_order_value, max_krw: 30000000};
    the trading-state guard (operator halt, the decision's HALTED) is always on."""
    protections: list[dict[str, Any]] = Field(default_factory=lambda: [dict(p) for p in DEFAULT_PROTECTIONS])
    # intraday rules on live marks (real-time loop, live.realtime on), e.g.
    # {name: position_stop, max_drop: 0.07}, {name: intraday_loss_limit, max_loss: 0.03, flatten: true};
    # none by default. Checked every `intraday_every_s` seconds of session time
    intraday: list[dict[str, Any]] = Field(default_factory=list)
    intraday_every_s: float = Field(30.0, gt=0)

    @field_validator("protections")
    @classmethod
    def _known(cls, v):
        build_protections(v)   # unknown names or parameters fail when the settings load
        return v

    @field_validator("intraday")
    @classmethod
    def _known_intraday(cls, v):
        build_intraday_rules(v)
        return v


class ExecutionSettings(_Section):
    """How each decided order reaches the market (broker/execution_algos.py): `market_open` (one
    market order at the order time, the default), `twap` (twap_children market children evenly
    over twap_window_min minutes) or `limit_touch` (a limit at the best bid/ask, re-priced when
    it moves, the rest as a market order after touch_window_min minutes). twap and limit_touch
    work over the session: real-time loop only (--mode vts|live with live.realtime on)."""
    algo: Literal[ALGOS] = "market_open"  # type: ignore[valid-type]
    twap_window_min: float = Field(60.0, gt=0)
    twap_children: int = Field(6, ge=1)
    touch_window_min: float = Field(30.0, gt=0)

    def algo_config(self) -> AlgoConfig:
        return AlgoConfig(self.algo, self.twap_window_min, self.twap_children, self.touch_window_min)


ALERT_KINDS = ("order", "fill", "denial", "trading_state", "feed_stall", "daily_pnl", "intraday_risk")   # cluster/alerts.py AlertKind
ALERT_SECRET_ENV = {"telegram": "KRT_ALERT_TELEGRAM_TOKEN", "slack": "KRT_ALERT_SLACK_URL",
                    "discord": "KRT_ALERT_DISCORD_URL", "webhook": "KRT_ALERT_WEBHOOK_URL"}


class AlertNotifierSettings(_Section):
    """One alert destination. Its secret (bot token or webhook URL) is read from the environment
    variable `secret_env` (default per kind, ALERT_SECRET_ENV) or .env, never from the YAML file."""
    kind: Literal["telegram", "slack", "discord", "webhook"]
    name: str = ""                          # shown in logs and stats; default: the kind
    chat_id: str | None = None              # telegram only (a chat id is not a credential)
    api_url: str | None = None              # telegram Bot API base; default https://api.telegram.org
    secret_env: str | None = None           # default: ALERT_SECRET_ENV[kind]
    secret: SecretStr | None = None         # filled from the environment by load_settings only

    @model_validator(mode="after")
    def _telegram_needs_chat(self):
        if self.kind == "telegram" and not self.chat_id:
            raise ValueError("a telegram notifier needs chat_id")
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind

    @property
    def secret_var(self) -> str:
        return self.secret_env or ALERT_SECRET_ENV[self.kind]


class AlertsSettings(_Section):
    """cluster/alerts.py: who hears about orders, fills, denials, state changes, stalls, daily P&L."""
    enabled: bool = True                    # still off in effect until a notifier has its secret set
    notifiers: list[AlertNotifierSettings] = Field(default_factory=list)
    events: list[Literal[ALERT_KINDS]] = Field(default_factory=lambda: list(ALERT_KINDS))  # type: ignore[valid-type]
    rate_per_min: float = Field(20.0, gt=0)  # per notifier (Telegram allows ~20/min in a group)
    burst: int = Field(5, ge=1)
    queue_size: int = Field(100, ge=1)       # per notifier; beyond it events are dropped with a count
    timeout_s: float = Field(5.0, gt=0)      # connect and read timeout of one send


class Settings(_Section):
    mode: Mode = Mode.PAPER
    journal: Path = Path("runs/journal.sqlite")
    data_dir: Path | None = None
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    trading: TradingSettings = Field(default_factory=TradingSettings)
    live: LiveSettings = Field(default_factory=LiveSettings)
    risk_engine: RiskEngineSettings = Field(default_factory=RiskEngineSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    alerts: AlertsSettings = Field(default_factory=AlertsSettings)
    # secrets: environment / .env only
    kis_app_key: SecretStr | None = None
    kis_app_secret: SecretStr | None = None
    kis_account: SecretStr | None = None

    @field_validator("journal", "data_dir")
    @classmethod
    def _expand(cls, v):
        return None if v is None else Path(os.path.expanduser(str(v)))

    def public_dict(self) -> dict[str, Any]:
        """Everything but the secrets (which show only whether they are set)."""
        d = self.model_dump(mode="json", exclude=set(SECRET_ENV))
        d["secrets"] = {env: getattr(self, f) is not None for f, env in SECRET_ENV.items()}
        return d


def read_dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a .env file (comments, blank lines, `export ` and quotes allowed)."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        if "=" not in line:
            raise SettingsError(f"{path}:{n}: expected KEY=VALUE")
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def _set_path(d: dict, keys: list[str], value: str) -> None:
    for k in keys[:-1]:
        d = d.setdefault(k, {})
        if not isinstance(d, dict):
            raise SettingsError(f"environment sets a field under {k!r}, which is not a section")
    d[keys[-1]] = value


def _env_overrides(environ: dict[str, str]) -> dict:
    out: dict = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "KRT_CONFIG" or name == "KRT_DATA_DIR":
            continue
        keys = name[len(ENV_PREFIX):].lower().split("__")
        if keys[0] in SECRET_ENV:
            continue  # secrets have their own names
        if len(keys) == 1 and keys[0] not in Settings.model_fields:
            continue  # another module's variable (KRT_MODEL_DQN, KRT_MLFLOW_DIR, KRT_CODE_VERSION, ...)
        if keys[-1] in ("symbols", "agents", "holidays", "events"):
            value = [s.strip() for s in value.split(",") if s.strip()]
        _set_path(out, keys, value)
    if "KRT_DATA_DIR" in environ:
        out["data_dir"] = environ["KRT_DATA_DIR"]
    return out


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_path(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Path | None:
    environ = os.environ if environ is None else environ
    if path:
        return Path(path)
    if environ.get("KRT_CONFIG"):
        return Path(environ["KRT_CONFIG"])
    return Path(DEFAULT_FILE) if Path(DEFAULT_FILE).is_file() else None


def _alert_secrets(data: dict, secrets_env: dict[str, str]) -> None:
    """Each alert notifier's token/URL from its environment variable (or .env), in place."""
    notifiers = (data.get("alerts") or {}).get("notifiers") if isinstance(data.get("alerts"), dict) else None
    for n in notifiers or []:
        if isinstance(n, dict) and n.get("kind") in ALERT_SECRET_ENV:
            value = secrets_env.get(n.get("secret_env") or ALERT_SECRET_ENV[n["kind"]])
            if value:
                n["secret"] = value


def load_settings(path: str | Path | None = None, environ: dict[str, str] | None = None,
                  dotenv: str | Path | None = ".env") -> Settings:
    """Build the settings: defaults, then the YAML file, then KRT_* variables, then secrets."""
    environ = dict(os.environ if environ is None else environ)
    file = config_path(path, environ)
    data: dict = {}
    if file is not None:
        if not file.is_file():
            raise SettingsError(f"settings file not found: {file}")
        try:
            data = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as exc:
            raise SettingsError(f"{file} is not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise SettingsError(f"{file} must hold a mapping of settings, not {type(data).__name__}")
        leaked = [k for k in data if k in SECRET_ENV or k.upper() in SECRET_ENV.values()]
        leaked += [f"alerts.notifiers[{i}].secret" for i, n in enumerate((data.get("alerts") or {}).get("notifiers") or [])
                   if isinstance(n, dict) and "secret" in n]
        if leaked:
            raise SettingsError(f"{file} holds secret(s) {leaked}: put them in the environment or an untracked .env")
    data = _merge(data, _env_overrides(environ))
    secrets_env = {**(read_dotenv(Path(dotenv)) if dotenv else {}), **environ}
    for field, env in SECRET_ENV.items():
        if secrets_env.get(env):
            data[field] = secrets_env[env]
    _alert_secrets(data, secrets_env)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        where = f" (from {file} and KRT_* variables)" if file else " (from KRT_* variables)"
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise SettingsError(f"invalid settings{where}: {problems}") from None
