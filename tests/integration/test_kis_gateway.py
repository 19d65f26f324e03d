"""One KIS session per app key: the market feed and the execution loop share its one rate limiter.

KIS counts the REST quota per app key (VTS: a couple of calls a second) and issues a token once
a minute. The feed (LiveMarketStateActor over KisDailyBars) and the execution loop
(ExecutionActor over KisVenue/KisBroker) run in two processes; with a client each (as before
the BrokerGateway), each bucket thinks it owns the whole quota and together they overrun it.
Measured where it counts: at the simulator, which records the arrival time of every request
(broker/sim/exchange.py `peak_requests`) and answers EGW00201 to a request over its quota.
"""
from __future__ import annotations

import datetime as dt
import math

import pytest

from broker.kis.config import Credentials, environment
from broker.sim.clock import SimClock
from broker.sim.exchange import SimConfig
from broker.sim.server import SimServer
from market.session import SessionTimes
from tests.integration.kis_helpers import SYMBOLS, history, replay

pytestmark = [pytest.mark.ray, pytest.mark.slow]

VENUE_RATE, VENUE_BURST = 2.0, 1   # the simulator's quota per app key: KIS VTS's order of magnitude
# the client's configured rate sits under the venue's, so that arrival jitter on a loaded machine
# (a request delayed a little behind its predecessor) does not reach the venue's limit
CLIENT_RATE, CLIENT_BURST = 1.5, 1
LOOKBACK = 150                      # two pages of daily bars per symbol


@pytest.fixture
def vts_sim():
    server = SimServer(SimConfig(virtual=True, rate_per_s=VENUE_RATE, burst=VENUE_BURST, token_throttle_s=60.0),
                       history=history(), replay=replay()).start()
    try:
        yield server
    finally:
        server.stop()


def loop_config(sim, tmp_path):
    keys = sim.add_account(30_000_000)
    creds = Credentials(keys["KIS_APP_KEY"], keys["KIS_APP_SECRET"], keys["KIS_ACCOUNT"], keys["KIS_HTS_ID"])
    env = environment("vts", rest_url=sim.rest_url, ws_url=sim.ws_url, rate_per_s=CLIENT_RATE, burst=CLIENT_BURST)
    clock = SimClock(sim.rest_url, sim.admin_secret)   # 08:00 of the first replay day
    return env, creds, clock, tmp_path / "kis"


def run_feed_and_execution_together(env, creds, clock, cache_dir, journal):
    """The product's two actors, each doing its KIS work at the same time: the feed reads its
    history while the execution actor reads the account; then the loop's start-of-day step."""
    import ray

    from actors.execution import ExecutionActor, LoopConfig
    from actors.gateway import GatewayRest, close_gateway
    from actors.live_market import KisDailyBars, LiveMarketStateActor

    market = LiveMarketStateActor.remote(KisDailyBars(env, creds, cache_dir), SYMBOLS[:4], LOOKBACK, clock,
                                         SessionTimes(), load=False)
    loop = ExecutionActor.remote(
        LoopConfig(decide_url="http://127.0.0.1:9/v1/decide", journal_path=str(journal), run_id="gateway-test",
                   venue="vts", venue_options={"environment": env, "credentials": creds, "clock": clock,
                                               "cache_dir": cache_dir}),
        market)
    try:
        ray.get(loop.summary.remote())   # both actors are up before the work starts
        load = market.load.remote()
        account_reads = [loop.summary.remote() for _ in range(4)]
        ray.get([load, *account_reads])
        ray.get(loop.start.remote())
        return GatewayRest(env, creds, cache_dir).stats()
    finally:
        ray.get(loop.close.remote())
        ray.kill(loop)
        ray.kill(market)
        close_gateway(env, creds)


ALLOWED_PER_S = math.floor(CLIENT_RATE * 1.0 + CLIENT_BURST)   # most calls a 1-s window may hold


def test_two_clients_in_two_processes_overrun_the_quota(ray_local, vts_sim, tmp_path):
    """The hazard the gateway removes, reproduced with the same calls: the feed's history read
    and the execution loop's account reads, each process with its own client at the configured rate."""
    import ray

    from tests.integration.kis_helpers import OwnClient

    env, creds, _, cache_dir = loop_config(vts_sim, tmp_path)
    own = ray.remote(num_cpus=0)(OwnClient)
    feed, execution = own.remote(env, creds, cache_dir), own.remote(env, creds, cache_dir)
    try:
        end = vts_sim.exchange.today
        start = end - dt.timedelta(days=int(LOOKBACK * 1.5) + 30)
        ray.get([feed.daily_bars.remote(SYMBOLS[:4], start, end), execution.account_reads.remote(4)])
    finally:
        ray.kill(feed)
        ray.kill(execution)
    ex = vts_sim.exchange
    assert ex.counts["rate_limited"] > 0 or ex.peak_requests(creds.app_key, 1.0) > ALLOWED_PER_S


def test_feed_and_execution_together_stay_inside_the_quota(ray_local, vts_sim, tmp_path):
    env, creds, clock, cache_dir = loop_config(vts_sim, tmp_path)
    gateway = run_feed_and_execution_together(env, creds, clock, cache_dir, tmp_path / "journal.sqlite")
    ex = vts_sim.exchange
    assert ex.counts["requests"] >= 20      # the workload really ran: history pages and account reads
    assert gateway["requests"] == ex.counts["requests"]   # every call the venue saw came through the gateway
    assert ex.counts["rate_limited"] == 0, f"the venue refused {ex.counts['rate_limited']} requests (EGW00201)"
    assert ex.peak_requests(creds.app_key, 1.0) <= ALLOWED_PER_S
    assert ex.counts["tokenP"] == 1
