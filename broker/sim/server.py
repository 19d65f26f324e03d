"""SimServer: the KIS-protocol simulator on 127.0.0.1 (free ports), REST and WebSocket.

    with SimServer(SimConfig(...)) as sim:
        creds = sim.add_account(cash=10_000_000)       # dummy credentials for this run
        env = sim.environment()                         # broker.kis Environment pointing here
        sim.advance(day, bars)                          # the decision loop drives time
        sim.faults.inject("http_500_after", path="order-cash")

The same controls exist over HTTP for other processes: POST /admin/<name> with the header
`x-sim-admin: <sim.admin_secret>` (names: advance, fault, clear_faults, market, stats, clock,
intraday, stream).

Intraday stream (rehearsal only, SYNTHETIC): `sim.enable_intraday(seed)` replaces the one
end-of-day feed frame with a session invented from each replay bar (broker/sim/intraday.py),
streamed one print per step as H0STCNT0/H0STASP0: `sim.stream_session(until=time)` streams the
next replay day up to a time of day, `sim.advance()` streams what is left before the bar trades,
and the virtual session clock (broker/sim/clock.py) streams as it moves time. Orders working
while the session streams trade against its prints (Exchange.trade_print: a market order at the
next print, a limit when a print reaches it, volume-capped); what is left of them at the close
expires (PaperBroker.on_print). Without the stream, orders fill on the daily bar as before.
"""
from __future__ import annotations

import bisect
import datetime as dt
import logging
import math
import threading
import time
from typing import Self

import polars as pl

from broker.sim.exchange import Exchange, SimConfig
from broker.sim.faults import Faults
from broker.sim.intraday import SYNTHETIC_NOTE, SessionTapes
from broker.sim.rest import SimHTTPServer
from broker.sim.ws import MARKET_TRS, SimWebSocket

log = logging.getLogger(__name__)


class SimServer:
    def __init__(self, config: SimConfig | None = None, history: pl.DataFrame | None = None,
                 replay: pl.DataFrame | None = None):
        self.exchange = Exchange(config)
        self.faults = Faults()
        if history is not None:
            self.exchange.load_history(history)
        self._replay = replay.sort("date") if replay is not None else None
        self._http: SimHTTPServer | None = None
        self._ws: SimWebSocket | None = None
        self._thread: threading.Thread | None = None
        self._session = None  # VirtualSession, made on the first clock request
        self._session_lock = threading.Lock()
        self._tapes: SessionTapes | None = None             # intraday stream, off by default
        self._streamed: tuple[dt.date | None, int] = (None, 0)   # (day, time steps already sent)
        self._stream_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SimServer(rest={self.rest_url!r}, ws={self.ws_url!r})"

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> SimServer:
        self._ws = SimWebSocket(self.exchange, self.faults)
        self._ws.daily_frames = self._tapes is None
        self._ws.start()
        self._http = SimHTTPServer(self.exchange, self.faults)
        self._http.on_admin.update(advance=self._admin_advance, fault=self._admin_fault,
                                   clear_faults=lambda b: (self.faults.clear(), {"ok": True})[1],
                                   market=self._admin_market, stats=lambda b: self.stats(),
                                   clock=self._admin_clock, intraday=self._admin_intraday,
                                   stream=self._admin_stream)
        self._thread = threading.Thread(target=self._http.serve_forever, name="sim-rest", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._ws is not None:
            self._ws.stop()
            self._ws = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}" if self._http else ""

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self._ws.port}" if self._ws else ""

    @property
    def admin_secret(self) -> str:
        return self._http.admin_secret

    def environment(self, **options):
        from broker.kis.config import sim_environment

        cfg = self.exchange.config
        opts = {"rate_per_s": cfg.rate_per_s, "burst": cfg.burst, "token_throttle_s": cfg.token_throttle_s,
                "subscription_cap": min(cfg.subscription_cap, 40)}
        opts.update(options)
        return sim_environment(self.rest_url, self.ws_url, **opts)

    # --- controls -----------------------------------------------------------------------------
    def add_account(self, cash: int, **kw) -> dict:
        return self.exchange.add_account(cash, **kw)

    def advance(self, day: dt.date | None = None, bars: dict | None = None):
        """Trade the next bar: the given one, or the next date of the replay frame (whose intraday
        session, when streaming is on, is streamed to its end first)."""
        if bars is None:
            if self._tapes is not None and self.next_replay_date() is not None:
                self.stream_session()
            day, bars = self._next_replay_bar()
        return self.exchange.advance(day, bars)

    # --- intraday stream (SYNTHETIC, rehearsal only) -------------------------------------------
    @property
    def intraday_enabled(self) -> bool:
        return self._tapes is not None

    def enable_intraday(self, seed: int = 0, step_s: int = 30) -> None:
        """Stream each replay day as a synthetic intraday session instead of one end-of-day frame."""
        self._tapes = SessionTapes(seed, step_s)
        self._streamed = (None, 0)
        if self._ws is not None:
            self._ws.daily_frames = False
        log.warning("%s (seed %d, one print every %d s)", SYNTHETIC_NOTE, seed, step_s)

    def stream_session(self, until: dt.time | None = None, pace_s: float = 0.0) -> int:
        """Stream the next replay day's synthetic session from where it stopped up to `until`
        (inclusive; None: to the closing print). Returns the number of time steps sent. The
        bar itself trades only at `advance()`. `pace_s`: real seconds between steps (0: fast)."""
        if self._tapes is None:
            raise ValueError("the intraday stream is off: call enable_intraday(seed) first")
        day, bars = self._next_replay_bar()
        with self._stream_lock:
            times = self._tapes.times
            start = self._streamed[1] if self._streamed[0] == day else 0
            end = len(times) if until is None else bisect.bisect_right(times, until)
            for k in range(start, end):
                self._trade_prints(day, bars, k)
                records = {}
                for tr_id, sym in self._ws.subscribed():
                    bar = bars.get(sym)
                    if tr_id not in MARKET_TRS or bar is None or not _tradable(bar):
                        continue
                    hist = self.exchange.history.get(sym)
                    tape = self._tapes.records(day, sym, bar, hist[-1][4] if hist else None)
                    records[(tr_id, sym)] = tape[k][1] if tr_id == "H0STCNT0" else tape[k][2]
                self._ws.publish(records)
                if pace_s:
                    time.sleep(pace_s)
            self._streamed = (day, max(start, end))
            return max(0, end - start)

    def _trade_prints(self, day: dt.date, bars: dict, k: int) -> None:
        """The orders working at step `k` trade against its print (before it is published: an
        order placed after step k-1 meets print k first). Volume-capped when the bar has volume."""
        for sym in sorted(self.exchange.working_symbols()):
            bar = bars.get(sym)
            if bar is None or not _tradable(bar):
                continue
            p = self._tapes.prints(day, sym, bar)[k]
            has_volume = len(bar) > 4 and bar[4] is not None and bar[4] == bar[4] and bar[4] > 0
            self.exchange.trade_print(day, sym, p.price, p.qty if has_volume else None, p.time)

    def drop_websockets(self) -> None:
        self._ws.drop_all()

    def set_market_open(self, is_open: bool) -> None:
        self.exchange.market_open = bool(is_open)

    def stats(self) -> dict:
        return {**self.exchange.counts, "faults_fired": dict(self.faults.fired), "today": str(self.exchange.today),
                "ws_sessions": len(self._ws.sessions) if self._ws else 0,
                "ws_frames": self._ws.frames_sent if self._ws else 0,
                "intraday": None if self._tapes is None else {
                    "synthetic": True, "note": SYNTHETIC_NOTE, "seed": self._tapes.seed, "step_s": self._tapes.step_s,
                    "day": str(self._streamed[0]) if self._streamed[0] else None, "steps_sent": self._streamed[1]}}

    def next_replay_date(self) -> dt.date | None:
        """The date the next replay bar trades on (None when the replay is over or absent)."""
        if self._replay is None:
            return None
        today = self.exchange.today
        df = self._replay if today is None else self._replay.filter(pl.col("date") > today)
        if df.is_empty():
            return None
        day = df["date"][0]
        return day.date() if isinstance(day, dt.datetime) else day

    def session_clock(self):
        """The virtual session clock (broker/sim/clock.py), started on first use."""
        with self._session_lock:  # the market and execution actors may ask at the same moment
            if self._session is None:
                from broker.sim.clock import VirtualSession

                self._session = VirtualSession(self)
            return self._session

    def _next_replay_bar(self) -> tuple[dt.date, dict]:
        if self._replay is None:
            raise ValueError("no replay data: pass bars, or start the server with replay=<frame>")
        day = self.next_replay_date()
        if day is None:
            raise ValueError("the replay has no more bars")
        part = self._replay.filter(pl.col("date") == day)
        vol = part["volume"].to_list() if "volume" in part.columns else [None] * len(part)
        bars = {s: (o, h, lo, c, v) for s, o, h, lo, c, v in zip(part["symbol"].to_list(), part["open"].to_list(),
                                                                  part["high"].to_list(), part["low"].to_list(),
                                                                  part["close"].to_list(), vol)}
        return day, bars

    # --- admin endpoints ----------------------------------------------------------------------
    def _admin_advance(self, body: dict) -> dict:
        if body.get("bars"):
            day = dt.date.fromisoformat(body["day"])
            nan = float("nan")
            fills = self.advance(day, {s: tuple(nan if x is None else float(x) for x in v)
                                       for s, v in body["bars"].items()})
        else:
            fills = self.advance()
        return {"today": str(self.exchange.today), "fills": len(fills)}

    def _admin_fault(self, body: dict) -> dict:
        if body.get("kind") == "ws_drop" and "count" not in body and "skip" not in body:
            self.drop_websockets()     # at once; with count/skip it waits for the matching data frame
        else:
            self.faults.inject(body["kind"], int(body.get("count", 1)), body.get("path", ""),
                               float(body.get("delay", 0)), int(body.get("skip", 0)))
        return {"ok": True}

    def _admin_clock(self, body: dict) -> dict:
        clock = self.session_clock()
        now = clock.sleep(float(body["sleep_s"])) if "sleep_s" in body else clock.now
        return {"now": now.isoformat(), "market_open": self.exchange.market_open, "today": str(self.exchange.today)}

    def _admin_intraday(self, body: dict) -> dict:
        self.enable_intraday(int(body.get("seed", 0)), int(body.get("step_s", 30)))
        return {"ok": True, "note": SYNTHETIC_NOTE}

    def _admin_stream(self, body: dict) -> dict:
        until = dt.time.fromisoformat(body["until"]) if body.get("until") else None
        return {"steps": self.stream_session(until, float(body.get("pace_s", 0.0)))}

    def _admin_market(self, body: dict) -> dict:
        self.set_market_open(body.get("open", True))
        return {"open": self.exchange.market_open}


def _tradable(bar) -> bool:
    return not any(x is None or math.isnan(float(x)) for x in bar[:4])
