"""The KIS client against the simulator over real sockets: auth, every endpoint, paging."""
from __future__ import annotations

import datetime as dt
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from broker.base import OrderRequest, OrderStatus
from broker.kis import orders as tr
from broker.kis import quotes
from broker.kis.auth import TokenCache, approval_key, hashkey
from broker.kis.config import Credentials
from broker.kis.errors import KisAuthError, KisBusinessError
from broker.kis.rest import KisRest
from broker.sim.exchange import SimConfig
from broker.sim.server import SimServer
from tests.integration.kis_helpers import SPLIT, bars, client, history, replay

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sim():
    with SimServer(SimConfig(balance_page=2, ccld_page=3, rate_per_s=500, burst=50, token_throttle_s=0.5),
                   history=history(), replay=replay()) as s:
        yield s


def test_token_cache_file_is_private_and_reused(sim, tmp_path):
    rest, _, cred = client(sim, tmp_path)
    before = sim.exchange.counts["tokenP"]
    t1 = rest.tokens.token()
    assert stat.S_IMODE(os.stat(rest.tokens.path).st_mode) == 0o600
    assert cred.app_key not in rest.tokens.path.name and cred.app_key not in rest.tokens.path.read_text()
    # a second client object (a restart) reuses the cached token: no new issue
    env = rest.env
    again = KisRest(env, cred, TokenCache(env, cred, cache_dir=tmp_path))
    assert again.tokens.token() == t1
    quotes.current_price(again, "005930")
    assert sim.exchange.counts["tokenP"] == before + 1


def test_token_reissue_respects_the_throttle_window(sim, tmp_path):
    import time

    rest, _, cred = client(sim, tmp_path)
    slept = []

    def sleep(s):
        slept.append(s)
        time.sleep(s)

    cache = TokenCache(rest.env, cred, cache_dir=tmp_path, sleep=sleep)
    before = sim.exchange.counts["tokenP"]
    cache.token()
    cache.invalidate()
    cache.token()            # asked again at once: waits out the window instead of drawing EGW00133
    assert cache.issued_here == 2 and sim.exchange.counts["tokenP"] == before + 2
    assert len(slept) == 1 and 0 < slept[0] <= rest.env.token_throttle_s


def test_token_cache_is_shared_by_two_processes(sim, tmp_path):
    _, _, cred = client(sim, tmp_path)
    script = textwrap.dedent("""
        import os, sys
        from broker.kis.auth import TokenCache
        from broker.kis.config import Credentials, sim_environment
        env = sim_environment(os.environ["SIM_REST"], os.environ["SIM_WS"], token_throttle_s=0.5)
        cred = Credentials(os.environ["KIS_APP_KEY"], os.environ["KIS_APP_SECRET"], os.environ["KIS_ACCOUNT"])
        import hashlib
        tok = TokenCache(env, cred, cache_dir=sys.argv[1]).token()
        print(hashlib.sha256(tok.encode()).hexdigest())
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT), SIM_REST=sim.rest_url, SIM_WS=sim.ws_url,
               KIS_APP_KEY=cred.app_key, KIS_APP_SECRET=cred.app_secret, KIS_ACCOUNT=cred.account)
    before = sim.exchange.counts["tokenP"]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert outs[0][0].strip() == outs[1][0].strip() != ""
    assert sim.exchange.counts["tokenP"] == before + 1


def test_bad_keys_revoke_approval_and_hashkey(sim, tmp_path):
    rest, _, cred = client(sim, tmp_path)
    bad = Credentials("PSwrongwrongwrong", cred.app_secret, cred.account)
    with pytest.raises(KisAuthError) as err:
        TokenCache(rest.env, bad, cache_dir=tmp_path / "bad").token()
    assert err.value.msg_cd == "EGW00103" and cred.app_secret not in str(err.value)
    key = approval_key(rest.session, rest.env, cred)
    assert len(key) == 36
    body = {"CANO": cred.cano, "PDNO": "005930", "ORD_QTY": "1"}
    h = hashkey(rest.session, rest.env, cred, body)
    assert len(h) == 64
    tok = rest.tokens.token()
    assert rest.tokens.revoke() is True
    assert tok not in sim.exchange.tokens


def test_current_price_and_minute_bars(sim, tmp_path):
    rest, _, _ = client(sim, tmp_path)
    p = quotes.current_price(rest, "005930")
    last = bars().filter((pl.col("symbol") == "005930") & (pl.col("date") < SPLIT)).sort("date").tail(2)
    assert float(p["stck_prpr"]) == last["close"][-1] and float(p["stck_sdpr"]) == last["close"][0]
    m = quotes.minute_bars(rest, "005930", until="153000", pages=20)
    assert len(m) == 390 and m["time"].is_sorted()
    assert m["high"].max() == last["high"][-1] and m["low"].min() == last["low"][-1]
    assert m["open"][0] == last["open"][-1] and m["close"][-1] == last["close"][-1]
    with pytest.raises(ValueError):
        quotes.current_price(rest, "5930")
    with pytest.raises(KisBusinessError) as err:
        quotes.current_price(rest, "999999")
    assert err.value.msg_cd


def test_daily_bars_page_backwards_by_date_window(sim, tmp_path):
    rest, _, _ = client(sim, tmp_path)
    start, end = dt.date(2022, 6, 1), dt.date(2023, 5, 31)
    before = rest.stats["requests"]
    got = quotes.daily_bars(rest, "000660", start, end)
    want = (bars().filter((pl.col("symbol") == "000660") & (pl.col("date") >= start) & (pl.col("date") <= end))
            .select("date", "symbol", "open", "high", "low", "close", "volume").sort("date"))
    assert len(got) > 200 and got.equals(want)
    pages = -(-len(want) // 100)   # 100 rows a page, plus one empty answer when DATE_1 is no trading day
    assert rest.stats["requests"] - before in (pages, pages + 1)
    # no bar after the simulator's today is ever served (no look-ahead)
    future = quotes.daily_bars(rest, "000660", dt.date(2023, 5, 1), dt.date(2023, 12, 31))
    assert future["date"].max() < SPLIT


def test_orders_balance_and_daily_orders_with_paging(sim, tmp_path):
    rest, broker, cred = client(sim, tmp_path)
    syms = ["005930", "000660", "035420", "051910", "005380"]
    placed = [broker.submit(OrderRequest(f"b-{s}", s, "buy", 2)) for s in syms]
    assert all(o.status is OrderStatus.OPEN and len(o.broker_order_id) == 10 for o in placed)
    rows, totals = tr.daily_orders(rest, sim.exchange.today, sim.exchange.today)
    assert sorted(r["odno"] for r in rows) == sorted(o.broker_order_id for o in placed)   # 5 rows over 3-row pages
    assert totals["tot_ord_qty"] == "10"
    # cancel one, revise none; then trade the next bar
    cancelled = broker.cancel(placed[0].broker_order_id)
    assert cancelled.status is OrderStatus.CANCELLED
    assert broker.cancel(placed[0].broker_order_id).status is OrderStatus.CANCELLED  # idempotent
    psbl = tr.orderable(rest, "005930")
    assert int(psbl["ord_psbl_cash"]) == 50_000_000 and int(psbl["nrcvb_buy_qty"]) > 0
    fills = _advance(sim, broker)
    assert sorted(f.symbol for f in fills) == sorted(syms[1:])
    holdings, summary = tr.balance(rest)                        # 4 holdings over 2-row pages
    assert sorted(h["pdno"] for h in holdings) == sorted(syms[1:])
    assert broker.positions() == {s: 2 for s in syms[1:]}
    spent = sum(f.qty * f.price + f.commission for f in fills)
    assert broker.cash() == 50_000_000 - spent == int(summary["dnca_tot_amt"])
    assert all(broker.find_order(f"b-{s}").status is OrderStatus.FILLED for s in syms[1:])
    assert broker.find_order("b-005930").status is OrderStatus.CANCELLED and broker.find_order("nope") is None
    assert broker.sync() == []            # each executed share becomes a Fill once


def test_limit_orders_rejections_and_revise(sim, tmp_path):
    rest, broker, _ = client(sim, tmp_path)
    last = float(quotes.current_price(rest, "005930")["stck_prpr"])
    off_grid = broker.submit(OrderRequest("off", "005930", "buy", 1, "limit", int(last) + 1))
    assert off_grid.status is OrderStatus.REJECTED and "SIMR0001" in off_grid.reason
    too_high = broker.submit(OrderRequest("high", "005930", "buy", 1, "limit", int(last * 2 // 100 * 100)))
    assert too_high.status is OrderStatus.REJECTED and "SIMR0002" in too_high.reason
    naked = broker.submit(OrderRequest("naked", "005930", "sell", 1))
    assert naked.status is OrderStatus.REJECTED and broker.find_order("naked").status is OrderStatus.REJECTED
    low = broker.submit(OrderRequest("low", "005930", "buy", 3, "limit", int(last * 0.8 // 100 * 100)))
    out = tr.revise_cancel(rest, "", low.broker_order_id, cancel=False, qty=0, price=int(last * 0.9 // 100 * 100))
    assert out["ODNO"] != low.broker_order_id
    with pytest.raises(KisBusinessError):            # the original has nothing left to revise or cancel
        tr.revise_cancel(rest, "", low.broker_order_id, cancel=True)
    assert broker.find_order("low").status is OrderStatus.CANCELLED
    # resubmitting a known client id never sends a second order
    n = sim.exchange.counts["orders"]
    assert broker.submit(OrderRequest("low", "005930", "buy", 3, "limit", 1000)).broker_order_id == low.broker_order_id
    assert sim.exchange.counts["orders"] == n


def test_market_closed_is_a_business_rejection(sim, tmp_path):
    rest, broker, _ = client(sim, tmp_path)
    sim.set_market_open(False)
    try:
        o = broker.submit(OrderRequest("closed", "005930", "buy", 1))
    finally:
        sim.set_market_open(True)
    assert o.status is OrderStatus.REJECTED and "40580000" in o.reason


def test_wrong_environment_tr_is_refused(sim, tmp_path):
    rest, _, cred = client(sim, tmp_path)
    with pytest.raises(KisBusinessError) as err:
        rest.request("GET", tr.BALANCE, "TTTC8434R", params={"CANO": cred.cano, "ACNT_PRDT_CD": cred.product})
    assert err.value.msg_cd == "EGW00202"


def _advance(sim, broker):
    sim.advance()
    fills = broker.sync()
    broker.confirm_fills(fills)  # what the loop does once the journal has them
    return fills


def test_hashkey_option_is_sent_and_checked(sim, tmp_path):
    rest, broker, cred = client(sim, tmp_path, use_hashkey=True)
    before = sim.exchange.counts.get("hashkey_checked", 0)
    o = broker.submit(OrderRequest("hashed", "005930", "buy", 1))
    assert o.status is OrderStatus.OPEN and sim.exchange.counts["hashkey_checked"] == before + 1
    # a hashkey that does not match the body is refused
    with pytest.raises(KisBusinessError) as err:
        rest.request("POST", tr.ORDER_CASH, "VTTC0012U", body={"CANO": cred.cano}, extra_headers={"hashkey": "0" * 64})
    assert err.value.msg_cd == "SIMR0014"


def test_run_modes_map_to_kis_environments():
    """`trader run --mode live` talks to the real server with real TR ids, `--mode vts` to VTS with
    V-prefixed ones; `live.kis` settings override the [unsure] items (the gate is in test_cluster_cli)."""
    from cluster.live import kis_environment

    real = kis_environment("live", {})
    assert real.name == "real" and real.rest_url.startswith("https://openapi.koreainvestment.com")
    assert real.tr("TTTC0012U") == "TTTC0012U"
    vts = kis_environment("vts", {"token_throttle_s": "300", "gateway_error_statuses": "200,500"})
    assert vts.rest_url.startswith("https://openapivts") and vts.tr("TTTC0012U") == "VTTC0012U"
    assert vts.token_throttle_s == 300.0 and vts.gateway_error_statuses == (200, 500)


def test_statuses_outside_the_gateway_list_are_transport_errors(sim, tmp_path):
    from broker.kis.errors import KisTransportError

    rest, _, _ = client(sim, tmp_path)
    with pytest.raises(KisTransportError, match="HTTP 404"):   # the simulator's 404 has a JSON body
        rest.request("GET", "/uapi/domestic-stock/v1/quotations/no-such-tr", "FHKST01010100")
    rest404, _, _ = client(sim, tmp_path / "b", gateway_error_statuses=(404, 500))
    with pytest.raises(KisBusinessError) as err:
        rest404.request("GET", "/uapi/domestic-stock/v1/quotations/no-such-tr", "FHKST01010100")
    assert err.value.msg_cd == "EGW00001"
