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
import bisect
import datetime as dt
import itertools
import json
import math
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import polars as pl

from broker.base import Fill, OrderRequest, OrderStatus, OrderType, Side
from broker.paper import PaperBroker
from broker.sim.schema import (
    BALANCE_ROW,
    BALANCE_SUMMARY,
    CCLD_ROW,
    CCLD_TOTALS,
    DAILY_ROW,
    DAILY_SNAPSHOT,
    LOAN_RATIO_ODD,
    MINUTE_ROW,
    MINUTE_SNAPSHOT,
    PRICE,
    PSBL_ORDER,
    RVSECNCL_ROW,
    dec,
    pct,
    shaped,
    sign,
    won,
)
from market import krx
from market.accounting import CostModel
from market.calendar import MARKET_CLOSE, SEOUL, TradingCalendar

FILL_TIME = "090000"   # without a session clock bars trade as one uncrossing; notices and ccld rows carry this time
# Per-environment limits (KIS_API.md §6.1, notice of 2026-04-20): REST 18 calls/s real, 1/s VTS, per
# app key, counted over one second (a burst of up to that many calls inside a second is accepted).
REST_RATE = {"real": 18.0, "vts": 1.0}
ARRIVALS_KEPT = 100_000
FILL_TIME = "090000"   # bars trade as one uncrossing; notices and ccld rows carry this time
                       # (a print of the intraday session: its own time)


@dataclass
class SimConfig:
    virtual: bool = True              # VTS TR ids (V prefix), VTS page sizes, codes and limits
    rate_per_s: float | None = None   # REST quota per app key; None = KIS's: 18 real / 1 VTS
    burst: int | None = None          # calls accepted at once; None = one second's quota (18 real / 1 VTS)
    token_throttle_s: float = 60.0    # tokenP twice inside this window → 403 EGW00133 ("1분당 1회")
    token_ttl_s: float = 86400.0
    same_token_window_s: float = 6 * 3600.0   # tokenP inside 6 h returns the same token
    balance_page: int | None = None   # rows per page; None = 20 VTS / 50 real
    ccld_page: int | None = None      # None = 15 VTS / 100 real
    rvsecncl_page: int = 50           # inquire-psbl-rvsecncl rows per page (real only)
    ping_interval_s: float = 30.0     # WebSocket PINGPONG period
    ping_timeout_s: float = 60.0      # close a session that answered neither by text echo nor by pong frame
    subscription_cap: int = 40        # registrations per WebSocket session (KIS_API.md §9.5: 41 notice / 40 sample)
    # fields appended to every execution notice after the 26 documented: KIS has widened its
    # real-time records before, and a client must keep working when it does (schema drift)
    notice_extra_fields: tuple[str, ...] = ()
    costs: CostModel = field(default_factory=CostModel)
    calendar: TradingCalendar | None = None

    def __post_init__(self):
        if self.rate_per_s is None:
            self.rate_per_s = REST_RATE["vts" if self.virtual else "real"]
        if self.burst is None:
            self.burst = max(1, math.ceil(self.rate_per_s))
        if self.rate_per_s <= 0 or self.burst < 1:
            raise ValueError(f"rate_per_s must be > 0 and burst >= 1, got {self.rate_per_s}, {self.burst}")

    def page(self, kind: str) -> int:
        if kind == "balance":
            return self.balance_page or (20 if self.virtual else 50)
        if kind == "rvsecncl":
            return self.rvsecncl_page
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
    fees: int = 0         # commission + tax of its fills
    fill_tmd: str = ""    # HHMMSS of the last fill notice


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
    initial_cash: int = 0
    fills: list[tuple[dt.date, Fill]] = field(default_factory=list)   # (bar day, fill), oldest first
    asset_close: dict[dt.date, int] = field(default_factory=dict)     # day → cash + holdings at its close


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


# Reference data of a symbol that bars do not carry (inquire-price / daily-chart fields): neutral
# defaults, set per symbol with Exchange.set_instrument. `excg_dvsn_cd` 02 = KOSPI (03 KOSDAQ).
INSTRUMENT_DEFAULTS = {
    "iscd_stat_cls_code": "55", "marg_rate": "20.00", "rprs_mrkt_kor_name": "KOSPI", "new_hgpr_lwpr_cls_code": " ",
    "bstp_kor_isnm": "", "temp_stop_yn": "N", "oprc_rang_cont_yn": "N", "clpr_rang_cont_yn": "N",
    "crdt_able_yn": "Y", "grmn_rate_cls_code": "40", "elw_pblc_yn": "N", "hts_frgn_ehrt": "0.00",
    "frgn_ntby_qty": "0", "pgtr_ntby_qty": "0", "cpfn": "0", "stck_fcam": "0", "hts_deal_qty_unit_val": "1",
    "lstn_stcn": "0", "per": "0.00", "pbr": "0.00", "stac_month": "12", "eps": "0.00", "bps": "0.00",
    "whol_loan_rmnd_rate": "0.00", "ssts_yn": "Y", "apprch_rate": "0.00", "frgn_hldn_qty": "0", "vi_cls_code": "N",
    "ovtm_vi_cls_code": "N", "last_ssts_cntg_qty": "0", "invt_caful_yn": "N", "mrkt_warn_cls_code": "00",
    "short_over_yn": "N", "sltr_yn": "N", "mang_issu_cls_code": "N", "excg_dvsn_cd": "02"}
SUBSTITUTE_RATIO = 0.8   # 대용가 (stck_sspr, sbst_pric) = base price × 0.8, truncated to the won


class Exchange:
    def __init__(self, config: SimConfig | None = None):
        self.config = config or SimConfig()
        self.lock = threading.RLock()
        self.accounts: dict[str, Account] = {}
        self.tokens: dict[str, tuple[str, float, float]] = {}    # token → (app_key, issued_at, expires_at)
        self.last_issue: dict[str, float] = {}
        self.approvals: dict[str, str] = {}                       # approval key → app key
        self.buckets: dict[str, list[float]] = {}                 # app key → [tokens, last]
        # app key → monotonic arrival time of every quota-counted request, refused ones too: what a
        # test measures the clients' combined request rate on (see peak_requests); the last
        # ARRIVALS_KEPT per key, so a simulator serving for days stays small
        self.arrivals: dict[str, deque[float]] = {}
        self.history: dict[str, list[tuple]] = {}                 # symbol → [(date, o, h, l, c, v)] oldest first
        self.names: dict[str, str] = {}
        self.values: dict[tuple[str, dt.date], float] = {}         # (symbol, day) → trade value, when known
        self.instruments: dict[str, dict[str, str]] = {}          # symbol → reference-data overrides
        self.days: list[dt.date] = []                             # every bar date, sorted
        self.today: dt.date | None = None   # the last bar traded
        self.session_day: Callable[[], dt.date] | None = None  # set by a virtual session clock
        # set by a virtual session clock too: its time now, and the bars of the session under way
        # (None outside one). A market order that arrives in a session fills at once, on that bar,
        # and its execution notice goes out then, stamped with the session time
        self.session_now: Callable[[], dt.datetime] | None = None
        self.session_bars: Callable[[], tuple[dt.date, dict] | None] | None = None
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
                                                    PaperBroker(cash, self.config.costs, self.config.calendar),
                                                    initial_cash=int(cash))
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
                if "value" in part.columns:   # trade value (acml_tr_pbmn) when the frame has it
                    self.values.update({(str(sym), d): float(x) for d, x in zip(dates, part["value"].to_list())
                                        if x is not None})
            self.days = sorted(set(self.days) | {d.date() if isinstance(d, dt.datetime) else d
                                                 for d in df["date"].unique().to_list()})
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
            self.arrivals.setdefault(app_key, deque(maxlen=ARRIVALS_KEPT)).append(now)
            b = self.buckets.setdefault(app_key, [float(self.config.burst), now])
            b[0] = min(self.config.burst, b[0] + (now - b[1]) * self.config.rate_per_s)
            b[1] = now
            if b[0] < 1.0:
                self.counts["rate_limited"] += 1
                raise GatewayError(500, "EGW00201", "초당 거래건수를 초과하였습니다.")
            b[0] -= 1.0

    def peak_requests(self, app_key: str, window_s: float = 1.0) -> int:
        """The most requests of one app key that arrived inside any `window_s`-long window."""
        with self.lock:
            times = sorted(self.arrivals.get(app_key, ()))
        peak, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] > window_s:
                lo += 1
            peak = max(peak, hi - lo + 1)
        return peak

    def token_of(self, headers: dict) -> str:
        auth = headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else ""

    # --- quotes ---------------------------------------------------------------------------
    def _bars(self, symbol: str) -> list[tuple]:
        bars = self.history.get(symbol)
        if not bars:
            raise Reject("SIMR0003", "종목코드 오류입니다.")
        return bars

    def instrument(self, symbol: str) -> dict:
        """The static attributes of a symbol (listed shares, par value ...): KIS's reference data,
        which the simulator does not derive from bars. Defaults are neutral; set_instrument overrides."""
        return {**INSTRUMENT_DEFAULTS, **self.instruments.get(symbol, {})}

    def set_instrument(self, symbol: str, **fields) -> None:
        unknown = sorted(set(fields) - set(INSTRUMENT_DEFAULTS))
        if unknown:
            raise ValueError(f"unknown instrument field(s) {unknown}: choose from {sorted(INSTRUMENT_DEFAULTS)}")
        with self.lock:
            self.instruments.setdefault(symbol, {}).update({k: str(v) for k, v in fields.items()})

    def _value(self, symbol: str, bar: tuple) -> float:
        """Trade value of a daily bar in KRW: the history's `value` column when it had one, else
        volume × the bar's mean price (o + h + l + c) / 4 (an estimate)."""
        d, o, h, lo, c, v = bar
        known = self.values.get((symbol, d))
        if known is not None:
            return known
        return float(v or 0) * (o + h + lo + c) / 4

    def _snapshot(self, sym: str) -> dict:
        """Numbers every quote TR shares: the last traded bar against the one before it."""
        bars = self._bars(sym)
        d, o, h, lo, c, v = bars[-1]
        pd_, po, ph, pl_, pc, pv = bars[-2] if len(bars) > 1 else bars[-1]
        base = pc if len(bars) > 1 else o
        lower, upper = (int(x) for x in krx.price_limits(base, d))
        change = round(c) - round(base)
        return {"bars": bars, "day": d, "o": o, "h": h, "l": lo, "c": c, "v": v or 0, "prev_bar": (pd_, po, ph, pl_, pc, pv),
                "base": base, "lower": lower, "upper": upper, "change": change,
                "sign": sign(change, round(c), upper, lower), "ctrt": pct(change, round(base)),
                "value": self._value(sym, bars[-1]), "tick": int(krx.tick_size(c, d))}

    def price(self, q: dict) -> dict:
        sym = q.get("FID_INPUT_ISCD", "")
        with self.lock:
            s = self._snapshot(sym)
            ins = self.instrument(sym)
        bars, d, c, v = s["bars"], s["day"], s["c"], s["v"]
        _, _, ph, pl_, pc, pv = s["prev_bar"]
        po = s["prev_bar"][1]
        p = (ph + pl_ + pc) / 3                                   # classic pivot points on the previous bar
        x = 2 * ph + pl_ + pc if pc > po else ph + 2 * pl_ + pc if pc < po else ph + pl_ + 2 * pc   # DeMark
        listed = int(ins["lstn_stcn"] or 0)
        out = {k: ins[k] for k in PRICE if k in ins}
        out.update({
            "stck_prpr": won(c), "prdy_vrss": str(s["change"]), "prdy_vrss_sign": s["sign"], "prdy_ctrt": s["ctrt"],
            "acml_tr_pbmn": won(s["value"]), "acml_vol": won(v), "prdy_vrss_vol_rate": pct(v, pv or 0),
            "stck_oprc": won(s["o"]), "stck_hgpr": won(s["h"]), "stck_lwpr": won(s["l"]), "stck_mxpr": str(s["upper"]),
            "stck_llam": str(s["lower"]), "stck_sdpr": won(s["base"]),
            "wghn_avrg_stck_prc": dec(s["value"] / v if v else c),
            "pvt_scnd_dmrs_prc": str(int(p + (ph - pl_))), "pvt_frst_dmrs_prc": str(int(2 * p - pl_)),
            "pvt_pont_val": str(int(p)), "pvt_frst_dmsp_prc": str(int(2 * p - ph)),
            "pvt_scnd_dmsp_prc": str(int(p - (ph - pl_))), "dmrs_val": str(int(x / 2 - pl_)),
            "dmsp_val": str(int(x / 2 - ph)), "rstc_wdth_prc": str(s["upper"] - round(s["base"])),
            "stck_sspr": str(int(round(s["base"]) * SUBSTITUTE_RATIO)), "aspr_unit": str(s["tick"]),
            "hts_avls": str(round(c) * listed // 10 ** 8), "vol_tnrt": pct(v, listed),
            "stck_shrn_iscd": sym, "fcam_cnnm": ins["stck_fcam"], "cpfn_cnnm": f"{int(ins['cpfn'] or 0):,} 억"})
        windows = {"d250": bars[-250:], "w52": [b for b in bars if b[0] > d - dt.timedelta(days=365)],
                   "dryy": [b for b in bars if b[0].year == d.year]}
        for name, rows in windows.items():
            hi = max(reversed(rows), key=lambda b: b[2])        # ties: the most recent day
            lo_ = min(reversed(rows), key=lambda b: b[3])
            hv, lv = round(hi[2]), round(lo_[3])
            rate = "ctrt" if name == "w52" else "rate"
            hp, lp = ("stck_dryy_hgpr", "stck_dryy_lwpr") if name == "dryy" else (f"{name}_hgpr", f"{name}_lwpr")
            out.update({hp: str(hv), f"{name}_hgpr_date": _ymd_str(hi[0]),
                        f"{name}_hgpr_vrss_prpr_{rate}": pct(round(c) - hv, hv),
                        lp: str(lv), f"{name}_lwpr_date": _ymd_str(lo_[0]),
                        f"{name}_lwpr_vrss_prpr_{rate}": pct(round(c) - lv, lv)})
        return {"output": shaped(PRICE, out)}

    def _daily_snapshot(self, sym: str) -> dict:
        s = self._snapshot(sym)
        ins = self.instrument(sym)
        _, po, ph, pl_, _, pv = s["prev_bar"]
        c, v = s["c"], s["v"]
        listed = int(ins["lstn_stcn"] or 0)
        return {"s": s, "output1": shaped(DAILY_SNAPSHOT, {
            "prdy_vrss": str(s["change"]), "prdy_vrss_sign": s["sign"], "prdy_ctrt": s["ctrt"],
            "stck_prdy_clpr": won(s["base"]), "acml_vol": won(v), "acml_tr_pbmn": won(s["value"]),
            "hts_kor_isnm": self.names.get(sym, ""), "stck_prpr": won(c), "stck_shrn_iscd": sym,
            "prdy_vol": won(pv), "stck_mxpr": str(s["upper"]), "stck_llam": str(s["lower"]),
            "stck_oprc": won(s["o"]), "stck_hgpr": won(s["h"]), "stck_lwpr": won(s["l"]),
            "stck_prdy_oprc": won(po), "stck_prdy_hgpr": won(ph), "stck_prdy_lwpr": won(pl_),
            "askp": str(round(c) + s["tick"]), "bidp": won(c), "prdy_vrss_vol": str(round(v or 0) - round(pv or 0)),
            "vol_tnrt": pct(v, listed), "stck_fcam": ins["stck_fcam"], "lstn_stcn": ins["lstn_stcn"],
            "cpfn": ins["cpfn"], "hts_avls": str(round(c) * listed // 10 ** 8), "per": ins["per"],
            "eps": ins["eps"], "pbr": ins["pbr"], LOAN_RATIO_ODD: ins["whol_loan_rmnd_rate"]})}

    def daily_chart(self, q: dict) -> dict:
        sym = q.get("FID_INPUT_ISCD", "")
        start = _ymd(q.get("FID_INPUT_DATE_1", ""), "FID_INPUT_DATE_1")
        end = _ymd(q.get("FID_INPUT_DATE_2", ""), "FID_INPUT_DATE_2")
        if (q.get("FID_PERIOD_DIV_CODE") or "D") != "D":
            raise Reject("SIMR0005", "시뮬레이터는 일봉(D)만 제공합니다.")
        with self.lock:
            snap = self._daily_snapshot(sym)
            bars = snap["s"]["bars"]
            dates = [b[0] for b in bars]
            lo_i, hi_i = bisect.bisect_left(dates, start), bisect.bisect_right(dates, end)
            idx = list(range(max(lo_i, hi_i - 100), hi_i))[::-1]        # ≤ 100 bars, newest first
            out2 = []
            for i in idx:
                d, o, h, lo, c, v = bars[i]
                prev = bars[i - 1][4] if i else None
                change = round(c) - round(prev) if prev is not None else 0
                lower, upper = (int(x) for x in krx.price_limits(prev, d)) if prev is not None else (0, 10 ** 12)
                out2.append(shaped(DAILY_ROW, {
                    "stck_bsop_date": _ymd_str(d), "stck_clpr": won(c), "stck_oprc": won(o), "stck_hgpr": won(h),
                    "stck_lwpr": won(lo), "acml_vol": won(v), "acml_tr_pbmn": won(self._value(sym, bars[i])),
                    "flng_cls_code": "00", "prtt_rate": "0.00", "mod_yn": "N",
                    "prdy_vrss_sign": sign(change, round(c), upper, lower), "prdy_vrss": str(change),
                    "revl_issu_reas": ""}))
        return {"output1": snap["output1"], "output2": out2}

    def minute_chart(self, q: dict) -> dict:
        """Synthetic one-minute bars of the current day's bar (open → high → low → close path, on
        the tick grid), whose aggregate is that daily bar; acml_tr_pbmn is the running value."""
        sym = q.get("FID_INPUT_ISCD", "")
        until = q.get("FID_INPUT_HOUR_1", "153000") or "153000"
        if not (len(until) == 6 and until.isdigit()):
            raise Reject("SIMR0013", f"FID_INPUT_HOUR_1 형식 오류입니다 (HHMMSS): {until!r}")
        with self.lock:
            snap = self._daily_snapshot(sym)
            s = snap["s"]
        d, o, h, lo, c, v = s["bars"][-1]
        legs = {o: won(o), h: won(h), lo: won(lo), c: won(c)}

        def px(p):
            return legs.get(p) or str(int(krx.round_to_tick(p, d)))

        rows, value = [], 0.0
        for t, op, hi, lw, cl, vol in _minute_path(o, h, lo, c, v):
            row = (t, px(op), px(hi), px(lw), px(cl), vol)
            value += vol * sum(int(x) for x in row[1:5]) / 4
            rows.append(row + (won(value),))
        rows = [r for r in rows if r[0] <= until][-30:][::-1]
        out2 = [shaped(MINUTE_ROW, {"stck_bsop_date": _ymd_str(d), "stck_cntg_hour": t, "stck_prpr": cl,
                                    "stck_oprc": op, "stck_hgpr": hi, "stck_lwpr": lw, "cntg_vol": str(vol),
                                    "acml_tr_pbmn": val}) for t, op, hi, lw, cl, vol, val in rows]
        out1 = shaped(MINUTE_SNAPSHOT, {k: snap["output1"][k] for k in MINUTE_SNAPSHOT})
        return {"output1": out1, "output2": out2}

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
            notices = [self._notice(acct, odno, "ack")]
            session = self.session_bars() if self.session_bars and req.order_type is OrderType.MARKET else None
            if session is not None:   # in a session clock: a market order fills as it arrives
                day, bars = session
                now = self.session_now() if self.session_now else None
                at = now.astimezone(SEOUL).strftime("%H%M%S") if now else FILL_TIME
                held = dict(acct.book.positions())
                fills = acct.book.execute_now(day, {s: tuple(b[:4]) for s, b in bars.items()},
                                              [order.broker_order_id], now)
                self._book_fills(acct, day, held, fills, at, [], notices)
        for n in notices:   # after the lock is released: the WebSocket front sends them
            self._notify("notice", n)
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
            try:
                price = int(q.get("ORD_UNPR") or 0)
            except ValueError:
                raise Reject("SIMR0007", "주문단가는 숫자 문자열이어야 합니다.") from None
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
        return {"output": shaped(PSBL_ORDER, {
            "ord_psbl_cash": str(cash), "ord_psbl_sbst": "0", "ruse_psbl_amt": "0", "fund_rpch_chgs": "0",
            "psbl_qty_calc_unpr": str(price), "nrcvb_buy_amt": str(qty * price), "nrcvb_buy_qty": str(qty),
            "max_buy_amt": str(qty * price), "max_buy_qty": str(qty), "cma_evlu_amt": "0",
            "ovrs_re_use_amt_wcrc": "0", "ord_psbl_frcr_amt_wcrc": "0"})}

    def _days(self) -> tuple[dt.date | None, dt.date | None]:
        """(today, the trading day before it): the session day under a session clock, else the last bar."""
        today = self.session_day() if self.session_day else self.today
        if today is None:
            return None, None
        i = bisect.bisect_left(self.days, today)
        return today, (self.days[i - 1] if i else None)

    def balance_rows(self, acct: Account) -> tuple[list[dict], dict]:
        with self.lock:
            today, before = self._days()
            flows = {}   # (day, symbol, side) → [qty, amount, costs]
            for day, f in acct.fills:
                if day in (today, before):
                    k = flows.setdefault((day, f.symbol, f.side), [0, 0, 0])
                    k[0] += f.qty
                    k[1] += f.qty * f.price
                    k[2] += f.commission + f.tax

            def flow(day, sym, side, i=0):
                return sum(v[i] for (d, s, sd), v in flows.items()
                           if d == day and (sym is None or s == sym) and sd is side)

            held = acct.book.positions()
            selling = {}
            for o in acct.book.open_orders():
                if o.request.side is Side.SELL:
                    selling[o.request.symbol] = selling.get(o.request.symbol, 0) + o.request.qty - o.filled_qty
            sold_out = {s for (d, s, sd) in flows if d == today and sd is Side.SELL and not held.get(s)}
            rows, total, bought = [], 0, 0
            for sym in sorted(set(held) | sold_out):
                q = held.get(sym, 0)
                bars = self.history.get(sym) or []
                last = round(acct.book.last_close(sym) or (bars[-1][4] if bars else 0))
                prev = round(bars[-2][4]) if len(bars) > 1 else last
                pchs = acct.cost_basis.get(sym, 0) if q else 0
                evlu = q * last
                total += evlu
                bought += pchs
                rows.append(shaped(BALANCE_ROW, {
                    "pdno": sym, "prdt_name": self.names.get(sym, ""), "trad_dvsn_name": "현금",
                    "bfdy_buy_qty": str(flow(before, sym, Side.BUY)), "bfdy_sll_qty": str(flow(before, sym, Side.SELL)),
                    "thdt_buyqty": str(flow(today, sym, Side.BUY)), "thdt_sll_qty": str(flow(today, sym, Side.SELL)),
                    "hldg_qty": str(q), "ord_psbl_qty": str(max(0, q - selling.get(sym, 0))),
                    "pchs_avg_pric": dec(pchs / q if q else 0, 4), "pchs_amt": str(pchs), "prpr": str(last),
                    "evlu_amt": str(evlu), "evlu_pfls_amt": str(evlu - pchs), "evlu_pfls_rt": pct(evlu - pchs, pchs),
                    "evlu_erng_rt": dec(0, 8), "loan_dt": "", "loan_amt": "0", "stln_slng_chgs": "0", "expd_dt": "",
                    "fltt_rt": pct(last - prev, prev, 8), "bfdy_cprs_icdc": str(last - prev), "item_mgna_rt_name": "",
                    "grta_rt_name": "", "sbst_pric": str(int(prev * SUBSTITUTE_RATIO)), "stck_loan_unpr": dec(0, 4)}))
            cash = acct.book.cash()
            now_total = total + cash
            before_total = acct.asset_close.get(before, acct.initial_cash) if before else acct.initial_cash
            summary = shaped(BALANCE_SUMMARY, {
                "dnca_tot_amt": str(cash), "nxdy_excc_amt": str(cash), "prvs_rcdl_excc_amt": str(cash),
                "cma_evlu_amt": "0", "bfdy_buy_amt": str(flow(before, None, Side.BUY, 1)),
                "thdt_buy_amt": str(flow(today, None, Side.BUY, 1)), "nxdy_auto_rdpt_amt": "0",
                "bfdy_sll_amt": str(flow(before, None, Side.SELL, 1)), "thdt_sll_amt": str(flow(today, None, Side.SELL, 1)),
                "d2_auto_rdpt_amt": "0",
                "bfdy_tlex_amt": str(flow(before, None, Side.BUY, 2) + flow(before, None, Side.SELL, 2)),
                "thdt_tlex_amt": str(flow(today, None, Side.BUY, 2) + flow(today, None, Side.SELL, 2)),
                "tot_loan_amt": "0", "scts_evlu_amt": str(total), "tot_evlu_amt": str(now_total),
                "nass_amt": str(now_total), "fncg_gld_auto_rdpt_yn": "", "pchs_amt_smtl_amt": str(bought),
                "evlu_amt_smtl_amt": str(total), "evlu_pfls_smtl_amt": str(total - bought), "tot_stln_slng_chgs": "0",
                "bfdy_tot_asst_evlu_amt": str(before_total), "asst_icdc_amt": str(now_total - before_total),
                "asst_icdc_erng_rt": dec(0, 8)})
        return rows, summary

    def _order_view(self, acct: Account, so: SimOrder):
        """(request, filled, remaining, cancelled, cancelled qty) of an order row."""
        if so.paper_id:
            o = acct.book._orders[so.paper_id]
            req, filled = o.request, o.filled_qty
            remaining = req.qty - filled if o.status is OrderStatus.OPEN else 0
            cancelled = o.status is OrderStatus.CANCELLED
            return req, filled, remaining, cancelled, (req.qty - filled if cancelled else 0)
        orig = acct.book._orders[acct.orders[so.orgn_odno].paper_id]   # a cancel order points at the original
        return orig.request, 0, 0, True, orig.request.qty - orig.filled_qty

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
                req, filled, remaining, cancelled, cncl_qty = self._order_view(acct, so)
                sbc = "01" if req.side is Side.SELL else "02"
                if (want_sym and req.symbol != want_sym) or (side_filter != "00" and side_filter != sbc):
                    continue
                if (ccld == "01" and not filled) or (ccld == "02" and not remaining):
                    continue
                limit = req.order_type is OrderType.LIMIT
                market = self.instrument(req.symbol)["excg_dvsn_cd"]
                rows.append(shaped(CCLD_ROW, {
                    "ord_dt": so.ord_dt, "ord_gno_brno": self._orgno(), "odno": so.odno, "orgn_odno": so.orgn_odno,
                    "ord_dvsn_name": "지정가" if limit else "시장가", "sll_buy_dvsn_cd": sbc,
                    "sll_buy_dvsn_cd_name": "매도" if sbc == "01" else "매수", "pdno": req.symbol,
                    "prdt_name": self.names.get(req.symbol, ""), "ord_qty": str(req.qty if so.paper_id else cncl_qty),
                    "ord_unpr": str(req.limit_price or 0), "ord_tmd": so.ord_tmd, "tot_ccld_qty": str(filled),
                    "avg_prvs": str(so.filled_amt // filled) if filled else "0", "cncl_yn": "Y" if cancelled else "N",
                    "tot_ccld_amt": str(so.filled_amt), "loan_dt": "", "ordr_empno": "",
                    "ord_dvsn_cd": "00" if limit else "01", "cncl_cfrm_qty": str(cncl_qty), "cnc_cfrm_qty": str(cncl_qty),
                    "rmn_qty": str(remaining), "rjct_qty": "0", "ccld_cndt_name": "없음", "inqr_ip_addr": "",
                    "cpbc_ordp_ord_rcit_dvsn_cd": "", "cpbc_ordp_infm_mthd_dvsn_cd": "", "infm_tmd": so.fill_tmd,
                    "ctac_tlno": "", "prdt_type_cd": "300", "excg_dvsn_cd": market, "cpbc_ordp_mtrl_dvsn_cd": "",
                    "ord_orgno": self._orgno(), "rsvn_ord_end_dt": "", "excg_id_dvsn_Cd": "KRX",
                    "excg_id_dvsn_cd": "KRX", "stpm_cndt_pric": "0", "stpm_efct_occr_dtmd": ""}))
        return rows

    def ccld_totals(self, acct: Account, rows: list[dict]) -> dict:
        filled = sum(int(r["tot_ccld_qty"]) for r in rows)
        amt = sum(int(r["tot_ccld_amt"]) for r in rows)
        return shaped(CCLD_TOTALS, {"tot_ord_qty": str(sum(int(r["ord_qty"]) for r in rows)),
                                    "tot_ccld_qty": str(filled), "tot_ccld_amt": str(amt),
                                    "prsm_tlex_smtl": str(sum(acct.orders[r["odno"]].fees for r in rows)),
                                    "pchs_avg_pric": dec(amt / filled if filled else 0, 4)})

    def psbl_rvsecncl_rows(self, acct: Account, q: dict) -> list[dict]:
        """inquire-psbl-rvsecncl: today's orders with a quantity left to revise or cancel."""
        self._check_account(acct, q)
        side = q.get("INQR_DVSN_2", "0") or "0"      # 0 all, 1 sell, 2 buy
        rows = []
        with self.lock:
            for so in acct.orders.values():
                if not so.paper_id:
                    continue
                req, filled, remaining, _, _ = self._order_view(acct, so)
                sbc = "01" if req.side is Side.SELL else "02"
                if not remaining or (side == "1" and sbc != "01") or (side == "2" and sbc != "02"):
                    continue
                limit = req.order_type is OrderType.LIMIT
                rows.append(shaped(RVSECNCL_ROW, {
                    "ord_gno_brno": self._orgno(), "odno": so.odno, "orgn_odno": so.orgn_odno,
                    "ord_dvsn_name": "지정가" if limit else "시장가", "pdno": req.symbol,
                    "prdt_name": self.names.get(req.symbol, ""), "rvse_cncl_dvsn_name": "정정" if so.orgn_odno else "",
                    "ord_qty": str(req.qty), "ord_unpr": str(req.limit_price or 0), "ord_tmd": so.ord_tmd,
                    "tot_ccld_qty": str(filled), "tot_ccld_amt": str(so.filled_amt), "psbl_qty": str(remaining),
                    "sll_buy_dvsn_cd": sbc, "ord_dvsn_cd": "00" if limit else "01", "mgco_aptm_odno": "",
                    "excg_dvsn_cd": self.instrument(req.symbol)["excg_dvsn_cd"], "excg_id_dvsn_cd": "KRX",
                    "excg_id_dvsn_name": "KRX", "stpm_cndt_pric": "0", "stpm_efct_occr_yn": ""}))
        if (q.get("INQR_DVSN_1") or "0") == "1":
            rows.sort(key=lambda r: (r["pdno"], r["odno"]))
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
            # the bar trades at the close of its session (15:30 in a session clock): orders still
            # open (limit orders; any order outside a session clock) fill now, at its prices
            at = MARKET_CLOSE.strftime("%H%M%S") if self.session_now else FILL_TIME
            for acct in self.accounts.values():
                held = dict(acct.book.positions())
                fills = acct.book.on_bar(day, {s: tuple(b[:4]) for s, b in bars.items()})
                self._book_fills(acct, day, held, fills, at, out, notices)
            for sym, b in bars.items():
                o, h, lo, c = (float(x) for x in b[:4])
                if any(math.isnan(x) for x in (o, h, lo, c)):
                    continue
                v = float(b[4]) if len(b) > 4 and b[4] is not None else None
                self.history.setdefault(sym, []).append((day, o, h, lo, c, v))
            self.today = day
            if not self.days or self.days[-1] < day:
                self.days.append(day)
            for acct in self.accounts.values():
                acct.asset_close[day] = acct.book.cash() + sum(
                    q * round(acct.book.last_close(s) or 0) for s, q in acct.book.positions().items())
        for n in notices:          # after the lock is released: the WebSocket front sends them
            self._notify("notice", n)
        self._notify("bar", {"day": day, "bars": bars})
        return out

    def trade_print(self, day: dt.date, symbol: str, price: int, volume: int | None,
                    at: dt.time) -> list[tuple[str, Fill]]:
        """One print of the SYNTHETIC intraday session of `day` (SimServer.stream_session): every
        account's open orders in `symbol` trade against it (PaperBroker.on_print) and are booked
        as the daily bar's fills are (cost basis, fills, ccld rows, execution notices)."""
        stamp = dt.datetime.combine(day, at, tzinfo=SEOUL)
        out: list[tuple[str, Fill]] = []
        notices: list[dict] = []
        with self.lock:
            for acct in self.accounts.values():
                held = dict(acct.book.positions())
                fills = acct.book.on_print(day, symbol, int(price), volume, stamp)
                self._book_fills(acct, day, held, fills, at.strftime("%H%M%S"), out, notices)
        for n in notices:          # after the lock is released: the WebSocket front sends them
            self._notify("notice", n)
        return out

    def working_symbols(self) -> set[str]:
        """Symbols with an open order in some account (the ones a print can fill)."""
        with self.lock:
            return {o.request.symbol for acct in self.accounts.values() for o in acct.book.open_orders()}

    def _book_fills(self, acct: Account, day: dt.date, held: dict[str, int], fills: list[Fill], tmd: str,
                    out: list[tuple[str, Fill]], notices: list[dict]) -> None:
        """The account's records of new fills (under the lock): `held` is the holdings before them."""
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
            so = acct.orders[odno]
            so.filled_amt += f.qty * f.price
            so.fees += f.commission + f.tax
            so.fill_tmd = tmd
            acct.fills.append((day, f))
            out.append((odno, f))
            notices.append(self._notice(acct, odno, "fill", f.qty, f.price, tmd))

    # --- helpers ----------------------------------------------------------------------------
    def _day_str(self) -> str:
        """The order date: the virtual session's day, else the last traded bar's (replay venue)."""
        day = self.session_day() if self.session_day else self.today
        return (day or dt.datetime.now(SEOUL).date()).strftime("%Y%m%d")

    def _orgno(self) -> str:
        return "00950" if self.config.virtual else "06071"

    def _notice(self, acct: Account, odno: str, kind: str, qty: int = 0, price: int = 0,
                at: str = FILL_TIME) -> dict:
        """An H0STCNI0/9 record (26 fields, KIS_API.md §5.6, then `SimConfig.notice_extra_fields`)
        for an order event: ack, cancel or fill (`at`: the fill's HHMMSS)."""
        so = acct.orders[odno]
        req = acct.book._orders[so.paper_id].request
        fill = kind == "fill"
        fields = [acct.hts_id, acct.cano + acct.product, so.odno, so.orgn_odno, "01" if req.side is Side.SELL else "02",
                  "2" if kind == "cancel" else "0", "00" if req.limit_price else "01", "0", req.symbol,
                  str(qty if fill else req.qty), str(price if fill else (req.limit_price or 0)),
                  at if fill else dt.datetime.now(SEOUL).strftime("%H%M%S"), "0", "2" if fill else "1", "2",
                  self._orgno(), str(req.qty), "SIM", "", "1", "N", "", "", "", self.names.get(req.symbol, ""),
                  str(req.limit_price or 0), *self.config.notice_extra_fields]
        return {"app_key": acct.app_key, "hts_id": acct.hts_id, "record": "^".join(fields)}

    def _notify(self, kind: str, payload: dict) -> None:
        for fn in list(self.listeners):
            try:
                fn(kind, payload)
            except Exception:
                pass



def _ymd_str(d: dt.date) -> str:
    return d.strftime("%Y%m%d")


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
