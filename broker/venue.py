"""A venue = a Broker plus the way market time moves for it.

The decision loop runs the same way against every venue: after deciding on bar t it submits
orders, then calls `advance(t+1, bars)`; the venue lets the market trade bar t+1 and returns the
fills that happened. Paper: the PaperBroker fills locally. Sim: the local KIS-protocol server
replays the bar and the fills come back through the real KIS client (broker/sim, broker/kis).
VTS/live: KIS's market trades in real time; `advance` collects the fills (broker/kis/venue.py).
"""
from __future__ import annotations

import datetime as dt
from typing import Protocol

from broker.base import Broker, Fill
from broker.paper import PaperBroker
from market.accounting import CostModel
from market.calendar import TradingCalendar

Bars = dict[str, tuple[float, float, float, float]]  # symbol -> (open, high, low, close)


class Venue(Protocol):
    broker: Broker

    def advance(self, day: dt.date, bars: Bars) -> list[Fill]:
        """Let the market trade bar `day`; return the fills it produced."""

    def close(self) -> None: ...


class PaperVenue:
    def __init__(self, cash: int, costs: CostModel = CostModel(), calendar: TradingCalendar | None = None):
        self.broker = PaperBroker(cash, costs, calendar)

    def advance(self, day: dt.date, bars: Bars) -> list[Fill]:
        return self.broker.on_bar(day, bars)

    def close(self) -> None:
        pass


def open_venue(kind: str, cash: int, costs: CostModel = CostModel(), calendar: TradingCalendar | None = None,
               **options) -> Venue:
    """Build the venue for a mode name: 'paper' (default), 'sim' (the local KIS-protocol server),
    or 'vts'/'live' (KIS itself: `options` carry environment, credentials and clock; the
    account's own cash applies, not `cash`)."""
    if kind == "paper":
        return PaperVenue(cash, costs, calendar)
    if kind == "sim":
        from broker.sim.venue import SimVenue  # the KIS client against the local KIS-protocol server

        return SimVenue(cash=cash, costs=costs, calendar=calendar, **options)
    if kind in ("vts", "live"):
        from broker.kis.venue import KisVenue

        return KisVenue(costs=costs, calendar=calendar, **options)
    raise ValueError(f"unknown venue {kind!r}: choose 'paper', 'sim', 'vts' or 'live'")
