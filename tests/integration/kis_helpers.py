"""Shared setup for the KIS socket tests: a simulator with real bars and a client for it."""
from __future__ import annotations

import datetime as dt

import polars as pl

from broker.kis.auth import TokenCache
from broker.kis.broker import KisBroker
from broker.kis.config import Credentials
from broker.kis.rest import KisRest
from broker.sim.exchange import SimConfig
from broker.sim.server import SimServer
from market.data import DataPaths, load_prices

SYMBOLS = ["005930", "000660", "035420", "051910", "005380", "000270"]
SPLIT = dt.date(2023, 6, 1)


def bars():
    df = load_prices(DataPaths().path("prices"), symbols=SYMBOLS, start="2022-06-01", end="2023-07-31")
    return df.select("date", "symbol", "name", "open", "high", "low", "close", "volume")


def history():
    return bars().filter(pl.col("date") < SPLIT)


def replay():
    return bars().filter(pl.col("date") >= SPLIT)


def credentials(creds: dict) -> Credentials:
    return Credentials(creds["KIS_APP_KEY"], creds["KIS_APP_SECRET"], creds["KIS_ACCOUNT"], creds["KIS_HTS_ID"])


def client(sim, tmp_path, cash: int = 50_000_000, **env_options):
    """(rest, broker, credentials) for a fresh account on `sim`."""
    cred = credentials(sim.add_account(cash))
    env = sim.environment(**env_options)
    rest = KisRest(env, cred, TokenCache(env, cred, cache_dir=tmp_path))
    broker = KisBroker(rest, id_map=tmp_path / f"ids-{cred.cano}.sqlite", clock=lambda: sim.exchange.today,
                       calendar=None)
    return rest, broker, cred


def fast_sim() -> SimServer:
    """A simulator with quotas and a token window far above what fault tests send (a context manager)."""
    return SimServer(SimConfig(rate_per_s=500, burst=50, token_throttle_s=0.2), history=history(), replay=replay())


def venue_orders(sim, cred) -> list:
    """The orders the venue holds for this account (each order the client's sends reached)."""
    return [so for so in sim.exchange.accounts[cred.app_key].orders.values() if so.paper_id]


class OwnClient:
    """A process with a KIS client of its own: how the market feed and the execution loop each
    held one before the BrokerGateway (run as a Ray actor to have the two processes)."""

    def __init__(self, env, cred, cache_dir):
        self.rest = KisRest(env, cred, TokenCache(env, cred, cache_dir=cache_dir))

    def daily_bars(self, symbols: list[str], start: dt.date, end: dt.date) -> int:
        """The feed's history read; returns how many calls KIS refused even after the retries."""
        from broker.kis.errors import KisRateLimited
        from broker.kis.quotes import daily_bars

        refused = 0
        for s in symbols:
            try:
                daily_bars(self.rest, s, start, end)
            except KisRateLimited:
                refused += 1
        return refused

    def account_reads(self, n: int) -> int:
        """The execution loop's account reads (cash and positions); refused calls as above."""
        from broker.kis import orders as tr
        from broker.kis.errors import KisRateLimited

        refused = 0
        for _ in range(2 * n):
            try:
                tr.balance(self.rest)
            except KisRateLimited:
                refused += 1
        return refused
