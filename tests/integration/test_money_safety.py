"""Faults that used to cost money, each reproduced against the KIS-protocol simulator over real
sockets: an order whose outcome is unknown is never sent twice, a rate-limited order never blocks
the session, and a fill is never lost between the venue and the journal."""
from __future__ import annotations

import datetime as dt
import os
import stat

import pytest

from broker.base import OrderRequest, OrderStatus
from broker.journal import Journal
from broker.kis.broker import KisBroker
from tests.integration.kis_helpers import (
    SYMBOLS,
    client,
    fast_sim,
    venue_orders,
)

LOOKUP = "inquire-daily-ccld"   # the day's orders: where a lost answer is looked up


@pytest.fixture(scope="module")
def sim():
    with fast_sim() as s:
        yield s


def _symbols(sim, cred) -> dict[str, str]:
    """symbol → order number of the orders the venue holds for this account."""
    book = sim.exchange.accounts[cred.app_key].book
    return {book._orders[so.paper_id].request.symbol: so.odno for so in venue_orders(sim, cred)}


@pytest.mark.slow  # > 2 s on a busy 2-core machine: not in the quick loop (README)
@pytest.mark.parametrize("kind", ["drop", "http_500_after", "malformed", "slow"])
def test_processed_order_whose_lookup_fails_stays_unknown_and_is_never_resent(sim, tmp_path, kind):
    rest, broker, cred = client(sim, tmp_path, timeout_s=1.0)
    sim.faults.clear()
    n = 5
    for i in range(n):
        # the venue processes the order but the answer is lost, and every look at the day's
        # orders fails too (each look is retried by the client: arm plenty)
        sim.faults.inject(kind, path="order-cash", delay=2.0)
        sim.faults.inject("http_500", count=50, path=LOOKUP)
        order = broker.submit(OrderRequest(f"u-{kind}-{i}", SYMBOLS[i], "buy", 1 + i))
        assert order.status is OrderStatus.UNKNOWN and not order.status.done, order
        assert "unknown" in order.reason
        sim.faults.clear()
    venue = venue_orders(sim, cred)
    assert len(venue) == n, f"{kind}: {len(venue)} orders at the venue for {n} sent"   # was 2n
    assert broker.resends == 0
    # resubmitting while still unknown sends nothing
    sim.faults.inject("http_500", count=50, path=LOOKUP)
    assert broker.submit(OrderRequest(f"u-{kind}-0", SYMBOLS[0], "buy", 1)).status is OrderStatus.UNKNOWN
    sim.faults.clear()
    assert len(venue_orders(sim, cred)) == n
    # once the day's orders can be read, each unknown order is found and gets its order number
    by_symbol = _symbols(sim, cred)
    for i in range(n):
        found = broker.find_order(f"u-{kind}-{i}")
        assert found.status is OrderStatus.OPEN and found.broker_order_id == by_symbol[SYMBOLS[i]]
        assert broker.submit(OrderRequest(f"u-{kind}-{i}", SYMBOLS[i], "buy", 1 + i)).broker_order_id == \
            by_symbol[SYMBOLS[i]]
    assert len(venue_orders(sim, cred)) == n


def test_unprocessed_order_whose_lookup_fails_is_settled_as_not_sent_later(sim, tmp_path):
    rest, broker, cred = client(sim, tmp_path, timeout_s=1.0)
    sim.faults.clear()
    sim.faults.inject("drop_before", path="order-cash")
    sim.faults.inject("http_500", count=50, path=LOOKUP)
    order = broker.submit(OrderRequest("never", "005930", "buy", 3))
    assert order.status is OrderStatus.UNKNOWN          # could not look: not "not sent"
    sim.faults.clear()
    assert venue_orders(sim, cred) == []
    settled = broker.find_order("never")                # two clean looks: KIS never had it
    assert settled.status is OrderStatus.REJECTED and settled.reason.startswith("not sent")
    assert broker.submit(OrderRequest("never", "005930", "buy", 3)).status is OrderStatus.REJECTED
    assert venue_orders(sim, cred) == []


def test_rate_limited_order_is_not_sent_and_the_session_goes_on(sim, tmp_path):
    rest, broker, cred = client(sim, tmp_path, rate_limit_retries=5, backoff_s=0.01)
    sim.faults.clear()
    sim.faults.inject("rate_limit", count=6, path="order-cash")   # the first try and all 5 retries
    refused = broker.submit(OrderRequest("busy", "005930", "buy", 2))
    assert refused.status is OrderStatus.REJECTED and "EGW00201" in refused.reason and "not sent" in refused.reason
    assert broker.ids.get("busy")["state"] == "not_sent"            # was stuck in 'sending' for good
    nxt = broker.submit(OrderRequest("next", "000660", "buy", 1))  # the rest of the bar is sent
    assert nxt.status is OrderStatus.OPEN
    # a restarted broker neither refuses to go on nor sends the refused order
    broker.ids.close()
    restarted = KisBroker(rest, id_map=broker.ids.path, clock=lambda: sim.exchange.today)
    again = restarted.submit(OrderRequest("busy", "005930", "buy", 2))
    assert again.status is OrderStatus.REJECTED
    assert list(_symbols(sim, cred)) == ["000660"]


def test_a_fill_is_reported_until_the_journal_has_it(sim, tmp_path):
    rest, broker, cred = client(sim, tmp_path)
    sim.faults.clear()
    broker.submit(OrderRequest("fill-1", "005930", "buy", 10))
    sim.advance()
    reported = broker.sync()
    assert [f.qty for f in reported] == [10]
    # the process dies here, before the journal write: the fill must not be lost
    broker.ids.close()
    restarted = KisBroker(rest, id_map=broker.ids.path, clock=lambda: sim.exchange.today)
    again = restarted.sync()
    assert again == reported                               # same fill, same fill id
    journal = Journal(tmp_path / "journal.sqlite", run_id="r")
    journal.record_intent(OrderRequest("fill-1", "005930", "buy", 10), dt.datetime(2023, 6, 1, 15, 30))
    assert [journal.record_fill(f) for f in reported + again] == [True, False]   # journaled once
    restarted.confirm_fills(again)
    assert restarted.sync() == []
    assert journal.positions_from_fills() == restarted.positions() == {"005930": 10}
    journal.close()


def test_order_id_map_is_private_whatever_the_umask(sim, tmp_path):
    old = os.umask(0o022)
    try:
        _, broker, _ = client(sim, tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(broker.ids.path).st_mode) == 0o600
    broker.submit(OrderRequest("mode-1", "005930", "buy", 1))   # SQLite's -wal file follows the database's mode
    wal = broker.ids.path.with_name(broker.ids.path.name + "-wal")
    assert stat.S_IMODE(os.stat(wal).st_mode) == 0o600
