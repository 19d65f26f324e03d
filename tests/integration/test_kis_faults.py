"""Every injected fault ends with no lost and no duplicated order (real sockets, the simulator)."""
from __future__ import annotations

import pytest

from broker.base import OrderRequest, OrderStatus
from broker.kis import orders as tr
from broker.kis import quotes
from broker.kis.broker import KisBroker
from broker.kis.errors import KisRateLimited
from broker.sim.exchange import SimConfig
from broker.sim.server import SimServer
from tests.integration.kis_helpers import (
    client,
    fast_sim,
    history,
    venue_orders,
)


@pytest.fixture(scope="module")
def sim():
    with fast_sim() as s:
        yield s



@pytest.mark.parametrize("kind", ["rate_limit", "expired_token", "http_500", "drop_before",
                                  "http_500_after", "drop", "malformed", "slow"])
def test_order_faults_never_lose_or_duplicate(sim, tmp_path, kind):
    rest, broker, cred = client(sim, tmp_path, timeout_s=1.0)
    sim.faults.inject(kind, path="order-cash", delay=2.0)
    order = broker.submit(OrderRequest(f"f-{kind}", "005930", "buy", 7))
    venue = venue_orders(sim, cred)
    assert len(venue) == 1, f"{kind}: {len(venue)} orders at the venue"
    assert order.status is OrderStatus.OPEN and order.broker_order_id == venue[0].odno
    assert broker.find_order(f"f-{kind}").broker_order_id == venue[0].odno
    assert sim.faults.fired.get(kind, 0) >= 1 and not sim.faults.pending()
    # resubmitting the same client id after the fault still sends nothing
    assert broker.submit(OrderRequest(f"f-{kind}", "005930", "buy", 7)).broker_order_id == venue[0].odno
    assert len(venue_orders(sim, cred)) == 1
    expected_resends = 1 if kind in ("http_500", "drop_before") else 0
    assert broker.resends == expected_resends


def test_unknown_outcome_twice_is_not_sent_and_never_sent_again(sim, tmp_path):
    rest, broker, cred = client(sim, tmp_path)
    sim.faults.inject("drop_before", count=2, path="order-cash")
    order = broker.submit(OrderRequest("twice", "005930", "buy", 1))
    # two sends, each followed by two clean looks that found nothing: KIS never processed it
    assert order.status is OrderStatus.REJECTED and order.reason.startswith("not sent")
    assert len(venue_orders(sim, cred)) == 0
    # the id is journaled as not sent: a later submit answers that instead of sending blindly
    assert broker.submit(OrderRequest("twice", "005930", "buy", 1)).status is OrderStatus.REJECTED
    assert len(venue_orders(sim, cred)) == 0


def test_find_order_after_a_crash_matches_the_days_orders(sim, tmp_path):
    rest, broker, cred = client(sim, tmp_path)
    req = OrderRequest("crash-1", "000660", "buy", 4, "limit", 100000)
    day = sim.exchange.today.strftime("%Y%m%d")
    broker.ids.intent(req.client_order_id, day, req.symbol, "buy", 4, "limit", 100000, "2023-05-31T15:31:00+09:00")
    out = tr.cash_order(rest, "buy", "000660", 4, 100000)       # sent, then the process "died"
    broker.ids.close()
    restarted = KisBroker(rest, id_map=broker.ids.path, clock=lambda: sim.exchange.today)
    found = restarted.find_order("crash-1")
    assert found is not None and found.broker_order_id == out["ODNO"] and found.status is OrderStatus.OPEN
    assert restarted.ids.get("crash-1")["odno"] == out["ODNO"]


def test_query_faults_are_retried(sim, tmp_path):
    rest, _, _ = client(sim, tmp_path)
    for kind in ("rate_limit", "expired_token", "http_500", "drop", "malformed", "drop_before"):
        sim.faults.inject(kind, path="inquire-price")
        assert quotes.current_price(rest, "005930")["stck_prpr"], kind
    assert rest.stats["token_refreshes"] == 1 and rest.stats["rate_limited"] == 1


def test_expired_token_twice_surfaces_a_token_error(sim, tmp_path):
    from broker.kis.errors import KisTokenError

    rest, _, _ = client(sim, tmp_path)
    sim.faults.inject("expired_token", count=2, path="inquire-price")
    with pytest.raises(KisTokenError) as err:
        quotes.current_price(rest, "005930")
    assert err.value.msg_cd == "EGW00123"


@pytest.mark.slow  # > 2 s on a busy 2-core machine: not in the quick loop (README)
def test_server_quota_is_respected_by_retrying(tmp_path):
    # a client allowed 10x the server's quota: the server answers EGW00201, the client backs off
    with SimServer(SimConfig(rate_per_s=20, burst=1, token_throttle_s=0.2), history=history()) as s:
        rest, _, _ = client(s, tmp_path, rate_per_s=200, burst=10)
        for _ in range(30):
            quotes.current_price(rest, "005930")
        assert s.exchange.counts["rate_limited"] > 0 and rest.stats["rate_limited"] > 0
        rest2, _, _ = client(s, tmp_path / "b", rate_per_s=200, burst=10, rate_limit_retries=0)
        with pytest.raises(KisRateLimited):
            for _ in range(30):
                quotes.current_price(rest2, "005930")


def test_admin_fault_endpoint_needs_the_secret(sim, tmp_path):
    import requests

    r = requests.post(sim.rest_url + "/admin/fault", json={"kind": "http_500"})
    assert r.status_code == 403
    r = requests.post(sim.rest_url + "/admin/fault", json={"kind": "bogus"}, headers={"x-sim-admin": sim.admin_secret})
    assert r.status_code == 400 and "unknown fault" in r.text
    r = requests.post(sim.rest_url + "/admin/fault", json={"kind": "http_500", "path": "inquire-price"},
                      headers={"x-sim-admin": sim.admin_secret})
    assert r.status_code == 200 and sim.faults.pending()
    rest, _, _ = client(sim, tmp_path)
    quotes.current_price(rest, "005930")
    assert not sim.faults.pending()
