"""The simulator's REST front: KIS paths, headers, TR ids, envelopes, error codes and paging,
plus the admin endpoints (fault injection, advancing the replay) guarded by a per-run secret."""
from __future__ import annotations

import hashlib
import json
import secrets
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from broker.base import Side
from broker.sim.exchange import Exchange, GatewayError, Reject
from broker.sim.faults import BEFORE, Faults
from broker.sim.schema import ENDPOINTS, NO_SERVICE, unserved, vts_tr

OK = {"quote": ("MCA00000", "정상처리 되었습니다."),
      "query_real": ("KIOK0510", "조회가 완료되었습니다                                                                 "),
      "query_vts": ("20310000", "모의투자 조회가 완료되었습니다.                                                  "),
      "buy_real": ("APBK0013", "주문 전송 완료 되었습니다."), "sell_real": ("APBK0013", "주문 전송 완료 되었습니다."),
      "rvse_real": ("APBK0013", "주문 전송 완료 되었습니다."),
      "buy_vts": ("40600000", "모의투자 매수주문이 완료 되었습니다."), "sell_vts": ("40590000", "모의투자 매도주문이 완료 되었습니다."),
      "rvse_vts": ("40620000", "모의투자 정정주문이 완료 되었습니다."), "cncl_vts": ("40630000", "모의투자 취소주문이 완료 되었습니다.")}

# (method, path) → {real tr_id: action} of every reference endpoint (broker/sim/schema.py ENDPOINTS)
ROUTES = {(e.method, e.path): dict(e.tr_ids) for e in ENDPOINTS}
_vts = vts_tr


class _Drop(Exception):
    """Close the connection without an answer."""


class SimHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, exchange: Exchange, faults: Faults, admin_secret: str | None = None):
        self.exchange, self.faults = exchange, faults
        self.admin_secret = admin_secret or secrets.token_hex(16)
        self.errors: list[str] = []
        self.on_admin = {}   # name → callable(body) → dict, registered by SimServer
        virtual = exchange.config.virtual
        self.routes = {k: ({_vts(t): a for t, a in v.items()} if virtual else dict(v)) for k, v in ROUTES.items()}
        self.other_env = {k: ({t: a for t, a in v.items()} if virtual else {_vts(t): a for t, a in v.items()})
                          for k, v in ROUTES.items()}
        self.unserved = {(e.method, e.path) for e in unserved(virtual)}   # answered OPSQ0002
        super().__init__(("127.0.0.1", 0), Handler)
        self.clients_gone = 0

    def handle_error(self, request, client_address) -> None:
        """A client that vanished mid-request (a killed driver, a dropped connection) is an
        ordinary day for the venue: counted, not a traceback on the terminal of a fault campaign."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            self.clients_gone += 1
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    server: SimHTTPServer
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # headers and body go out as separate writes: without NODELAY, Nagle + delayed ACK add ~40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):   # silence: request lines carry account numbers in queries
        pass

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    # --- plumbing -------------------------------------------------------------------------
    def _handle(self, method: str):
        url = urlsplit(self.path)
        path = url.path
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        if path.startswith("/admin/"):
            return self._admin(path, raw, headers)
        fault = self.server.faults.take(path)
        ex = self.server.exchange
        try:
            if fault and fault.kind == "drop_before":
                raise _Drop()
            if fault and fault.kind in BEFORE:
                if fault.kind == "rate_limit":
                    raise GatewayError(500, "EGW00201", "초당 거래건수를 초과하였습니다.")
                if fault.kind == "expired_token":
                    ex.expire_token(ex.token_of(headers))
                    raise GatewayError(500, "EGW00123", "기간이 만료된 token 입니다.")
                return self._send(500, b"<html><body><h1>500 Internal Server Error</h1></body></html>", {}, "text/html")
            try:
                body = json.loads(raw.decode("utf-8")) if raw else {}
            except ValueError:
                raise GatewayError(500, "EGW00002", "요청 본문이 JSON이 아닙니다.") from None
            query = {k.upper(): v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            status, payload, extra = self._dispatch(method, path, headers, query, body)
        except _Drop:
            return self._drop()
        except GatewayError as exc:
            status, payload, extra = exc.status, exc.body(), {}
        except Reject as exc:
            status, payload, extra = 200, {"rt_cd": "1", "msg_cd": exc.msg_cd, "msg1": exc.msg1}, {}
        except Exception as exc:   # a simulator bug must look like a gateway failure, not hang the client
            status, payload, extra = 500, {"rt_cd": "9", "msg_cd": "SIMX0000", "msg1": f"simulator error: {type(exc).__name__}"}, {}
            self.server.errors.append(repr(exc))
        if fault:
            if fault.kind == "slow":
                time.sleep(fault.delay)
            elif fault.kind == "drop":
                return self._drop()
            elif fault.kind == "http_500_after":
                return self._send(500, b"<html><body><h1>500 Internal Server Error</h1></body></html>", {}, "text/html")
            elif fault.kind == "malformed":
                return self._send(200, b'{"rt_cd":"0","msg_cd":"MCA0', extra)
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self._send(status, data, extra)

    def _send(self, status: int, data: bytes, extra: dict, ctype: str = "application/json; charset=UTF-8"):
        """Header names as KIS sends them: the standard HTTP ones capitalised (Content-Type, ...), KIS's
        own all lower-case (tr_id, tr_cont, gt_uid) — KIS's sample code turns exactly the all-lower-case
        names into Python identifiers, so a `content-type` would break it."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("gt_uid", secrets.token_hex(16))
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _admin(self, path: str, raw: bytes, headers: dict):
        if not secrets.compare_digest(headers.get("x-sim-admin", ""), self.server.admin_secret):
            return self._send(403, b'{"error":"admin secret required"}', {})
        name = path[len("/admin/"):]
        fn = self.server.on_admin.get(name)
        if fn is None:
            return self._send(404, json.dumps({"error": f"no admin endpoint {name!r}"}).encode(), {})
        try:
            out = fn(json.loads(raw.decode("utf-8")) if raw else {})
            return self._send(200, json.dumps(out, ensure_ascii=False, default=str).encode("utf-8"), {})
        except (ValueError, KeyError, TypeError) as exc:
            return self._send(400, json.dumps({"error": str(exc)}, ensure_ascii=False).encode("utf-8"), {})

    # --- KIS ------------------------------------------------------------------------------
    def _dispatch(self, method, path, headers, query, body):
        ex = self.server.exchange
        if method == "POST" and path == "/oauth2/tokenP":
            return 200, ex.issue_token(body), {}
        if method == "POST" and path == "/oauth2/revokeP":
            return 200, ex.revoke(body), {}
        if method == "POST" and path == "/oauth2/Approval":
            return 200, ex.approval(body), {}
        if method == "POST" and path == "/uapi/hashkey":
            ex._oauth_account(headers.get("appkey"), headers.get("appsecret"))
            digest = hashlib.sha256(json.dumps(body, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
            return 200, {"JsonBody": body, "HASH": digest}, {}
        table = self.server.routes.get((method, path))
        if table is None:      # not a KIS path at all (not in the reference): the gateway's 404
            raise GatewayError(404, "EGW00001", f"없는 서비스입니다: {method} {path}")
        acct = ex.authenticate(headers)
        ex.take_quota(acct.app_key)
        tr_id = headers.get("tr_id", "")
        if (method, path) in self.server.unserved:    # a reference TR this environment does not offer
            raise GatewayError(500, *NO_SERVICE)
        action = table.get(tr_id)
        if action is None:
            if tr_id in self.server.other_env.get((method, path), {}):
                env = "실전" if not ex.config.virtual else "모의투자"
                raise GatewayError(500, "EGW00202", f"다른 환경의 TR입니다 ({env}): {tr_id}")
            raise GatewayError(500, *NO_SERVICE)
        if "hashkey" in headers and method == "POST":
            expect = hashlib.sha256(json.dumps(body, ensure_ascii=False, sort_keys=True).encode()).hexdigest()
            if headers["hashkey"] != expect:
                raise Reject("SIMR0014", "hashkey가 본문과 일치하지 않습니다.")
            ex.counts["hashkey_checked"] = ex.counts.get("hashkey_checked", 0) + 1
        suffix = "vts" if ex.config.virtual else "real"
        extra = {"tr_id": tr_id, "tr_cont": ""}   # KIS echoes tr_id; tr_cont blank on single answers
        if action == "price":
            out, kind = ex.price(query), "quote"
        elif action == "daily":
            out, kind = ex.daily_chart(query), "quote"
        elif action == "minute":
            out, kind = ex.minute_chart(query), "quote"
        elif action in ("buy", "sell"):
            out, kind = ex.order_cash(acct, body, Side.BUY if action == "buy" else Side.SELL), f"{action}_{suffix}"
        elif action == "rvsecncl":
            out = ex.rvsecncl(acct, body)
            kind = f"{'cncl' if body.get('RVSE_CNCL_DVSN_CD') == '02' and ex.config.virtual else 'rvse'}_{suffix}"
        elif action == "psbl":
            out, kind = ex.psbl_order(acct, query), f"query_{suffix}"
        elif action == "balance":
            rows, summary = ex.balance_rows(acct)
            ex._check_account(acct, query)
            out, tr_cont = self._page(rows, query, headers, ex.config.page("balance"), acct)
            out["output2"] = [summary]
            extra["tr_cont"], kind = tr_cont, f"query_{suffix}"
        elif action == "ccld":
            ex._check_account(acct, query)
            rows = ex.ccld_rows(acct, query)
            out, tr_cont = self._page(rows, query, headers, ex.config.page("ccld"), acct)
            out["output2"] = ex.ccld_totals(acct, rows)
            extra["tr_cont"], kind = tr_cont, f"query_{suffix}"
        elif action == "psbl_rvsecncl":
            rows = ex.psbl_rvsecncl_rows(acct, query)
            out, tr_cont = self._page(rows, query, headers, ex.config.page("rvsecncl"), acct, key="output")
            extra["tr_cont"], kind = tr_cont, f"query_{suffix}"
        else:  # pragma: no cover - every action is listed above
            raise GatewayError(500, "EGW00202", tr_id)
        code, text = OK[kind]
        return 200, {"rt_cd": "0", "msg_cd": code, "msg1": text, **out}, extra

    @staticmethod
    def _page(rows: list[dict], query: dict, headers: dict, size: int, acct, key: str = "output1") -> tuple[dict, str]:
        """Continuation (§3.3): offset kept in ctx_area_nk100; tr_cont F/M = more, D = last."""
        nk = (query.get("CTX_AREA_NK100") or "").strip()
        cont = headers.get("tr_cont", "")
        start = int(nk) if cont == "N" and nk.isdigit() else 0
        page = rows[start:start + size]
        more = start + size < len(rows)
        fk = f"{acct.cano}^{acct.product}^N^N^01^01^N^".ljust(100)
        nk_out = (str(start + size) if more else "").ljust(100)
        tr_cont = ("M" if start else "F") if more else "D"
        return {"ctx_area_fk100": fk, "ctx_area_nk100": nk_out, key: page}, tr_cont
