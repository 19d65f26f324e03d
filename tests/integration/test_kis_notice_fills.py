"""Fills from execution notices on the product path, against the simulator over real sockets: the
simulator's session clock fills a market order as it arrives and sends its H0STCNI9 notice then;
the gateway's WebSocket session takes it, KisBroker turns it into a journaled fill at once, and the
REST execution list read at the close adds only what no notice brought (real SQLite journal)."""
from __future__ import annotations

import datetime as dt
import logging
import time

import pytest

from broker.base import OrderRequest, Side
from broker.journal import Journal
from broker.kis.broker import KisBroker
from broker.kis.gateway import KisGateway
from broker.sim.exchange import SimConfig
from broker.sim.server import SimServer
from tests.integration.kis_helpers import credentials, history, replay

CASH = 50_000_000


class Session:
    """One account on the simulator, traded through the gateway's one KIS session on the
    simulator's virtual session clock, with a journal."""

    def __init__(self, sim: SimServer, tmp_path):
        self.sim = sim
        self.cred = credentials(sim.add_account(CASH))
        self.gateway = KisGateway(sim.environment(), self.cred, cache_dir=tmp_path)
        self.clock = sim.session_clock()
        self.broker = KisBroker(self.gateway.rest, id_map=tmp_path / "ids.sqlite", clock=lambda: self.clock.now.date(),
                                notices=self.gateway.take_notices)
        self.journal = Journal(tmp_path / "journal.sqlite", run_id="notices")
        self.journaled: list = []
        assert self.broker.notice_fills() == []        # registers the account's notices
        self.wait_subscribed()

    def wait_subscribed(self, timeout=10.0):
        end = time.monotonic() + timeout
        while ("H0STCNI9", self.cred.hts_id) not in self.sim._ws.subscribed():
            assert time.monotonic() < end, "the notice registration never reached the simulator"
            time.sleep(0.02)

    def sleep_until(self, hhmm: str):
        target = dt.datetime.combine(self.clock.now.date(), dt.time.fromisoformat(hhmm), tzinfo=self.clock.now.tzinfo)
        self.clock.sleep((target - self.clock.now).total_seconds())

    def buy(self, cid: str, symbol: str, qty: int):
        order = self.broker.submit(OrderRequest(cid, symbol, Side.BUY, qty))
        assert order.broker_order_id, order.reason
        return order

    def journal_fills(self, fills):
        with self.journal.transaction():
            for fill in fills:
                if self.journal.record_fill(fill):
                    self.journaled.append(fill)
        self.broker.confirm_fills(fills)

    def wait_notice_fills(self, n: int, timeout=10.0) -> list:
        """Take notice fills (journaling them) until `n` arrived."""
        got, end = [], time.monotonic() + timeout
        while len(got) < n and time.monotonic() < end:
            fills = self.broker.notice_fills()
            self.journal_fills(fills)
            got += fills
            time.sleep(0.02)
        return got

    def close_day(self):
        """The bar is final (15:45): the REST execution list, as the loop reads it at the close."""
        self.sleep_until("15:45")
        fills = self.broker.sync()
        self.journal_fills(fills)
        return fills

    def venue_fills(self):
        return [f for _, f in self.sim.exchange.accounts[self.cred.app_key].fills]

    def assert_journal_equals_account(self):
        held = self.broker.positions()
        assert self.journal.positions_from_fills() == held
        assert self.journal.cash_from_fills(CASH) == self.broker.cash()
        rows = self.journal.fills()
        assert len(rows) == len(self.venue_fills())                       # each fill once
        assert sum(r["qty"] * r["price"] for r in rows) == sum(f.qty * f.price for f in self.venue_fills())

    def close(self):
        self.journal.close()
        self.broker.ids.close()
        self.gateway.close()


def _sim(**config):
    return SimServer(SimConfig(rate_per_s=500, burst=50, token_throttle_s=0.2, **config), history=history(),
                     replay=replay())


@pytest.fixture()
def session(tmp_path):
    with _sim() as sim:
        s = Session(sim, tmp_path)
        yield s
        s.close()


def test_a_fill_arrives_by_notice_in_the_session_and_rest_at_the_close_adds_nothing(session):
    session.sleep_until("09:00:30")
    order = session.buy("n-1", "005930", 10)
    (fill,) = session.wait_notice_fills(1)
    # journaled as it arrived, long before the close, with the order's session time and KIS's identity
    assert session.clock.now.time() == dt.time(9, 0, 30)
    assert (fill.broker_order_id, fill.fill_id, fill.qty) == (order.broker_order_id, "ccld10", 10)
    assert fill.filled_at.time() == dt.time(9, 0, 30)
    (venue,) = session.venue_fills()
    assert (fill.price, fill.commission, fill.tax) == (venue.price, venue.commission, venue.tax)
    assert session.close_day() == []                 # REST shows the same shares: nothing twice
    assert [r["filled_at"] for r in session.journal.fills()] == [fill.filled_at.isoformat()]
    session.assert_journal_equals_account()


def test_a_dropped_notice_is_recovered_from_rest_once(session):
    session.sleep_until("09:00:30")
    # the order's second notice (its fill; the first acknowledges it) is lost with the session
    session.sim.faults.inject("ws_drop", path="H0STCNI9", skip=1)
    order = session.buy("n-1", "005930", 10)
    assert session.wait_notice_fills(1, timeout=2.0) == []
    assert session.sim.faults.fired.get("ws_drop") == 1
    session.wait_subscribed()                          # reconnected and registered again
    (fill,) = session.close_day()
    assert (fill.broker_order_id, fill.fill_id, fill.qty) == (order.broker_order_id, "ccld10", 10)
    assert fill.filled_at.time() == dt.time(9, 0)      # REST has no trade time: the session's open
    assert session.broker.sync() == []                 # read again: counted once
    session.assert_journal_equals_account()


def test_a_garbled_notice_is_named_and_the_session_goes_on(session, caplog):
    session.sleep_until("09:00:30")
    session.sim.faults.inject("ws_malformed", path="H0STCNI9", skip=1)
    caplog.set_level(logging.WARNING, logger="broker.kis.ws")
    first = session.buy("n-1", "005930", 10)
    second = session.buy("n-2", "000660", 5)
    (by_notice,) = session.wait_notice_fills(1)
    assert by_notice.broker_order_id == second.broker_order_id      # the next notice still comes through
    assert "frame: FrameError" in session.gateway.ws_stats()["errors"]
    assert any("does not decrypt" in r.getMessage() for r in caplog.records)   # named in the log
    (by_rest,) = session.close_day()
    assert (by_rest.broker_order_id, by_rest.fill_id) == (first.broker_order_id, "ccld10")
    session.assert_journal_equals_account()


def test_a_reconnect_mid_session_loses_and_doubles_nothing(session):
    session.sleep_until("09:00:30")
    first = session.buy("n-1", "005930", 10)
    (a,) = session.wait_notice_fills(1)
    connects = session.gateway.ws.connects
    session.sim.drop_websockets()
    end = time.monotonic() + 10
    while session.gateway.ws.connects == connects:
        assert time.monotonic() < end, "the WebSocket session did not reconnect"
        time.sleep(0.02)
    session.wait_subscribed()
    session.sleep_until("10:00")
    second = session.buy("n-2", "000660", 5)
    (b,) = session.wait_notice_fills(1)             # the new session's key decrypts it
    assert [a.broker_order_id, b.broker_order_id] == [first.broker_order_id, second.broker_order_id]
    assert b.filled_at.time() == dt.time(10, 0)
    assert session.close_day() == []
    session.assert_journal_equals_account()


def test_a_notice_kis_widened_is_parsed_and_its_extra_fields_named(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="broker.kis.ws")
    with _sim(notice_extra_fields=("N1", "N2", "N3")) as sim:
        s = Session(sim, tmp_path)
        try:
            s.sleep_until("09:00:30")
            order = s.buy("n-1", "005930", 10)
            (fill,) = s.wait_notice_fills(1)
            assert (fill.broker_order_id, fill.qty) == (order.broker_order_id, 10)
            assert any("H0STCNI9 records have 29 fields, 26 documented: the extra 3 kept under '_extra'"
                       in r.getMessage() for r in caplog.records)
            assert s.close_day() == []
            s.assert_journal_equals_account()
        finally:
            s.close()


def test_rest_wins_when_its_price_differs_from_the_notice(session):
    """A notice whose price is off by a tick (REST's amount is the truth): the fill is journaled
    from the notice at once, and at the close the same fill (same identity) is re-reported at
    REST's price and the journal row takes it."""
    from dataclasses import replace

    take = session.broker.notices
    session.broker.notices = lambda: [replace(e, price=e.price + 100) for e in take()]
    session.sleep_until("09:00:30")
    order = session.buy("n-1", "005930", 10)
    (by_notice,) = session.wait_notice_fills(1)
    (venue,) = session.venue_fills()
    assert by_notice.price == venue.price + 100
    (corrected,) = session.close_day()
    assert (corrected.broker_order_id, corrected.fill_id, corrected.qty) == (order.broker_order_id, "ccld10", 10)
    assert (corrected.price, corrected.commission) == (venue.price, venue.commission)
    (row,) = session.journal.fills()
    assert (row["price"], row["commission"], row["filled_at"]) == (venue.price, venue.commission,
                                                                   by_notice.filled_at.isoformat())
    assert session.broker.sync() == []
    session.assert_journal_equals_account()


def test_without_a_websocket_session_fills_come_from_rest(session):
    """The notice source failing (a KIS error from the gateway) never stops trading: REST has the fills."""
    from broker.kis.errors import KisError

    def down():
        raise KisError(tr_id="websocket", detail="WebSocket did not connect")

    session.broker.notices = down
    session.sleep_until("09:00:30")
    order = session.buy("n-1", "005930", 10)
    assert session.broker.notice_fills() == []
    (fill,) = session.close_day()
    assert (fill.broker_order_id, fill.fill_id) == (order.broker_order_id, "ccld10")
    session.assert_journal_equals_account()


def test_a_notice_fill_the_journal_never_confirmed_comes_again_at_the_close(session):
    """The step that took a notice fill failed before the journal had it: the close reports the
    same fill (same identity, the notice's time) again, and it is journaled once."""
    session.sleep_until("09:00:30")
    session.buy("n-1", "005930", 10)
    end = time.monotonic() + 10
    while not (taken := session.broker.notice_fills()):
        assert time.monotonic() < end, "no notice fill"
        time.sleep(0.02)
    (lost,) = taken                                   # never journaled, never confirmed
    (again,) = session.close_day()
    assert again == lost
    assert session.broker.sync() == []
    session.assert_journal_equals_account()
