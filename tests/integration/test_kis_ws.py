"""The WebSocket client against the simulator: acks, feed frames, encrypted fills, PINGPONG,
reconnect with re-subscribe, and the subscription cap."""
from __future__ import annotations

import queue
import time

import pytest

from broker.base import OrderRequest
from broker.kis.auth import approval_key
from broker.kis.errors import SubscriptionCapError
from broker.kis.ws import KisWebSocket
from broker.sim.exchange import SimConfig
from broker.sim.server import SimServer
from tests.integration.kis_helpers import client, history, replay


@pytest.fixture(scope="module")
def sim():
    with SimServer(SimConfig(rate_per_s=500, burst=50, token_throttle_s=0.2, ping_interval_s=0.3,
                             ping_timeout_s=1.5, subscription_cap=41), history=history(), replay=replay()) as s:
        yield s


def _ws(sim, rest, cred, **kw):
    return KisWebSocket(sim.ws_url, lambda: approval_key(rest.session, rest.env, cred), **kw).start()


def _acks(ws, n, timeout=5.0):
    out = []
    end = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < end:
        try:
            out.append(ws.acks.get(timeout=0.1))
        except queue.Empty:
            pass
    return out


def _drain(q, until, timeout=5.0):
    got = []
    end = time.monotonic() + timeout
    while time.monotonic() < end and not until(got):
        try:
            got.append(q.get(timeout=0.1))
        except queue.Empty:
            pass
    return got


def test_feed_and_encrypted_fill_notices(sim, tmp_path):
    rest, broker, cred = client(sim, tmp_path)
    ws = _ws(sim, rest, cred)
    try:
        for sym in ("005930", "000660"):
            ws.subscribe("H0STCNT0", sym)
        ws.subscribe("H0STASP0", "005930")
        ws.subscribe(rest.env.notice_tr, cred.hts_id)
        acks = _acks(ws, 4)
        assert [a["msg_cd"] for a in acks] == ["OPSP0000"] * 4
        assert rest.env.notice_tr in ws.keys          # key/iv kept from the notice ack
        broker.submit(OrderRequest("ws-1", "005930", "buy", 5))
        broker.submit(OrderRequest("ws-2", "000660", "buy", 2))
        sim.advance()
        fills = broker.sync()
        events = _drain(ws.events, lambda g: sum(1 for t, _ in g if t == "H0STCNT0") >= 2
                        and any(t == "H0STASP0" for t, _ in g) and sum(1 for t, r in g if r.get("CNTG_YN") == "2") >= 2)
        trades = [r for t, r in events if t == "H0STCNT0"]
        day = sim.exchange.today.strftime("%Y%m%d")
        assert sorted(r["MKSC_SHRN_ISCD"] for r in trades) == ["000660", "005930"] and all(r["BSOP_DATE"] == day for r in trades)
        closes = {s: sim.exchange.history[s][-1][4] for s in ("005930", "000660")}
        assert all(float(r["STCK_PRPR"]) == closes[r["MKSC_SHRN_ISCD"]] for r in trades)
        book = [r for t, r in events if t == "H0STASP0"][0]
        assert float(book["ASKP1"]) > float(book["BIDP1"])
        evs = _drain(ws.fills, lambda g: len(g) >= 2)
        by_order = {e.order_no: e for e in evs}
        for f in fills:
            e = by_order[f.broker_order_id]
            assert (e.symbol, e.side, e.qty, e.price) == (f.symbol, f.side.value, f.qty, f.price)
        assert all(e.account_tail == cred.product for e in evs)
        # acknowledgements (CNTG_YN 1) arrived for both orders too, and none of it was a fill
        acks_seen = [r for t, r in events if t == rest.env.notice_tr and r["CNTG_YN"] == "1"]
        assert len(acks_seen) == 2
        ws.unsubscribe("H0STASP0", "005930")
        assert _acks(ws, 1)[0]["msg_cd"] == "OPSP0001"
    finally:
        ws.close()


@pytest.mark.slow  # > 2 s on a busy 2-core machine: not in the quick loop (README)
def test_pingpong_is_echoed_and_session_survives(sim, tmp_path):
    rest, _, cred = client(sim, tmp_path)
    ws = _ws(sim, rest, cred)
    try:
        ws.subscribe("H0STCNT0", "005930")
        time.sleep(2.5)                      # > ping timeout: only an echoing client is still connected
        assert ws.pings_answered >= 2 and ws.connects == 1
        assert sim.stats()["ws_sessions"] >= 1
    finally:
        ws.close()


def test_reconnect_resubscribes_after_a_drop(sim, tmp_path):
    rest, _, cred = client(sim, tmp_path)
    ws = _ws(sim, rest, cred)
    try:
        ws.subscribe("H0STCNT0", "035420")
        _acks(ws, 1)
        sim.drop_websockets()
        end = time.monotonic() + 5
        while ws.connects < 2 and time.monotonic() < end:
            time.sleep(0.05)
        assert ws.connects == 2
        assert _acks(ws, 1)[0]["msg_cd"] == "OPSP0000"      # the re-subscribe after reconnecting
        sim.advance()
        got = _drain(ws.events, lambda g: any(r.get("MKSC_SHRN_ISCD") == "035420" for _, r in g))
        assert any(r.get("MKSC_SHRN_ISCD") == "035420" for _, r in got)
    finally:
        ws.close()


def test_subscription_cap_client_and_server(sim, tmp_path):
    rest, _, cred = client(sim, tmp_path)
    ws = _ws(sim, rest, cred, cap=3)
    try:
        for s in ("005930", "000660", "035420"):
            ws.subscribe("H0STCNT0", s)
        with pytest.raises(SubscriptionCapError):
            ws.subscribe("H0STCNT0", "051910")
        assert len(ws.subscriptions) == 3
    finally:
        ws.close()
    # a client configured above the server's cap meets OPSP0008 from the server
    ws = _ws(sim, rest, cred, cap=100)
    try:
        for i in range(42):
            ws.subscribe("H0STCNT0", f"{i:06d}")
        acks = _acks(ws, 42)
        assert [a["msg_cd"] for a in acks].count("OPSP0000") == 41 and acks[-1]["msg_cd"] == "OPSP0008"
    finally:
        ws.close()
