"""Account and order TRs: cash buy/sell, revise/cancel, orderable amount, balance, daily orders.

These are thin, exact wrappers: they build the documented bodies (upper-case keys, every number
a string) and parse the documented outputs. The no-double-order logic lives in broker.py, which
knows which order numbers are already ours.
"""
from __future__ import annotations

import datetime as dt

from broker.kis.rest import RestClient

BASE = "/uapi/domestic-stock/v1/trading"
ORDER_CASH = BASE + "/order-cash"
RVSECNCL = BASE + "/order-rvsecncl"
PSBL_ORDER = BASE + "/inquire-psbl-order"
BALANCE = BASE + "/inquire-balance"
DAILY_CCLD = BASE + "/inquire-daily-ccld"
BUY_TR, SELL_TR, RVSECNCL_TR = "TTTC0012U", "TTTC0011U", "TTTC0013U"
PSBL_TR, BALANCE_TR = "TTTC8908R", "TTTC8434R"
CCLD_TR, CCLD_OLD_TR = "TTTC0081R", "CTSC9215R"  # within 3 months / older
LIMIT, MARKET = "00", "01"


def upper_keys(d: dict | None) -> dict:
    """Order outputs arrive upper-case in captures and lower-case in the spec: accept both."""
    return {str(k).upper(): v for k, v in (d or {}).items()}


def cash_order(rest: RestClient, side: str, symbol: str, qty: int, price: int | None = None) -> dict:
    """Place a cash order (limit when `price` is given, market otherwise). Returns the upper-cased
    output {KRX_FWDG_ORD_ORGNO, ODNO, ORD_TMD}. Raises KisBusinessError on refusal and
    KisTransportError when the outcome is unknown (never retried here)."""
    if side not in ("buy", "sell"):
        raise ValueError(f"side must be 'buy' or 'sell', got {side!r}")
    if not isinstance(qty, int) or qty <= 0:
        raise ValueError(f"qty must be a positive whole number of shares, got {qty!r}")
    cred = rest.credentials
    body = {"CANO": cred.cano, "ACNT_PRDT_CD": cred.product, "PDNO": symbol,
            "ORD_DVSN": LIMIT if price is not None else MARKET, "ORD_QTY": str(qty),
            "ORD_UNPR": str(int(price)) if price is not None else "0", "EXCG_ID_DVSN_CD": "KRX"}
    if side == "sell":
        body["SLL_TYPE"] = "01"
    tr = rest.env.tr(BUY_TR if side == "buy" else SELL_TR)
    return upper_keys(rest.request("POST", ORDER_CASH, tr, body=body, idempotent=False,
                                   extra_headers=_hash(rest, body)).out("output"))


def revise_cancel(rest: RestClient, orgno: str, odno: str, cancel: bool = True, qty: int = 0,
                  price: int = 0, order_division: str = LIMIT) -> dict:
    """Cancel (or revise) an order. qty 0 = all of the remaining quantity. Revise makes a new ODNO."""
    cred = rest.credentials
    body = {"CANO": cred.cano, "ACNT_PRDT_CD": cred.product, "KRX_FWDG_ORD_ORGNO": orgno or "",
            "ORGN_ODNO": odno, "ORD_DVSN": order_division, "RVSE_CNCL_DVSN_CD": "02" if cancel else "01",
            "ORD_QTY": str(int(qty)), "ORD_UNPR": "0" if cancel else str(int(price)),
            "QTY_ALL_ORD_YN": "Y" if qty == 0 else "N", "EXCG_ID_DVSN_CD": "KRX"}
    return upper_keys(rest.request("POST", RVSECNCL, rest.env.tr(RVSECNCL_TR), body=body, idempotent=False,
                                   extra_headers=_hash(rest, body)).out("output"))


def _hash(rest: RestClient, body: dict) -> dict | None:
    if not rest.env.use_hashkey:
        return None
    return {"hashkey": rest.hashkey(body)}


def orderable(rest: RestClient, symbol: str = "", price: int | None = None, market: bool = True) -> dict:
    """inquire-psbl-order output: ord_psbl_cash, nrcvb_buy_qty, max_buy_qty ... (KIS strings)."""
    cred = rest.credentials
    reply = rest.request("GET", PSBL_ORDER, rest.env.tr(PSBL_TR), params={
        "CANO": cred.cano, "ACNT_PRDT_CD": cred.product, "PDNO": symbol,
        "ORD_UNPR": "" if price is None else str(int(price)), "ORD_DVSN": MARKET if market else LIMIT,
        "CMA_EVLU_AMT_ICLD_YN": "N", "OVRS_ICLD_YN": "N"})
    return reply.out("output") or {}


def balance(rest: RestClient) -> tuple[list[dict], dict]:
    """(holdings rows over all pages, summary object). output2 is a list with one object."""
    cred = rest.credentials
    holdings: list[dict] = []
    summary: dict = {}
    for reply in rest.pages(BALANCE, rest.env.tr(BALANCE_TR), {
            "CANO": cred.cano, "ACNT_PRDT_CD": cred.product, "AFHR_FLPR_YN": "N", "OFL_YN": "",
            "INQR_DVSN": "02", "UNPR_DVSN": "01", "FUND_STTL_ICLD_YN": "N", "FNCG_AMT_AUTO_RDPT_YN": "N",
            "PRCS_DVSN": "00"}):
        holdings.extend(r for r in (reply.out("output1") or []) if r)
        out2 = reply.out("output2")
        if isinstance(out2, list) and out2:
            summary = out2[0]
        elif isinstance(out2, dict) and out2:
            summary = out2
    return holdings, summary


def daily_orders(rest: RestClient, start: dt.date, end: dt.date, filled: str = "00", symbol: str = "",
                 odno: str = "", side: str = "00", older: bool = False) -> tuple[list[dict], dict]:
    """(one row per order over all pages, totals). filled: 00 all, 01 filled, 02 unfilled."""
    cred = rest.credentials
    rows: list[dict] = []
    totals: dict = {}
    tr = rest.env.tr(CCLD_OLD_TR if older else CCLD_TR)
    for reply in rest.pages(DAILY_CCLD, tr, {
            "CANO": cred.cano, "ACNT_PRDT_CD": cred.product, "INQR_STRT_DT": start.strftime("%Y%m%d"),
            "INQR_END_DT": end.strftime("%Y%m%d"), "SLL_BUY_DVSN_CD": side, "PDNO": symbol, "ORD_GNO_BRNO": "",
            "ODNO": odno, "CCLD_DVSN": filled, "INQR_DVSN": "01", "INQR_DVSN_1": "", "INQR_DVSN_3": "00",
            "EXCG_ID_DVSN_CD": "KRX"}):
        rows.extend(r for r in (reply.out("output1") or []) if r and r.get("odno"))
        if isinstance(reply.out("output2"), dict):
            totals = reply.out("output2")
    return rows, totals
