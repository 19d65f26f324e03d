"""The simulator's exchange: accounts, tokens, quotas, replayed prices and the order book.

The order book of each account IS a PaperBroker: orders are checked and matched by the same
code, under market/accounting.execute (the project's one accounting). This module only adds what
KIS has and the paper broker does not: order numbers, order dates, the protocol's fields.

Cash rule (one rule for paper and sim, so both give the same fills): a buy is NOT refused for
cash at entry (KIS reserves a market buy at the upper-limit price; the paper broker does not);
at execution `execute` cuts a buy to the shares the cash affords. Sells are refused at entry
beyond the shares free to sell, as in the paper broker.
"""
from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import polars as pl

from broker.base import Fill, OrderRequest, OrderStatus, OrderType, Side
from broker.paper import PaperBroker
from market import krx
from market.accounting import CostModel
from market.calendar import SEOUL, TradingCalendar


@dataclass
class SimConfig:
    virtual: bool = True              # VTS TR ids (V prefix), VTS page sizes and codes
    rate_per_s: float = 50.0          # REST quota per app key (the real ones: 18 real / 1 VTS)
    burst: int = 5
    token_throttle_s: float = 1.0     # tokenP twice inside this window → 403 EGW00133 (KIS: ~60 s)
    token_ttl_s: float = 86400.0
    same_token_window_s: float = 6 * 3600.0   # tokenP inside 6 h returns the same token
    balance_page: int | None = None   # rows per page; None = 20 VTS / 50 real
    ccld_page: int | None = None      # None = 15 VTS / 100 real
    ping_interval_s: float = 30.0     # WebSocket PINGPONG period
    ping_timeout_s: float = 60.0      # close a session that did not echo within this time
    subscription_cap: int = 41
    costs: CostModel = field(default_factory=CostModel)
    calendar: TradingCalendar | None = None

    def page(self, kind: str) -> int:
        if kind == "balance":
            return self.balance_page or (20 if self.virtual else 50)
        return self.ccld_page or (15 if self.virtual else 100)


@dataclass
class SimOrder:
    odno: str
    paper_id: str
    ord_dt: str
    ord_tmd: str
    orgn_odno: str = ""
    filled_amt: int = 0
    cancelled: bool = False


@dataclass
class Account:
    app_key: str
    app_secret: str
    cano: str
    product: str
    hts_id: str
    book: PaperBroker
    orders: dict[str, SimOrder] = field(default_factory=dict)     # by ODNO, in order of entry
    by_paper: dict[str, str] = field(default_factory=dict)        # paper id → ODNO
    cost_basis: dict[str, int] = field(default_factory=dict)      # symbol → purchase amount held


class Reject(Exception):
    """A business refusal: HTTP 200, rt_cd 1."""

    def __init__(self, msg_cd: str, msg1: str):
        super().__init__(msg1)
        self.msg_cd, self.msg1 = msg_cd, msg1


class GatewayError(Exception):
    """A gateway error (EGW…): HTTP status + rt_cd/msg_cd/msg1 body, or an OAuth error body."""

    def __init__(self, status: int, msg_cd: str, msg1: str, oauth: bool = False):
        super().__init__(msg1)
        self.status, self.msg_cd, self.msg1, self.oauth = status, msg_cd, msg1, oauth

    def body(self) -> dict:
        if self.oauth:
            return {"error_description": self.msg1, "error_code": self.msg_cd}
        return {"rt_cd": "1", "msg_cd": self.msg_cd, "msg1": self.msg1}


REJECT_CODES = (   # paper-broker refusal → (msg_cd, KIS text). SIMR codes are the simulator's own.
    ("unknown symbol", "SIMR0003", "종목코드 오류입니다."),
    ("off the tick grid", "SIMR0001", "주식주문호가단위 오류입니다."),
    ("outside the daily price limits", "SIMR0002", "주문가격이 상하한가 범위를 벗어났습니다."),
    ("exceeds the", "SIMR0004", "주문가능수량을 초과 했습니다."),
)


def fmt(x) -> str:
    """A price/amount as KIS sends it: an integer string, or the exact float for adjusted data."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    x = float(x)
    return str(int(x)) if x.is_integer() else repr(x)


class Exchange:
    def __init__(self, config: SimConfig | None = None):
        self.config = config or SimConfig()
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, tuple[str, float, float]] = {}    # token → (app_key, issued_at, expires_at)
        self.last_issue: dict[str, float] = {}
        self.approvals: dict[str, str] = {}                       # approval key → app key
        self.buckets: dict[str, list[float]] = {}                 # app key → [tokens, last]
        self.history: dict[str, list[tuple]] = {}                 # symbol → [(date, o, h, l, c, v)] oldest first
        self.names: dict[str, str] = {}
        self.today: dt.date | None = None   # the last bar traded
        self.session_day: Callable[[], dt.date] | None = None  # set by a virtual session clock
        self.market_open = True
        self.counts = {"tokenP": 0, "requests": 0, "orders": 0, "rate_limited": 0}
        self._odno = itertools.count(1)
        self.listeners: list[Callable[[str, dict], None]] = []    # ("notice"|"bar", payload) → ws front

    # --- setup --------------------------------------------------------------------------
    def add_account(self, cash: int, app_key: str | None = None, app_secret: str | None = None,
                    account: str | None = None, hts_id: str | None = None) -> dict:
        """A new account with generated dummy credentials (returned; never logged)."""
        app_key = app_key or "PS" + secrets.token_hex(17)
        app_secret = app_secret or secrets.token_urlsafe(135)[:180]
        account = account or f"5{secrets.randbelow(10 ** 7):07d}-01"
        hts_id = hts_id or "sim" + secrets.token_hex(4)
        cano, product = account.replace("-", "")[:8], account.replace("-", "")[8:]
        with self.lock:
            acct = self.accounts[app_key] = Account(app_key, app_secret, cano, product, hts_id,
                                                    PaperBroker(cash, self.config.costs, self.config.calendar))
            self._seed(acct)
        return {"KIS_APP_KEY": app_key, "KIS_APP_SECRET": app_secret, "KIS_ACCOUNT": f"{cano}-{product}",
                "KIS_HTS_ID": hts_id}

    def load_history(self, frame: pl.DataFrame) -> None:
        """Preload bars as already traded (for quotes and `data fetch`); 'today' = the last date."""
        with self.lock:
            df = frame.sort(["symbol", "date"])
            for sym, part in df.group_by("symbol", maintain_order=True):
                sym = sym[0] if isinstance(sym, tuple) else sym
                dates = [d.date() if isinstance(d, dt.datetime) else d for d in part["date"].to_list()]
                vols = part["volume"].to_list() if "volume" in part.columns else [None] * len(part)
                self.history.setdefault(str(sym), []).extend(
                    zip(dates, part["open"].to_list(), part["high"].to_list(), part["low"].to_list(),
                        part["close"].to_list(), vols))
                if "name" in part.columns:
                    self.names[str(sym)] = str(part["name"][0])
            last = df["date"].max()
            last = last.date() if isinstance(last, dt.datetime) else last
            if self.today is None or last > self.today:
                self.today = last
            for acct in self.accounts.values():
                self._seed(acct)

    def _seed(self, acct: Account) -> None:
        """A book learns the last closes of the history (its order checks and price limits need them)."""
        if self.today is None:
            return
        acct.book._last_close.update({s: h[-1][4] for s, h in self.history.items() if h})
        acct.book._last_date = self.today

    # --- OAuth ----------------------------------------------------------------------------
    def issue_token(self, body: dict) -> dict:
        acct = self._oauth_account(body.get("appkey"), body.get("appsecret"))
        now = time.time()
        with self.lock:
            if now - self.last_issue.get(acct.app_key, -1e18) < self.config.token_throttle_s:
                raise GatewayError(403, "EGW00133", "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)", oauth=True)
            self.last_issue[acct.app_key] = now
            self.counts["tokenP"] += 1
            current = [(t, v) for t, v in self.tokens.items() if v[0] == acct.app_key and v[2] > now]
            if current and now - current[-1][1][1] < self.config.same_token_window_s:
                token, (_, issued, expires) = current[-1]
            else:
                token, expires = _jwt_like(), now + self.config.token_ttl_s
                self.tokens[token] = (acct.app_key, now, expires)
        kst = dt.datetime.fromtimestamp(expires, SEOUL).strftime("%Y-%m-%d %H:%M:%S")
        return {"access_token": token, "access_token_token_expired": kst, "token_type": "Bearer",
                "expires_in": int(round(expires - now))}

    def revoke(self, body: dict) -> dict:
        acct = self._oauth_account(body.get("appkey"), body.get("appsecret"))
        with self.lock:
            owner = self.tokens.get(body.get("token", ""))
            if owner and owner[0] == acct.app_key:
                del self.tokens[body["token"]]
        return {"code": 200, "message": "접근토큰 폐기에 성공하였습니다"}

    def approval(self, body: dict) -> dict:
        acct = self._oauth_account(body.get("appkey"), body.get("secretkey"))
        key = f"{secrets.token_hex(4)}-{secrets.token_hex(2)}-{secrets.token_hex(2)}-{secrets.token_hex(2)}-{secrets.token_hex(6)}"
        with self.lock:
            self.approvals[key] = acct.app_key
        return {"approval_key": key}

    def expire_token(self, token: str) -> None:
        with self.lock:
            if token in self.tokens:
                app, issued, _ = self.tokens[token]
                self.tokens[token] = (app, issued, 0.0)

    def _oauth_account(self, app_key, app_secret) -> Account:
        acct = self.accounts.get(app_key or "")
        if acct is None:
            raise GatewayError(403, "EGW00103", "유효하지 않은 AppKey입니다.", oauth=True)
        if not secrets.compare_digest(acct.app_secret, app_secret or ""):
            raise GatewayError(403, "EGW00105", "유효하지 않은 AppSecret입니다.", oauth=True)
        return acct

    # --- every REST call ----------------------------------------------------------------
    def authenticate(self, headers: dict) -> Account:
        acct = self.accounts.get(headers.get("appkey", ""))
        if acct is None:
            raise GatewayError(500, "EGW00103", "유효하지 않은 AppKey입니다.")
        if not secrets.compare_digest(acct.app_secret, headers.get("appsecret", "")):
            raise GatewayError(500, "EGW00105", "유효하지 않은 AppSecret입니다.")
        auth = headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        with self.lock:
            owner = self.tokens.get(token)
            if owner is None or owner[0] != acct.app_key:
                raise GatewayError(500, "EGW00121", "유효하지 않은 token 입니다.")
            if owner[2] <= time.time():
                raise GatewayError(500, "EGW00123", "기간이 만료된 token 입니다.")
            self.counts["requests"] += 1
        return acct

    def take_quota(self, app_key: str) -> None:
        now = time.monotonic()
        with self.lock:
            b = self.buckets.setdefault(app_key, [float(self.config.burst), now])
            b[0] = min(self.config.burst, b[0] + (now - b[1]) * self.config.rate_per_s)
            b[1] = now
            if b[0] < 1.0:
                self.counts["rate_limited"] += 1
                raise GatewayError(500, "EGW00201", "초당 거래건수를 초과하였습니다.")
            b[0] -= 1.0

    def token_of(self, headers: dict) -> str:
        auth = headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else ""

    # --- quotes ---------------------------------------------------------------------------
    def _bars(self, symbol: str) -> list[tuple]:
        bars = self.history.get(symbol)
        if not bars:
            raise Reject("SIMR0003", "종목코드 오류입니다.")
        return bars

    def price(self, q: dict) -> dict:
        sym = q.get("FID_INPUT_ISCD", "")
        with self.lock:
            bars = self._bars(sym)
            d, o, h, lo, c, v = bars[-1]
            prev = bars[-2][4] if len(bars) > 1 else o
        on = d
        lower, upper = krx.price_limits(prev, on)
        change = c - prev
        sign = "2" if change > 0 else "5" if change < 0 else "3"
        return {"output": {
            "stck_prpr": fmt(c), "prdy_vrss": fmt(change), "prdy_vrss_sign": sign,
            "prdy_ctrt": f"{(change / prev * 100 if prev else 0):.2f}", "stck_oprc": fmt(o), "stck_hgpr": fmt(h),
            "stck_lwpr": fmt(lo), "acml_vol": fmt(v) or "0", "stck_sdpr": fmt(prev), "stck_mxpr": str(int(upper)),
            "stck_llam": str(int(lower)), "aspr_unit": str(krx.tick_size(c, on)), "iscd_stat_cls_code": "55",
            "temp_stop_yn": "N", "hts_kor_isnm": self.names.get(sym, "")}}

    def daily_chart(self, q: dict) -> dict:
        sym = q.get("FID_INPUT_ISCD", "")
        start = _ymd(q.get("FID_INPUT_DATE_1", ""), "FID_INPUT_DATE_1")
        end = _ymd(q.get("FID_INPUT_DATE_2", ""), "FID_INPUT_DATE_2")
        if (q.get("FID_PERIOD_DIV_CODE") or "D") != "D":
            raise Reject("SIMR0005", "시뮬레이터는 일봉(D)만 제공합니다.")
        with self.lock:
            bars = self._bars(sym)
            rows = [b for b in bars if start <= b[0] <= end][-100:][::-1]
            last = bars[-1]
        out2 = [{"stck_bsop_date": d.strftime("%Y%m%d"), "stck_clpr": fmt(c), "stck_oprc": fmt(o),
                 "stck_hgpr": fmt(h), "stck_lwpr": fmt(lo), "acml_vol": fmt(v), "acml_tr_pbmn": "",
                 "flng_cls_code": "00", "prtt_rate": "0.00", "mod_yn": "N", "prdy_vrss_sign": "3", "prdy_vrss": "0",
                 "revl_issu_reas": ""} for d, o, h, lo, c, v in rows]
        return {"output1": {"stck_shrn_iscd": sym, "stck_prpr": fmt(last[4]), "hts_kor_isnm": self.names.get(sym, "")},
                "output2": out2}

    def minute_chart(self, q: dict) -> dict:
        """Synthetic one-minute bars of the current day's bar (open → high → low → close path),
        whose aggregate is exactly that daily bar."""
        sym = q.get("FID_INPUT_ISCD", "")
        until = q.get("FID_INPUT_HOUR_1", "153000") or "153000"
        with self.lock:
            d, o, h, lo, c, v = self._bars(sym)[-1]
        minutes = _minute_path(o, h, lo, c, v)
        rows = [m for m in minutes if m[0] <= until][-30:][::-1]
        out2 = [{"stck_bsop_date": d.strftime("%Y%m%d"), "stck_cntg_hour": t, "stck_prpr": fmt(cl),
                 "stck_oprc": fmt(op), "stck_hgpr": fmt(hi), "stck_lwpr": fmt(lw), "cntg_vol": str(vol),
                 "acml_tr_pbmn": ""} for t, op, hi, lw, cl, vol in rows]
        return {"output1": {"stck_prpr": fmt(c), "hts_kor_isnm": self.names.get(sym, "")}, "output2": out2}

    # --- orders ---------------------------------------------------------------------------
    def _check_account(self, acct: Account, q: dict) -> None:
        if q.get("CANO") != acct.cano or q.get("ACNT_PRDT_CD") != acct.product:
            raise Reject("SIMR0006", "계좌번호가 appkey와 일치하지 않습니다.")

    def order_cash(self, acct: Account, body: dict, side: Side) -> dict:
        self._check_account(acct, body)
        if not self.market_open:
            raise Reject("40580000", "모의투자 장종료 입니다.") if self.config.virtual else \
                Reject("APBK0918", "장운영시간이 아닙니다.(주문불가)")
        try:
            qty = int(body.get("ORD_QTY", ""))
            price = int(body.get("ORD_UNPR", "0") or "0")
        except ValueError:
            raise Reject("SIMR0007", "주문수량/단가는 숫자 문자열이어야 합니다.") from None
        dvsn = body.get("ORD_DVSN", "")
        if dvsn not in ("00", "01"):
            raise Reject("SIMR0008", f"시뮬레이터가 지원하지 않는 주문구분입니다: {dvsn}")
        if self.config.virtual and body.get("EXCG_ID_DVSN_CD", "KRX") not in ("", "KRX"):
            raise Reject("SIMR0009", "모의투자는 KRX만 가능합니다.")
        if qty <= 0 or (dvsn == "00" and price <= 0):
            raise Reject("SIMR0007", "주문수량/단가 오류입니다.")
        with self.lock:
            cid = f"sim-{next(self._odno)}"
            req = OrderRequest(cid, body.get("PDNO", ""), side, qty,
                               OrderType.LIMIT if dvsn == "00" else OrderType.MARKET, price if dvsn == "00" else None)
            order = acct.book.submit(req)
            if order.status is OrderStatus.REJECTED:
                for key, code, text in REJECT_CODES:
                    if key in order.reason:
                        raise Reject(code, f"{text} ({order.reason})")
                raise Reject("SIMR0000", order.reason)
            odno = f"{int(cid[4:]):010d}"
            tmd = dt.datetime.now(SEOUL).strftime("%H%M%S")
            acct.orders[odno] = SimOrder(odno, order.broker_order_id, self._day_str(), tmd)
            acct.by_paper[order.broker_order_id] = odno
            self.counts["orders"] += 1
        self._notify("notice", self._notice(acct, odno, "ack"))
        return {"output": {"KRX_FWDG_ORD_ORGNO": self._orgno(), "ODNO": odno, "ORD_TMD": tmd}}

    def rvsecncl(self, acct: Account, body: dict) -> dict:
        self._check_account(acct, body)
        odno = body.get("ORGN_ODNO", "")
        with self.lock:
            so = acct.orders.get(odno)
            if so is None:
                raise Reject("SIMR0010", "원주문번호가 존재하지 않습니다.")
            order = acct.book._orders[so.paper_id]
            if order.status is not OrderStatus.OPEN:
                raise Reject("40330000" if self.config.virtual else "APBK0344", "(모의투자) 정정/취소할 수량이 없습니다.")
            if body.get("RVSE_CNCL_DVSN_CD") == "02":
                acct.book.cancel(so.paper_id)
                so.cancelled = True
                self._notify("notice", self._notice(acct, odno, "cancel"))
                new = f"{next(self._odno):010d}"
                acct.orders[new] = SimOrder(new, "", self._day_str(), dt.datetime.now(SEOUL).strftime("%H%M%S"),
                                            orgn_odno=odno, cancelled=True)
                result = new
            elif body.get("RVSE_CNCL_DVSN_CD") == "01":
                qty = int(body.get("ORD_QTY", "0") or 0) if body.get("QTY_ALL_ORD_YN") != "Y" else order.request.qty
                price = int(body.get("ORD_UNPR", "0") or 0)
                dvsn = body.get("ORD_DVSN", "00")
                if qty > order.request.qty:
                    raise Reject("SIMR0011", "정정수량이 잔량을 초과합니다.")
                acct.book.cancel(so.paper_id)
                so.cancelled = True
                self._notify("notice", self._notice(acct, odno, "cancel"))
                out = self.order_cash(acct, {"CANO": acct.cano, "ACNT_PRDT_CD": acct.product,
                                             "PDNO": order.request.symbol, "ORD_DVSN": dvsn, "ORD_QTY": str(qty),
                                             "ORD_UNPR": str(price)}, order.request.side)
                result = out["output"]["ODNO"]
                acct.orders[result].orgn_odno = odno
            else:
                raise Reject("SIMR0012", "정정취소구분코드 오류입니다.")
        return {"output": {"KRX_FWDG_ORD_ORGNO": self._orgno(), "ODNO": result,
                           "ORD_TMD": dt.datetime.now(SEOUL).strftime("%H%M%S")}}

    def psbl_order(self, acct: Account, q: dict) -> dict:
        self._check_account(acct, q)
        with self.lock:
            cash = acct.book.cash()
            sym = q.get("PDNO", "")
            price = int(q.get("ORD_UNPR") or 0)
            if sym and q.get("ORD_DVSN") == "01" or sym and not price:
                last = acct.book.last_close(sym)
                if last is None:
                    raise Reject("SIMR0003", "종목코드 오류입니다.")
                price = int(krx.price_limits(last, self.today or dt.date.today())[1])   # KIS: market buy at upper limit
        rate = self.config.costs.commission_rate
        qty = 0
        if price:
            qty = int(cash // (price * (1 + rate)))
            while qty > 0 and qty * price + krx.commission(qty * price, rate) > cash:
                qty -= 1
        return {"output": {"ord_psbl_cash": str(cash), "ord_psbl_sbst": "0", "ruse_psbl_amt": "0",
                           "psbl_qty_calc_unpr": str(price), "nrcvb_buy_amt": str(qty * price), "nrcvb_buy_qty": str(qty),
                           "max_buy_amt": str(qty * price), "max_buy_qty": str(qty), "cma_evlu_amt": "0"}}

    def balance_rows(self, acct: Account) -> tuple[list[dict], dict]:
        with self.lock:
            rows = []
            total = 0.0
            for sym, q in sorted(acct.book.positions().items()):
                last = acct.book.last_close(sym) or 0.0
                pchs = acct.cost_basis.get(sym, 0)
                evlu = int(round(q * last))
                total += evlu
                rows.append({"pdno": sym, "prdt_name": self.names.get(sym, ""), "trad_dvsn_name": "현금",
                             "hldg_qty": str(q), "ord_psbl_qty": str(q), "pchs_avg_pric": f"{pchs / q:.4f}",
                             "pchs_amt": str(pchs), "prpr": fmt(last), "evlu_amt": str(evlu),
                             "evlu_pfls_amt": str(evlu - pchs), "evlu_pfls_rt": f"{((evlu - pchs) / pchs * 100) if pchs else 0:.2f}"})
            cash = acct.book.cash()
            summary = {"dnca_tot_amt": str(cash), "nxdy_excc_amt": str(cash), "prvs_rcdl_excc_amt": str(cash),
                       "scts_evlu_amt": str(int(total)), "tot_evlu_amt": str(int(total) + cash),
                       "pchs_amt_smtl_amt": str(sum(acct.cost_basis.values())), "evlu_amt_smtl_amt": str(int(total))}
        return rows, summary

    def ccld_rows(self, acct: Account, q: dict) -> list[dict]:
        start = _ymd(q.get("INQR_STRT_DT", ""), "INQR_STRT_DT").strftime("%Y%m%d")
        end = _ymd(q.get("INQR_END_DT", ""), "INQR_END_DT").strftime("%Y%m%d")
        want_odno, want_sym = q.get("ODNO", ""), q.get("PDNO", "")
        side_filter, ccld = q.get("SLL_BUY_DVSN_CD", "00") or "00", q.get("CCLD_DVSN", "00") or "00"
        rows = []
        with self.lock:
            for so in acct.orders.values():
                if not start <= so.ord_dt <= end or (want_odno and so.odno != want_odno):
                    continue
                if so.paper_id:
                    o = acct.book._orders[so.paper_id]
                    req, filled = o.request, o.filled_qty
                    remaining = req.qty - filled if o.status is OrderStatus.OPEN else 0
                    cancelled = o.status is OrderStatus.CANCELLED
                    cncl_qty = req.qty - filled if cancelled else 0
                else:   # a cancel order: it points at the original
                    orig = acct.book._orders[acct.orders[so.orgn_odno].paper_id]
                    req, filled, remaining, cancelled = orig.request, 0, 0, True
                    cncl_qty = orig.request.qty - orig.filled_qty
                sbc = "01" if req.side is Side.SELL else "02"
                if (want_sym and req.symbol != want_sym) or (side_filter != "00" and side_filter != sbc):
                    continue
                if (ccld == "01" and not filled) or (ccld == "02" and not remaining):
                    continue
                limit = req.order_type is OrderType.LIMIT
                rows.append({
                    "ord_dt": so.ord_dt, "ord_gno_brno": self._orgno(), "odno": so.odno, "orgn_odno": so.orgn_odno,
                    "ord_dvsn_name": "지정가" if limit else "시장가", "sll_buy_dvsn_cd": sbc,
                    "sll_buy_dvsn_cd_name": "매도" if sbc == "01" else "매수", "pdno": req.symbol,
                    "prdt_name": self.names.get(req.symbol, ""), "ord_qty": str(req.qty if so.paper_id else cncl_qty),
                    "ord_unpr": str(req.limit_price or 0), "ord_tmd": so.ord_tmd, "tot_ccld_qty": str(filled),
                    "avg_prvs": str(so.filled_amt // filled) if filled else "0", "cncl_yn": "Y" if cancelled else "N",
                    "tot_ccld_amt": str(so.filled_amt), "ord_dvsn_cd": "00" if limit else "01",
                    "cncl_cfrm_qty": str(cncl_qty), "rmn_qty": str(remaining), "rjct_qty": "0",
                    "excg_id_dvsn_Cd": "KRX", "prdt_type_cd": "300"})
        return rows

    # --- time moves -------------------------------------------------------------------------
    def advance(self, day: dt.date | None = None, bars: dict | None = None) -> list[tuple[str, Fill]]:
        """Trade bar `day` ({symbol: (open, high, low, close[, volume])}). Returns (ODNO, Fill) pairs."""
        if day is None or bars is None:
            raise ValueError("advance needs a day and its bars")
        with self.lock:
            if self.today is not None and day <= self.today:
                raise ValueError(f"bars must arrive in date order: {day} after {self.today}")
            out: list[tuple[str, Fill]] = []
            notices: list[dict] = []
            for acct in self.accounts.values():
                held = dict(acct.book.positions())
                fills = acct.book.on_bar(day, {s: tuple(b[:4]) for s, b in bars.items()})
                # cost basis for the balance TR: sells at the average cost first, then buys
                for f in sorted(fills, key=lambda f: f.side is Side.BUY):
                    basis = acct.cost_basis.get(f.symbol, 0)
                    if f.side is Side.SELL:
                        q0 = held.get(f.symbol, 0)
                        acct.cost_basis[f.symbol] = basis - (basis * f.qty // q0 if q0 else basis)
                        held[f.symbol] = q0 - f.qty
                    else:
                        acct.cost_basis[f.symbol] = basis + f.qty * f.price
                        held[f.symbol] = held.get(f.symbol, 0) + f.qty
                for sym in [s for s in acct.cost_basis if not held.get(s)]:
                    del acct.cost_basis[sym]
                for f in fills:
                    odno = acct.by_paper[f.broker_order_id]
                    acct.orders[odno].filled_amt += f.qty * f.price
                    out.append((odno, f))
                    notices.append(self._notice(acct, odno, "fill", f.qty, f.price))
            for sym, b in bars.items():
                o, h, lo, c = (float(x) for x in b[:4])
                if any(math.isnan(x) for x in (o, h, lo, c)):
                    continue
                v = float(b[4]) if len(b) > 4 and b[4] is not None else None
                self.history.setdefault(sym, []).append((day, o, h, lo, c, v))
            self.today = day
        for n in notices:          # after the lock is released: the WebSocket front sends them
            self._notify("notice", n)
        self._notify("bar", {"day": day, "bars": bars})
        return out

    # --- helpers ----------------------------------------------------------------------------
    def _day_str(self) -> str:
        """The order date: the virtual session's day, else the last traded bar's (replay venue)."""
        day = self.session_day() if self.session_day else self.today
        return (day or dt.datetime.now(SEOUL).date()).strftime("%Y%m%d")

    def _orgno(self) -> str:
        return "00950" if self.config.virtual else "06071"

    def _notice(self, acct: Account, odno: str, kind: str, qty: int = 0, price: int = 0) -> dict:
        """An H0STCNI0/9 record (26 fields, KIS_API.md §5.6) for an order event: ack, cancel or fill."""
        so = acct.orders[odno]
        req = acct.book._orders[so.paper_id].request
        fill = kind == "fill"
        fields = [acct.hts_id, acct.cano + acct.product, so.odno, so.orgn_odno, "01" if req.side is Side.SELL else "02",
                  "2" if kind == "cancel" else "0", "00" if req.limit_price else "01", "0", req.symbol,
                  str(qty if fill else req.qty), str(price if fill else (req.limit_price or 0)),
                  "090000" if fill else dt.datetime.now(SEOUL).strftime("%H%M%S"), "0", "2" if fill else "1", "2",
                  self._orgno(), str(req.qty), "SIM", "", "1", "N", "", "", "", self.names.get(req.symbol, ""),
                  str(req.limit_price or 0)]
        return {"app_key": acct.app_key, "hts_id": acct.hts_id, "record": "^".join(fields)}

    def _notify(self, kind: str, payload: dict) -> None:
        for fn in list(self.listeners):
            try:
                fn(kind, payload)
            except Exception:
                pass


def _ymd(value: str, name: str) -> dt.date:
    try:
        return dt.datetime.strptime(value, "%Y%m%d").date()
    except (TypeError, ValueError):
        raise Reject("SIMR0013", f"{name} 형식 오류입니다 (YYYYMMDD): {value!r}") from None


def _jwt_like() -> str:
    def b64(d: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).decode().rstrip("=")
    return ".".join((b64({"typ": "JWT", "alg": "HS512"}), b64({"sub": "token", "jti": secrets.token_hex(16)}),
                     secrets.token_urlsafe(64)))


def _minute_path(o, h, lo, c, v) -> list[tuple]:
    """390 one-minute bars 09:00–15:29 visiting open → high → low → close (linear legs)."""
    n = 390
    legs = [(0, o), (n // 3, h), (2 * n // 3, lo), (n, c)]
    pts = []
    for (i0, p0), (i1, p1) in zip(legs, legs[1:]):
        for i in range(i0, i1):
            pts.append(p0 + (p1 - p0) * (i - i0) / (i1 - i0))
    pts.append(c)
    vol = int(v or 0)
    per = [vol // n + (1 if k < vol % n else 0) for k in range(n)]
    out = []
    for k in range(n):
        t = dt.datetime(2000, 1, 1, 9, 0) + dt.timedelta(minutes=k)
        a, b = pts[k], pts[k + 1]
        hi, lw = max(a, b), min(a, b)
        if k == n // 3 - 1 or k == n // 3:
            hi = max(hi, h)
        if k == 2 * n // 3 - 1 or k == 2 * n // 3:
            lw = min(lw, lo)
        out.append((t.strftime("%H%M%S"), round(a, 2), round(hi, 2), round(lw, 2), round(b, 2), per[k]))
    return out
