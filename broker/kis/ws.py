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
from collections.abc import Callable
from dataclasses import dataclass

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


EXTRA = "_extra"   # record key of the trailing fields KIS added after the ones documented here
_reported_extra: set[tuple[str, int]] = set()


def split_records(payload: str, count: int, fields: tuple[str, ...], tr_id: str = "") -> list[dict]:
    """Cut a payload into `count` records. KIS has added fields at the end of its real-time
    records before: a record with more fields than documented keeps the known ones by name and
    the rest, in order, under `EXTRA` (logged once per TR and width). A record with fewer fields
    raises FrameError naming the first field that is missing."""
    parts = payload.split("^")
    n, what = len(fields), tr_id or "real-time"
    if count < 1:
        raise FrameError(detail=f"{what} frame announces {count} records")
    if len(parts) % count:
        raise FrameError(detail=f"{what} payload has {len(parts)} fields, which is not {count} records of "
                                f"{n} (or more) fields")
    width = len(parts) // count
    if width < n:
        raise FrameError(detail=f"{what} record has {width} fields, expected {n}: field {width} "
                                f"{fields[width]} and after it are missing")
    if width > n and (tr_id, width) not in _reported_extra:
        _reported_extra.add((tr_id, width))
        log.info("%s records have %d fields, %d documented: the extra %d kept under %r", what, width, n, width - n, EXTRA)
    records = []
    for i in range(count):
        chunk = parts[i * width:(i + 1) * width]
        record: dict = dict(zip(fields, chunk))
        if width > n:
            record[EXTRA] = chunk[n:]
        records.append(record)
    return records


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
        try:
            payload = aes_decrypt(payload, *keys[tr_id])
        except (ValueError, UnicodeDecodeError) as exc:   # bad Base64, padding or text
            raise FrameError(detail=f"encrypted {tr_id} frame does not decrypt with its key/iv "
                                    f"({type(exc).__name__})") from None
    return Frame(tr_id, split_records(payload, int(count), fields, tr_id), flag == "1")


def _field(record: dict, name: str, kind: type = str):
    """A notice field, converted; a missing or garbled one raises FrameError naming it."""
    value = record.get(name)
    if value is None:
        raise FrameError(detail=f"execution notice has no {name} field")
    if kind is str:
        if not value.strip():
            raise FrameError(detail=f"execution notice field {name} is empty")
        return value.strip()
    try:
        number = float(value) if kind is float else int(value)
    except ValueError:
        raise FrameError(detail=f"execution notice field {name} = {value[:20]!r} is not a number") from None
    if number < 0:
        raise FrameError(detail=f"execution notice field {name} = {value!r} is negative")
    return number


def fill_event(record: dict) -> FillEvent | None:
    """A notice record → FillEvent when it is an accepted fill (CNTG_YN 2, RFUS_YN 0), else None.
    A fill whose fields do not read raises FrameError naming the field."""
    if record.get("CNTG_YN") != "2" or record.get("RFUS_YN") not in ("0", ""):
        return None
    side = _field(record, "SELN_BYOV_CLS")
    if side not in ("01", "02"):
        raise FrameError(detail=f"execution notice field SELN_BYOV_CLS = {side!r} is neither 01 (sell) nor 02 (buy)")
    qty, price = _field(record, "CNTG_QTY", int), int(_field(record, "CNTG_UNPR", float))
    if qty == 0 or price == 0:
        raise FrameError(detail=f"execution notice of a fill with CNTG_QTY {qty} / CNTG_UNPR {price}")
    hhmmss = _field(record, "STCK_CNTG_HOUR")
    if not (len(hhmmss) == 6 and hhmmss.isdigit()):
        raise FrameError(detail=f"execution notice field STCK_CNTG_HOUR = {hhmmss[:20]!r} is not HHMMSS")
    return FillEvent(order_no=_field(record, "ODER_NO"), original_order_no=record.get("OODER_NO", "").strip(),
                     symbol=_field(record, "STCK_SHRN_ISCD"), side="sell" if side == "01" else "buy",
                     qty=qty, price=price, time=hhmmss, account_tail=record.get("ACNT_NO", "")[-2:])


class KisWebSocket:
    """One real-time session in a background thread. Events (tr_id, record dict) go to `events`
    (a queue) and to `on_record` if given; fills also become FillEvent objects on `fills`.

    `approval`: a callable returning a fresh approval key (called on every (re)connect).
    """

    def __init__(self, url: str, approval: Callable[[], str], cap: int = 40, unsubscribe_tr_type: str = "2",
                 custtype: str = "P", reconnect_delay_s: float = 0.2, max_reconnects: int = 50,
                 on_record: Callable[[str, dict], None] | None = None, keep_events: bool = True):
        """`keep_events=False`: records go to `on_record` only, not also to the `events` queue
        (a long-lived session whose records nobody takes from the queue would grow it forever)."""
        self.url, self._approval = url, approval
        self.keep_events = keep_events
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
    def start(self, timeout: float = 10.0) -> KisWebSocket:
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
            except Exception as exc:  # noqa: BLE001 - refused/dropped/anything: reconnect below
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
        except (FrameError, ValueError) as exc:   # counted by kind, named in the log; the session goes on
            self.errors.append(f"frame: {type(exc).__name__}")
            log.warning("real-time frame not parsed (the session goes on): %s", exc)
            return
        if frame is None:
            return
        for rec in frame.records:
            if self.keep_events:
                self.events.put((frame.tr_id, rec))
            if self.on_record:
                self.on_record(frame.tr_id, rec)
            if frame.tr_id in NOTICE_TRS:
                try:
                    ev = fill_event(rec)
                except FrameError as exc:   # named in errors; the REST execution list still has the fill
                    self.errors.append(f"notice: {exc}")
                    log.warning("execution notice not parsed (its fill comes from the REST execution list): %s", exc)
                    continue
                if ev:
                    self.fills.put(ev)
