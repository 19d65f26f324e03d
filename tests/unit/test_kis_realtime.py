"""Live quotes from WebSocket records: last trade, touch, one-minute bars that are final only once
a later minute printed, stale-feed detection per symbol, and the subscription cap refused whole."""
from __future__ import annotations

import datetime as dt

import pytest

from broker.kis.errors import SubscriptionCapError
from broker.kis.realtime import RealtimeQuotes, watch
from broker.kis.ws import parse_frame
from broker.sim.intraday import synth_session, tape
from market.calendar import SEOUL

DAY = dt.date(2023, 6, 1)
BAR = (70_000, 71_500, 69_800, 71_000, 1_234_567)


def _records(step_s: int = 20):
    prints = synth_session("005930", DAY, BAR, seed=5, step_s=step_s)
    rows = tape("005930", DAY, prints, prev_close=69_900)
    return prints, [(parse_frame(f"0|H0STCNT0|001|{t}").records[0], parse_frame(f"0|H0STASP0|001|{b}").records[0])
                    for _, t, b in rows]


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_minute_bars_are_final_only_after_the_minute_and_match_the_prints():
    prints, records = _records()
    q = RealtimeQuotes()
    until = dt.time(10, 0, 20)      # the 10:00 minute has printed twice, not ended
    for trade, book in records:
        if dt.datetime.strptime(trade["STCK_CNTG_HOUR"], "%H%M%S").time() > until:
            break
        q.on_record("H0STASP0", book)
        q.on_record("H0STCNT0", trade)
    bars = q.bars("005930")
    assert bars[-1].start == dt.datetime(2023, 6, 1, 9, 59, tzinfo=SEOUL) and all(b.final for b in bars)
    assert len(bars) == 60
    partial = q.partial_bar("005930")
    assert partial.start.time() == dt.time(10, 0) and not partial.final
    for b in bars:    # each bar is exactly the prints of its minute
        mine = [p for p in prints if p.time.hour == b.start.hour and p.time.minute == b.start.minute]
        assert (b.open, b.high, b.low, b.close, b.volume) == (mine[0].price, max(p.price for p in mine),
                                                              min(p.price for p in mine), mine[-1].price,
                                                              sum(p.qty for p in mine))
    last = [p for p in prints if p.time <= until][-1]
    trade = q.last_trade("005930")
    assert (trade.price, trade.qty, trade.time.time()) == (last.price, last.qty, last.time)
    assert trade.cum_volume == sum(p.qty for p in prints if p.time <= until)
    touch = q.touch("005930")
    assert (touch.bid, touch.ask) == (last.bids[0], last.asks[0]) and touch.bid < touch.ask
    assert q.bars("000660") == [] and q.last_trade("000660") is None


def test_stale_symbols_are_found_and_each_stall_reported_once():
    _, records = _records()
    clock = Clock()
    q = RealtimeQuotes(clock=clock)
    q.on_record("H0STCNT0", records[0][0])
    assert q.stale(["005930", "000660"], max_silence_s=5) == {"000660": None}     # never heard of
    clock.t += 6
    assert q.stale(["005930"], max_silence_s=5) == {"005930": pytest.approx(6)}
    assert q.new_stalls(["005930"], 5) == {"005930": pytest.approx(6)}
    clock.t += 10
    assert q.new_stalls(["005930"], 5) == {}          # the same stall is not reported again
    q.on_record("H0STCNT0", records[1][0])            # data flows: the next silence is a new stall
    assert q.stale(["005930"], 5) == {}
    clock.t += 6
    assert list(q.new_stalls(["005930"], 5)) == ["005930"]


class _Ws:
    """The subscription surface of KisWebSocket (subscriptions, cap, subscribe): `watch` only
    needs these; the real client is exercised over the simulator in test_sim_stream.py."""

    def __init__(self, cap: int, used: int):
        self.cap = cap
        self.subscriptions = {("H0STCNI9", f"hts{i}") for i in range(used)}
        self.sent: list[tuple[str, str]] = []

    def subscribe(self, tr_id: str, tr_key: str) -> dict:
        self.subscriptions.add((tr_id, tr_key))
        self.sent.append((tr_id, tr_key))
        return {}


def test_watch_refuses_a_list_over_the_cap_before_registering_anything():
    ws = _Ws(cap=40, used=1)
    symbols = [f"{i:06d}" for i in range(20)]
    with pytest.raises(SubscriptionCapError, match="at most 19 symbols fit"):
        watch(ws, symbols)
    assert ws.sent == []
    assert len(watch(ws, symbols, book=False)) == 20 and len(ws.subscriptions) == 21
    assert watch(ws, symbols[:5], book=False) == []    # already registered: nothing sent twice
