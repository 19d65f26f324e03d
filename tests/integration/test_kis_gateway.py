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
from functools import partial

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


def test_an_order_in_flight_when_the_gateway_dies_is_found_not_sent_twice(ray_local, tmp_path):
    """The gateway process is killed while an order's answer is on its way: the caller learns
    nothing (a lost answer), KisBroker looks the order up through the restarted gateway, and the
    venue holds the order once."""
    import threading

    import ray

    from actors import NAMESPACE
    from actors.gateway import GatewayRest, close_gateway, gateway_name
    from broker.base import OrderRequest, OrderStatus
    from broker.kis.broker import KisBroker
    from tests.integration.kis_helpers import credentials, fast_sim, venue_orders

    with fast_sim() as sim:
        cred = credentials(sim.add_account(50_000_000))
        env = sim.environment(unknown_check_delay_s=0.5)
        broker = KisBroker(GatewayRest(env, cred, tmp_path), id_map=tmp_path / "ids.sqlite",
                           clock=lambda: sim.exchange.today)
        try:
            broker.positions()                      # the gateway is up and holds the token
            sim.faults.inject("slow", path="order-cash", delay=3.0)   # processed, the answer waits
            answer: list = []
            sending = threading.Thread(target=lambda: answer.append(
                broker.submit(OrderRequest("gw-1", "005930", "buy", 3))))
            sending.start()
            while sim.exchange.counts["orders"] == 0:
                assert sending.is_alive()
                threading.Event().wait(0.05)
            ray.kill(ray.get_actor(gateway_name(env, cred), namespace=NAMESPACE), no_restart=False)
            sending.join(timeout=120)
            first = answer[0]
            assert first.status in (OrderStatus.OPEN, OrderStatus.UNKNOWN)
            found = broker.find_order("gw-1")
            assert found.status is OrderStatus.OPEN and found.broker_order_id
            assert len(venue_orders(sim, cred)) == 1
            assert sim.exchange.counts["tokenP"] == 1   # the restarted gateway reads the token cache
        finally:
            broker.ids.close()
            close_gateway(env, cred)


def _wait_for(probe, what: str, deadline_s: float = 60.0):
    """Poll until `probe()` is truthy (frames cross two processes); fail naming what never came."""
    import time

    end = time.monotonic() + deadline_s
    while not (value := probe()):
        assert time.monotonic() < end, f"{what} did not arrive"
        time.sleep(0.1)
    return value


def _quote_at(market, symbol: str, at: dt.time) -> dict | None:
    """The market state's live quote of `symbol` once its last trade is the print at `at`."""
    import ray

    q = ray.get(market.live_quote.remote(symbol))
    return q if q["trade"] and q["trade"]["time"].time() == at else None


def _all_stale(market, symbols: list[str]) -> dict | None:
    import ray

    stale = ray.get(market.stale.remote())
    return stale if set(stale) == set(symbols) else None


def test_live_market_state_from_the_gateways_websocket(ray_local, tmp_path):
    """The live market state watches its symbols on the gateway's one WebSocket session, fed by
    the simulator's (synthetic) intraday stream: last trade, touch and final one-minute bars equal
    the streamed prints; a silent feed shows as stale; a dropped session is reconnected and
    re-subscribed, and so is the session of a restarted gateway; the daily snapshot stays final
    bars only; a list over the subscription cap is refused whole."""
    import ray

    from actors.gateway import GatewayQuotes, close_gateway
    from actors.live_market import KisDailyBars, LiveMarketStateActor
    from broker.kis.errors import SubscriptionCapError
    from broker.sim.intraday import synth_session

    symbols = sorted(SYMBOLS[:3])
    sim = SimServer(SimConfig(virtual=True, rate_per_s=500.0, burst=50, token_throttle_s=1.0),
                    history=history(), replay=replay()).start()
    sim.enable_intraday(seed=7, step_s=30)
    cred = credentials_for(sim)
    env = sim.environment()
    quotes = GatewayQuotes(env, cred, tmp_path)
    market = LiveMarketStateActor.remote(KisDailyBars(env, cred, tmp_path), symbols, 30,
                                         SimClock(sim.rest_url, sim.admin_secret), SessionTimes(), load=False,
                                         realtime=quotes, max_silence_s=1.0)
    try:
        last_final = ray.get(market.load.remote())
        day = sim.next_replay_date()
        sim.stream_session(until=dt.time(10, 0))
        for sym in symbols:
            bar = replay().filter((replay()["date"] == day) & (replay()["symbol"] == sym)).row(0, named=True)
            prints = synth_session(sym, day, (bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"]),
                                   seed=7, step_s=30)
            sent = [p for p in prints if p.time <= dt.time(10, 0)]
            q = _wait_for(partial(_quote_at, market, sym, dt.time(10, 0)), f"{sym}'s 10:00 print")
            assert q["trade"]["price"] == sent[-1].price and q["trade"]["cum_volume"] == sum(p.qty for p in sent)
            assert (q["touch"]["bid"], q["touch"]["ask"]) == (sent[-1].bids[0], sent[-1].asks[0])
            # final bars: every minute before 10:00, aggregated from exactly the prints sent
            expected = {}
            for p in sent[:-1]:
                m = p.time.replace(second=0)
                o, h, lo, c, v = expected.get(m, (p.price, p.price, p.price, p.price, 0))
                expected[m] = (o, max(h, p.price), min(lo, p.price), p.price, v + p.qty)
            got = {b["start"].time(): (b["open"], b["high"], b["low"], b["close"], b["volume"]) for b in q["bars"]}
            assert got == expected and all(b["final"] for b in q["bars"])
            assert q["partial_bar"]["start"].time() == dt.time(10, 0) and not q["partial_bar"]["final"]
        # decisions see final daily bars only: the day streaming now is not in the snapshot
        snap = ray.get(market.snapshot.remote(30))
        assert snap["dates"][-1] == last_final and last_final < day.isoformat()
        # the stream stops: every symbol goes stale; it flows again: none is
        stale = _wait_for(partial(_all_stale, market, symbols), "stale symbols")
        assert all(silent is not None and silent > 1.0 for silent in stale.values())
        sim.stream_session(until=dt.time(10, 5))
        _wait_for(lambda: all(_quote_at(market, s, dt.time(10, 5)) for s in symbols), "the 10:05 prints")
        assert ray.get(market.stale.remote()) == {}
        # the venue drops the session: the gateway reconnects and re-subscribes, the feed goes on
        sim.drop_websockets()
        _wait_for(lambda: ray.get(quotes.gateway().ws_stats.remote())["connects"] >= 2
                  and len(sim._ws.subscribed()) == 6, "the reconnect and its re-subscriptions")
        sim.stream_session(until=dt.time(10, 10))
        _wait_for(lambda: all(_quote_at(market, s, dt.time(10, 10)) for s in symbols), "the 10:10 prints")
        # the gateway process dies: the restarted one has a session without registrations; the
        # market state's stale check finds its symbols never heard from and watches them again
        ray.kill(quotes.gateway(), no_restart=False)
        # ray.kill returns at once: until the old process is gone it may still answer (not stale)
        _wait_for(lambda: set(ray.get(market.stale.remote())) == set(symbols), "every symbol stale on the new gateway")
        _wait_for(lambda: len(sim._ws.subscribed()) == 6 and sim.stats()["ws_sessions"] == 1,
                  "the new session's registrations")
        sim.stream_session(until=dt.time(10, 15))
        _wait_for(lambda: all(_quote_at(market, s, dt.time(10, 15)) for s in symbols), "the 10:15 prints")
        # 6 registrations in use (trades + book of 3 symbols); 20 more symbols need 40: refused whole
        with pytest.raises(SubscriptionCapError, match="at most 17 symbols fit"):
            quotes.watch([f"{100000 + i:06d}" for i in range(20)])
        assert len(sim._ws.subscribed()) == 6
    finally:
        ray.kill(market)
        close_gateway(env, cred)
        sim.stop()


def credentials_for(sim) -> Credentials:
    keys = sim.add_account(30_000_000)
    return Credentials(keys["KIS_APP_KEY"], keys["KIS_APP_SECRET"], keys["KIS_ACCOUNT"], keys["KIS_HTS_ID"])
