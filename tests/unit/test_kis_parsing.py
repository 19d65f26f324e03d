"""Pure parsing and configuration of the KIS client, against the reference fixtures."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from broker.kis import quotes
from broker.kis.config import REAL, VTS, Credentials, LiveNotConfirmed, confirm_live, environment, mask, read_dotenv
from broker.kis.errors import KisConfigError
from broker.kis.orders import upper_keys
from broker.kis.ratelimit import TokenBucket
from broker.kis.rest import RATE_CODES, TOKEN_CODES
from broker.kis.ws import ASK_FIELDS, FrameError, aes_decrypt, aes_encrypt, fill_event, parse_frame

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "kis"
TRADE = ("0|H0STCNT0|001|005930^101532^87600^2^200^0.23^87552.31^87500^88000^87100^87700^87600^35^9876543^"
         "864714154464^21345^23456^2111^104.52^4823101^5041210^1^51.11^46.95^090000^2^100^093412^5^-400^090517^2^"
         "500^20240710^20^N^152340^98765^1234567^987654^0.17^8765432^112.67^0^^87400")
NOTICE = ("1|H0STCNI9|001|XqMBNyVzSopyvW10+u79QeLGTOX4PfO8lSCW4Rq7Aar5fkX4YC3w3tB6XrOV5zMBive7U9q+ulWtioaD3COYBW6Nl"
          "vSzlYzhPDzXHw7jtfB1ZCwC4O7n3uTWlibuWXi7CdrVXZl7TYd5s1wi6qhr6yzcQvgg7iK4AiflNB5DfE0=")
NOTICE_PLAIN = "kisdemo01^5001234501^0000018452^^02^0^00^0^005930^10^87600^101532^0^2^2^00950^10^홍길동^^1^Y^^^^삼성전자^87600"


def load(name):
    return json.loads((FIX / name).read_text(encoding="utf-8"))


def test_every_fixture_is_valid_json():
    files = sorted(FIX.glob("*.json"))
    assert len(files) == 10
    for f in files:
        assert isinstance(load(f.name), dict), f.name


def test_daily_chart_page_parses_into_the_market_layout():
    data = load("daily_itemchartprice_005930_page1.json")
    assert data["rt_cd"] == "0"
    df = quotes.bars_frame("005930", data["output2"])
    assert df.columns == list(quotes.BAR_COLUMNS)
    assert len(df) == 100
    assert df["date"][0] == dt.date(2024, 2, 14) and df["date"][-1] == dt.date(2024, 7, 10)
    newest = data["output2"][0]
    assert df["close"][-1] == float(newest["stck_clpr"]) and df["volume"][-1] == float(newest["acml_vol"])
    assert df["date"].is_sorted()


def test_price_balance_and_order_fixtures():
    price = load("inquire_price_005930.json")["output"]
    assert quotes.num(price["stck_prpr"]) == 87600 and price["stck_mxpr"] == "113600" and price["stck_llam"] == "61200"
    bal = load("inquire_balance_real.json")
    assert [h["pdno"] for h in bal["output1"]] == ["005930", "000660"]
    assert isinstance(bal["output2"], list) and len(bal["output2"]) == 1 and "dnca_tot_amt" in bal["output2"][0]
    assert len(bal["ctx_area_fk100"]) == 100
    ok = load("order_cash_success_real.json")
    out = upper_keys(ok["output"])
    assert ok["rt_cd"] == "0" and out["ODNO"] == "0000184523" and out["KRX_FWDG_ORD_ORGNO"] == "06071"
    assert upper_keys({"odno": "1"}) == {"ODNO": "1"}
    closed = load("order_cash_failure_vts_market_closed.json")
    assert closed["rt_cd"] == "1" and closed["msg_cd"] == "40580000"
    assert load("error_rate_limit_EGW00201.json")["msg_cd"] in RATE_CODES
    assert load("error_token_expired_EGW00123.json")["msg_cd"] in TOKEN_CODES
    tok = load("token_issue.json")
    assert tok["token_type"] == "Bearer" and tok["expires_in"] == 86400
    assert load("token_issue_throttled_EGW00133.json")["error_code"] == "EGW00133"


def test_trade_frame_parses_46_fields():
    frame = parse_frame(TRADE)
    assert frame.tr_id == "H0STCNT0" and not frame.encrypted and len(frame.records) == 1
    rec = frame.records[0]
    assert rec["MKSC_SHRN_ISCD"] == "005930" and rec["STCK_PRPR"] == "87600" and rec["VI_STND_PRC"] == "87400"
    assert rec["BSOP_DATE"] == "20240710" and rec["MRKT_TRTM_CLS_CODE"] == ""


def test_multi_record_batch_is_cut_every_46_fields():
    payload = TRADE.split("|", 3)[3]
    other = payload.replace("005930", "000660", 1)
    frame = parse_frame(f"0|H0STCNT0|003|{payload}^{other}^{payload}")
    assert [r["MKSC_SHRN_ISCD"] for r in frame.records] == ["005930", "000660", "005930"]


def test_order_book_frame_has_59_fields():
    fields = [str(i) for i in range(59)]
    frame = parse_frame("0|H0STASP0|002|" + "^".join(fields + fields))
    assert len(frame.records) == 2 and frame.records[1]["STCK_DEAL_CLS_CODE"] == "58"
    assert frame.records[0]["ASKP1"] == "3" and frame.records[0]["BIDP10"] == "22" and len(ASK_FIELDS) == 59


def test_encrypted_notice_decrypts_to_a_fill():
    ack = load("ws_subscribe_ack_H0STCNI9.json")
    key, iv = ack["body"]["output"]["key"], ack["body"]["output"]["iv"]
    frame = parse_frame(NOTICE, {"H0STCNI9": (key, iv)})
    assert frame.encrypted and "^".join(frame.records[0].values()) == NOTICE_PLAIN
    ev = fill_event(frame.records[0])
    assert (ev.order_no, ev.symbol, ev.side, ev.qty, ev.price, ev.time) == ("0000018452", "005930", "buy", 10, 87600, "101532")
    assert ev.account_tail == "01"
    assert aes_decrypt(aes_encrypt(NOTICE_PLAIN, key, iv), key, iv) == NOTICE_PLAIN
    ack_record = dict(frame.records[0], CNTG_YN="1")
    assert fill_event(ack_record) is None


def test_control_and_malformed_frames():
    assert parse_frame('{"header":{"tr_id":"PINGPONG","datetime":"20240710101540"}}') is None
    with pytest.raises(FrameError):
        parse_frame("0|H0STCNT0|002|" + TRADE.split("|", 3)[3])      # count says 2, payload holds 1
    with pytest.raises(FrameError):
        parse_frame("0|H0STXXX0|001|a^b")
    with pytest.raises(FrameError):
        parse_frame(NOTICE)                                           # no key yet


def test_tr_ids_by_environment():
    assert REAL.tr("TTTC0012U") == "TTTC0012U" and VTS.tr("TTTC0012U") == "VTTC0012U"
    assert VTS.tr("CTSC9215R") == "VTSC9215R" and VTS.tr("FHKST01010100") == "FHKST01010100"
    assert VTS.notice_tr == "H0STCNI9" and REAL.notice_tr == "H0STCNI0"
    assert environment("vts", rate_per_s=2.0).rate_per_s == 2.0 and environment("live") is REAL
    with pytest.raises(KisConfigError):
        environment("paper-ish")
    with pytest.raises(KisConfigError):
        environment("real", not_an_option=1)


def test_credentials_never_show_secrets(tmp_path):
    c = Credentials("PSabcdefghijklmnop", "s3cr3t-" * 10, "12345678-01")
    text = repr(c) + str(c) + str([c])
    for secret in c.secrets():
        assert secret not in text
    assert c.cano == "12345678" and c.product == "01"
    with pytest.raises(KisConfigError, match="whitespace"):
        Credentials("key\n", "secret", "12345678-01")
    with pytest.raises(KisConfigError, match="8 digits"):
        Credentials("key", "secret", "1234")
    env_file = tmp_path / ".env"
    env_file.write_text("# keys\nKIS_APP_KEY=fromfile\nexport KIS_APP_SECRET='sec'\nKIS_ACCOUNT=87654321-01\n")
    c2 = Credentials.from_env({"KIS_APP_KEY": "fromenv"}, dotenv=env_file)
    assert (c2.app_key, c2.app_secret, c2.account) == ("fromenv", "sec", "87654321-01")
    assert read_dotenv(tmp_path / "missing") == {}
    with pytest.raises(KisConfigError, match="KIS_APP_SECRET"):
        Credentials.from_env({"KIS_APP_KEY": "k", "KIS_ACCOUNT": "12345678-01"}, dotenv=None)
    assert mask("12345678-01") == "12***"


def test_live_needs_the_flag_and_the_typed_account():
    c = Credentials("key", "secret", "12345678-01")
    shown = []
    with pytest.raises(LiveNotConfirmed, match="--live"):
        confirm_live(c, live_flag=False, input_fn=lambda p: "12345678-01", out=shown.append)
    with pytest.raises(LiveNotConfirmed, match="does not match"):
        confirm_live(c, live_flag=True, input_fn=lambda p: "12345678-02", out=shown.append)
    confirm_live(c, live_flag=True, input_fn=lambda p: "1234567801", out=shown.append)
    assert all("12345678" not in s for s in shown)


def test_token_bucket_spaces_requests_at_the_configured_rate():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    b = TokenBucket(rate_per_s=4.0, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(10):
        b.acquire()
    # 2 from the burst, then 8 more at 4/s = 2 s of waiting
    assert now[0] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        TokenBucket(0)


# --- the client's readers on KIS-shaped answers (the fixtures), not on the simulator's -------------------
class FixtureRest:
    """Stands in for KisRest: answers each TR with a fixture body, records what was asked."""

    def __init__(self, answers: dict[str, list[dict]], env=VTS):
        from broker.kis.config import Credentials

        self.answers, self.env, self.calls = answers, env, []
        self.credentials = Credentials("PSfixturekey", "fixture-secret", "12345678-01")

    def request(self, method, path, tr_id, *, params=None, body=None, tr_cont="", idempotent=True, extra_headers=None):
        from broker.kis.rest import Reply

        self.calls.append((method, path, tr_id, params or body))
        queue = self.answers[tr_id]
        data = queue.pop(0) if len(queue) > 1 else queue[0]
        return Reply(data=data, tr_cont="D", status=200)

    def pages(self, path, tr_id, params, max_pages=100, pause_s=0.0):
        yield self.request("GET", path, tr_id, params=params)


def test_client_reads_the_daily_chart_fixture_page_by_page():
    page = load("daily_itemchartprice_005930_page1.json")
    rest = FixtureRest({"FHKST03010100": [page, dict(page, output2=[{}])]})   # KIS pads an empty answer with {}
    df = quotes.daily_bars(rest, "005930", dt.date(2024, 1, 1), dt.date(2024, 7, 10), with_name=True)
    assert len(df) == 100 and set(df["name"]) == {"삼성전자"}
    assert [c[3]["FID_INPUT_DATE_2"] for c in rest.calls] == ["20240710", "20240213"]   # fixture README's next page
    row = page["output2"][0]
    assert df.filter(pl.col("date") == dt.date(2024, 7, 10)).row(0)[2:7] == tuple(
        float(row[k]) for k in ("stck_oprc", "stck_hgpr", "stck_lwpr", "stck_clpr", "acml_vol"))


def test_client_reads_the_price_balance_and_order_fixtures():
    from broker.kis import orders

    price = load("inquire_price_005930.json")
    bal = load("inquire_balance_real.json")
    ok = load("order_cash_success_real.json")
    lower = {"rt_cd": "0", "msg_cd": "APBK0013", "msg1": "", "output": {k.lower(): v for k, v in ok["output"].items()}}
    rest = FixtureRest({"FHKST01010100": [price], "TTTC8434R": [bal], "TTTC0012U": [ok], "TTTC0013U": [lower]},
                       env=REAL)
    out = quotes.current_price(rest, "005930")
    assert len(out) == 82 and quotes.num(out["stck_prpr"]) - quotes.num(out["stck_sdpr"]) == quotes.num(out["prdy_vrss"])
    holdings, summary = orders.balance(rest)
    assert [(h["pdno"], int(h["hldg_qty"])) for h in holdings] == [("005930", 25), ("000660", 3)]
    assert int(summary["tot_evlu_amt"]) == int(summary["scts_evlu_amt"]) + int(summary["prvs_rcdl_excc_amt"])
    assert orders.cash_order(rest, "buy", "005930", 10, 87600) == ok["output"]
    assert orders.revise_cancel(rest, "06071", "0000184523") == ok["output"]     # lower-case spec spelling too
    sent = rest.calls[2][3]
    assert sent["ORD_QTY"] == "10" and sent["ORD_UNPR"] == "87600" and all(isinstance(v, str) for v in sent.values())
