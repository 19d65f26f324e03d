"""The simulator streams a synthetic session over its WebSocket and the KIS client takes it:
every print of the path arrives and parses, faults (drop, stall, malformed) are survived, and
the sim's fills still come as encrypted execution notices."""
from __future__ import annotations

import datetime as dt
import queue
import time

import pytest

from broker.base import OrderRequest
from broker.kis.auth import approval_key
from broker.kis.ws import KisWebSocket
from broker.sim.exchange import SimConfig
from broker.sim.intraday import session_times, synth_session
from broker.sim.server import SimServer
from tests.integration.kis_helpers import client, history, replay

SEED = 7


@pytest.fixture()
def sim():
    with SimServer(SimConfig(rate_per_s=500, burst=50, token_throttle_s=0.2), history=history(),
                   replay=replay()) as s:
        s.enable_intraday(seed=SEED, step_s=60)
        yield s


def _ws(sim, rest, cred) -> KisWebSocket:
    return KisWebSocket(sim.ws_url, lambda: approval_key(rest.session, rest.env, cred), reconnect_delay_s=0.05).start()


def _acks(ws, n, timeout=5.0):
    out, end = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        try:
            out.append(ws.acks.get(timeout=0.05))
        except queue.Empty:
            pass
    return out


def _drain(q, until, timeout=10.0):
    got, end = [], time.monotonic() + timeout
    while time.monotonic() < end and not until(got):
        try:
            got.append(q.get(timeout=0.05))
        except queue.Empty:
            pass
    return got


def _expected(sim, symbol):
    day = sim.next_replay_date()
    frame = replay()
    part = frame.filter((frame["date"] == day) & (frame["symbol"] == symbol)).row(0, named=True)
    bar = (part["open"], part["high"], part["low"], part["close"], part["volume"])
    return day, bar, synth_session(symbol, day, bar, seed=SEED, step_s=60)


def test_a_whole_session_streams_and_the_fill_comes_as_a_notice(sim, tmp_path):
    rest, broker, cred = client(sim, tmp_path)
    ws = _ws(sim, rest, cred)
    try:
        for sym in ("005930", "000660"):
            ws.subscribe("H0STCNT0", sym)
        ws.subscribe("H0STASP0", "005930")
        ws.subscribe(rest.env.notice_tr, cred.hts_id)
        assert [a["msg_cd"] for a in _acks(ws, 4)] == ["OPSP0000"] * 4
        broker.submit(OrderRequest("st-1", "005930", "buy", 3))
        day, bar, path = _expected(sim, "005930")
        n = len(session_times(60))
        assert sim.stream_session(until=dt.time(12, 0)) == len([t for t in session_times(60) if t <= dt.time(12, 0)])
        assert sim.stats()["intraday"]["synthetic"] is True
        sim.advance()                      # the rest of the session streams, then the bar trades
        got = _drain(ws.events, lambda g: sum(t == "H0STCNT0" for t, _ in g) >= 2 * n
                     and sum(t == "H0STASP0" for t, _ in g) >= n)
        trades = [r for t, r in got if t == "H0STCNT0" and r["MKSC_SHRN_ISCD"] == "005930"]
        assert [int(r["STCK_PRPR"]) for r in trades] == [p.price for p in path]
        assert [r["STCK_CNTG_HOUR"] for r in trades] == [p.time.strftime("%H%M%S") for p in path]
        assert int(trades[-1]["ACML_VOL"]) == int(bar[4]) and all(r["BSOP_DATE"] == day.strftime("%Y%m%d") for r in trades)
        books = [r for t, r in got if t == "H0STASP0"]
        assert [int(r["ASKP1"]) for r in books] == [p.asks[0] for p in path]
        # no end-of-day frame on top of the stream: exactly one closing print per symbol
        assert sum(r["STCK_CNTG_HOUR"] == "153000" for t, r in got if t == "H0STCNT0") == 2
        fills = broker.sync()
        notice = _drain(ws.fills, lambda g: len(g) >= 1)
        assert [(e.order_no, e.symbol, e.qty, e.price) for e in notice] == \
            [(f.broker_order_id, f.symbol, f.qty, f.price) for f in fills]
        assert not ws.errors
    finally:
        ws.close()


def test_client_survives_a_drop_a_stall_and_malformed_frames(sim, tmp_path):
    rest, _, cred = client(sim, tmp_path)
    ws = _ws(sim, rest, cred)
    try:
        ws.subscribe("H0STCNT0", "035420")
        _acks(ws, 1)
        _, bar, path = _expected(sim, "035420")
        sim.faults.inject("ws_malformed", count=2, path="H0STCNT0", skip=5)
        sim.faults.inject("ws_stall", count=1, path="H0STCNT0", delay=0.3, skip=10)
        sim.faults.inject("ws_drop", count=1, path="H0STCNT0", skip=100)
        sim.stream_session(until=dt.time(11, 0))      # 121 prints: the drop falls inside
        end = time.monotonic() + 5
        while ws.connects < 2 and time.monotonic() < end:
            time.sleep(0.02)
        assert ws.connects == 2
        assert _acks(ws, 1)[0]["msg_cd"] == "OPSP0000"    # re-subscribed after reconnecting
        sim.stream_session()                            # the rest of the day, after the reconnect
        got = _drain(ws.events, lambda g: any(r["STCK_CNTG_HOUR"] == "153000" for _, r in g))
        times = [r["STCK_CNTG_HOUR"] for _, r in got]
        assert times[-1] == "153000" and int(got[-1][1]["ACML_VOL"]) == int(bar[4])
        # 2 malformed + the dropped one lost, plus what was sent before the re-subscribe landed
        late = [p.time.strftime("%H%M%S") for p in path if p.time > dt.time(11, 0)]
        assert times[-len(late):] == late
        assert len(times) <= len(path) - 3
        assert ws.errors.count("frame: FrameError") == 2
        assert sim.stats()["faults_fired"] == {"ws_malformed": 2, "ws_stall": 1, "ws_drop": 1}
    finally:
        ws.close()


def test_the_virtual_clock_streams_the_session_as_time_passes(sim, tmp_path):
    rest, _, cred = client(sim, tmp_path)
    ws = _ws(sim, rest, cred)
    try:
        ws.subscribe("H0STCNT0", "005930")
        _acks(ws, 1)
        day, _, path = _expected(sim, "005930")
        clock = sim.session_clock()                    # 08:00 of the first replay day
        clock.sleep(2 * 3600)                          # → 10:00: the session so far, nothing later
        got = _drain(ws.events, lambda g: any(r["STCK_CNTG_HOUR"] == "100000" for _, r in g))
        assert [r["STCK_CNTG_HOUR"] for _, r in got] == [p.time.strftime("%H%M%S") for p in path
                                                          if p.time <= dt.time(10, 0)]
        assert sim.exchange.today != day               # the bar has not traded yet
        clock.sleep(6 * 3600)                          # → 16:00: the rest, then the bar trades
        rest_of_day = _drain(ws.events, lambda g: any(r["STCK_CNTG_HOUR"] == "153000" for _, r in g))
        assert len(got) + len(rest_of_day) == len(path) and sim.exchange.today == day
    finally:
        ws.close()


def test_sim_notices_reconcile_with_rest_as_the_broker_counts_them(sim, tmp_path):
    from broker.kis import orders as tr
    from broker.kis.reconcile import FillReconciler

    rest, broker, cred = client(sim, tmp_path)
    ws = _ws(sim, rest, cred)
    try:
        ws.subscribe(rest.env.notice_tr, cred.hts_id)
        _acks(ws, 1)
        broker.submit(OrderRequest("rc-1", "005930", "buy", 4))
        broker.submit(OrderRequest("rc-2", "000660", "buy", 2))
        sim.advance()
        notices = _drain(ws.fills, lambda g: len(g) >= 2)
        assert len(notices) == 2
        day = sim.exchange.today
        # orders are dated the day they were placed (the last traded day): look back a week, as the broker does
        rows, _ = tr.daily_orders(rest, day - dt.timedelta(days=7), day)
        assert {r["odno"] for r in rows} == {e.order_no for e in notices}
        truth = {f.broker_order_id: (f.fill_id, f.qty, f.price) for f in broker.sync()}
        both = FillReconciler()
        got = [both.on_notice(e) for e in notices]
        assert both.on_rest(rows) == []                                   # REST adds nothing: none twice
        assert {f.order_no: (f.fill_id, f.qty, f.price) for f in got} == truth
        missed = FillReconciler()                                           # one notice lost on the way
        first = missed.on_notice(notices[0])
        (recovered,) = missed.on_rest(rows)
        assert recovered.source == "rest" and recovered.order_no == notices[1].order_no
        assert {f.order_no: (f.fill_id, f.qty, f.price) for f in (first, recovered)} == truth
    finally:
        ws.close()


def test_live_quotes_from_the_sim_stream_and_the_cap_refused_whole(sim, tmp_path):
    from broker.kis.errors import SubscriptionCapError
    from broker.kis.realtime import RealtimeQuotes, watch

    rest, _, cred = client(sim, tmp_path)
    quotes = RealtimeQuotes()
    ws = KisWebSocket(sim.ws_url, lambda: approval_key(rest.session, rest.env, cred), on_record=quotes.on_record,
                      cap=rest.env.subscription_cap).start()
    try:
        ws.subscribe(rest.env.notice_tr, cred.hts_id)
        with pytest.raises(SubscriptionCapError, match="at most 19 symbols fit"):
            watch(ws, [f"{i:06d}" for i in range(25)])
        assert len(ws.subscriptions) == 1                    # nothing half-registered
        assert len(watch(ws, ["005930", "000660"])) == 4
        assert [a["msg_cd"] for a in _acks(ws, 5)] == ["OPSP0000"] * 5
        sim.enable_intraday(seed=SEED, step_s=20)
        day, bar, _ = _expected(sim, "005930")
        path = synth_session("005930", day, bar, seed=SEED, step_s=20)
        sim.stream_session(until=dt.time(9, 30, 20))
        _drain(ws.events, lambda g: any(t == "H0STCNT0" and r["MKSC_SHRN_ISCD"] == "000660"
                                        and r["STCK_CNTG_HOUR"] == "093020" for t, r in g))
        bars = quotes.bars("005930")
        assert [b.start.time() for b in bars] == [dt.time(9, m) for m in range(30)]   # 09:30 still trading
        first = [p for p in path if p.time < dt.time(9, 1)]
        assert (bars[0].open, bars[0].close, bars[0].volume) == (first[0].price, first[-1].price,
                                                                  sum(p.qty for p in first))
        last = [p for p in path if p.time <= dt.time(9, 30, 20)][-1]
        assert quotes.last_trade("005930").price == last.price
        assert (quotes.touch("005930").bid, quotes.touch("005930").ask) == (last.bids[0], last.asks[0])
        assert quotes.stale(["005930", "000660"], max_silence_s=30) == {}
    finally:
        ws.close()
