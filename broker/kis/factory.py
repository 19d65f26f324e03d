"""Build a KisBroker for a mode name: 'vts' (KIS paper server) or 'live' (real money).

`trader run` calls `open_kis_broker(mode, live=args.live)`: keys come from the environment or
an untracked .env, and 'live' goes through `confirm_live` (the --live flag AND the typed account).
"""
from __future__ import annotations

from pathlib import Path

from broker.kis.broker import KisBroker
from broker.kis.config import Credentials, confirm_live, environment
from broker.kis.errors import KisConfigError
from broker.kis.rest import KisRest
from market.accounting import CostModel
from market.calendar import TradingCalendar


def open_kis_broker(mode: str, live: bool = False, costs: CostModel = CostModel(),
                    calendar: TradingCalendar | None = None, dotenv: Path | str | None = ".env",
                    input_fn=input, out=print, **env_options) -> KisBroker:
    if mode not in ("vts", "live", "real"):
        raise KisConfigError(f"mode {mode!r}: the KIS client serves 'vts' and 'live' (use 'sim' via open_venue)")
    cred = Credentials.from_env(dotenv=dotenv)
    if mode in ("live", "real"):
        confirm_live(cred, live, input_fn=input_fn, out=out)
    env = environment("real" if mode in ("live", "real") else "vts", **env_options)
    return KisBroker(KisRest(env, cred), costs, calendar)
