"""KisVenue: trading through KIS in real time (modes vts and live).

The market trades by itself here: `advance(day, bars)` does not move anything, it only collects
the executions KIS reports for our orders (KisBroker.sync over inquire-daily-ccld). The loop
calls it once the day's bar is final, so every fill of the session is in.
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from broker.base import Fill
from broker.kis.auth import TokenCache
from broker.kis.broker import KisBroker
from broker.kis.config import Credentials, Environment
from broker.kis.rest import KisRest, RestClient
from market.accounting import CostModel
from market.calendar import SEOUL, TradingCalendar
from market.session import Clock, WallClock

Bars = dict[str, tuple[float, float, float, float]]


class KisVenue:
    def __init__(self, environment: Environment, credentials: Credentials, costs: CostModel = CostModel(),
                 calendar: TradingCalendar | None = None, clock: Clock | None = None,
                 cache_dir: Path | str | None = None, rest: RestClient | None = None):
        """`cache_dir` holds the token cache and the client-order-id → ODNO map (default: the KIS
        cache folder); the map is per environment and account, so a restarted loop recognises the
        orders it already sent. `rest`: the app key's shared session (the loop passes its
        BrokerGateway's, actors/gateway.py); default: a client of this venue's own."""
        self.clock = clock or WallClock()
        if rest is None:
            rest = KisRest(environment, credentials, TokenCache(environment, credentials, cache_dir))
        self.broker = KisBroker(rest, costs, calendar, clock=self._session_day)

    def __repr__(self) -> str:
        return f"KisVenue({self.broker!r})"

    def _session_day(self) -> dt.date:
        return self.clock.now().astimezone(SEOUL).date()

    def advance(self, day: dt.date, bars: Bars) -> list[Fill]:
        return self.broker.sync()

    def close(self) -> None:
        self.broker.ids.close()
