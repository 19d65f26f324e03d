"""Real-time WebSocket: frame parsing (H0STCNT0, H0STASP0, H0STCNI0/9), AES notice decryption,
and a client with subscribe/unsubscribe, PINGPONG echo and reconnect with re-subscribe.

Frames (KIS_API.md §5.2): `<0|1>|<TR_ID>|<NNN count>|<payload>`; the payload holds `count`
records of a fixed number of `^`-separated fields, concatenated with `^`. `1` = the payload is
Base64(AES-256-CBC) with the key/iv from the subscribe ack.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Callable

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from broker.kis.errors import KisError, SubscriptionCapError

log = logging.getLogger(__name__)

TRADE_FIELDS = (
    "MKSC_SHRN_ISCD", "STCK_CNTG_HOUR", "STCK_PRPR", "PRDY_VRSS_SIGN", "PRDY_VRSS", "PRDY_CTRT",
    "WGHN_AVRG_STCK_PRC", "STCK_OPRC", "STCK_HGPR", "STCK_LWPR", "ASKP1", "BIDP1", "CNTG_VOL", "ACML_VOL",
    "ACML_TR_PBMN", "SELN_CNTG_CSNU", "SHNU_CNTG_CSNU", "NTBY_CNTG_CSNU", "CTTR", "SELN_CNTG_SMTN",
    "SHNU_CNTG_SMTN", "CCLD_DVSN", "SHNU_RATE", "PRDY_VOL_VRSS_ACML_VOL_RATE", "OPRC_HOUR",
    "OPRC_VRSS_PRPR_SIGN", "OPRC_VRSS_PRPR", "HGPR_HOUR", "HGPR_VRSS_PRPR_SIGN", "HGPR_VRSS_PRPR",
    "LWPR_HOUR", "LWPR_VRSS_PRPR_SIGN", "LWPR_VRSS_PRPR", "BSOP_DATE", "NEW_MKOP_CLS_CODE", "TRHT_YN",
    "ASKP_RSQN1", "BIDP_RSQN1", "TOTAL_ASKP_RSQN", "TOTAL_BIDP_RSQN", "VOL_TNRT", "PRDY_SMNS_HOUR_ACML_VOL",
    "PRDY_SMNS_HOUR_ACML_VOL_RATE", "HOUR_CLS_CODE", "MRKT_TRTM_CLS_CODE", "VI_STND_PRC")
ASK_FIELDS = (("MKSC_SHRN_ISCD", "BSOP_HOUR", "HOUR_CLS_CODE")
              + tuple(f"ASKP{i}" for i in range(1, 11)) + tuple(f"BIDP{i}" for i in range(1, 11))
              + tuple(f"ASKP_RSQN{i}" for i in range(1, 11)) + tuple(f"BIDP_RSQN{i}" for i in range(1, 11))
              + ("TOTAL_ASKP_RSQN", "TOTAL_BIDP_RSQN", "OVTM_TOTAL_ASKP_RSQN", "OVTM_TOTAL_BIDP_RSQN", "ANTC_CNPR",
                 "ANTC_CNQN", "ANTC_VOL", "ANTC_CNTG_VRSS", "ANTC_CNTG_VRSS_SIGN", "ANTC_CNTG_PRDY_CTRT", "ACML_VOL",
                 "TOTAL_ASKP_RSQN_ICDC", "TOTAL_BIDP_RSQN_ICDC", "OVTM_TOTAL_ASKP_ICDC", "OVTM_TOTAL_BIDP_ICDC",
                 "STCK_DEAL_CLS_CODE"))
NOTICE_FIELDS = (
    "CUST_ID", "ACNT_NO", "ODER_NO", "OODER_NO", "SELN_BYOV_CLS", "RCTF_CLS", "ODER_KIND", "ODER_COND",
    "STCK_SHRN_ISCD", "CNTG_QTY", "CNTG_UNPR", "STCK_CNTG_HOUR", "RFUS_YN", "CNTG_YN", "ACPT_YN", "BRNC_NO",
    "ODER_QTY", "ACNT_NAME", "ORD_COND_PRC", "ORD_EXG_GB", "POPUP_YN", "FILLER", "CRDT_CLS", "CRDT_LOAN_DATE",
    "CNTG_ISNM40", "ODER_PRC")
assert len(TRADE_FIELDS) == 46 and len(ASK_FIELDS) == 59 and len(NOTICE_FIELDS) == 26
FIELDS = {"H0STCNT0": TRADE_FIELDS, "H0STASP0": ASK_FIELDS, "H0STCNI0": NOTICE_FIELDS, "H0STCNI9": NOTICE_FIELDS}
NOTICE_TRS = ("H0STCNI0", "H0STCNI9")


class FrameError(KisError):
    """A data frame that does not have the documented shape."""


@dataclass(frozen=True)
class Frame:
    tr_id: str
    records: list[dict]
    encrypted: bool


@dataclass(frozen=True)
class FillEvent:
    """An execution notice with CNTG_YN = 2 (a fill), in the project's units."""
    order_no: str
    original_order_no: str
    symbol: str
    side: str          # "buy" | "sell"
    qty: int
    price: int
    time: str          # HHMMSS
    account_tail: str  # last 2 digits of the account, never the whole number


def aes_decrypt(b64_text: str, key: str, iv: str) -> str:
    cipher = Cipher(algorithms.AES(key.encode("utf-8")), modes.CBC(iv.encode("utf-8")))
    dec = cipher.decryptor()
    raw = dec.update(base64.b64decode(b64_text)) + dec.finalize()
    unpad = padding.PKCS7(128).unpadder()
    return (unpad.update(raw) + unpad.finalize()).decode("utf-8")


def aes_encrypt(plain: str, key: str, iv: str) -> str:
    """What the KIS server does to a notice (the simulator uses it)."""
    pad = padding.PKCS7(128).padder()
    data = pad.update(plain.encode("utf-8")) + pad.finalize()
    enc = Cipher(algorithms.AES(key.encode("utf-8")), modes.CBC(iv.encode("utf-8"))).encryptor()
    return base64.b64encode(enc.update(data) + enc.finalize()).decode("ascii")


def split_records(payload: str, count: int, fields: tuple[str, ...]) -> list[dict]:
    parts = payload.split("^")
    n = len(fields)
    if len(parts) != n * count:
        raise FrameError(detail=f"payload has {len(parts)} fields, expected {count} x {n}")
    if count == 1:
        return [dict(zip(fields, parts))]
    it = iter(parts)   # zip stops at the end of `fields`, so each record takes exactly n parts
    return [dict(zip(fields, it)) for _ in range(count)]


def parse_frame(text: str, keys: dict[str, tuple[str, str]] | None = None) -> Frame | None:
    """A data frame → Frame; control JSON (acks, PINGPONG) → None. `keys`: tr_id → (key, iv)."""
    if not text or text[0] not in "01":
        return None
    parts = text.split("|", 3)
    if len(parts) != 4 or not parts[2].isdigit():
        raise FrameError(detail=f"malformed frame header {text[:40]!r}")
    flag, tr_id, count, payload = parts
    fields = FIELDS.get(tr_id)
    if fields is None:
        raise FrameError(detail=f"unknown real-time TR {tr_id!r}")
    if flag == "1":
        if not keys or tr_id not in keys:
            raise FrameError(detail=f"encrypted {tr_id} frame before its subscribe ack (no key/iv)")
        payload = aes_decrypt(payload, *keys[tr_id])
    return Frame(tr_id, split_records(payload, int(count), fields), flag == "1")


def fill_event(record: dict) -> FillEvent | None:
    """A notice record → FillEvent when it is an accepted fill (CNTG_YN 2, RFUS_YN 0), else None."""
    if record.get("CNTG_YN") != "2" or record.get("RFUS_YN") not in ("0", ""):
        return None
    return FillEvent(order_no=record["ODER_NO"], original_order_no=record.get("OODER_NO", ""),
                     symbol=record["STCK_SHRN_ISCD"], side="sell" if record["SELN_BYOV_CLS"] == "01" else "buy",
                     qty=int(record["CNTG_QTY"]), price=int(float(record["CNTG_UNPR"])),
                     time=record["STCK_CNTG_HOUR"], account_tail=record.get("ACNT_NO", "")[-2:])


class KisWebSocket:
    """One real-time session in a background thread. Events (tr_id, record dict) go to `events`
    (a queue) and to `on_record` if given; fills also become FillEvent objects on `fills`.

    `approval`: a callable returning a fresh approval key (called on every (re)connect).
    """

    def __init__(self, url: str, approval: Callable[[], str], cap: int = 40, unsubscribe_tr_type: str = "2",
                 custtype: str = "P", reconnect_delay_s: float = 0.2, max_reconnects: int = 50,
                 on_record: Callable[[str, dict], None] | None = None):
        self.url, self._approval = url, approval
        self.cap, self.unsub_type, self.custtype = cap, unsubscribe_tr_type, custtype
        self.reconnect_delay_s, self.max_reconnects = reconnect_delay_s, max_reconnects
        self.on_record = on_record
        self.events: queue.Queue = queue.Queue()
        self.fills: queue.Queue = queue.Queue()
        self.acks: queue.Queue = queue.Queue()
        self.subscriptions: set[tuple[str, str]] = set()
        self.keys: dict[str, tuple[str, str]] = {}
        self.connects = 0
        self.pings_answered = 0
        self.errors: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._ws = None
        self._key = ""
        self._closing = False
        self._connected = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kis-ws", daemon=True)

    def __repr__(self) -> str:
        return f"KisWebSocket(url={self.url!r}, subscriptions={len(self.subscriptions)})"

    # --- public (thread-safe) -----------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> "KisWebSocket":
        self._thread.start()
        if not self._connected.wait(timeout):
            raise KisError(detail="WebSocket did not connect", tr_id="websocket")
        return self

    def subscribe(self, tr_id: str, tr_key: str, timeout: float = 5.0) -> dict:
        if (tr_id, tr_key) in self.subscriptions:
            return {}
        if len(self.subscriptions) >= self.cap:
            raise SubscriptionCapError("OPSP0008", "MAX SUBSCRIBE OVER", tr_id=tr_id,
                                       detail=f"{self.cap} registrations per session")
        self.subscriptions.add((tr_id, tr_key))
        return self._call(self._send_sub(tr_id, tr_key, "1"), timeout)

    def unsubscribe(self, tr_id: str, tr_key: str, timeout: float = 5.0) -> dict:
        if (tr_id, tr_key) not in self.subscriptions:
            return {}
        self.subscriptions.discard((tr_id, tr_key))
        return self._call(self._send_sub(tr_id, tr_key, self.unsub_type), timeout)

    def close(self) -> None:
        self._closing = True
        if self._thread.is_alive():
            # the loop ends with the connection, so nobody waits on the close coroutine itself
            self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._close_ws()))
            self._thread.join(5)

    def wait_connected(self, timeout: float = 10.0) -> bool:
        return self._connected.wait(timeout)

    # --- internals ----------------------------------------------------------------------------
    def _call(self, coro, timeout):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _close_ws(self):
        if self._ws is not None:
            await self._ws.close()

    async def _send_sub(self, tr_id, tr_key, tr_type):
        msg = {"header": {"approval_key": self._key, "custtype": self.custtype, "tr_type": tr_type,
                          "content-type": "utf-8"}, "body": {"input": {"tr_id": tr_id, "tr_key": tr_key}}}
        if self._ws is None:
            return {}
        await self._ws.send(json.dumps(msg))
        return {"sent": tr_type}

    def _run(self):
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self):
        import websockets

        attempts = 0
        while not self._closing and attempts <= self.max_reconnects:
            try:
                self._key = self._approval()
                async with websockets.connect(self.url, ping_interval=None, max_size=2 ** 22, proxy=None) as ws:
                    self._ws = ws
                    self.connects += 1
                    attempts = 0
                    for tr_id, tr_key in sorted(self.subscriptions):   # re-subscribe after a reconnect
                        await self._send_sub(tr_id, tr_key, "1")
                    self._connected.set()
                    async for message in ws:
                        self._handle(ws, message)
                        if isinstance(message, str) and message.startswith("{") and '"PINGPONG"' in message:
                            await ws.send(message)   # echo the keep-alive text unchanged
                            self.pings_answered += 1
            except Exception as exc:  # connection refused/dropped: reconnect below
                self.errors.append(type(exc).__name__)
            finally:
                self._ws = None
                self._connected.clear()
            if not self._closing:
                attempts += 1
                await asyncio.sleep(self.reconnect_delay_s)

    def _handle(self, ws, message):
        if isinstance(message, bytes):
            message = message.decode("utf-8", "replace")
        if message.startswith("{"):
            try:
                ctrl = json.loads(message)
            except ValueError:
                self.errors.append("malformed control frame")
                return
            header, body = ctrl.get("header", {}), ctrl.get("body", {})
            if header.get("tr_id") == "PINGPONG":
                return
            out = body.get("output") or {}
            if out.get("key") and out.get("iv"):
                self.keys[header.get("tr_id", "")] = (out["key"], out["iv"])
            self.acks.put({"tr_id": header.get("tr_id"), "tr_key": header.get("tr_key"), "rt_cd": body.get("rt_cd"),
                           "msg_cd": body.get("msg_cd"), "msg1": body.get("msg1")})
            return
        try:
            frame = parse_frame(message, self.keys)
        except Exception as exc:
            self.errors.append(f"frame: {type(exc).__name__}")
            return
        if frame is None:
            return
        for rec in frame.records:
            self.events.put((frame.tr_id, rec))
            if self.on_record:
                self.on_record(frame.tr_id, rec)
            if frame.tr_id in NOTICE_TRS:
                ev = fill_event(rec)
                if ev:
                    self.fills.put(ev)
