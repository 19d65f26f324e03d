"""The simulator's WebSocket front (websockets, own asyncio loop in a thread).

Subscribe/unsubscribe with the KIS acks (OPSP0000/0001/0002/0003/0008, INVALID APPROVAL KEY),
one session per app key (OPSP8996), the registration cap (40 by default, summed over all TRs),
PINGPONG answered by a text echo or a pong frame, with a timeout, the
H0STCNT0/H0STASP0 feed when a bar trades (one multi-record frame per TR per session) or, with
the intraday stream on (SimServer.enable_intraday), the synthetic session of broker/sim/intraday.py
one print at a time, and H0STCNI0/9 execution notices encrypted with the per-subscription key/iv.
Every data frame goes through the WebSocket faults of broker/sim/faults.py (drop, stall, malformed).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
import secrets
import string
import threading
import time

from broker.kis.ws import aes_encrypt
from broker.sim.exchange import Exchange
from broker.sim.faults import Faults
from broker.sim.schema import won
from market import krx
from market.calendar import SEOUL

MARKET_TRS = ("H0STCNT0", "H0STASP0")
NOTICE_TRS = ("H0STCNI0", "H0STCNI9")


class Session:
    def __init__(self, ws, app_key: str):
        self.ws, self.app_key = ws, app_key
        self.subs: set[tuple[str, str]] = set()
        self.keys: dict[str, tuple[str, str]] = {}
        self.last_pong = time.monotonic()
        self.ping_text = ""
        self.echoes = 0   # PINGPONG answered by a text echo
        self.pongs = 0    # ... by a pong frame


def _connection_class():
    """A ServerConnection that tells its session about every pong frame: KIS's own sample answers
    PINGPONG with a WebSocket pong frame carrying the text, others echo the text (both count)."""
    from websockets.asyncio.server import ServerConnection

    class PongAwareConnection(ServerConnection):
        on_pong = None

        def acknowledge_pings(self, data: bytes) -> None:
            if self.on_pong is not None:
                self.on_pong(bytes(data))
            super().acknowledge_pings(data)

    return PongAwareConnection


class SimWebSocket:
    def __init__(self, exchange: Exchange, faults: Faults | None = None):
        self.ex = exchange
        self.faults = faults or Faults()
        self.daily_frames = True      # False while the intraday stream carries the day instead
        self.sessions: dict[str, Session] = {}      # app key → live session
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.frames_sent = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="sim-ws", daemon=True)
        exchange.listeners.append(self._on_exchange)

    def start(self) -> int:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("simulator WebSocket did not start")
        return self.port

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(5)

    def drop_all(self) -> None:
        """Fault: close every session (clients must reconnect and re-subscribe)."""
        asyncio.run_coroutine_threadsafe(self._drop_all(), self.loop).result(5)

    async def _drop_all(self):
        for s in list(self.sessions.values()):
            await s.ws.close(code=1011, reason="simulated drop")

    # --- server ------------------------------------------------------------------------------
    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self):
        from websockets.asyncio.server import serve

        self._stop = asyncio.Event()
        async with serve(self._handler, "127.0.0.1", 0, ping_interval=None, max_size=2 ** 20,
                         create_connection=_connection_class()) as server:
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            pinger = asyncio.create_task(self._pinger())
            await self._stop.wait()
            pinger.cancel()

    async def _pinger(self):
        cfg = self.ex.config
        while True:
            await asyncio.sleep(min(cfg.ping_interval_s, 1.0))
            now = time.monotonic()
            for s in list(self.sessions.values()):
                if now - s.last_pong > cfg.ping_timeout_s:
                    await s.ws.close(code=1000, reason="PINGPONG timeout")
                elif not s.ping_text and now - s.last_pong >= cfg.ping_interval_s:
                    s.ping_text = json.dumps({"header": {"tr_id": "PINGPONG",
                                              "datetime": dt.datetime.now(SEOUL).strftime("%Y%m%d%H%M%S")}})
                    await self._send(s, s.ping_text)

    def subscribed(self) -> set[tuple[str, str]]:
        """Every (TR id, key) some session has registered."""
        return {item for s in list(self.sessions.values()) for item in s.subs}

    def publish(self, records: dict[tuple[str, str], str]) -> None:
        """One time step of the market feed: {(tr_id, symbol): record}; each session gets the ones
        it subscribed to, one single-record frame each (thread-safe, waits until sent)."""
        asyncio.run_coroutine_threadsafe(self._publish(records), self.loop).result(60)

    async def _publish(self, records: dict[tuple[str, str], str]):
        for s in list(self.sessions.values()):
            for item in sorted(s.subs):
                if item in records:
                    await self._send_data(s, item[0], f"0|{item[0]}|001|{records[item]}")

    async def _send_data(self, s: Session, tr_id: str, frame: str):
        """A data frame, through the armed WebSocket faults."""
        fault = self.faults.take(tr_id, websocket=True)
        if fault is not None:
            if fault.kind == "ws_drop":
                return await self._drop_all()
            if fault.kind == "ws_stall":
                await asyncio.sleep(fault.delay)
            elif fault.kind == "ws_malformed":
                # the last three fields cut off; an encrypted frame loses the end of its cipher text
                frame = frame.rsplit("^", 3)[0] if "^" in frame else frame[:-8]
        await self._send(s, frame)

    async def _send(self, s: Session, text: str):
        try:
            await s.ws.send(text)
            self.frames_sent += 1
        except Exception:  # noqa: BLE001, S110 - a session closing mid-send only misses this frame
            pass

    async def _handler(self, ws):
        session: Session | None = None

        def pong(data: bytes):
            # a pong frame answers an outstanding PINGPONG (its payload is the text, or empty)
            if session and session.ping_text and data in (session.ping_text.encode("utf-8"), b""):
                session.last_pong, session.ping_text = time.monotonic(), ""
                session.pongs += 1

        ws.on_pong = pong
        try:
            async for message in ws:
                if isinstance(message, bytes):
                    message = message.decode("utf-8", "replace")
                if session and session.ping_text and message == session.ping_text:
                    session.last_pong, session.ping_text = time.monotonic(), ""
                    session.echoes += 1
                    continue
                try:
                    msg = json.loads(message)
                    header, body = msg["header"], msg["body"]["input"]
                    tr_id, tr_key, tr_type = body["tr_id"], body["tr_key"], header["tr_type"]
                except (ValueError, KeyError, TypeError):
                    await ws.send(json.dumps({"header": {"tr_id": "", "tr_key": "", "encrypt": "N"},
                                              "body": {"rt_cd": "9", "msg_cd": "OPSP9999", "msg1": "JSON PARSING ERROR"}}))
                    continue
                app_key = self.ex.approvals.get(header.get("approval_key", ""))
                if app_key is None:
                    await ws.send(_ack(tr_id, tr_key, "1", "OPSP0011", "INVALID APPROVAL KEY"))
                    continue
                if session is None:
                    other = self.sessions.get(app_key)
                    if other is not None and other.ws is not ws:
                        await ws.send(_ack(tr_id, tr_key, "1", "OPSP8996", "ALREADY IN USE appkey"))
                        continue
                    session = self.sessions[app_key] = Session(ws, app_key)
                await self._subscription(session, tr_id, tr_key, tr_type)
        except Exception:  # noqa: BLE001, S110 - a dropped client ends its session, never the server
            pass
        finally:
            if session is not None and self.sessions.get(session.app_key) is session:
                del self.sessions[session.app_key]

    async def _subscription(self, s: Session, tr_id: str, tr_key: str, tr_type: str):
        if tr_id not in MARKET_TRS + NOTICE_TRS:
            return await s.ws.send(_ack(tr_id, tr_key, "1", "OPSP0007", "INVALID TR_ID"))
        if tr_id in NOTICE_TRS and tr_id != ("H0STCNI9" if self.ex.config.virtual else "H0STCNI0"):
            return await s.ws.send(_ack(tr_id, tr_key, "1", "OPSP0007", "INVALID TR_ID"))
        item = (tr_id, tr_key)
        if tr_type == "1":
            if item in s.subs:
                return await s.ws.send(_ack(tr_id, tr_key, "1", "OPSP0002", "ALREADY IN SUBSCRIBE"))
            if len(s.subs) >= self.ex.config.subscription_cap:
                return await s.ws.send(_ack(tr_id, tr_key, "1", "OPSP0008", "MAX SUBSCRIBE OVER"))
            s.subs.add(item)
            out = None
            if tr_id in NOTICE_TRS:
                out = s.keys.setdefault(tr_id, (_rand(32), _rand(16)))
            return await s.ws.send(_ack(tr_id, tr_key, "0", "OPSP0000", "SUBSCRIBE SUCCESS", out))
        if tr_type in ("2", "0"):   # KIS: "2" ("0" per one docstring): accept both
            if item not in s.subs:
                return await s.ws.send(_ack(tr_id, tr_key, "1", "OPSP0003", "UNSUBSCRIBE ERROR(not found!)"))
            s.subs.discard(item)
            return await s.ws.send(_ack(tr_id, tr_key, "0", "OPSP0001", "UNSUBSCRIBE SUCCESS"))
        await s.ws.send(_ack(tr_id, tr_key, "1", "OPSP0009", "INVALID TR_TYPE"))

    # --- exchange events (called from HTTP threads) ------------------------------------------------
    def _on_exchange(self, kind: str, payload: dict) -> None:
        if not self._ready.is_set():
            return
        coro = self._bar(payload) if kind == "bar" else self._notice(payload)
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _bar(self, p: dict):
        if not self.daily_frames:
            return
        day, bars = p["day"], p["bars"]
        for s in list(self.sessions.values()):
            for tr_id, make in (("H0STCNT0", _trade_record), ("H0STASP0", _book_record)):
                recs = [make(sym, day, bars[sym], self.ex) for t, sym in sorted(s.subs)
                        if t == tr_id and sym in bars and not any(math.isnan(float(x)) for x in bars[sym][:4])]
                if recs:
                    await self._send_data(s, tr_id, f"0|{tr_id}|{len(recs):03d}|" + "^".join(recs))

    async def _notice(self, p: dict):
        tr_id = "H0STCNI9" if self.ex.config.virtual else "H0STCNI0"
        s = self.sessions.get(p["app_key"])
        if s is None or (tr_id, p["hts_id"]) not in s.subs:
            return
        key, iv = s.keys[tr_id]
        await self._send_data(s, tr_id, f"1|{tr_id}|001|" + aes_encrypt(p["record"], key, iv))


def _ack(tr_id, tr_key, rt_cd, msg_cd, msg1, keys: tuple[str, str] | None = None) -> str:
    body = {"rt_cd": rt_cd, "msg_cd": msg_cd, "msg1": msg1}
    if keys:
        body["output"] = {"iv": keys[1], "key": keys[0]}
    return json.dumps({"header": {"tr_id": tr_id, "tr_key": tr_key, "encrypt": "Y" if keys else "N"}, "body": body})


def _rand(n: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(n))


def _trade_record(sym: str, day: dt.date, bar, ex: Exchange) -> str:
    o, h, lo, c = (float(x) for x in bar[:4])
    v = bar[4] if len(bar) > 4 and bar[4] is not None else 0
    hist = ex.history.get(sym, [])
    prev = hist[-2][4] if len(hist) > 1 else o
    chg = c - prev
    sign = "2" if chg > 0 else "5" if chg < 0 else "3"
    tick = krx.tick_size(c, day)
    value = ex._value(sym, hist[-1]) if hist and hist[-1][0] == day else 0
    f = [sym, "153000", won(c), sign, won(chg), f"{(chg / prev * 100 if prev else 0):.2f}", won(c), won(o), won(h),
         won(lo), won(c + tick), won(c), won(v), won(v), won(value), "0", "0", "0", "0.00", "0", "0", "1",
         "0.00", "0.00", "090000", "3", "0", "090000", "3", "0", "090000", "3", "0", day.strftime("%Y%m%d"), "20", "N",
         "0", "0", "0", "0", "0.00", "0", "0.00", "0", "0", "0"]
    return "^".join(f)


def _book_record(sym: str, day: dt.date, bar, ex: Exchange) -> str:
    c = float(bar[3])
    tick = krx.tick_size(c, day)
    base = krx.round_to_tick(c, day, direction="down")
    asks = [won(base + tick * (i + 1)) for i in range(10)]
    bids = [won(base - tick * i) for i in range(10)]
    f = [sym, "153000", "0", *asks, *bids, *["100"] * 20, "1000", "1000", "0", "0", won(c), "0", "0", "0", "3",
         "0.00", "0", "0", "0", "0", "0", "0"]
    return "^".join(f)
