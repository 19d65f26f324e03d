"""KisVenue: trading through KIS in real time (modes vts and live).

The market trades by itself here. Fills arrive two ways (KisBroker, counted once): during the
session `session_fills()` returns those the account's execution notices reported since the last
call (the loop journals them as they come); `advance(day, bars)` does not move anything, it
collects what is left — notices not taken yet, then the executions KIS lists over REST
(inquire-daily-ccld: a notice that never came, a corrected price). The loop calls it once the
day's bar is final, so every fill of the session is in.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

from broker.base import Fill
from broker.kis.auth import TokenCache
from broker.kis.broker import KisBroker
from broker.kis.config import Credentials, Environment
from broker.kis.rest import KisRest, RestClient
from broker.kis.ws import FillEvent
from market.accounting import CostModel
from market.calendar import SEOUL, TradingCalendar
from market.session import Clock, WallClock

Bars = dict[str, tuple[float, float, float, float]]


class KisVenue:
    def __init__(self, environment: Environment, credentials: Credentials, costs: CostModel = CostModel(),
                 calendar: TradingCalendar | None = None, clock: Clock | None = None,
                 cache_dir: Path | str | None = None, rest: RestClient | None = None,
                 notices: Callable[[], list[FillEvent]] | None = None):
        """`cache_dir` holds the token cache and the client-order-id → ODNO map (default: the KIS
        cache folder); the map is per environment and account, so a restarted loop recognises the
        orders it already sent. `rest`: the app key's shared session (the loop passes its
        BrokerGateway's, actors/gateway.py); default: a client of this venue's own. `notices`: the
        account's execution notices (default: the shared session's `take_notices`, when `rest` is
        a gateway's); none: fills come from REST alone, at `advance`."""
        self.clock = clock or WallClock()
        if rest is None:
            rest = KisRest(environment, credentials, TokenCache(environment, credentials, cache_dir))
        if notices is None:
            notices = getattr(rest, "take_notices", None)
        self.broker = KisBroker(rest, costs, calendar, clock=self._session_day, notices=notices)

    def __repr__(self) -> str:
        return f"KisVenue({self.broker!r})"

    def _session_day(self) -> dt.date:
        return self.clock.now().astimezone(SEOUL).date()

    def session_fills(self) -> list[Fill]:
        """Fills execution notices reported since the last call (journal them, then `broker.confirm_fills`)."""
        return self.broker.notice_fills()

    def advance(self, day: dt.date, bars: Bars) -> list[Fill]:
        return self.broker.sync()

    def close(self) -> None:
        self.broker.ids.close()
