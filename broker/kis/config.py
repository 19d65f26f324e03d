"""Environments (real, VTS, local simulator), credentials and the live-trading confirmation.

Everything KIS_API.md marks [unsure] is a field here, so a user can correct it without code:
rate limits, the token-issue throttle window, the subscription cap, the unsubscribe tr_type and
the HTTP statuses gateway errors arrive with.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from broker.kis.errors import KisConfigError


@dataclass(frozen=True)
class Environment:
    name: str                       # "real", "vts" or "sim"
    rest_url: str
    ws_url: str
    virtual: bool                   # VTS-style TR ids (V prefix) and page sizes
    rate_per_s: float               # REST token bucket refill (KIS notice 2026-04-20: 18 real / 1 VTS)
    burst: int = 1                  # bucket size
    token_throttle_s: float = 60.0  # never ask tokenP more than once per window ([unsure]: 1 s..5 min)
    token_refresh_margin_s: float = 600.0  # reissue this long before expiry (python-kis: 10 min)
    subscription_cap: int = 40      # 41 per notice, 40 in the official guard: stay at 40
    unsubscribe_tr_type: str = "2"  # spec says "2" ([unsure]: one docstring says "0")
    gateway_error_statuses: tuple[int, ...] = (200, 401, 403, 500)  # statuses whose KIS body is trusted
    timeout_s: float = 10.0         # per REST request
    rate_limit_retries: int = 5     # EGW00201 retries with backoff
    backoff_s: float = 0.1          # first backoff, doubled each retry
    unknown_check_delay_s: float = 1.0   # wait before looking up an order whose outcome is unknown
    custtype: str = "P"
    use_hashkey: bool = False       # optional per KIS: POST /uapi/hashkey and send `hashkey` on orders

    @property
    def notice_tr(self) -> str:
        """Execution-notice TR: H0STCNI0 real, H0STCNI9 VTS/sim."""
        return "H0STCNI9" if self.virtual else "H0STCNI0"

    def tr(self, real_tr_id: str) -> str:
        """The TR id for this environment: account/order TRs starting with T, J or C take a V."""
        if self.virtual and real_tr_id[:1] in ("T", "J", "C"):
            return "V" + real_tr_id[1:]
        return real_tr_id

    def with_options(self, **options) -> "Environment":
        unknown = set(options) - set(self.__dataclass_fields__)
        if unknown:
            raise KisConfigError(f"unknown environment option(s) {sorted(unknown)}")
        return replace(self, **options)


REAL = Environment("real", "https://openapi.koreainvestment.com:9443", "ws://ops.koreainvestment.com:21000",
                   virtual=False, rate_per_s=18.0, burst=1)
VTS = Environment("vts", "https://openapivts.koreainvestment.com:29443", "ws://ops.koreainvestment.com:31000",
                  virtual=True, rate_per_s=1.0, burst=1)
ENVIRONMENTS = {"real": REAL, "live": REAL, "vts": VTS}


def sim_environment(rest_url: str, ws_url: str, **options) -> Environment:
    """The local simulator: VTS TR ids, URLs of the running server, short token window by default."""
    base = Environment("sim", rest_url, ws_url, virtual=True, rate_per_s=50.0, burst=5, token_throttle_s=1.0,
                       timeout_s=5.0, unknown_check_delay_s=0.2)
    return base.with_options(**options) if options else base


def environment(name: str, **options) -> Environment:
    try:
        env = ENVIRONMENTS[name]
    except KeyError:
        raise KisConfigError(f"unknown KIS environment {name!r}: choose 'real' (alias 'live'), 'vts' or 'sim'") from None
    return env.with_options(**options) if options else env


# --- credentials ------------------------------------------------------------------------------
_ACCOUNT = re.compile(r"^(\d{8})-?(\d{2})$")


@dataclass(frozen=True)
class Credentials:
    """App key, secret and account. The repr never shows them (masked), so logs cannot leak them."""

    app_key: str = field(repr=False)
    app_secret: str = field(repr=False)
    account: str = field(repr=False)   # "12345678-01"
    hts_id: str = field(default="", repr=False)

    def __post_init__(self):
        for name in ("app_key", "app_secret"):
            value = getattr(self, name)
            if not value or value != value.strip():
                raise KisConfigError(f"KIS {name} is empty or has stray whitespace (a common cause of EGW00103/05)")
        if not _ACCOUNT.match(self.account or ""):
            raise KisConfigError("KIS account must be 8 digits + 2-digit product code, e.g. 12345678-01")

    @property
    def cano(self) -> str:
        return _ACCOUNT.match(self.account).group(1)

    @property
    def product(self) -> str:
        return _ACCOUNT.match(self.account).group(2)

    def __repr__(self) -> str:
        return f"Credentials(app_key='{mask(self.app_key)}', account='{mask(self.account)}')"

    __str__ = __repr__

    def secrets(self) -> list[str]:
        """The strings that must never appear in a log, journal, repr or exception."""
        return [s for s in (self.app_key, self.app_secret, self.account, self.cano) if s]

    @classmethod
    def from_env(cls, env: dict | None = None, dotenv: Path | str | None = ".env") -> "Credentials":
        """KIS_APP_KEY, KIS_APP_SECRET, KIS_ACCOUNT (and optional KIS_HTS_ID) from the environment,
        falling back to an untracked .env file. Nothing else is ever read for secrets."""
        values = dict(read_dotenv(dotenv)) if dotenv else {}
        values.update({k: v for k, v in (env if env is not None else os.environ).items() if k.startswith("KIS_")})
        missing = [k for k in ("KIS_APP_KEY", "KIS_APP_SECRET", "KIS_ACCOUNT") if not values.get(k)]
        if missing:
            raise KisConfigError(f"missing {', '.join(missing)}: set them in the environment or in an untracked .env")
        return cls(values["KIS_APP_KEY"], values["KIS_APP_SECRET"], values["KIS_ACCOUNT"], values.get("KIS_HTS_ID", ""))


def read_dotenv(path: Path | str) -> dict[str, str]:
    """KEY=VALUE lines (quotes stripped, # comments). A missing file is an empty mapping."""
    p = Path(path)
    if not p.is_file():
        return {}
    out = {}
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        out[key.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return out


def mask(secret: str) -> str:
    """Enough to recognise which key is configured, never enough to use it."""
    if not secret:
        return ""
    return secret[:2] + "***" if len(secret) > 8 else "***"


# --- live confirmation --------------------------------------------------------------------------
class LiveNotConfirmed(KisConfigError):
    """Live (real money) trading was requested without the explicit flag and typed account number."""


def confirm_live(credentials: Credentials, live_flag: bool, input_fn=input, out=print) -> None:
    """Gate for real-money trading: the caller passed --live AND the user types the account number.

    Raises LiveNotConfirmed otherwise. The prompt shows only the masked account.
    """
    if not live_flag:
        raise LiveNotConfirmed("the live environment trades real money: pass --live explicitly")
    out(f"LIVE TRADING on account {mask(credentials.account)}. Type the full account number to confirm:")
    typed = (input_fn("> ") or "").strip()
    m = _ACCOUNT.match(typed)
    if not m or (m.group(1), m.group(2)) != (credentials.cano, credentials.product):
        raise LiveNotConfirmed("the typed account number does not match KIS_ACCOUNT; live trading refused")
