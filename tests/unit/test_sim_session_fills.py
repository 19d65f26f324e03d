"""Orders working while the simulator streams its SYNTHETIC session fill against its prints
(broker/sim/exchange.py trade_print → broker/paper.py on_print): a market order at the next
print, a limit when a print reaches it, capped at the print's volume, booked with the daily
path's commission and dated tax; an order that met the session is not filled again on the daily
bar, and one that never met a print still fills on it as before."""
from __future__ import annotations

import datetime as dt

import polars as pl

from broker.base import OrderStatus, Side
from broker.sim.exchange import Exchange, SimConfig
from market import krx
from market.accounting import CostModel

D0, D1 = dt.date(2024, 3, 4), dt.date(2024, 3, 5)
SYM = "005930"


def exchange_with_account(cash: int = 10_000_000) -> tuple[Exchange, object, list]:
    ex = Exchange(SimConfig(virtual=True, costs=CostModel()))
    ex.load_history(pl.DataFrame({"symbol": [SYM], "date": [D0], "open": [70_000.0], "high": [71_000.0],
                                  "low": [69_500.0], "close": [70_000.0], "volume": [1_000_000]}))
    keys = ex.add_account(cash)
    acct = ex.accounts[keys["KIS_APP_KEY"]]
    heard: list = []
    ex.listeners.append(lambda kind, payload: heard.append((kind, payload)))
    ex.session_day = lambda: D1
    return ex, acct, heard


def order(ex, acct, side: Side, qty: int, limit: int | None = None) -> str:
    body = {"CANO": acct.cano, "ACNT_PRDT_CD": acct.product, "PDNO": SYM, "ORD_QTY": str(qty),
            "ORD_DVSN": "00" if limit else "01", "ORD_UNPR": str(limit or 0)}
    return ex.order_cash(acct, body, side)["output"]["ODNO"]


def ccld(ex, acct, odno: str) -> dict:
    rows = ex.ccld_rows(acct, {"INQR_STRT_DT": "20240301", "INQR_END_DT": "20240310", "ODNO": odno})
    return rows[0]


def test_market_order_takes_the_next_print_and_a_limit_waits_until_a_print_reaches_it():
    ex, acct, heard = exchange_with_account()
    market = order(ex, acct, Side.BUY, 10)
    limit = order(ex, acct, Side.BUY, 5, limit=69_800)
    out = ex.trade_print(D1, SYM, 70_100, 5_000, dt.time(9, 0, 30))
    assert [(odno, f.qty, f.price) for odno, f in out] == [(market, 10, 70_100)]
    commission = krx.commission(10 * 70_100, CostModel().commission_rate)
    assert acct.book.cash() == 10_000_000 - 701_000 - commission
    assert out[0][1].filled_at == dt.datetime(2024, 3, 5, 9, 0, 30, tzinfo=out[0][1].filled_at.tzinfo)
    assert ex.trade_print(D1, SYM, 69_900, 5_000, dt.time(9, 1)) == []          # above the limit: waits
    out = ex.trade_print(D1, SYM, 69_700, 5_000, dt.time(9, 1, 30))
    assert [(odno, f.qty, f.price) for odno, f in out] == [(limit, 5, 69_700)]
    row = ccld(ex, acct, limit)
    assert (row["tot_ccld_qty"], row["tot_ccld_amt"], row["infm_tmd"]) == ("5", str(5 * 69_700), "090130")
    fills = [p["record"].split("^") for kind, p in heard if kind == "notice" and p["record"].split("^")[13] == "2"]
    assert [(f[2], f[9], f[10], f[11]) for f in fills] == [(market, "10", "70100", "090030"),
                                                           (limit, "5", "69700", "090130")]
    assert acct.book.positions() == {SYM: 15}


def test_a_print_fills_at_most_its_volume_and_the_rest_keeps_working():
    ex, acct, _ = exchange_with_account()
    buy = order(ex, acct, Side.BUY, 30)
    first = ex.trade_print(D1, SYM, 70_000, 12, dt.time(9, 0, 30))
    second = ex.trade_print(D1, SYM, 70_200, 100, dt.time(9, 1))
    assert [(f.qty, f.price, f.fill_id) for _, f in first + second] == [(12, 70_000, "cum12"), (18, 70_200, "cum30")]
    row = ccld(ex, acct, buy)
    assert (row["tot_ccld_qty"], row["tot_ccld_amt"]) == ("30", str(12 * 70_000 + 18 * 70_200))
    assert acct.book._orders[acct.orders[buy].paper_id].status is OrderStatus.FILLED


def test_a_sell_pays_the_dated_tax_as_on_the_daily_bar():
    ex, acct, _ = exchange_with_account()
    order(ex, acct, Side.BUY, 10)
    ex.trade_print(D1, SYM, 70_000, None, dt.time(9, 0, 30))
    order(ex, acct, Side.SELL, 10)
    (_, sell), = ex.trade_print(D1, SYM, 71_000, None, dt.time(10, 0))
    rate = krx.sell_tax_rate(dt.date(2024, 3, 7), krx.Market.KOSPI)
    assert sell.tax == krx.sell_tax(710_000, rate) > 0
    assert sell.commission == krx.commission(710_000, CostModel().commission_rate)


def test_session_orders_expire_at_the_close_and_others_still_fill_on_the_daily_bar():
    ex, acct, _ = exchange_with_account()
    missed = order(ex, acct, Side.BUY, 5, limit=69_000)
    ex.trade_print(D1, SYM, 70_000, 5_000, dt.time(9, 0, 30))   # the limit met the session, never reached
    late = order(ex, acct, Side.BUY, 3)                           # placed after the last print
    out = ex.advance(D1, {SYM: (70_000.0, 71_000.0, 68_500.0, 70_500.0, 1_000_000)})
    assert [odno for odno, _ in out] == [late]                    # the daily bar fills the unstreamed order only
    paper = acct.book._orders[acct.orders[missed].paper_id]
    assert paper.status is OrderStatus.EXPIRED and paper.filled_qty == 0
