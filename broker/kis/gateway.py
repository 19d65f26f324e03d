"""KisGateway: the one KIS session of an app key — token cache, rate limiter, REST client.

KIS counts the REST quota per app key (KIS_API.md §6: 18-20 calls/s real, 1-2/s VTS) and issues
a token at most once a minute (EGW00133). `bucket_for` is one limiter per *process*, so an
application whose market feed and execution loop run in two processes, each with its own
client, spends the budget twice and KIS answers EGW00201. The gateway is the session the whole
application shares: every REST call of the app key goes through its one `KisRest` — one token
cache, one token bucket, one connection pool (requests' pool reconnects a dropped connection on
the next call), one set of counters — and the one WebSocket session KIS allows per app key
(OPSP8996 for a second one): `watch(symbols)` opens it on first use (approval key over the same
REST session; reconnect and re-subscribe are KisWebSocket's) and feeds `RealtimeQuotes`, whose
last trade, touch, final one-minute bars and stale-feed check the gateway answers per symbol;
`follow_notices()` registers the account's execution notices on the same session, and
`take_notices()` hands their fills (FillEvent) to the execution loop's KisBroker as they arrive.

Plain Python, so it is testable without Ray; `actors/gateway.py` hosts it as the named
BrokerGateway actor and gives callers a `RestClient` over it (`GatewayRest`). What the gateway
does NOT do: decide anything about orders. KisBroker's order safety (journal first, an unknown
outcome looked up, never resent blindly) stays in KisBroker; the gateway only carries its calls,
with the same non-retry rule for orders (`idempotent=False`) that KisRest applies.
"""
from __future__ import annotations

import queue
import threading
from dataclasses import asdict
from pathlib import Path

from broker.kis.auth import TokenCache, approval_key
from broker.kis.config import Credentials, Environment
from broker.kis.realtime import RealtimeQuotes, watch
from broker.kis.rest import KisRest, Reply
from broker.kis.ws import FillEvent, KisWebSocket


class KisGateway:
    def __init__(self, env: Environment, credentials: Credentials, cache_dir: Path | str | None = None):
        self.env = env
        self.rest = KisRest(env, credentials, TokenCache(env, credentials, cache_dir))
        self.quotes = RealtimeQuotes()
        self.ws: KisWebSocket | None = None
        self._ws_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"KisGateway(env={self.env.name!r}, url={self.env.rest_url!r})"

    def request(self, method: str, path: str, tr_id: str, params: dict | None = None, body: dict | None = None,
                tr_cont: str = "", idempotent: bool = True, extra_headers: dict | None = None) -> Reply:
        """One logical KIS call, rate-limited with every other call of the app key (KisRest.request)."""
        return self.rest.request(method, path, tr_id, params=params, body=body, tr_cont=tr_cont,
                                 idempotent=idempotent, extra_headers=extra_headers)

    def hashkey(self, body: dict) -> str:
        return self.rest.hashkey(body)

    def stats(self) -> dict:
        """Counters of the session: requests sent, EGW00201 answers, token refreshes and issues."""
        return {**self.rest.stats, "tokens_issued": self.rest.tokens.issued_here,
                "rate_per_s": self.rest.bucket.rate, "burst": self.rest.bucket.burst}

    # --- the WebSocket session: live quotes and execution notices -------------------------------
    def _session(self) -> KisWebSocket:
        """The app key's one WebSocket session, opened on first use (hold `_ws_lock`)."""
        if self.ws is None:
            cred = self.rest.credentials
            self.ws = KisWebSocket(self.env.ws_url, lambda: approval_key(self.rest.session, self.env, cred),
                                   cap=self.env.subscription_cap, unsubscribe_tr_type=self.env.unsubscribe_tr_type,
                                   custtype=self.env.custtype, on_record=self.quotes.on_record,
                                   keep_events=False).start(timeout=self.env.timeout_s)
        return self.ws

    def watch(self, symbols: list[str], book: bool = True) -> int:
        """Trades (H0STCNT0) and, with `book`, the order book (H0STASP0) of `symbols` on the app
        key's one WebSocket session, opened on first use. Refuses the whole list with
        SubscriptionCapError, before registering any of it, when it does not fit in the session's
        cap (40 registrations) next to what is registered. Returns the registrations in use."""
        with self._ws_lock:
            ws = self._session()
            watch(ws, symbols, book=book)
            return len(ws.subscriptions)

    def follow_notices(self) -> bool:
        """Register the account's execution notices (H0STCNI0 real, H0STCNI9 VTS; keyed by the HTS
        id, one of the session's 40 registrations) on the WebSocket session, opened on first use.
        Fills they report wait in the session until `take_notices`. False, registering nothing,
        when the credentials carry no HTS id (KIS_HTS_ID): fills then come from REST alone."""
        hts_id = self.rest.credentials.hts_id
        if not hts_id:
            return False
        with self._ws_lock:
            self._session().subscribe(self.env.notice_tr, hts_id)
        return True

    def take_notices(self) -> list[FillEvent]:
        """The fills notices reported since the last call, oldest first (each handed out once:
        one taker, the execution loop; a fill whose notice it never took comes from REST).
        Registers the notices first when they are not (the first call, or a restarted gateway)."""
        self.follow_notices()
        ws, out = self.ws, []
        while ws is not None:
            try:
                out.append(ws.fills.get_nowait())
            except queue.Empty:
                break
        return out

    def live_quote(self, symbol: str) -> dict:
        """What the feed knows of `symbol` now: last trade, touch (best bid/ask), the final
        one-minute bars (oldest first) and the minute still trading (never final), as plain data."""
        trade, touch = self.quotes.last_trade(symbol), self.quotes.touch(symbol)
        partial = self.quotes.partial_bar(symbol)
        return {"symbol": symbol, "trade": asdict(trade) if trade else None, "touch": asdict(touch) if touch else None,
                "bars": [asdict(b) for b in self.quotes.bars(symbol)], "partial_bar": asdict(partial) if partial else None}

    def marks(self, symbols: list[str], max_silence_s: float) -> dict:
        """The intraday risk check's one read: each symbol's last trade (price, exchange time,
        receipt time), its best bid and ask (the execution algorithms' touch; 0 while no book
        was seen) and the symbols silent for more than `max_silence_s` (RealtimeQuotes.stale)."""
        trades = {s: self.quotes.last_trade(s) for s in symbols}
        touches = {s: self.quotes.touch(s) for s in symbols}
        return {"marks": {s: {"price": t.price, "time": t.time, "received": t.received,
                              "bid": touches[s].bid if touches[s] else 0, "ask": touches[s].ask if touches[s] else 0}
                          for s, t in trades.items() if t is not None},
                "stale": self.quotes.stale(symbols, max_silence_s)}

    def stale(self, symbols: list[str], max_silence_s: float) -> dict[str, float | None]:
        """Symbols whose feed has been silent for more than `max_silence_s` (None: never heard)."""
        return self.quotes.stale(symbols, max_silence_s)

    def new_stalls(self, symbols: list[str], max_silence_s: float) -> dict[str, float | None]:
        """Each stall once (RealtimeQuotes.new_stalls), for a feed-stall alert."""
        return self.quotes.new_stalls(symbols, max_silence_s)

    def ws_stats(self) -> dict:
        ws = self.ws
        return {"connected": ws is not None and ws.wait_connected(0), "connects": ws.connects if ws else 0,
                "subscriptions": len(ws.subscriptions) if ws else 0, "errors": list(ws.errors) if ws else []}

    def close(self) -> None:
        with self._ws_lock:
            if self.ws is not None:
                self.ws.close()
                self.ws = None
