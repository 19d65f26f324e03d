"""Execution notices: KIS adding fields does not break parsing, a short or garbled notice names
what is wrong, and notices reconcile with the REST execution list (REST wins, a missed notice is
recovered, nothing is counted twice)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from broker.kis.reconcile import FillReconciler
from broker.kis.ws import (
    EXTRA,
    NOTICE_FIELDS,
    FillEvent,
    FrameError,
    aes_encrypt,
    fill_event,
    parse_frame,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "kis"


def _keys() -> dict[str, tuple[str, str]]:
    ack = json.loads((FIXTURES / "ws_subscribe_ack_H0STCNI9.json").read_text())
    return {"H0STCNI9": (ack["body"]["output"]["key"], ack["body"]["output"]["iv"])}


def _notice(**over) -> list[str]:
    rec = {f: "" for f in NOTICE_FIELDS}
    rec.update(CUST_ID="hts01", ACNT_NO="5012345601", ODER_NO="0000018452", SELN_BYOV_CLS="02", RCTF_CLS="0",
               ODER_KIND="01", ODER_COND="0", STCK_SHRN_ISCD="005930", CNTG_QTY="10", CNTG_UNPR="87600",
               STCK_CNTG_HOUR="101532", RFUS_YN="0", CNTG_YN="2", ACPT_YN="2", BRNC_NO="06071", ODER_QTY="10",
               ORD_EXG_GB="1", CNTG_ISNM40="삼성전자", ODER_PRC="0")
    rec.update(over)
    return [rec[f] for f in NOTICE_FIELDS]


def _encrypted(fields: list[str], count: int = 1) -> str:
    key, iv = _keys()["H0STCNI9"]
    return f"1|H0STCNI9|{count:03d}|" + aes_encrypt("^".join(fields), key, iv)


def test_notice_with_fields_kis_added_still_parses():
    frame = parse_frame(_encrypted(_notice() + ["NXT", "Y", "20260101"]), _keys())
    rec = frame.records[0]
    assert rec[EXTRA] == ["NXT", "Y", "20260101"] and rec["ODER_PRC"] == "0"
    ev = fill_event(rec)
    assert (ev.order_no, ev.symbol, ev.side, ev.qty, ev.price, ev.time) == ("0000018452", "005930", "buy", 10,
                                                                            87600, "101532")
    # two records of 28 fields in one frame: each keeps its own extras
    two = parse_frame(_encrypted(_notice() + ["a", "b"] + _notice(ODER_NO="0000018453") + ["c", "d"], 2), _keys())
    assert [r["ODER_NO"] for r in two.records] == ["0000018452", "0000018453"]
    assert [r[EXTRA] for r in two.records] == [["a", "b"], ["c", "d"]]
    # the documented width has no extras key at all
    assert EXTRA not in parse_frame(_encrypted(_notice()), _keys()).records[0]


def test_short_notice_names_the_first_missing_field():
    with pytest.raises(FrameError, match=r"H0STCNI9 record has 24 fields, expected 26: field 24 CNTG_ISNM40"):
        parse_frame(_encrypted(_notice()[:24]), _keys())
    with pytest.raises(FrameError, match="not 2 records"):
        parse_frame(_encrypted(_notice() + ["x"], 2), _keys())


@pytest.mark.parametrize(("field", "value", "named"), [
    ("CNTG_QTY", "1O", "CNTG_QTY = '1O' is not a number"),
    ("CNTG_UNPR", "", "CNTG_UNPR = '' is not a number"),
    ("SELN_BYOV_CLS", "03", "SELN_BYOV_CLS = '03'"),
    ("STCK_CNTG_HOUR", "10:15", "STCK_CNTG_HOUR = '10:15' is not HHMMSS"),
    ("ODER_NO", " ", "ODER_NO is empty"),
    ("CNTG_QTY", "-5", "CNTG_QTY = '-5' is negative"),
])
def test_garbled_fill_notice_names_the_field(field, value, named):
    rec = parse_frame(_encrypted(_notice(**{field: value})), _keys()).records[0]
    with pytest.raises(FrameError, match=named):
        fill_event(rec)


def test_cipher_text_that_does_not_decrypt_is_a_frame_error():
    with pytest.raises(FrameError, match="does not decrypt"):
        parse_frame(_encrypted(_notice())[:-8], _keys())


def _ev(order_no: str, qty: int, price: int, time: str, side: str = "buy") -> FillEvent:
    return FillEvent(order_no, "", "005930", side, qty, price, time, "01")


def _row(order_no: str, qty: int, amt: int, side: str = "02") -> dict:
    return {"odno": order_no, "pdno": "005930", "sll_buy_dvsn_cd": side, "tot_ccld_qty": str(qty),
            "tot_ccld_amt": str(amt)}


def test_notices_then_rest_agree_and_nothing_counts_twice():
    r = FillReconciler()
    a, b = r.on_notice(_ev("A", 3, 70_000, "090001")), r.on_notice(_ev("A", 2, 70_100, "090005"))
    assert [(f.fill_id, f.qty, f.price, f.source) for f in (a, b)] == [("ccld3", 3, 70_000, "notice"),
                                                                     ("ccld5", 2, 70_100, "notice")]
    assert r.on_notice(_ev("A", 2, 70_100, "090005")) is None           # the same notice again
    assert r.on_rest([_row("A", 5, 3 * 70_000 + 2 * 70_100)]) == [] and r.discrepancies == []


def test_a_missed_notice_is_recovered_from_rest_and_its_late_notice_adds_nothing():
    r = FillReconciler()
    r.on_notice(_ev("B", 4, 50_000, "091000", "sell"))
    # the notice for the other 6 shares (at 50,100) never came; REST shows all 10
    (rec,) = r.on_rest([_row("B", 10, 4 * 50_000 + 6 * 50_100, side="01")])
    assert (rec.fill_id, rec.qty, rec.price, rec.side, rec.source) == ("ccld10", 6, 50_100, "sell", "rest")
    assert r.on_notice(_ev("B", 6, 50_100, "091200", "sell")) is None    # arrives late: already counted
    assert r.on_rest([_row("B", 10, 4 * 50_000 + 6 * 50_100, side="01")]) == []
    # a REST row for an order with no notice at all is a fill too
    (only,) = r.on_rest([_row("C", 7, 7 * 12_340)])
    assert (only.fill_id, only.qty, only.price) == ("ccld7", 7, 12_340)
    assert r.state() == {"B": (10, 4 * 50_000 + 6 * 50_100), "C": (7, 7 * 12_340)}


def test_rest_wins_on_amounts_and_a_lagging_rest_is_no_negative_fill():
    r = FillReconciler()
    r.on_notice(_ev("D", 5, 10_000, "093000"))
    assert r.on_rest([_row("D", 0, 0)]) == []                               # REST has not caught up yet
    assert r.discrepancies[-1].kind == "rest_behind"
    assert r.on_rest([_row("D", 5, 50_100)]) == []                          # REST's amount differs
    assert r.discrepancies[-1].kind == "amount" and r.state()["D"] == (5, 50_100)
    # after a restart the reported totals carry over: the same REST rows give nothing again, and
    # a new notice of the same order continues from them
    again = FillReconciler(r.state())
    assert again.on_rest([_row("D", 5, 50_100)]) == []
    more = again.on_notice(_ev("D", 2, 10_000, "100000"))
    assert (more.fill_id, more.qty) == ("ccld7", 2)
